"""deploy/docker/Dockerfile, read as text (there is no Docker engine here): multi-stage, two
images — every role (the default target) and the serving tier alone (target ``server``, no
torch) — each without build tools and running as a non-root user, ENTRYPOINT streamlearn, the
torch variant as a build argument; reproducible (the base image by digest, the runtime
dependencies from hash-locked requirements); plus the image's healthcheck script and its
runtime dependencies."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
from importlib import metadata
from pathlib import Path, PurePosixPath
from types import ModuleType

import pytest
from deploy_support import DOCKER, REPO, load_yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from streamlearn.cli import _parser
from streamlearn.settings import CheckpointSettings, RegistrySettings, ServeSettings

DOCKERFILE = DOCKER / "Dockerfile"
BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc|g\+\+|clang|cmake|make|cc|gfortran|cargo|rustc|"
    r"python3?-dev|libc6?-dev|linux-headers|pkg-config)\b"
)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def stage_name(stage: list[tuple[str, str]]) -> str | None:
    found = re.search(r"\bAS\s+(\S+)", stage[0][1], re.I)
    return found.group(1) if found else None


def effective(
    dockerfile: list[list[tuple[str, str]]], stage: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """A stage's instructions after those of the stage it is built FROM, if it is one."""
    parents = {stage_name(s): s for s in dockerfile}
    parent = parents.get(stage[0][1].split()[0])
    return stage if parent is None else effective(dockerfile, parent) + stage[1:]


IMAGES = ("runtime", "server")  # the default target (every role) and the serving tier's


@pytest.fixture(scope="module")
def dockerfile() -> list[list[tuple[str, str]]]:
    return stages(DOCKERFILE.read_text())


@pytest.fixture(params=IMAGES)
def image(request, dockerfile) -> list[tuple[str, str]]:
    """An image's instructions, inherited ones included."""
    (stage,) = [s for s in dockerfile if stage_name(s) == request.param]
    return effective(dockerfile, stage)


def _stage(dockerfile: list[list[tuple[str, str]]], name: str) -> list[tuple[str, str]]:
    (stage,) = [s for s in dockerfile if stage_name(s) == name]
    return stage


def _args(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in stage if kw == keyword]


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"use the exec form (JSON array), got {args}"
    return value


def test_multi_stage_with_a_named_builder(dockerfile):
    assert len(dockerfile) >= 2
    assert stage_name(dockerfile[0]) == "builder"
    assert stage_name(dockerfile[-1]) == "runtime", "the default target is the every-role image"
    for name, builder in (("runtime", "builder"), ("server", "serve-builder")):
        final = effective(dockerfile, _stage(dockerfile, name))
        copies_from = [a for a in _args(final, "COPY") if a.startswith("--from=")]
        assert copies_from == [f"--from={builder} /opt/venv /opt/venv"], "only the venv crosses"


def test_final_stage_has_no_build_tools(dockerfile, image):
    for keyword, args in image:
        if keyword == "RUN":
            assert not BUILD_TOOLS.search(args), f"build tool in the final stage: {args}"
    # ... while the builders are where they belong (so the check above is not vacuous): both
    # compile the kernels, the serving tier's for its error-memory read
    for builder in ("builder", "serve-builder"):
        assert "build-essential" in " ".join(_args(_stage(dockerfile, builder), "RUN"))


def test_final_stage_runs_as_a_non_root_user(image):
    final = image
    users = _args(final, "USER")
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "numeric UID (runAsNonRoot checks it)"
    keywords = [kw for kw, _ in final]
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert last_user < keywords.index("ENTRYPOINT")
    assert not {"RUN", "COPY", "ADD"} & set(keywords[last_user:]), (
        "USER follows the last build step"
    )
    assert _exec_form(_args(final, "ENTRYPOINT")[-1]) == ["streamlearn"]
    # the chart's securityContext expects the same UID
    values = (REPO / "helm" / "streamlearn" / "values.yaml").read_text()
    assert f"runAsUser: {user}" in values


