"""The Helm chart: linted and rendered by the real Helm engine for several value sets, every
manifest validated against the Kubernetes schemas, and wired to what streamlearn really is (the
settings loader, the CLI parser, the server's routes and port)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import kubernetes_validate
import pytest
import yaml
from deploy_support import (
    CHART,
    MONITORING,
    RELEASE,
    VALUE_SETS,
    Rendered,
    container,
    dashboard_files,
    load_yaml,
    pod_spec,
    prometheus_rule_files,
    render,
    secret_env,
)
from prometheus_client import CollectorRegistry

from streamlearn.app import build_server
from streamlearn.cli import _parser
from streamlearn.errors import ConfigError
from streamlearn.registry.filesystem import FilesystemRegistry
from streamlearn.settings import ServeSettings, Settings, WorkerSettings, load_settings
from streamlearn.worker.health import Heartbeat, serve_metrics_and_health

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a recent one.
KUBE_VERSIONS = ("1.25", "1.33")
SETS = sorted(VALUE_SETS)
WORKER_SETS = [n for n in SETS if VALUE_SETS[n].get("worker", {}).get("enabled", True)]
SERVER_SETS = [n for n in SETS if VALUE_SETS[n].get("server", {}).get("enabled", True)]


@pytest.fixture(scope="module", params=SETS)
def rendered(request: pytest.FixtureRequest, chart: helm.Chart) -> tuple[str, Rendered]:
    return request.param, render(chart, VALUE_SETS[request.param])


# -- Helm itself ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SETS)
def test_lint_is_clean_in_strict_mode(name):
    report = helm.lint(CHART, VALUE_SETS[name] or None, strict=True, kube_version="v1.33.0")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert problems == []


def test_chart_metadata(chart):
    meta = chart.metadata
    assert meta["apiVersion"] == "v2" and meta["name"] == "streamlearn"
    assert meta["kubeVersion"] == ">=1.25.0-0"
    pyproject = (CHART.parents[1] / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    assert version and meta["appVersion"] == version.group(1)


# -- every manifest is valid Kubernetes ------------------------------------------------------
def test_manifests_validate_against_kubernetes_schemas(rendered):
    _, out = rendered
    assert out.manifests
    for manifest in out.manifests:
        if manifest["apiVersion"] == MONITORING:
            continue  # CRDs: checked structurally below
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)


def test_monitoring_resources_are_well_formed(rendered):
    _, out = rendered
    for manifest in out.manifests:
        if manifest["apiVersion"] != MONITORING:
            continue
        assert manifest["kind"] in ("ServiceMonitor", "PrometheusRule")
        assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", manifest["metadata"]["name"])
    monitor = out.maybe("ServiceMonitor")
    if monitor is None:
        return
    spec = monitor["spec"]
    selected = [
        s
        for s in out.all("Service")
        if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    ports = {p["name"] for s in selected for p in s["spec"].get("ports", [])}
    assert spec["endpoints"], "a ServiceMonitor without endpoints scrapes nothing"
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
        assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
    jobs = {s["metadata"]["labels"][spec["jobLabel"]] for s in selected}
    assert jobs <= {"streamlearn-server", "streamlearn-worker"}
    assert spec["namespaceSelector"]["matchNames"] == ["ml"]


def test_expected_resources(rendered):
    name, out = rendered
    kinds = out.kinds()
    values = VALUE_SETS[name]
    worker = values.get("worker", {}).get("enabled", True)
    server = values.get("server", {}).get("enabled", True)
    assert ("StatefulSet" in kinds) == worker
    assert ("Deployment" in kinds) == server
    assert ("PodDisruptionBudget" in kinds) == server
    autoscaling = values.get("server", {}).get("autoscaling", {}).get("enabled", True)
    assert ("HorizontalPodAutoscaler" in kinds) == (server and autoscaling)
    monitoring = values.get("metrics", {}).get("serviceMonitor", {}).get("enabled", True)
    worker_metrics = worker and values.get("worker", {}).get("metrics", {}).get("enabled", True)
    assert ("ServiceMonitor" in kinds) == (monitoring and (server or worker_metrics))
    # the chart creates a Secret only for credentials given as values
    assert ("Secret" in kinds) == (name == "chart-secrets")
    policies = values.get("networkPolicy", {}).get("enabled", True)
    assert kinds.count("NetworkPolicy") == (worker + server if policies else 0)
    assert "ServiceAccount" in kinds and out.settings_configmap()


def test_selectors_names_and_volumes_are_consistent(rendered):
    _, out = rendered
    services = {s["metadata"]["name"]: s for s in out.all("Service")}
    accounts = {a["metadata"]["name"] for a in out.all("ServiceAccount")}
    configmaps = {c["metadata"]["name"] for c in out.all("ConfigMap")}
    for workload in out.all("StatefulSet") + out.all("Deployment"):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        spec = pod_spec(workload)
        assert spec["serviceAccountName"] in accounts
        assert spec["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in spec["volumes"]}
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for mount in container(workload)["volumeMounts"]:
            assert mount["name"] in volumes or mount["name"] in claims
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps
        assert "checksum/settings" in workload["spec"]["template"]["metadata"]["annotations"]
        # some Service selects exactly these pods
        component = labels["app.kubernetes.io/component"]
        assert any(
            s["spec"]["selector"].items() <= labels.items()
            and s["spec"]["selector"]["app.kubernetes.io/component"] == component
            for s in services.values()
        )
    if out.maybe("StatefulSet"):
        sts = out.one("StatefulSet")
        assert services[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    if out.maybe("HorizontalPodAutoscaler"):
        target = out.one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
        deployment = out.one("Deployment")
        assert target["kind"] == "Deployment"
        assert target["name"] == deployment["metadata"]["name"]
        assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    if out.maybe("PodDisruptionBudget"):
        selector = out.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == "server"


def test_pods_are_locked_down(rendered):
    _, out = rendered
    for workload in out.all("StatefulSet") + out.all("Deployment"):
        pod = pod_spec(workload)["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        ctx = container(workload)["securityContext"]
        assert ctx["runAsNonRoot"] is True
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        resources = container(workload)["resources"]
        assert resources["requests"]["cpu"] and resources["limits"]["memory"]
        # read-only root: /tmp is an emptyDir
        mounts = {m["mountPath"]: m["name"] for m in container(workload)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]


# -- the settings the chart renders are streamlearn's --------------------------------------
def _settings_file(out: Rendered, tmp_path: Path) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(out.settings_configmap()["data"]["settings.yaml"], encoding="utf-8")
    return path


def test_settings_configmap_is_accepted_by_load_settings(rendered, tmp_path, monkeypatch):
    name, out = rendered
    path = _settings_file(out, tmp_path)
    workloads = out.all("StatefulSet") + out.all("Deployment")
    assert workloads
    for workload in workloads:
        # with exactly the STREAMLEARN_* environment the pod gets (secrets as dummies)
        env = secret_env(container(workload))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = load_settings(path)
        for key in env:
            monkeypatch.delenv(key)
        values = VALUE_SETS[name]
        kafka = values.get("kafka", {})
        assert list(settings.kafka.bootstrap_servers) == kafka.get(
            "bootstrapServers", ["kafka:9092"]
        )
        assert settings.kafka.security_protocol == kafka.get("securityProtocol", "PLAINTEXT")
        registry = values.get("registry", {}).get("kind", "redis")
        assert settings.registry.kind == registry
        if registry == "redis":
            assert settings.registry.url == values.get("redis", {}).get(
                "url", "redis://redis-master:6379/0"
            )
        for section, keys in values.get("settings", {}).items():
            for key, value in keys.items():
                got = getattr(getattr(settings, section), key)
                assert (list(got) if isinstance(got, tuple) else got) == value


def test_secrets_reach_streamlearn_by_environment_only(chart, tmp_path, monkeypatch):
    out = render(chart, VALUE_SETS["external-secrets"])
    text = json.dumps(out.manifests)
    assert "dummy" not in text and "password:" not in text
    worker, server = container(out.one("StatefulSet")), container(out.one("Deployment"))
    assert set(secret_env(worker)) == {
        "STREAMLEARN_KAFKA__SASL_USERNAME",
        "STREAMLEARN_KAFKA__SASL_PASSWORD",
        "STREAMLEARN_REGISTRY__PASSWORD",
    }
    assert set(secret_env(server)) == set(secret_env(worker)) | {"STREAMLEARN_SERVE__ADMIN_TOKEN"}
    refs = {v["valueFrom"]["secretKeyRef"]["name"] for v in server["env"]}
    assert refs == {"kafka-creds", "redis-auth", "streamlearn-admin"}
    path = _settings_file(out, tmp_path)
    for key, value in secret_env(server).items():
        monkeypatch.setenv(key, value)
    settings = load_settings(path)
    assert settings.kafka.sasl_password.get_secret_value() == "dummy-kafka-creds-password"
    assert settings.kafka.sasl_username == "dummy-kafka-creds-username"
    assert settings.registry.password.get_secret_value() == "dummy-redis-auth-redis-password"
    assert settings.serve.admin_token.get_secret_value() == "dummy-streamlearn-admin-admin-token"
    assert str(settings.kafka.ssl_cafile) == "/etc/streamlearn/kafka-tls/ca.crt"
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    assert "/etc/streamlearn/kafka-tls" in mounts
    # without the Secret's variables the SASL settings are refused: the env wiring matters
    for key in secret_env(server):
        monkeypatch.delenv(key)
    with pytest.raises(ConfigError, match="sasl"):
        load_settings(path)


def test_bad_settings_values_are_caught_by_streamlearn(chart, tmp_path):
    out = render(chart, {"settings": {"learner": {"lr": -1}}})
    with pytest.raises(ConfigError, match=r"learner\.lr"):
        load_settings(_settings_file(out, tmp_path))


def test_schema_settings_sections_are_streamlearn_sections():
    schema = json.loads((CHART / "values.schema.json").read_text())
    sections = set(schema["properties"]["settings"]["properties"])
    assert sections == set(Settings.model_fields)


# -- the containers run real streamlearn commands ---------------------------------------------
def _cli(workload: dict[str, Any]) -> Any:
    """The container's args as streamlearn's CLI parses them: the server runs the image's
    ENTRYPOINT (streamlearn) with them, the worker a shell that sets RANK and then execs
    streamlearn with them (run for real in test_worker_ranks.py)."""
    cont = container(workload)
    if workload["kind"] == "StatefulSet":
        shell, flag, script, name = cont["command"]
        assert (shell, flag, name) == ("/bin/sh", "-c", "streamlearn")
        assert script.endswith('exec streamlearn "$@"')
    else:
        assert "command" not in cont, "the image's ENTRYPOINT is streamlearn"
    return _parser().parse_args(cont["args"])


def _mount_of(workload: dict[str, Any], path: Path) -> dict[str, Any]:
    mounts = container(workload)["volumeMounts"]
    best = max(
        (m for m in mounts if path.is_relative_to(m["mountPath"])),
        key=lambda m: len(m["mountPath"]),
    )
    return best


@pytest.mark.parametrize("rendered", WORKER_SETS, indirect=True)
def test_worker_args_are_a_valid_cli_invocation(rendered):
    name, out = rendered
    sts = out.one("StatefulSet")
    args = _cli(sts)
    assert args.command == "worker" and args.log_level == "INFO"
    config = _mount_of(sts, args.config)
    assert config["name"] == "settings" and config["subPath"] == "settings.yaml"
    checkpoints = _mount_of(sts, args.checkpoint_dir)
    assert checkpoints["mountPath"] == str(args.checkpoint_dir)
    # one claim for every rank (never a claim per pod), or an emptyDir
    assert "volumeClaimTemplates" not in sts["spec"]
    volume = {v["name"]: v for v in pod_spec(sts)["volumes"]}[checkpoints["name"]]
    persistence = VALUE_SETS[name].get("worker", {}).get("persistence", {}).get("enabled", True)
    assert ("persistentVolumeClaim" in volume) == persistence
    assert ("emptyDir" in volume) != persistence
    metrics = VALUE_SETS[name].get("worker", {}).get("metrics", {}).get("enabled", True)
    ports = {p["name"]: p["containerPort"] for p in container(sts).get("ports", [])}
    assert args.metrics_port == ports.get("metrics"), "the worker serves the port it exposes"
    assert (args.metrics_port is not None) == metrics
    # SIGTERM: batch, checkpoint, commit — give it time
    assert pod_spec(sts)["terminationGracePeriodSeconds"] >= 60


PROBES = {"startupProbe": 200, "livenessProbe": 200, "readinessProbe": 503}


async def _get(app: Any, paths: list[str]) -> dict[str, int]:
    """GET each path from the ASGI app in process (no socket)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
        return {path: (await client.get(path)).status_code for path in paths}


