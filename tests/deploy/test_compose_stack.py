"""deploy/docker/compose.yaml, loaded as YAML (there is no Docker engine here): the services, their
commands (parsed by streamlearn's CLI parser), the config files they mount (loaded by
streamlearn's settings loader) and the addresses that have to agree across services."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pytest
from deploy_support import DOCKER, GRAFANA_SRC, PROMETHEUS_SRC, REPO, load_yaml, shell_words

from streamlearn.cli import _parser
from streamlearn.settings import Settings, load_settings

COMPOSE = DOCKER / "compose.yaml"
STREAMLEARN = ("producer", "worker", "server")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose) -> dict[str, Any]:
    return compose["services"]


def _binds(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the bind mounts (relative to the compose file)."""
    binds = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            binds[target] = (DOCKER / source).resolve()
    return binds


def _named_volumes(service: dict[str, Any]) -> dict[str, str]:
    return {
        v.split(":")[1]: v.split(":")[0]
        for v in service.get("volumes", [])
        if not v.split(":")[0].startswith((".", "/"))
    }


def _args(service: dict[str, Any]) -> Any:
    return _parser().parse_args(shell_words(service["command"]))


def _settings(service: dict[str, Any], args: Any) -> Settings:
    host = _binds(service)[str(args.config)]
    assert host.is_file() and host.parent == DOCKER
    return load_settings(host)


def test_services(services, compose):
    assert set(services) == {
        "kafka",
        "redis",
        "prometheus",
        "grafana",
        "producer",
        "worker",
        "server",
    }
    assert set(compose["volumes"]) >= {"checkpoints"}


def test_kafka_runs_in_kraft_mode(services):
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert not any("ZOOKEEPER" in key for key in env)
    assert "healthcheck" in kafka and "healthcheck" in services["redis"]


def test_streamlearn_services_use_the_locked_down_images(services):
    """The producer and the worker share the every-role image (the default target); the
    server runs the slim `server` target, tagged apart so neither build overwrites the other."""
    images = {"producer": "streamlearn:local", "worker": "streamlearn:local"}
    images["server"] = "streamlearn-server:local"
    stages = re.findall(r"^FROM \S+ AS (\S+)$", (DOCKER / "Dockerfile").read_text(), re.M)
    for name in STREAMLEARN:
        service = services[name]
        assert service["image"] == images[name]
        build = service["build"]
        assert (DOCKER / build["context"]).resolve() == REPO
        assert (REPO / build["dockerfile"]).resolve() == (DOCKER / "Dockerfile").resolve()
        assert build.get("target", stages[-1]) == ("server" if name == "server" else stages[-1])
        assert build.get("target", stages[-1]) in stages
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
        assert service["cap_drop"] == ["ALL"]
        assert "user" not in service, "the image's non-root USER applies"


def test_commands_are_valid_cli_invocations_with_loadable_configs(services):
    commands = {name: _args(services[name]).command for name in STREAMLEARN}
    assert commands == {"producer": "produce", "worker": "worker", "server": "serve"}
    for name in STREAMLEARN:
        args = _args(services[name])
        settings = _settings(services[name], args)
        assert isinstance(settings, Settings)


def test_kafka_and_redis_addresses_agree(services):
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    internal = {urlparse(listener).netloc for listener in advertised.split(",")}
    for name in ("producer", "worker"):
        settings = _settings(services[name], _args(services[name]))
        assert set(settings.kafka.bootstrap_servers) <= internal
        assert "kafka" in services[name]["depends_on"]
    for name in ("worker", "server"):
        settings = _settings(services[name], _args(services[name]))
        assert settings.registry.kind == "redis", "worker and server share the registry"
        url = urlparse(settings.registry.url)
        assert url.hostname in services and url.port == 6379
        assert "redis" in services[name]["depends_on"]


def test_worker_checkpoints_live_in_a_named_volume(services):
    worker = services["worker"]
    args = _args(worker)
    settings = _settings(worker, args)
    directory = str(args.checkpoint_dir or settings.checkpoint.dir)
    volumes = _named_volumes(worker)
    assert volumes.get(directory) == "checkpoints"
    seconds = int(re.fullmatch(r"(\d+)s", worker["stop_grace_period"]).group(1))
    assert seconds >= 30, "SIGTERM: finish the batch, checkpoint, commit"


