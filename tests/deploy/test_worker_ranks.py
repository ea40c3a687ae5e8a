"""The worker as N ranks of one torch.distributed group: the StatefulSet, its headless Service
and the env:// rendezvous variables for 1 and 3 ranks on the oldest and a recent Kubernetes,
the RANK wrapper run by a real shell, the one shared ReadWriteMany checkpoint claim (and the
refusal of anything else), the rank-to-rank network policy and the GPU example values file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
from deploy_support import (
    CHART,
    NAMESPACE,
    VALUE_SETS,
    Rendered,
    container,
    pod_spec,
    render,
)

from streamlearn.cli import _parser

KUBE_VERSIONS = ("1.25", "1.33")
RWX = {"persistence": {"accessModes": ["ReadWriteMany"]}}
WORKER_LABELS = {"app.kubernetes.io/component": "worker"}


def _ranks(n: int, **worker: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"replicas": n, **(RWX if n > 1 else {}), **worker}
    return {"worker": values}


def _env(out: Rendered) -> dict[str, Any]:
    return {v["name"]: v.get("value", v.get("valueFrom")) for v in container(_sts(out))["env"]}


def _sts(out: Rendered) -> dict[str, Any]:
    return out.one("StatefulSet", "worker")


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("ranks", [1, 3])
def test_ranks_are_one_statefulset_with_a_rendezvous(chart, ranks, kube):
    out = render(chart, _ranks(ranks), kube_version=f"v{kube}.0")
    for manifest in out.manifests:
        if manifest["apiVersion"] != "monitoring.coreos.com/v1":
            kubernetes_validate.validate(manifest, kube, strict=True)
    sts, service = _sts(out), out.one("Service", "worker")
    spec = sts["spec"]
    assert spec["replicas"] == ranks and spec["podManagementPolicy"] == "Parallel"
    # one rank: rolled as before; several: the group restarts as one (see NOTES.txt)
    assert spec["updateStrategy"]["type"] == ("OnDelete" if ranks > 1 else "RollingUpdate")
    assert spec["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True, "pod 0 resolves before Ready"
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    env = _env(out)
    assert env["WORLD_SIZE"] == str(ranks)
    pod_0 = f"{sts['metadata']['name']}-0"
    assert env["MASTER_ADDR"] == f"{pod_0}.{service['metadata']['name']}.{NAMESPACE}.svc"
    assert all(len(label) <= 63 for label in env["MASTER_ADDR"].split("."))
    assert env["MASTER_PORT"] == "29500"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "RANK" not in env and "LOCAL_RANK" not in env  # RANK: the wrapper; no GPU here
    ports = {p["name"]: p for p in container(sts)["ports"]}
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    if ranks > 1:
        assert ports["rendezvous"]["containerPort"] == 29500
        assert service_ports["rendezvous"]["targetPort"] == "rendezvous"
    else:
        assert "rendezvous" not in ports and "rendezvous" not in service_ports


# what Kubernetes lets an update of a StatefulSet change (the rest is refused on `helm upgrade`)
MUTABLE_STS_FIELDS = {
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
}


@pytest.mark.parametrize(("before", "after"), [(1, 3), (3, 1), (3, 0), (2, 5)])
def test_scaling_is_an_upgrade_kubernetes_accepts(chart, before, after):
    """Changing worker.replicas (with the ReadWriteMany claim scale-out needs from the start)
    changes only fields a StatefulSet update may change, and nothing of the claim."""
    old, new = (render(chart, {"worker": {"replicas": n, **RWX}}) for n in (before, after))
    old_spec, new_spec = _sts(old)["spec"], _sts(new)["spec"]
    changed = {k for k in old_spec.keys() | new_spec.keys() if old_spec.get(k) != new_spec.get(k)}
    assert "replicas" in changed and changed <= MUTABLE_STS_FIELDS
    claim = [out.one("PersistentVolumeClaim", "worker") for out in (old, new)]
    assert claim[0]["spec"] == claim[1]["spec"]


def test_master_port_is_a_value(chart):
    out = render(chart, _ranks(2, distributed={"masterPort": 23456}))
    assert _env(out)["MASTER_PORT"] == "23456"
    assert {p["name"]: p["containerPort"] for p in container(_sts(out))["ports"]}[
        "rendezvous"
    ] == 23456


# -- RANK: the pod's ordinal, by a shell wrapper around the image's entrypoint ---------------
FAKE_ENTRYPOINT = """#!/bin/sh
printf '{"pid": %s, "rank": "%s", "argv": [' "$$" "$RANK"
sep=""
for arg in "$@"; do printf '%s"%s"' "$sep" "$arg"; sep=", "; done
printf ']}'
"""


def _run_worker_container(cont: dict[str, Any], pod_name: str, tmp_path: Path) -> Any:
    """The container's command and args run by /bin/sh as the kubelet would, with a stand-in
    `streamlearn` on PATH that reports its pid, RANK and arguments."""
    fake = tmp_path / "bin" / "streamlearn"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(FAKE_ENTRYPOINT)
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:{os.environ['PATH']}", "POD_NAME": pod_name}
    process = subprocess.Popen(
        cont["command"] + cont["args"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=30)
    return process.pid, process.returncode, stdout, stderr


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
@pytest.mark.parametrize("ordinal", [0, 2, 11])
def test_rank_is_the_pod_ordinal_and_streamlearn_runs_as_pid_1(chart, tmp_path, ordinal):
    sts = _sts(render(chart, _ranks(3)))
    cont = container(sts)
    pid, code, stdout, stderr = _run_worker_container(
        cont, f"{sts['metadata']['name']}-{ordinal}", tmp_path
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["rank"] == str(ordinal)
    assert report["argv"] == cont["args"], "the container's args reach streamlearn unchanged"
    assert report["pid"] == pid, "exec: streamlearn replaces the shell and gets SIGTERM"
    args = _parser().parse_args(report["argv"])
    assert args.command == "worker" and args.metrics_port == 9100


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
def test_a_pod_name_without_an_ordinal_stops_the_container(chart, tmp_path):
    cont = container(_sts(render(chart)))
    _, code, stdout, stderr = _run_worker_container(cont, "worker", tmp_path)
    assert code == 64 and stdout == ""
    assert "cannot set RANK" in stderr


# -- one checkpoint claim for every rank -------------------------------------------------------
def _checkpoint_volume(out: Rendered) -> dict[str, Any]:
    (mount,) = [m for m in container(_sts(out))["volumeMounts"] if m["name"] == "checkpoints"]
    return {v["name"]: v for v in pod_spec(_sts(out))["volumes"]}[mount["name"]]


@pytest.mark.parametrize("ranks", [1, 3])
def test_every_rank_mounts_the_one_checkpoint_claim(chart, ranks):
    out = render(chart, _ranks(ranks))
    assert "volumeClaimTemplates" not in _sts(out)["spec"], "no claim per pod"
    claim = out.one("PersistentVolumeClaim", "worker")
    assert _checkpoint_volume(out)["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"]
    }
    assert claim["spec"]["accessModes"] == (["ReadWriteMany"] if ranks > 1 else ["ReadWriteOnce"])
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_an_existing_claim_replaces_the_charts(chart):
    out = render(chart, {"worker": {"replicas": 3, "persistence": {"existingClaim": "ckpt-rwx"}}})
    assert out.all("PersistentVolumeClaim") == []
    assert _checkpoint_volume(out)["persistentVolumeClaim"] == {"claimName": "ckpt-rwx"}


REFUSED = [
    ({"replicas": 2}, "/worker/persistence/accessModes", "ReadWriteMany"),
    (
        {"replicas": 3, "persistence": {"accessModes": ["ReadWriteOncePod"]}},
        "/worker/persistence/accessModes",
        "ReadWriteMany",
    ),
    (
        {"replicas": 2, "persistence": {"enabled": False, "accessModes": ["ReadWriteMany"]}},
        "/worker/persistence/enabled",
        "persistence.enabled",
    ),
]


@pytest.mark.parametrize(("worker", "where", "_"), REFUSED)
def test_schema_refuses_several_ranks_without_a_shared_volume(chart, worker, where, _):
    with pytest.raises(helm.HelmValuesError, match=where):
        render(chart, {"worker": worker})


def test_templates_refuse_it_without_the_schema_too(tmp_path):
    """`helm install --skip-schema-validation` is refused as well (streamlearn.checkWorker)."""
    copy = tmp_path / "streamlearn"
    shutil.copytree(CHART, copy)
    (copy / "values.schema.json").unlink()
    with helm.Chart.load(copy) as unchecked:
        for worker, _, message in REFUSED:
            with pytest.raises(helm.HelmRenderError, match=message):
                render(unchecked, {"worker": worker})
        render(unchecked, _ranks(2))  # ReadWriteMany passes


def test_one_rank_keeps_todays_choices(chart):
    """A single worker may keep a ReadWriteOnce claim or an emptyDir."""
    render(chart, {"worker": {"replicas": 1}})
    out = render(chart, {"worker": {"persistence": {"enabled": False}}})
    assert "emptyDir" in _checkpoint_volume(out) and out.all("PersistentVolumeClaim") == []


# -- network policy: the ranks reach each other on any port ----------------------------------
def _worker_policy(out: Rendered) -> dict[str, Any]:
    return out.one("NetworkPolicy", "worker")["spec"]


def _peer_rules(rules: list[dict[str, Any]], key: str, pod_labels: dict[str, str]) -> list[Any]:
    """Rules that admit the worker's own pods on every port (no `ports`: gloo and NCCL use
    ephemeral ones)."""
    return [
        rule
        for rule in rules
        if "ports" not in rule
        and any(
            set(peer) == {"podSelector"}
            and peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
            and WORKER_LABELS.items() <= peer["podSelector"]["matchLabels"].items()
            for peer in rule.get(key, [])
        )
    ]


def test_network_policy_lets_the_ranks_reach_each_other(chart):
    out = render(chart, _ranks(3))
    labels = _sts(out)["spec"]["template"]["metadata"]["labels"]
    policy = _worker_policy(out)
    assert len(_peer_rules(policy["ingress"], "from", labels)) == 1
    assert len(_peer_rules(policy["egress"], "to", labels)) == 1
    # the other rules are untouched: metrics from the cluster, DNS, Kafka, Redis
    assert policy["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    # the peers are only this release's worker pods, not the server's
    server_labels = out.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert _peer_rules(policy["ingress"], "from", server_labels) == []
    # egress unrestricted: no egress rules at all, the ingress rule stays
    open_ = _worker_policy(render(chart, _ranks(3) | {"networkPolicy": {"restrictEgress": False}}))
    assert "egress" not in open_ and len(_peer_rules(open_["ingress"], "from", labels)) == 1


def test_one_rank_opens_no_peer_traffic(chart):
    out = render(chart)
    labels = _sts(out)["spec"]["template"]["metadata"]["labels"]
    policy = _worker_policy(out)
    assert _peer_rules(policy["ingress"], "from", labels) == []
    assert _peer_rules(policy["egress"], "to", labels) == []


# -- GPU ranks: helm/streamlearn/values-gpu.yaml -----------------------------------------------
def test_gpu_values_file_runs_one_gpu_per_rank(chart):
    values = VALUE_SETS["ranks-gpu"]
    assert values["worker"]["replicas"] > 1
    out = render(chart, values)
    sts = _sts(out)
    cont = container(sts)
    assert sts["spec"]["replicas"] == values["worker"]["replicas"]
    assert cont["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert cont["image"].endswith("-cu128")
    env = _env(out)
    assert env["LOCAL_RANK"] == "0" and env["WORLD_SIZE"] == str(values["worker"]["replicas"])
    assert out.one("PersistentVolumeClaim", "worker")["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "learner:\n  device: cuda" in out.settings_configmap()["data"]["settings.yaml"]
    mounts = {m["mountPath"]: m["name"] for m in cont["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(sts)["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    tolerations = [t["key"] for t in pod_spec(sts)["tolerations"]]
    assert "nvidia.com/gpu" in tolerations


# -- NOTES.txt: how to restart the group -------------------------------------------------------
def test_notes_say_how_to_restart_the_group(chart):
    out = render(chart, _ranks(3))
    (command,) = [line.strip() for line in out.notes.splitlines() if "kubectl delete pod" in line]
    selector = command.split(" -l ")[1]
    wanted = dict(pair.split("=") for pair in selector.split(","))
    labels = _sts(out)["spec"]["template"]["metadata"]["labels"]
    assert wanted.items() <= labels.items() and WORKER_LABELS.items() <= wanted.items()
    assert f"-n {NAMESPACE} " in command
    assert "WORLD_SIZE=3" in out.notes and "OnDelete" in out.notes
    assert "kubectl delete pod" not in render(chart).notes