@pytest.mark.parametrize("rendered", SERVER_SETS, indirect=True)
def test_server_args_ports_and_probes_match_the_server(rendered, tmp_path, monkeypatch):
    name, out = rendered
    deployment = out.one("Deployment")
    cont = container(deployment)
    args = _cli(deployment)
    assert args.command == "serve" and args.host == "0.0.0.0"
    assert _mount_of(deployment, args.config)["name"] == "settings"
    (port,) = cont["ports"]
    assert port["name"] == "http" and port["containerPort"] == args.port
    assert port["containerPort"] == VALUE_SETS[name].get("server", {}).get("port", 8080)
    service = out.one("Service", "server")
    assert service["spec"]["ports"][0]["targetPort"] == "http"

    # the real server app, built from the rendered settings and the pod's environment
    for key, value in secret_env(cont).items():
        monkeypatch.setenv(key, value)
    settings = load_settings(_settings_file(out, tmp_path))
    assert settings.serve.port == args.port and settings.serve.host == args.host
    app, _ = build_server(settings, FilesystemRegistry(tmp_path / "registry"), watch=False)
    routes = {route.path for route in app.routes}
    assert "/metrics" in routes
    probes = {kind: cont[kind]["httpGet"] for kind in PROBES}
    for probe in probes.values():
        assert probe["path"] in routes and probe["port"] == "http"
    codes = asyncio.run(_get(app, [p["path"] for p in probes.values()] + ["/metrics"]))
    # no model is published yet: live, but not Ready (no traffic is routed to it)
    assert {kind: codes[probe["path"]] for kind, probe in probes.items()} == PROBES
    assert codes["/metrics"] == 200
    assert f"/v1/models/{settings.serve.model_name}:predict" in out.notes