def test_server_port_is_published_and_health_checked(services):
    import importlib.util

    server = services["server"]
    args = _args(server)
    settings = _settings(server, args)
    port = args.port or settings.serve.port
    assert (args.host or settings.serve.host) == "0.0.0.0"
    published = {int(p.split(":")[-2]) for p in server["ports"]}
    assert port in published
    spec = importlib.util.spec_from_file_location("healthcheck", DOCKER / "healthcheck.py")
    assert spec and spec.loader
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    argv = ["/opt/venv/bin/python", "/opt/venv/bin/streamlearn", *shell_words(server["command"])]
    assert healthcheck.live_url(argv) == f"http://127.0.0.1:{port}/v2/health/live"


def test_prometheus_and_grafana_read_the_single_sources(services):
    prometheus = services["prometheus"]
    binds = _binds(prometheus)
    assert binds["/etc/prometheus"] == PROMETHEUS_SRC
    config = PurePosixPath(
        next(a for a in prometheus["command"] if a.startswith("--config.file=")).split("=")[1]
    )
    assert config.parent == PurePosixPath("/etc/prometheus")

    grafana = services["grafana"]
    binds = _binds(grafana)
    assert binds["/etc/grafana/dashboards"] == GRAFANA_SRC
    provisioning = binds["/etc/grafana/provisioning"]
    (datasource,) = load_yaml(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    url = urlparse(datasource["url"])
    assert url.hostname == "prometheus"
    assert f"127.0.0.1:{url.port}:{url.port}" in prometheus["ports"]
    assert datasource["uid"] == "prometheus"
    (provider,) = load_yaml(provisioning / "dashboards" / "streamlearn.yaml")["providers"]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"


def test_prometheus_scrape_config_targets_the_stack(services):
    config = PROMETHEUS_SRC / "prometheus.yml"
    scrape = load_yaml(config)
    targets = {
        job["job_name"]: [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        for job in scrape["scrape_configs"]
    }
    server = _args(services["server"])
    assert f"server:{server.port}" in targets.get("streamlearn-server", [])
    worker = _settings(services["worker"], _args(services["worker"]))
    assert worker.metrics.port is not None, "the worker serves no metrics in the stack"
    assert targets.get("streamlearn-worker") == [f"worker:{worker.metrics.port}"]
    assert scrape["rule_files"]
    for rule_file in scrape["rule_files"]:
        assert (PROMETHEUS_SRC / rule_file).is_file()


def test_dashboards_use_a_portable_datasource():
    dashboards = sorted(GRAFANA_SRC.glob("*.json")) if GRAFANA_SRC.is_dir() else []
    assert dashboards, "deploy/grafana/ has no dashboard"
    import json

    for path in dashboards:
        text = json.dumps(json.loads(path.read_text()))
        uids = set(re.findall(r'"datasource": \{[^}]*"uid": "([^"]+)"', text))
        # a ${variable} (works with the Grafana sidecar too) or the compose datasource's uid
        assert all(u.startswith("$") or u == "prometheus" for u in uids), (path.name, uids)


def test_gpu_override(services):
    gpu = load_yaml(DOCKER / "compose.gpu.yaml")["services"]
    assert set(gpu) == {"worker"}
    worker = gpu["worker"]
    assert re.fullmatch(r"cu\d{2,3}", worker["build"]["args"]["TORCH_VARIANT"])
    assert worker["image"] != services["worker"]["image"], "the CPU image keeps its tag"
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    # the reserved GPU is used whatever the model's size (auto keeps small models on the CPU)
    assert worker["environment"]["STREAMLEARN_LEARNER__DEVICE"] == "cuda"


def test_ports_are_published_on_loopback_only(services):
    """None of these services authenticates its clients (Grafana aside): nothing is published
    on the host's other interfaces."""
    published = [(name, port) for name, s in services.items() for port in s.get("ports", [])]
    assert published
    for name, port in published:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)
        assert len(port.split(":")) == 3, (name, port)


def test_grafana_has_no_default_password_and_no_anonymous_viewers(services):
    env = services["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    # `${VAR:?message}`: compose refuses to start while the password is not set
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", env["GF_SECURITY_ADMIN_PASSWORD"])
    assert "admin" not in env["GF_SECURITY_ADMIN_PASSWORD"].split("?")[0]
