"""`streamlearn serve` needs only streamlearn[serve]: a fresh process starts the real server
through the command line and answers v1 and v2 inference with the error memory applied, having
imported neither torch nor any other library of the worker; and it still does when every
library that the serving extra does not install is made unimportable in it, as in an
environment with only ``pip install streamlearn[serve]``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from serving_support import export, free_port, trained

from streamlearn.export.memory import encode_memory
from streamlearn.registry.filesystem import FilesystemRegistry

REPO = Path(__file__).resolve().parents[3]
WORKER_ONLY = ("torch", "river", "scipy", "onnx", "kafka", "confluent_kafka", "tqdm", "matplotlib")

# Runs in the fresh process: top-level modules named in argv[3] made unimportable, the CLI's
# `serve` in a thread, two requests, then what is loaded.
CHILD = """
import json, sys, threading, time, urllib.request

at_start = set(sys.modules)  # the interpreter's own, and what site-packages' .pth files load

class Absent:
    names = frozenset(json.loads(sys.argv[3]))

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
from streamlearn.cli import main

registry, port = sys.argv[1], sys.argv[2]
argv = ["serve", "--registry", registry, "--port", port]
server = threading.Thread(target=main, args=(argv,), daemon=True)
server.start()
base = f"http://127.0.0.1:{port}"

def post(path, body):
    request = urllib.request.Request(
        base + path, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)

row = {"a": 0.4, "b": 2.0, "color": "red"}
deadline = time.monotonic() + 60
while True:  # ready, with the error memory pulled
    try:
        v1 = post("/v1/models/streamlearn:predict", {"instances": [row]})
        if v1["compensated"]:
            break
    except OSError:
        pass
    if time.monotonic() > deadline or not server.is_alive():
        sys.exit("the server never answered a compensated prediction")
    time.sleep(0.05)
tensor = lambda name, width, kind: {"name": name, "shape": [1, width], "datatype": kind,
                                    "data": [0] * width}
v2 = post("/v2/models/streamlearn/infer",
          {"inputs": [tensor("num", 8, "FP32"), tensor("cat", 4, "INT64")]})
modules = sorted(sys.modules)
imported = sorted(set(modules) - at_start)
print(json.dumps({"v1": v1, "v2": v2, "modules": modules, "imported": imported}))
"""


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def serve_distributions() -> set[str]:
    """streamlearn's base and [serve] requirements (pyproject.toml), with everything they
    require in turn (as installed here), as normalised distribution names."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    serve = project["optional-dependencies"]["serve"]
    pending = [_name(r) for r in project["dependencies"] + serve]
    found: set[str] = set()
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        pending += [_name(r) for r in requires if "extra ==" not in r]
    return found


def absent_modules() -> list[str]:
    """Top-level modules of the installed distributions that [serve] does not bring."""
    allowed = serve_distributions() | {"pip", "setuptools"}  # in every virtual environment
    return sorted(
        top
        for top, dists in metadata.packages_distributions().items()
        if top != "streamlearn" and not {_name(d) for d in dists} & allowed
    )


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory):
    """A filesystem registry holding a published model and its error memory."""
    root = tmp_path_factory.mktemp("registry")
    preq = trained("binary", n=600, memory={"enabled": True, "size": 64})
    registry = FilesystemRegistry(root)
    registry.publish(export(preq))
    registry.push_memory(encode_memory(preq.memory, 1))
    registry.close()
    return root


def serve_in_a_fresh_process(root: Path, absent: list[str]) -> dict:
    """What the server answered and which modules it had loaded."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMLEARN_")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(free_port()), json.dumps(absent)],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def served(registry_root):
    """Everything installed stays importable: what the server imports by itself."""
    return serve_in_a_fresh_process(registry_root, [])


def test_the_server_answers_with_the_error_memory(served):
    v1, v2 = served["v1"], served["v2"]
    assert v1["model_version"] == "1" and v1["compensated"] is True
    (probabilities,) = v1["predictions"]
    assert len(probabilities) == 2 and sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    assert v2["model_version"] == "1" and v2["parameters"]["compensated"] is True
    assert {o["name"] for o in v2["outputs"]} == {"prediction", "hidden"}


def test_no_worker_library_is_imported(served):
    loaded = {name.split(".")[0] for name in served["modules"]}
    assert loaded & set(WORKER_ONLY) == set()


def test_the_worker_side_does_load_them():
    """The check above is not vacuous: the same question asked of the worker says yes."""
    code = "import json, sys, streamlearn.worker.loop; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in json.loads(out.stdout)}
    assert {"torch", "river", "scipy"} <= loaded


def test_it_serves_with_only_what_the_serve_extra_installs(registry_root):
    absent = absent_modules()
    assert set(WORKER_ONLY) - {"confluent_kafka"} <= set(absent)  # what is being shown
    answered = serve_in_a_fresh_process(registry_root, absent)
    assert answered["v1"]["compensated"] is True
    imported = {name.split(".")[0] for name in answered["imported"]}
    assert imported & set(absent) == set()