def test_default_port_is_the_servers_default(chart):
    values = chart.values
    assert values["server"]["port"] == ServeSettings().port
    assert values["server"]["service"]["port"] == ServeSettings().port


# -- value sets with specific effects ---------------------------------------------------------
def test_gpu_worker(chart, tmp_path):
    out = render(chart, VALUE_SETS["gpu"])
    sts = out.one("StatefulSet")
    cont, spec = container(sts), pod_spec(sts)
    assert cont["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert cont["resources"]["limits"]["memory"] == "4Gi"
    assert cont["image"].endswith(":0.1.0-cu128")
    assert spec["nodeSelector"] == {"pool": "gpu"}
    keys = [t["key"] for t in spec["tolerations"]]
    assert keys == ["dedicated", "nvidia.com/gpu"]
    assert load_settings(_settings_file(out, tmp_path)).learner.device == "cuda"
    assert "WARNING: worker.gpu.enabled" not in out.notes
    # the server never asks for a GPU
    assert "nvidia.com/gpu" not in json.dumps(out.one("Deployment"))
    default = render(chart)
    assert "nvidia.com/gpu" not in json.dumps(default.manifests)
    assert "tolerations" not in pod_spec(default.one("StatefulSet"))


def test_gpu_without_a_cuda_image_tag_warns(chart):
    out = render(chart, {"worker": {"gpu": {"enabled": True}}})
    assert "WARNING: worker.gpu.enabled" in out.notes


def test_autoscaling_off_sets_replicas(chart):
    out = render(chart, VALUE_SETS["autoscaling-off"])
    assert out.maybe("HorizontalPodAutoscaler") is None
    assert out.one("Deployment")["spec"]["replicas"] == 3
    assert out.one("PodDisruptionBudget")["spec"] == {
        "minAvailable": 2,
        "selector": out.one("PodDisruptionBudget")["spec"]["selector"],
    }


def test_monitoring_off_renders_no_crds(chart):
    out = render(chart, VALUE_SETS["monitoring-off"])
    assert all(m["apiVersion"] != MONITORING for m in out.manifests)
    assert not any(m["metadata"]["name"].endswith("-dashboards") for m in out.all("ConfigMap"))


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_without_the_monitoring_crds_the_chart_renders_without_them(chart, kube):
    """`helm install` on a cluster without the Prometheus Operator: no ServiceMonitor or
    PrometheusRule (their kinds would fail the install), a note instead; with the CRDs, or
    forced (e.g. `helm template` without --api-versions), both are rendered."""
    version = f"v{kube}.0"
    bare = render(chart, api_versions=(), kube_version=version)
    assert [m for m in bare.manifests if m["apiVersion"] == MONITORING] == []
    assert "no monitoring.coreos.com/v1 API" in bare.notes
    assert bare.maybe("StatefulSet") and bare.maybe("Deployment") and bare.maybe("NetworkPolicy")
    for manifest in bare.manifests:
        kubernetes_validate.validate(manifest, kube, strict=True)
    with_crds = render(chart, api_versions=(MONITORING,), kube_version=version)
    forced = render(chart, {"metrics": {"forceMonitoringResources": True}}, api_versions=())
    for out in (with_crds, forced):
        assert out.one("ServiceMonitor") and out.one("PrometheusRule")
        assert "no monitoring.coreos.com/v1 API" not in out.notes


def test_default_values_scrape_the_worker(chart):
    out = render(chart)
    sts = out.one("StatefulSet")
    assert container(sts)["ports"] == [
        {"name": "metrics", "containerPort": 9100, "protocol": "TCP"}
    ]
    assert _cli(sts).metrics_port == 9100
    service = out.one("Service", "worker")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["publishNotReadyAddresses"] is True, "a not-ready worker is scraped"
    monitor = out.one("ServiceMonitor")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http", "metrics"]
    labels = service["metadata"]["labels"]
    assert labels[monitor["spec"]["jobLabel"]] == "streamlearn-worker"
    # the worker alerts ship with the worker that feeds them
    groups = [g["name"] for g in out.one("PrometheusRule")["spec"]["groups"]]
    assert "streamlearn-worker" in groups


def test_worker_metrics_port_is_scraped_when_enabled(chart):
    out = render(chart, VALUE_SETS["filesystem-registry-tuned"])
    sts = out.one("StatefulSet")
    assert container(sts)["ports"] == [
        {"name": "metrics", "containerPort": 9100, "protocol": "TCP"}
    ]
    ports = [e["port"] for e in out.one("ServiceMonitor")["spec"]["endpoints"]]
    assert ports == ["http", "metrics"]
    assert out.one("ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # filesystem registry: the shared claim is mounted in both workloads
    for workload in (sts, out.one("Deployment")):
        claims = [v for v in pod_spec(workload)["volumes"] if "persistentVolumeClaim" in v]
        assert claims[0]["persistentVolumeClaim"]["claimName"] == "streamlearn-registry"


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"worker": {"replicas": -1}}, "/worker/replicas"),
        ({"worker": {"replicas": 2}}, "/worker/persistence/accessModes"),
        ({"worker": {"replicas": 2, "persistence": {"enabled": False}}}, "/persistence/enabled"),
        ({"worker": {"distributed": {"masterPort": 0}}}, "/worker/distributed/masterPort"),
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "/kafka/sasl"),
        ({"kafka": {"securityProtocol": "TLS"}}, "/kafka/securityProtocol"),
        ({"registry": {"kind": "filesystem"}}, "/registry/existingClaim"),
        ({"server": {"prot": 8080}}, "'prot'"),
        ({"server": {"port": 70000}}, "/server/port"),
        ({"settings": {"lerner": {"lr": 0.1}}}, "'lerner'"),
        ({"kafka": {"bootstrapServers": []}}, "/kafka/bootstrapServers"),
        ({"worker": {"gpu": {"enabled": True, "count": 2}}}, "/worker/gpu/count"),
        ({"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"password": "p"}}}, "/kafka/sasl"),
        ({"redis": {"url": "localhost:6379"}}, "/redis/url"),
    ],
)
def test_schema_rejects_bad_values(chart, values, where):
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        chart.render(values, name=RELEASE)


