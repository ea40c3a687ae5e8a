"""The extras by role (pyproject.toml) and the one-line answer of a command whose extra is
missing: exit code 2, the extra to install named, no traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from streamlearn import cli
from streamlearn.extras import first_missing

REPO = Path(__file__).resolve().parents[2]
WORKER_ONLY = {"torch", "river", "scipy", "onnx", "kafka-python", "tqdm", "matplotlib"}


def requires_dist() -> list[str]:
    """pyproject.toml's requirements as the package metadata states them (Requires-Dist)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra, requirements in project["optional-dependencies"].items():
        lines += [f'{r}; extra == "{extra}"' for r in requirements]
    return lines


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()


def needs(extra: str) -> set[str]:
    """Every distribution ``first_missing`` asks about for ``extra``."""
    asked: list[str] = []
    first_missing(extra, requires_dist(), lambda name: asked.append(name.lower()) or True)
    return set(asked)


def test_serve_extra_brings_no_worker_library():
    serve = needs("serve")
    assert {"onnxruntime", "starlette", "uvicorn", "redis", "prometheus-client"} <= serve
    assert serve & WORKER_ONLY == set()


def test_worker_extra_brings_the_serve_extra_too():
    """`streamlearn demo --serve` learns and serves in one process."""
    worker_own = {"torch", "river", "scipy", "onnx", "kafka-python", "msgspec", "tqdm"}
    assert needs("serve") | worker_own == needs("worker")


def test_test_extra_brings_every_role():
    assert needs("worker") | {"confluent-kafka", "matplotlib", "pytest"} <= needs("test")


def test_base_dependencies_are_lean():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {_name(r) for r in project["dependencies"]}
    assert base == {"numpy", "pydantic", "pydantic-settings", "pyyaml"}


def test_first_missing_names_the_first_absent_requirement():
    lines = ['a>=1; extra == "serve"', 'streamlearn[serve]; extra == "worker"', "b;extra=='worker'"]
    assert first_missing("worker", lines, lambda name: name != "a") == "a"  # through [serve]
    assert first_missing("worker", lines, lambda name: name != "b") == "b"
    assert first_missing("serve", lines, lambda name: name != "b") is None
    assert first_missing("worker", lines, lambda name: True) is None


def test_unknown_metadata_checks_nothing(monkeypatch):
    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "requires", absent)
    assert first_missing("worker", is_installed=lambda name: False) is None


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["worker"], "worker"),
        (["produce", "--events", "1"], "worker"),
        (["demo", "--events", "10"], "worker"),
        (["demo", "--serve"], "worker"),
        (["serve"], "serve"),
    ],
)
def test_a_command_whose_extra_is_missing_stops_with_one_line(argv, extra, monkeypatch, capsys):
    monkeypatch.setattr(cli, "first_missing", lambda wanted: "lib" if wanted == extra else None)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"streamlearn: error: `streamlearn {argv[0]}` needs streamlearn[{extra}]; lib is not "
        f"installed: pip install 'streamlearn[{extra}]'"
    ]


def test_the_demo_plot_needs_the_plots_extra_and_no_plot_does_not(monkeypatch, capsys):
    monkeypatch.setattr(cli, "first_missing", lambda wanted: "mpl" if wanted == "plots" else None)
    assert cli.main(["demo", "--events", "10"]) == 2
    assert "pip install 'streamlearn[plots]'" in capsys.readouterr().err
    assert cli.main(["demo", "--events", "64", "--no-plot"]) == 0


@pytest.mark.parametrize(
    ("argv", "hidden", "extra"),
    [
        (["worker"], "torch", "worker"),
        (["demo", "--events", "10", "--no-plot"], "river", "worker"),
        (["demo", "--events", "10"], "matplotlib", "worker,plots"),
    ],
)
def test_an_import_that_fails_anyway_is_one_line_too(argv, hidden, extra, tmp_path):
    """Where the metadata says all is there but a library cannot be imported (here: made
    unimportable in a fresh process), the command still answers in one line."""
    code = (
        f"import sys; sys.modules[{hidden!r}] = None; from streamlearn.cli import main; "
        f"sys.exit(main({argv!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (  # after the demo's progress bar, if any
        f"streamlearn: error: `streamlearn {argv[0]}` needs streamlearn[{extra}]; {hidden} is not "
        f"installed: pip install 'streamlearn[{extra}]'"
    )
