"""Helpers shared by the deployment tests (tests/deploy/ is on sys.path while they run): the
repository layout, the Helm chart rendered with the real Helm engine (helm-python-sdk embeds
Helm v4's Go SDK: no helm binary, no cluster, no network) and the value sets every chart test
runs against."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml
from helm_python import _native

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "streamlearn"
DOCKER = REPO / "deploy" / "docker"
PROMETHEUS_SRC = REPO / "deploy" / "prometheus"
GRAFANA_SRC = REPO / "deploy" / "grafana"

RELEASE, NAMESPACE = "sl", "ml"
# The Prometheus Operator's API: ServiceMonitor and PrometheusRule render only where it exists.
MONITORING = "monitoring.coreos.com/v1"

# Value sets the chart must lint, render and validate cleanly with.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "gpu": {
        "worker": {
            "gpu": {"enabled": True, "count": 1, "nodeSelector": {"pool": "gpu"}},
            "image": {"tag": "0.1.0-cu128"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml"}],
        }
    },
    "autoscaling-off": {
        "server": {"autoscaling": {"enabled": False}, "replicas": 3, "pdb": {"minAvailable": 2}}
    },
    "external-secrets": {
        "kafka": {
            "bootstrapServers": ["b-1.kafka.example:9096", "b-2.kafka.example:9096"],
            "securityProtocol": "SASL_SSL",
            "sasl": {"mechanism": "SCRAM-SHA-512", "existingSecret": "kafka-creds"},
            "tls": {"caSecret": "kafka-ca"},
        },
        "redis": {"url": "rediss://redis.example:6380/0", "existingSecret": "redis-auth"},
        "server": {"adminToken": {"existingSecret": "streamlearn-admin"}},
        "imagePullSecrets": ["registry-creds"],
    },
    "monitoring-off": {
        "metrics": {
            "serviceMonitor": {"enabled": False},
            "prometheusRule": {"enabled": False},
            "grafanaDashboard": {"enabled": False},
        }
    },
    "filesystem-registry-tuned": {
        "registry": {"kind": "filesystem", "existingClaim": "streamlearn-registry"},
        "worker": {"persistence": {"enabled": False}, "metrics": {"enabled": True}},
        "server": {"port": 9000, "service": {"port": 80}},
        "settings": {
            "learner": {"task": "multiclass", "lr": 0.01, "hidden": [128, 64]},
            "memory": {"enabled": True},
            "serve": {"model_name": "churn"},
            "kafka": {"labels_topic": "labels"},
        },
        "metrics": {"serviceMonitor": {"labels": {"release": "kube-prometheus-stack"}}},
    },
    "chart-secrets": {
        "kafka": {
            "securityProtocol": "SASL_PLAINTEXT",
            "sasl": {"mechanism": "PLAIN", "username": "learner", "password": "kafka-pw-123"},
        },
        "redis": {"password": "redis-pw-456"},
        "server": {"adminToken": {"value": "admin-token-789"}},
    },
    "network-open": {
        "networkPolicy": {
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
            ],
            "serverFrom": [{"podSelector": {"matchLabels": {"streamlearn-client": "true"}}}],
            "restrictEgress": False,
            "extraIngress": [{"ports": [{"port": 8081, "protocol": "TCP"}]}],
        },
        "server": {
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "server"}},
                }
            ],
            "preStopSleepSeconds": 0,
        },
    },
    "server-only": {"worker": {"enabled": False}},
    # several worker ranks (one torch.distributed group), and the chart's GPU example file
    "ranks": {"worker": {"replicas": 3, "persistence": {"accessModes": ["ReadWriteMany"]}}},
    "ranks-gpu": yaml.safe_load((CHART / "values-gpu.yaml").read_text(encoding="utf-8")),
    "worker-only": {"server": {"enabled": False}},
}


class Rendered:
    """One render of the chart: the parsed manifests and NOTES.txt."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.notes = next((v for k, v in files.items() if k.endswith("NOTES.txt")), "")
        self.manifests: list[dict[str, Any]] = []
        for path, text in files.items():
            if path.endswith(".txt"):
                continue
            self.manifests += [doc for doc in yaml.safe_load_all(text) if doc]

    def kinds(self) -> list[str]:
        return sorted(m["kind"] for m in self.manifests)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        found = [
            m
            for m in self.all(kind)
            if component is None
            or m["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {kind} {component or ''}, got {len(found)}"
        return found[0]

    def maybe(self, kind: str) -> dict[str, Any] | None:
        found = self.all(kind)
        return found[0] if found else None

    def settings_configmap(self) -> dict[str, Any]:
        maps = [m for m in self.all("ConfigMap") if "settings.yaml" in m.get("data", {})]
        assert len(maps) == 1
        return maps[0]


def render(
    chart: helm.Chart,
    values: dict[str, Any] | None = None,
    *,
    api_versions: Sequence[str] = (MONITORING,),
    kube_version: str | None = None,
) -> Rendered:
    """The chart rendered as on a cluster that serves ``api_versions`` (by default one with the
    Prometheus Operator's CRDs) at ``kube_version`` (None: Helm's default), like `helm template
    --api-versions ... --kube-version ...`. helm-python-sdk's Chart.render does not pass these
    two options on; its native render call takes them."""
    options: dict[str, Any] = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "api_versions": list(api_versions),
    }
    if kube_version is not None:
        options["kube_version"] = kube_version
    payload = None if not values else json.dumps(values)
    files = _native.call_string("helm_render", chart._raw(), payload, json.dumps(options))
    return Rendered(json.loads(files))


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    return containers[0]


def secret_env(cont: dict[str, Any]) -> dict[str, str]:
    """The container's STREAMLEARN_* variables with dummy values for secretKeyRef entries (what
    the kubelet would inject from the referenced Secrets)."""
    env = {}
    for var in cont.get("env", []):
        if not var["name"].startswith("STREAMLEARN_"):
            continue
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = f"dummy-{ref['name']}-{ref['key']}"
    return env


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def prometheus_rule_files() -> list[Path]:
    """The alert-rule files of deploy/prometheus (the ones with a top-level ``groups:`` key)."""
    if not PROMETHEUS_SRC.is_dir():
        return []
    files = sorted(PROMETHEUS_SRC.glob("*.yml")) + sorted(PROMETHEUS_SRC.glob("*.yaml"))
    return [f for f in sorted(files) if isinstance(load_yaml(f), dict) and "groups" in load_yaml(f)]


def dashboard_files() -> list[Path]:
    return sorted(GRAFANA_SRC.glob("*.json")) if GRAFANA_SRC.is_dir() else []


def shell_words(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