# -- secrets: only from Secrets, never in the ConfigMap ---------------------------------------
SECRET_SETTINGS = [
    ({"kafka": {"sasl_password": "hunter2"}}, "/settings/kafka/sasl_password"),
    ({"kafka": {"ssl_key_password": "hunter2"}}, "/settings/kafka/ssl_key_password"),
    ({"registry": {"password": "hunter2"}}, "/settings/registry/password"),
    ({"serve": {"admin_token": "hunter2"}}, "/settings/serve/admin_token"),
    ({"kafka": {"client_options": {"sasl.password": "hunter2"}}}, "client_options/sasl.password"),
    ({"kafka": {"client_options": {"ssl_keystore_Password": "x"}}}, "ssl_keystore_Password"),
    ({"kafka": {"consumer_options": {"sasl.oauthbearer.client.secret": "x"}}}, "client.secret"),
    ({"kafka": {"producer_options": {"sasl_oauth_token": "x"}}}, "producer_options/sasl_oauth"),
    ({"registry": {"url": "redis://:hunter2@redis:6379/0"}}, "/settings/registry/url"),
]


@pytest.mark.parametrize(("settings", "where"), SECRET_SETTINGS)
def test_schema_refuses_secrets_in_settings(chart, settings, where):
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.render({"settings": settings}, name=RELEASE)
    message = str(refused.value)
    assert where in message
    assert "ConfigMap" in message, "the message says why"
    assert "hunter2" not in message, "the secret is not echoed"