def test_read_only_root_friendly(image):
    final = image
    (workdir,) = _args(final, "WORKDIR")
    volumes = {v for args in _args(final, "VOLUME") for v in _exec_form(args)}
    # streamlearn's relative defaults land in the volumes
    assert str(PurePosixPath(workdir) / CheckpointSettings().dir) in volumes
    assert str(PurePosixPath(workdir) / RegistrySettings().path) in volumes
    env = " ".join(_args(final, "ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # no .pyc writes into a read-only site-packages
    assert "MPLCONFIGDIR=/tmp/" in env and "HOME=" in env
    assert "STREAMLEARN_" not in env, "env would silently override the users' YAML settings"
    chowned = " ".join(_args(final, "RUN"))
    assert "chown -R 10001:10001 /var/lib/streamlearn" in chowned


def test_torch_variant_build_argument(dockerfile):
    builder = dockerfile[0]
    variant = [a for a in _args(builder, "ARG") if a.startswith("TORCH_VARIANT=")]
    assert variant == ["TORCH_VARIANT=cpu"], "CPU torch unless asked otherwise"
    runs = " ".join(_args(builder, "RUN"))
    assert 'https://download.pytorch.org/whl/${TORCH_VARIANT}"' in runs
    assert "cu[0-9][0-9][0-9]" in runs  # the variant is checked, not passed blindly
    # the locked dependencies, then torch (which finds its own among them), then the project
    # alone, so `pip install /src[worker]` changes nothing of either
    order = [a for a in _args(builder, "RUN") if "pip install" in a]
    assert [_pip_step(a) for a in order] == ["lock", "torch", "project"]
    # the same torch version as scripts/install-torch.sh
    (version,) = [a for a in _args(builder, "ARG") if a.startswith("TORCH_VERSION=")]
    script = (REPO / "scripts" / "install-torch.sh").read_text()
    assert f"VERSION=${{TORCH_VERSION:-{version.split('=')[1]}}}" in script


def test_copied_files_exist_and_pass_the_dockerignore(dockerfile):
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = [line[1:] for line in ignore if line.startswith("!")]
    for stage in dockerfile:
        for args in _args(stage, "COPY"):
            if args.startswith("--from="):
                continue
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert any(
                    fnmatch.fnmatch(source, a) or source.startswith(a + "/") for a in allowed
                ), source


def test_healthcheck_is_the_image_script(image):
    final = image
    (health,) = _args(final, "HEALTHCHECK")
    command = _exec_form(health.split("CMD", 1)[1].strip())
    script = command[-1]
    copied = [a.split()[-1] for a in _args(final, "COPY")]
    assert script in copied
    assert (DOCKER / "healthcheck.py").is_file()


# -- the healthcheck script ------------------------------------------------------------------
@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", DOCKER / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_probes_the_role_pid_1_runs(healthcheck, tmp_path, monkeypatch):
    exe = "/opt/venv/bin/streamlearn"
    py = "/opt/venv/bin/python"
    assert healthcheck.live_url([py, exe, "produce", "--topic", "serve"]) is None
    assert healthcheck.live_url([py, exe, "demo"]) is None
    assert healthcheck.live_url([py, exe, "serve", "--port", "9000"]) == (
        "http://127.0.0.1:9000/v2/health/live"
    )
    assert healthcheck.live_url([py, "-m", "streamlearn", "serve", "--port=9001"]).endswith(
        ":9001/v2/health/live"
    )
    config = tmp_path / "server.yaml"
    config.write_text("serve: {port: 8181}\n")
    assert ":8181/" in healthcheck.live_url([py, exe, "serve", "--config", str(config)])
    monkeypatch.setenv("STREAMLEARN_SERVE__PORT", "8282")
    assert ":8282/" in healthcheck.live_url([py, exe, "serve", "--config", str(config)])
    monkeypatch.delenv("STREAMLEARN_SERVE__PORT")
    default = healthcheck.live_url([py, exe, "serve"])
    assert default == f"http://127.0.0.1:{ServeSettings().port}/v2/health/live"


def test_healthcheck_asks_the_worker_loop(healthcheck, tmp_path, monkeypatch):
    """The worker is healthy while /livez on its metrics port says its loop turns (it used to
    pass for as long as the process ran, a hung loop included)."""
    exe = "/opt/venv/bin/streamlearn"
    config = tmp_path / "worker.yaml"
    config.write_text("metrics: {port: 9100}\n")
    worker = [exe, "worker", "--config", str(config)]
    assert healthcheck.live_url(worker) == "http://127.0.0.1:9100/livez"
    assert healthcheck.live_url([*worker, "--metrics-port", "9200"]).endswith(":9200/livez")
    monkeypatch.setenv("STREAMLEARN_METRICS__PORT", "9300")
    monkeypatch.setenv("STREAMLEARN_METRICS__HOST", "::")
    assert healthcheck.live_url(worker) == "http://[::1]:9300/livez"
    monkeypatch.delenv("STREAMLEARN_METRICS__PORT")
    monkeypatch.delenv("STREAMLEARN_METRICS__HOST")
    # no metrics port: nothing to ask, healthy while it runs
    config.write_text("kafka: {topic: events}\n")
    assert healthcheck.live_url(worker) is None


def test_healthcheck_fails_a_stuck_worker(healthcheck, monkeypatch):
    """main() against the worker's real health server: 200 while the loop turns, 503 (exit 1)
    once its heartbeat is older than the limit."""
    from prometheus_client import CollectorRegistry

    from streamlearn.worker.health import Heartbeat, serve_metrics_and_health

    now = [0.0]
    heartbeat = Heartbeat(60.0, clock=lambda: now[0])
    server = serve_metrics_and_health("127.0.0.1", 0, CollectorRegistry(), heartbeat)
    try:
        url = f"http://127.0.0.1:{server.server_port}{healthcheck.WORKER_LIVE_PATH}"
        monkeypatch.setattr(healthcheck, "live_url", lambda argv: url)
        monkeypatch.setattr(healthcheck.Path, "read_bytes", lambda self: b"streamlearn\0worker")
        heartbeat.beat()
        assert healthcheck.main() == 0
        now[0] = 61.0
        assert healthcheck.main() == 1
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_paths_are_the_servers_routes(healthcheck):
    from streamlearn.serve import app
    from streamlearn.worker import health

    assert f'Route("{healthcheck.LIVE_PATH}"' in Path(app.__file__).read_text()
    assert f'"{healthcheck.WORKER_LIVE_PATH}": heartbeat.live' in Path(health.__file__).read_text()


# -- the image installs what streamlearn imports ----------------------------------------------
def _requirement_name(line: str) -> str:
    return re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


# Imported only on paths where the caller already brings the package.
NOT_NEEDED_IN_IMAGE = {"pandas": "streamlearn.river's *_many methods take the caller's DataFrame"}


def _requirements(extras: set[str]) -> list[Requirement]:
    """What pyproject.toml requires with ``extras`` (an extra naming another included)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines, pending, seen = list(project["dependencies"]), list(extras), set()
    while pending:
        extra = pending.pop()
        seen.add(extra)
        for line in project["optional-dependencies"][extra]:
            nested = re.fullmatch(r"streamlearn\[([^\]]+)\]", line.strip())
            if nested is None:
                lines.append(line)
            else:
                pending += [e for e in nested.group(1).split(",") if e not in seen]
    return [Requirement(line) for line in lines]


def _project_requirements(extras: set[str]) -> set[str]:
    """The names pyproject.toml requires with ``extras``."""
    return {_requirement_name(r.name) for r in _requirements(extras)}


def _installed_extras(stage: list[tuple[str, str]]) -> set[str]:
    """The extras of the project a stage's ``pip install "/src[...]"`` names."""
    (found,) = re.findall(r'pip install [^"]*"/src\[([^\]]+)\]"', " ".join(_args(stage, "RUN")))
    return set(found.split(","))


def test_image_installs_every_third_party_import(dockerfile):
    """Every third-party module streamlearn imports is declared by pyproject.toml (its base
    requirements and the extras the image installs) or required by a declared package."""
    assert _installed_extras(dockerfile[0]) == {"worker", "kafka-fast", "plots"}  # as before
    declared = _project_requirements(_installed_extras(dockerfile[0]))
    transitive = set(declared)
    for name in declared:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        transitive |= {_requirement_name(r) for r in requires if "extra ==" not in r}
    import ast
    import sys

    owners = metadata.packages_distributions()
    missing = set()
    for path in (REPO / "streamlearn").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in {"streamlearn", *NOT_NEEDED_IN_IMAGE}:
                    continue
                dists = {d.lower().replace("_", "-") for d in owners.get(top, [top])}
                if not dists & transitive:
                    missing.add(f"{top} ({path.relative_to(REPO)})")
    assert sorted(missing) == []


# -- the serving tier's image ------------------------------------------------------------------
def test_server_image_installs_the_serve_extra_and_no_torch(dockerfile):
    builder = _stage(dockerfile, "serve-builder")
    assert _installed_extras(builder) == {"serve"}
    assert "torch" not in _project_requirements({"serve"})
    installs = [a for a in _args(builder, "RUN") if "pip install" in a]
    assert [_pip_step(a) for a in installs] == ["lock", "project"], "no torch, nothing else"
    assert "find_spec('torch') is not None" in installs[-1]  # the build fails if torch came in
    assert not [a for a in _args(builder, "ARG") if a.startswith("TORCH")]


def test_server_image_builds_the_same_project_files(dockerfile):
    """What the builder copies of the project (pyproject.toml, setup.py, ...), the serving
    builder copies too: a build file added to one only would break the other's install."""

    def project_files(stage: list[tuple[str, str]]) -> set[str]:
        copies = [a.split()[:-1] for a in _args(stage, "COPY") if not a.startswith("--from=")]
        return {f for files in copies for f in files if not f.startswith("deploy/")}

    assert project_files(_stage(dockerfile, "serve-builder")) == project_files(dockerfile[0])
    assert "pyproject.toml" in project_files(dockerfile[0])


def test_server_image_serves_by_default(dockerfile):
    server = effective(dockerfile, _stage(dockerfile, "server"))
    command = _parser().parse_args(_exec_form(_args(server, "CMD")[-1]))
    assert command.command == "serve" and command.host == "0.0.0.0"


# -- reproducible builds ------------------------------------------------------------------------
DIGEST = re.compile(r"^[^\s@]+:[^\s@]+@sha256:[0-9a-f]{64}$")
LOCKS = {"builder": "requirements-worker.lock", "serve-builder": "requirements-serve.lock"}


def _pip_step(run: str) -> str:
    """Which install a RUN is: the hash-locked requirements, torch, or the project alone."""
    if "--require-hashes" in run:
        assert "--no-deps -r /src/requirements.lock" in run, run
        return "lock"
    if "torch==" in run:
        return "torch"
    assert re.search(r'pip install --no-deps --no-build-isolation "/src\[', run), run
    assert "pip check" in run, "a gap in the lock fails the build"
    return "project"


def test_base_image_is_pinned_by_digest(dockerfile):
    text = DOCKERFILE.read_text()
    (declared,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert DIGEST.match(declared), "python:<version>-slim-<debian>@sha256:<digest>"
    assert text.index("ARG PYTHON_IMAGE=") < text.index("FROM "), "declared before every stage"
    names = {stage_name(s) for s in dockerfile}
    for stage in dockerfile:
        image = stage[0][1].split()[0]
        assert image == "${PYTHON_IMAGE}" or image in names, image


def test_compose_images_are_pinned_by_digest():
    services = load_yaml(DOCKER / "compose.yaml")["services"]
    for name, service in services.items():
        if "build" in service:
            continue  # built here from the pinned Dockerfile
        assert DIGEST.match(service["image"]), f"{name}: {service['image']}"


def _lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, sha256 hashes) of a requirements lock."""
    text = (DOCKER / name).read_text().replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        found = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert found, f"{name}: not a pinned, hashed requirement: {line}"
        hashes = re.findall(r"sha256:([0-9a-f]{64})", found.group(3))
        pins[canonicalize_name(found.group(1))] = (found.group(2), hashes)
    return pins


@pytest.mark.parametrize("stage", sorted(LOCKS))
def test_runtime_dependencies_come_from_a_hashed_lock(dockerfile, stage):
    builder = _stage(dockerfile, stage)
    copies = [a.split() for a in _args(builder, "COPY")]
    assert [f"deploy/docker/{LOCKS[stage]}", "/src/requirements.lock"] in copies
    assert "lock" in [_pip_step(a) for a in _args(builder, "RUN") if "pip install" in a]
    pins = _lock(LOCKS[stage])
    assert pins and all(hashes for _, hashes in pins.values())


@pytest.mark.parametrize("stage", sorted(LOCKS))
def test_locks_pin_what_the_project_requires(dockerfile, stage):
    """Every requirement of the extras the image installs is pinned in its lock at a version
    pyproject.toml accepts (torch excepted: it comes from the PyTorch index), so `pip check`
    after `--no-deps` passes; and the lock was made for the base image's Python."""
    pins = _lock(LOCKS[stage])
    for requirement in _requirements(_installed_extras(_stage(dockerfile, stage))):
        name = canonicalize_name(requirement.name)
        if name == "torch":
            assert name not in pins, "torch comes from the index of TORCH_VARIANT"
            continue
        assert name in pins, f"{LOCKS[stage]} lacks {requirement}"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), requirement
    assert "setuptools" in pins, "builds the project without build isolation"
    assert not [n for n in pins if n.startswith(("nvidia-", "cuda-")) or n == "triton"]
    python = re.search(r"ARG PYTHON_IMAGE=python:(\d+\.\d+\.\d+)-", DOCKERFILE.read_text())
    header = (DOCKER / LOCKS[stage]).read_text().splitlines()[0]
    assert python and f"for Python {python.group(1)} " in header, "re-run lock-requirements.sh"
