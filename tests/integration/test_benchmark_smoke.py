"""Smoke test of benchmarks/prequential.py: streamlearn and river LR on a short stream.

Runs the real command line in a subprocess (as a user would) on ~600 events of one stream,
leaving out the slow peers and deep-river, and checks the table, the JSON and the plot. At the
end: benchmarks/serving.py, every phase at a few hundred requests/s.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from streamlearn.settings import FeatureSettings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "prequential.py"
STREAM = "sea-drift"


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    command = [
        sys.executable, str(SCRIPT), "--events", "600", "--seed", "7", "--streams", STREAM,
        "--skip-peers", "river-hat,river-arf,deep-river", "--out", str(out), "--no-progress",
        "--frontier-batches", "32", "64", "--frontier-updates", "1", "--frontier-lrs", "0.01",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "## Targets" in done.stdout
    return out


def test_writes_table_json_and_plot(out: Path) -> None:
    markdown = (out / "prequential.md").read_text(encoding="utf-8")
    assert f"## {STREAM}" in markdown
    for name in ("streamlearn", "streamlearn (dicts)", "river LogisticRegression"):
        assert f"| {name} " in markdown
    assert "StandardScaler \\| LogisticRegression" in markdown  # pipe escaped in the table
    assert "## Machine" in markdown and "## Overall" in markdown
    assert "deep-river" in markdown and "skipped" in markdown  # skipped peer said so
    png = (out / f"prequential-{STREAM}.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5_000


def test_numbers_are_sane(out: Path) -> None:
    data = json.loads((out / "prequential.json").read_text(encoding="utf-8"))
    stream = data["streams"][STREAM]
    assert stream["drift_positions"] == [150, 300, 450]
    models = stream["models"]
    assert set(models) == {
        "streamlearn",
        "streamlearn-dicts",
        "streamlearn-throughput",
        "river-lr",
        "river-scaled-lr",
    }
    for summary in models.values():
        assert summary["events"] == 600
        assert 0.0 <= summary["accuracy"] <= 1.0
        assert summary["events_per_s"] > 0
        assert len(summary["after_drift"]) == 3
        assert all(0.0 <= a <= 1.0 for a in summary["after_drift"])
    assert "deep-river" in stream["skipped"]
    # the two streamlearn paths are the same learner on the same rows
    assert math.isclose(
        models["streamlearn"]["accuracy"], models["streamlearn-dicts"]["accuracy"], abs_tol=0.02
    )


def test_targets_come_from_this_run(out: Path) -> None:
    data = json.loads((out / "prequential.json").read_text(encoding="utf-8"))
    by_target = {(t["target"], t["stream"]): t for t in data["targets"]}
    name = "streamlearn events/s ≥ 1× river StandardScaler | LogisticRegression"
    lr = by_target[(name + " at equal or better accuracy", STREAM)]
    models = data["streams"][STREAM]["models"]
    ours, peer = models["streamlearn"], models["river-scaled-lr"]
    ratio = ours["events_per_s"] / peer["events_per_s"]
    assert math.isclose(lr["value"], ratio, rel_tol=1e-9)
    assert lr["met"] is (ratio >= 1 and ours["accuracy"] >= peer["accuracy"])
    assert not any("10× river" in t["target"] for t in data["targets"])  # dropped (issue 23)
    deep = by_target[("streamlearn events/s ≥ 100× deep-river MLP", STREAM)]
    assert deep["met"] is None  # not measured: deep-river was skipped
    accuracy = by_target[("streamlearn accuracy ≥ best peer − 0.01", STREAM)]
    assert isinstance(accuracy["met"], bool)


def test_missing_deep_river_venv_is_a_note_not_a_crash(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from peers.deep_river_peer import DeepRiverPeer, PeerUnavailable

    with pytest.raises(PeerUnavailable, match=r"setup_peers\.sh"):
        DeepRiverPeer(venv=tmp_path / "no-venv").run([({"a": 1.0}, 1)])


def test_speed_bounds_are_measured_and_consistent(out: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from speed_bounds import OTHER, STAGES

    data = json.loads((out / "prequential.json").read_text(encoding="utf-8"))
    bounds = data["streams"][STREAM]["speed_bounds"]
    settings = data["streams"][STREAM]["streamlearn_settings"]["learner"]
    # sea-drift: 3 numeric features (each with its periodic features), no categorical, 2
    # classes; default hidden (64, 64)
    assert settings["hidden"] == [64, 64]
    inputs = 3 * (1 + 2 * FeatureSettings().periodic)
    forward = inputs * 64 + 64 * 64 + 64 * 2
    rows = settings["updates"] * (1 + settings["replay_ratio"])
    assert bounds["macs_per_event"] == 3 * forward * rows
    assert bounds["matmul_gmacs"] > 0
    expected = bounds["matmul_gmacs"] * 1e9 * bounds["cores"] / bounds["macs_per_event"]
    assert math.isclose(bounds["arithmetic_events_per_s"], expected, rel_tol=1e-9)
    # every stage was timed (this run has the compiled step and the error memory) and the
    # stages add up to the batch
    stages = bounds["stage_us"]
    assert list(stages) == [name for name, _, _ in STAGES] + [OTHER]
    assert all(us > 0 for name, us in stages.items() if name != OTHER)
    assert math.isclose(sum(stages.values()), bounds["batch_us"], rel_tol=1e-9)
    assert bounds["batches"] > 0 and bounds["warmup_batches"] > 0
    markdown = (out / "prequential.md").read_text(encoding="utf-8")
    assert "## Speed bounds: the arithmetic ceiling and where a batch's time goes" in markdown
    assert "Where a micro-batch's time goes" in markdown


def test_frontier_runs_each_grid_setting(out: Path) -> None:
    data = json.loads((out / "prequential.json").read_text(encoding="utf-8"))
    points = data["frontier"][STREAM]
    assert [(p["batch_size"], p["updates"], p["lr"]) for p in points] == [
        (32, 1, 0.01),
        (64, 1, 0.01),
    ]
    for p in points:
        assert 0.0 <= p["accuracy"] <= 1.0 and p["events_per_s"] > 0
    markdown = (out / "prequential.md").read_text(encoding="utf-8")
    assert "## Speed–accuracy frontier" in markdown
    assert "no verdict" in markdown  # deep-river skipped: the speed region is unknown
    png = (out / "prequential-frontier.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5_000


def _run(key: str, accuracy: float, events_per_s: float):
    from report import ModelRun, score_from_hits

    hits = [i < accuracy * 100 for i in range(100)]
    return ModelRun(key, key, score_from_hits(hits), 100 / events_per_s)


def test_frontier_verdict_needs_accuracy_and_speed_together(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from frontier import FrontierPoint, frontier_section, write_frontier_plot
    from prequential_report import StreamResult

    result = StreamResult("s", "a stream", "binary", [])
    # best peer 0.80 -> accuracy >= 0.79; speed: max(100 x 1k, 1 x 5k) = 100k
    for key, acc, rate in [
        ("deep-river", 0.80, 1_000),
        ("river-lr", 0.60, 10_000),
        ("river-scaled-lr", 0.70, 5_000),
    ]:
        result.add(_run(key, acc, rate))
    points = [  # events / seconds = events/s
        FrontierPoint(32, 2, 0.005, 0.85, 100, 100 / 50_000),  # accurate only
        FrontierPoint(64, 4, 0.005, 0.80, 100, 100 / 150_000),  # both
        FrontierPoint(512, 1, 0.01, 0.50, 100, 100 / 200_000),  # fast only
    ]
    text = frontier_section([result], {"s": points})
    assert "every stream" not in text  # one stream: nothing to add
    assert "**1 setting(s) meet both**, e.g. batch 64, 4 upd., lr 0.005" in text
    assert "0.850 ✓ · 50,000 |" in text and "0.800 ✓ · 150,000 ✓ |" in text
    assert "0.500 · 200,000 ✓ |" in text
    assert "most accurate fast enough: batch 64, 4 upd., lr 0.005 at 0.800" in text
    assert "fastest accurate enough: batch 64, 4 upd., lr 0.005 at 150,000 events/s" in text
    assert "150.0× deep-river MLP, 30.0× river StandardScaler | LogisticRegression" in text
    path = write_frontier_plot([result], {"s": points}, tmp_path / "f.png", (32, 2, 0.005))
    assert path is not None and path.read_bytes().startswith(b"\x89PNG")


def test_frontier_names_settings_accurate_on_every_stream(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from frontier import FrontierPoint, frontier_section
    from prequential_report import StreamResult

    results, frontiers = [], {}
    for name, second_accuracy in [("a", 0.80), ("b", 0.70)]:
        result = StreamResult(name, name, "binary", [])
        result.add(_run("deep-river", 0.80, 1_000))  # 100 events in 0.1 s on each stream
        results.append(result)
        frontiers[name] = [
            FrontierPoint(32, 2, 0.005, 0.80, 100, 0.002),  # accurate on both streams
            FrontierPoint(64, 4, 0.005, second_accuracy, 100, 0.001),  # only on "a"
        ]
    text = frontier_section(results, frontiers)
    # over both streams: 200 events in 0.004 s = 50,000/s; deep-river 200 in 0.2 s = 1,000/s
    assert "- every stream: accurate enough on all of them: batch 32, 2 upd., lr 0.005 " in text
    assert "(50,000 events/s)" in text and "batch 64, 4 upd., lr 0.005 (" not in text
    assert "runs at 50.0× deep-river MLP over all streams" in text


def test_frontier_grid_rejects_non_positive_values() -> None:
    command = [sys.executable, str(SCRIPT), "--frontier-lrs", "0.01", "0"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--frontier-lrs takes positive values only" in done.stderr


# -- speed against a baseline commit (issue 18) --------------------------------------------------
def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"not a git checkout: {done.stderr.strip()}")
    return done.stdout.strip()


def test_baseline_comparison_alone_measures_both_sides(tmp_path: Path) -> None:
    head = _git("rev-parse", "HEAD")
    (tmp_path / "prequential.md").write_text("the committed full results\n", encoding="utf-8")
    command = [
        sys.executable, str(SCRIPT), "--baseline", "HEAD", "--only-baseline", "--events", "2000",
        "--repeats", "1", "--streams", STREAM, "--out", str(tmp_path), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # the partial run leaves the full results alone and cleans up its worktree
    assert (tmp_path / "prequential.md").read_text(encoding="utf-8").startswith("the committed")
    assert "streamlearn-baseline-" not in _git("worktree", "list")
    data = json.loads((tmp_path / "speed_vs_baseline.json").read_text(encoding="utf-8"))
    assert data["baseline"]["commit"] == head and data["current"]["commit"] == head
    assert data["events"] == 2000 and data["repeats"] == 1
    stream = data["streams"][STREAM]
    for side in ("baseline", "current"):
        assert len(stream[side]["runs_events_per_s"]) == 1
        assert stream[side]["events_per_s"] > 0
        assert 0.0 <= stream[side]["accuracy"] <= 1.0
        assert stream[side]["prequential"] == "streamlearn.core.prequential"
    ratio = stream["current"]["events_per_s"] / stream["baseline"]["events_per_s"]
    assert math.isclose(stream["ratio"], ratio, rel_tol=1e-9)
    assert math.isclose(data["overall"]["ratio"], ratio, rel_tol=1e-9)  # one stream
    assert data["target"]["met"] is (ratio >= 0.95)
    markdown = (tmp_path / "speed_vs_baseline.md").read_text(encoding="utf-8")
    assert f"| {head[:7]} events/s | current events/s | current / baseline |" in markdown
    assert f"| {STREAM} " in markdown and "| all streams " in markdown
    verdict = "met" if data["target"]["met"] else "NOT met"
    assert f"**ratio ≥ 0.95: {verdict}** (all streams: {ratio:.3f})" in markdown


def test_baseline_must_be_a_commit() -> None:
    command = [sys.executable, str(SCRIPT), "--baseline", "no-such-rev-a1b2", "--only-baseline"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "'no-such-rev-a1b2' is not a commit" in done.stderr
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--only-baseline"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--only-baseline needs --baseline REV" in done.stderr


def _timed(events: int, events_per_s: float, kernel: str = "compiled") -> dict:
    return {
        "events": events,
        "events_per_s": events_per_s,
        "load_average_1m": 0.5,
        "accuracy": 0.9,
        "kernel": kernel,
        "prequential": "streamlearn.core.prequential",
        "settings": {"learner": {"lr": 0.005}},
    }


def test_baseline_ratio_is_of_medians_and_over_all_events(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from speed_vs_baseline import summarise

    runs = {
        "a": {  # medians 100 and 60 events/s
            "baseline": [_timed(1000, v) for v in (100.0, 10.0, 120.0)],
            "current": [_timed(1000, v) for v in (60.0, 200.0, 50.0)],
        },
        "b": {  # medians 50 and 50; the current side ran the torch step
            "baseline": [_timed(1000, 50.0)],
            "current": [_timed(1000, 50.0, kernel="torch")],
        },
    }
    runs["b"]["current"][0]["settings"] = {"learner": {"lr": 0.01}}
    data = summarise(runs)
    assert data["streams"]["a"]["baseline"]["events_per_s"] == 100.0
    assert math.isclose(data["streams"]["a"]["ratio"], 0.6)
    assert data["streams"]["b"]["ratio"] == 1.0
    # all streams: 2,000 events in 10 + 20 s against 1000/60 + 20 s
    baseline, current = 2000 / 30, 2000 / (1000 / 60 + 20)
    assert math.isclose(data["overall"]["events_per_s"]["baseline"], baseline)
    assert math.isclose(data["overall"]["ratio"], current / baseline)
    assert data["target"] == {"ratio_min": 0.95, "ratio": current / baseline, "met": False}
    assert data["notes"][0].startswith("the sides ran different training steps")
    assert data["notes"][1] == "b: settings differ in learner.lr"


# -- river pandas path against process_columns (issue 23) ----------------------------------------
def test_river_columns_benchmark_measures_every_path_in_one_run(tmp_path: Path) -> None:
    command = [
        sys.executable, str(ROOT / "benchmarks" / "river_columns.py"), "--events", "1024",
        "--batch-sizes", "8", "--repeats", "1", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "river_columns.json").read_text(encoding="utf-8"))
    assert data["machine"]["cpu"] and data["events"] == 1024
    (config,) = data["configs"]
    paths = config["paths"]
    assert list(paths) == [
        "process_columns",
        "river-pandas-32",
        "river-pandas-512",
        "river-dicts",
        "river-scaled-lr",
    ]
    columns = paths["process_columns"]["events_per_s"]
    for p in paths.values():
        assert p["events"] == 1024 and p["events_per_s"] > 0 and 0.0 <= p["accuracy"] <= 1.0
        assert math.isclose(p["ratio"], p["events_per_s"] / columns)  # one round
    for key, stages in config["breakdown_us_per_1k_events"].items():
        parts = stages["encode"] + stages["score"] + stages["learn"] + stages["rest"]
        assert math.isclose(parts, stages["total"]) and stages["learn"] > 0
        assert (stages["score"] > 0) is key.startswith("river-pandas")
    ratios = [paths[f"river-pandas-{chunk}"]["ratio"] for chunk in (32, 512)]
    assert [t["met"] for t in data["targets"]] == [r >= 0.7 for r in ratios]
    markdown = (tmp_path / "river_columns.md").read_text(encoding="utf-8")
    for heading in ("## Machine", "## Micro-batch 8", "## Target"):
        assert heading in markdown
    assert "| river pandas path, chunks of 32 " in markdown


# -- serving benchmark (issue 20) ----------------------------------------------------------------
def _serving(*options: str) -> str:
    """benchmarks/serving.py with ``options``, as a user runs it; its output."""
    command = [sys.executable, str(ROOT / "benchmarks" / "serving.py"), *options]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def serving_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """At a few hundred requests/s for fractions of a second per phase: every phase, the
    server with HTTP and gRPC, swaps on the filesystem registry."""
    out = tmp_path_factory.mktemp("serving-bench")
    printed = _serving(
        "--events", "600", "--calls", "50", "--rate", "200", "--seconds", "0.5", "--warmup",
        "0.2", "--concurrency", "2", "--connections", "4", "--channels", "2", "--sweep", "100",
        "200", "--sweep-seconds", "0.3", "--swaps", "2", "--swap-every", "0.4", "--no-redis",
        "--quiet-wait", "0", "--retries", "0", "--out", str(out),
    )  # fmt: skip
    assert "## Targets" in printed
    return out


def test_serving_benchmark_runs_every_phase(serving_out: Path) -> None:
    data = json.loads((serving_out / "serving.json").read_text(encoding="utf-8"))
    r = data["results"]
    assert r["server_processes"] >= 1 and data["machine"]["cpu"]
    assert set(r["in_process"]) == {
        "onnxruntime.run", "v1 path", "ASGI app v1", "ASGI app v2", "gRPC handler",
    }  # fmt: skip
    for phase in ("closed", "paced"):
        assert set(r[phase]) == {"v1", "v2", "grpc"}
        for stats in r[phase].values():
            assert stats["n"] > 0 and stats["failures"] == 0, stats
            assert stats["client_cpu_us"] > 0 and stats["server_cpu_us"] > 0
    for transport, stats in r["paced"].items():  # every connection was opened and placed
        assert sum(stats["spread"]) == (2 if transport == "grpc" else 4)
        assert stats["attempts"] == 1 and stats["quiet_wait_s"] == 0
    assert set(r["stack"]) == {"http-live", "grpc-live"}  # each stack alone
    assert all(s["n"] > 0 and s["failures"] == 0 for s in r["stack"].values())
    assert set(r["sweep"]) == {"v2", "grpc"}
    assert all(set(points) == {"100.0", "200.0"} for points in r["sweep"].values())
    swaps = r["swaps"]["filesystem"]
    assert swaps["rates"] == {"v1": 100.0, "grpc": 100.0}
    assert swaps["failures"] == 0 and swaps["unknown_versions"] == []
    assert swaps["versions_published"] == swaps["versions_seen_in_responses"] == 2
    targets = data["targets"]
    assert targets["rate"] == 200 and targets["at_target_rate"] is False
    assert targets["no_failures"] is True and targets["publish_met"] is True


def test_serving_benchmark_writes_report_and_plot(serving_out: Path) -> None:
    markdown = (serving_out / "serving.md").read_text(encoding="utf-8")
    for heading in (
        "## Targets",
        "## Latency (ms), throughput and CPU",
        "## Rate sweep",
        "## Where the CPU goes at the paced rate",
        "## Hot swaps under 200",
    ):
        assert heading in markdown  # fmt: skip
    assert "this run's --rate; the target is 2,000" in markdown
    assert "| gRPC paced at 200/s " in markdown and "server process(es)" in markdown
    assert "| gRPC ServerLive paced at 200/s (stack alone) " in markdown
    assert "in the sweep's run at this rate" in markdown  # the sweep had the paced rate
    png = (serving_out / "serving-sweep.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5_000
    # the report is rendered again from the JSON alone
    before = markdown
    (serving_out / "serving.md").unlink()
    _serving("--render", str(serving_out / "serving.json"))
    assert (serving_out / "serving.md").read_text(encoding="utf-8") == before