def test_secrets_in_settings_fail_even_without_the_schema(tmp_path):
    """`helm install --skip-schema-validation` still refuses them: the templates check too."""
    copy = tmp_path / "streamlearn"
    shutil.copytree(CHART, copy)
    (copy / "values.schema.json").unlink()
    with helm.Chart.load(copy) as unchecked:
        for settings, where in SECRET_SETTINGS[:4]:
            with pytest.raises(helm.HelmRenderError, match="would land in the ConfigMap") as e:
                render(unchecked, {"settings": settings})
            assert where.replace("/", ".").lstrip(".") in str(e.value)


def test_schema_refuses_a_password_in_the_redis_url(chart):
    with pytest.raises(helm.HelmValuesError, match="/redis/url") as refused:
        chart.render({"redis": {"url": "rediss://user:hunter2@redis:6380/0"}}, name=RELEASE)
    assert "hunter2" not in str(refused.value)
    render(chart, {"redis": {"url": "rediss://user@redis:6380/0"}})  # a user name alone is fine


def test_settings_without_secrets_are_still_accepted(chart):
    out = render(
        chart,
        {
            "settings": {
                "kafka": {
                    "client_options": {"request_timeout_ms": 40000},
                    "consumer_options": {"fetch_max_bytes": 1048576},
                    "producer_options": {"linger_ms": 20},
                    "sasl_username": "u",
                },
                "registry": {"url": "redis://redis:6379/1"},
                "serve": {"model_name": "churn"},
            }
        },
    )
    assert "fetch_max_bytes" in out.settings_configmap()["data"]["settings.yaml"]


@pytest.mark.parametrize(
    "values",
    [
        {"kafka": {"sasl": {"existingSecret": "k", "password": "p"}}},
        {"redis": {"existingSecret": "r", "password": "p"}},
        {"server": {"adminToken": {"existingSecret": "a", "value": "t"}}},
    ],
)
def test_a_secret_given_twice_is_refused(chart, values):
    with pytest.raises(helm.HelmRenderError, match="both set"):
        render(chart, values)


def test_credentials_given_as_values_go_to_the_charts_own_secret(chart, tmp_path, monkeypatch):
    values = VALUE_SETS["chart-secrets"]
    out = render(chart, values)
    secret = out.one("Secret")
    stored = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert stored == {
        "kafka-sasl-username": "learner",
        "kafka-sasl-password": "kafka-pw-123",
        "redis-password": "redis-pw-456",
        "admin-token": "admin-token-789",
    }
    # nowhere else: not in the ConfigMap, not in a pod spec
    others = json.dumps([m for m in out.manifests if m["kind"] != "Secret"])
    for value in ("kafka-pw-123", "redis-pw-456", "admin-token-789"):
        assert value not in others
    server = container(out.one("Deployment"))
    refs = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in server["env"]}
    assert {r["name"] for r in refs.values()} == {secret["metadata"]["name"]}
    assert set(refs) == {
        "STREAMLEARN_KAFKA__SASL_USERNAME",
        "STREAMLEARN_KAFKA__SASL_PASSWORD",
        "STREAMLEARN_REGISTRY__PASSWORD",
        "STREAMLEARN_SERVE__ADMIN_TOKEN",
    }
    worker_env = container(out.one("StatefulSet"))["env"]
    worker_refs = {v["name"] for v in worker_env if "secretKeyRef" in v.get("valueFrom", {})}
    assert worker_refs == set(refs) - {"STREAMLEARN_SERVE__ADMIN_TOKEN"}
    # what the kubelet would inject makes streamlearn's settings
    for name, ref in refs.items():
        monkeypatch.setenv(name, stored[ref["key"]])
    settings = load_settings(_settings_file(out, tmp_path))
    assert settings.kafka.sasl_username == "learner"
    assert settings.kafka.sasl_password.get_secret_value() == "kafka-pw-123"
    assert settings.registry.password.get_secret_value() == "redis-pw-456"
    assert settings.serve.admin_token.get_secret_value() == "admin-token-789"


# -- probes ------------------------------------------------------------------------------------
def _get_wsgi(port: int, paths: list[str]) -> dict[str, int]:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        return {path: client.get(path).status_code for path in paths}


@pytest.mark.parametrize("rendered", WORKER_SETS, indirect=True)
def test_worker_probes_hit_the_workers_health_endpoints(rendered):
    """Liveness and startup GET /livez, readiness GET /readyz on the metrics port, checked
    against the worker's real health server: a starting worker is alive but not ready."""
    name, out = rendered
    cont = container(out.one("StatefulSet"))
    if not VALUE_SETS[name].get("worker", {}).get("metrics", {}).get("enabled", True):
        assert not set(PROBES) & set(cont)
        return
    probes = {kind: cont[kind]["httpGet"] for kind in PROBES}
    assert {kind: p["path"] for kind, p in probes.items()} == {
        "startupProbe": "/livez",
        "livenessProbe": "/livez",
        "readinessProbe": "/readyz",
    }
    assert {p["port"] for p in probes.values()} == {"metrics"}
    heartbeat = Heartbeat(WorkerSettings().liveness_timeout_s)
    server = serve_metrics_and_health("127.0.0.1", 0, CollectorRegistry(), heartbeat)
    try:
        port = server.server_port
        paths = [p["path"] for p in probes.values()]
        codes = _get_wsgi(port, paths)
        assert {kind: codes[p["path"]] for kind, p in probes.items()} == PROBES
        heartbeat.restored, heartbeat.partitions = True, 1
        heartbeat.beat()
        assert set(_get_wsgi(port, paths).values()) == {200}
    finally:
        server.shutdown()
        server.server_close()


def test_worker_probe_timing_fits_a_loop_that_blocks(chart):
    """The loop may block up to the Kafka client's timeouts: /livez itself already waits
    worker.liveness_timeout_s; the probe adds failureThreshold periods, never so short that a
    slow answer (the GIL held by a step) restarts the pod, and the start-up probe leaves time
    for imports and a checkpoint restore."""
    cont = container(render(chart).one("StatefulSet"))
    for kind in PROBES:
        probe = cont[kind]
        assert probe["timeoutSeconds"] < probe["periodSeconds"]
        assert probe["timeoutSeconds"] >= 3
    live = cont["livenessProbe"]
    grace = live["failureThreshold"] * live["periodSeconds"]
    assert 30 <= grace <= 2 * WorkerSettings().liveness_timeout_s
    start = cont["startupProbe"]
    assert start["failureThreshold"] * start["periodSeconds"] >= 300


# -- network policy, spread, graceful shutdown, one GPU ----------------------------------------
def _policy(out: Rendered, component: str) -> dict[str, Any]:
    return out.one("NetworkPolicy", component)["spec"]


def _ports(rules: list[dict[str, Any]]) -> set[Any]:
    return {p["port"] for rule in rules for p in rule.get("ports", [])}


def test_network_policy_defaults(chart):
    out = render(chart)
    for component in ("worker", "server"):
        spec = _policy(out, component)
        workload = out.one("StatefulSet" if component == "worker" else "Deployment")
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= labels.items()
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
        assert spec["policyTypes"] == ["Ingress", "Egress"]
    worker, server = _policy(out, "worker"), _policy(out, "server")
    # ingress: the worker's metrics port from the cluster's pods; the server's ports from anyone
    assert worker["ingress"] == [
        {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [{"namespaceSelector": {}}]}
    ]
    (rule,) = server["ingress"]
    assert "from" not in rule and _ports([rule]) == {"http", ServeSettings().grpc_port}
    # egress: DNS, Kafka (worker) and Redis (both), nothing else
    assert _ports(worker["egress"]) == {53, 9092, 6379}
    assert _ports(server["egress"]) == {53, 6379}


def test_network_policy_follows_the_kafka_and_redis_addresses(chart):
    out = render(chart, VALUE_SETS["external-secrets"])
    assert _ports(_policy(out, "worker")["egress"]) == {53, 9096, 6380}
    out = render(chart, VALUE_SETS["filesystem-registry-tuned"])
    assert _ports(_policy(out, "worker")["egress"]) == {53, 9092}
    assert _ports(_policy(out, "server")["egress"]) == {53}
    # the server's gRPC port follows serve.grpc_port; off: only http
    for grpc, ports in ((9001, {"http", 9001}), ("off", {"http"})):
        out = render(chart, {"settings": {"serve": {"grpc_port": grpc}}})
        assert _ports(_policy(out, "server")["ingress"]) == ports


def test_network_policy_can_be_opened_and_turned_off(chart):
    out = render(chart, VALUE_SETS["network-open"])
    open_ = VALUE_SETS["network-open"]["networkPolicy"]
    server = _policy(out, "server")
    assert server["policyTypes"] == ["Ingress"] and "egress" not in server
    clients, scrape, extra = server["ingress"]
    assert clients["from"] == open_["serverFrom"]
    assert scrape == {"ports": [{"port": "http", "protocol": "TCP"}], "from": open_["metricsFrom"]}
    assert extra == open_["extraIngress"][0]
    assert _policy(out, "worker")["ingress"][0]["from"] == open_["metricsFrom"]
    off = render(chart, {"networkPolicy": {"enabled": False}})
    assert off.all("NetworkPolicy") == []
    egress = render(chart, {"networkPolicy": {"extraEgress": [{"ports": [{"port": 4317}]}]}})
    assert 4317 in _ports(_policy(egress, "worker")["egress"])


def test_server_replicas_spread_over_nodes_by_default(chart):
    out = render(chart)
    deployment = out.one("Deployment")
    labels = deployment["spec"]["selector"]["matchLabels"]
    spread = pod_spec(deployment)["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"] == labels
        assert constraint["maxSkew"] == 1 and constraint["whenUnsatisfiable"] == "ScheduleAnyway"
    # a value replaces the default; defaultTopologySpread=false drops it
    custom = render(chart, VALUE_SETS["network-open"]).one("Deployment")
    expected = VALUE_SETS["network-open"]["server"]["topologySpreadConstraints"]
    assert pod_spec(custom)["topologySpreadConstraints"] == expected
    off = render(chart, {"server": {"defaultTopologySpread": False}}).one("Deployment")
    assert "topologySpreadConstraints" not in pod_spec(off)
    # the worker (one replica) is not spread
    assert "topologySpreadConstraints" not in pod_spec(out.one("StatefulSet"))


def test_server_drains_before_sigterm(chart):
    deployment = render(chart).one("Deployment")
    cont = container(deployment)
    (sleep, seconds) = cont["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep" and int(seconds) >= 5
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > int(seconds)
    none = render(chart, VALUE_SETS["network-open"]).one("Deployment")
    assert "lifecycle" not in container(none)
    with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
        render(chart, {"server": {"preStopSleepSeconds": 30, "terminationGracePeriodSeconds": 30}})


# -- observability: single source of truth in deploy/prometheus and deploy/grafana -------------
def test_prometheus_rule_is_the_deploy_prometheus_rules(chart):
    files = prometheus_rule_files()
    assert files, "deploy/prometheus/ has no alert-rules file (a top-level `groups:` key)"
    expected = [group for f in files for group in load_yaml(f)["groups"]]
    out = render(chart)
    rule = out.one("PrometheusRule")
    assert rule["spec"]["groups"] == expected
    assert rule["metadata"]["namespace"] == "ml"
    off = render(chart, {"metrics": {"prometheusRule": {"enabled": False}}})
    assert off.maybe("PrometheusRule") is None


@pytest.mark.parametrize(
    ("values", "left_out"),
    [
        ({"worker": {"enabled": False}}, "streamlearn-worker"),
        ({"worker": {"replicas": 0}}, "streamlearn-worker"),
        ({"worker": {"metrics": {"enabled": False}}}, "streamlearn-worker"),
        ({"server": {"enabled": False}}, "streamlearn-serving"),
    ],
)
def test_prometheus_rule_leaves_out_the_alerts_of_a_component_not_running(chart, values, left_out):
    """A release without a (scraped) worker must not ship the worker's absent() alerts, which
    would fire for ever; the same for the server."""
    expected = [g for f in prometheus_rule_files() for g in load_yaml(f)["groups"]]
    assert left_out in [g["name"] for g in expected]
    groups = render(chart, values).one("PrometheusRule")["spec"]["groups"]
    assert groups == [g for g in expected if g["name"] != left_out]


def test_grafana_dashboards_configmap_is_deploy_grafana(chart):
    files = dashboard_files()
    assert files, "deploy/grafana/ has no dashboard JSON"
    out = render(chart)
    (configmap,) = [
        m for m in out.all("ConfigMap") if m["metadata"]["name"].endswith("-dashboards")
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(configmap["data"]) == {f.name for f in files}
    for f in files:
        assert json.loads(configmap["data"][f.name]) == json.loads(f.read_text())


# -- documentation ----------------------------------------------------------------------------
def _leaf_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        # free-form maps and lists are documented as a whole
        if isinstance(value, dict) and value and path not in _OPAQUE:
            keys += _leaf_keys(value, path + ".")
        else:
            keys.append(path)
    return keys


_OPAQUE = {
    "podSecurityContext",
    "securityContext",
    "worker.resources",
    "server.resources",
    "server.autoscaling.behavior",
    "server.livenessProbe",
    "server.readinessProbe",
    "server.startupProbe",
    "worker.livenessProbe",
    "worker.readinessProbe",
    "worker.startupProbe",
}


def test_readme_documents_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
    missing = [key for key in _leaf_keys(values) if key not in documented]
    assert missing == []
    stale = [key for key in documented if key not in _leaf_keys(values)]
    assert stale == []


def test_the_server_can_run_the_slim_server_image(chart):
    """server.image picks the Dockerfile's `server` target for the serving tier alone; the
    worker keeps the image of every role."""
    default = render(chart)
    assert (
        container(default.one("Deployment"))["image"]
        == container(default.one("StatefulSet"))["image"]
    )
    out = render(chart, {"image": {"tag": "0.1.0"}, "server": {"image": {"repository": "srv"}}})
    assert container(out.one("Deployment"))["image"] == "srv:0.1.0"
    assert container(out.one("StatefulSet"))["image"] != "srv:0.1.0"
