"""Smoke test of benchmarks/suite.py: a classification, a categorical and a regression stream.

Runs the real command line in a subprocess on 400 events per stream at two seeds with the fast
peers only (river's linear models and Hoeffding trees; no forests, no deep-river) and checks the
tables, the JSON, the plots and that the targets are computed from the runs' means.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_run import run_benchmark

STREAMS = ("sea-gradual", "stagger-recurring", "chick-weights")
SLOW = "river-arf,river-amf,river-arfr,river-amrules,deep-river"


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("suite")
    run_benchmark(
        "suite.py", "--events", "400", "--seed", "3", "4", "--streams", *STREAMS,
        "--skip-peers", SLOW, "--out", str(out), "--no-progress",
    )  # fmt: skip
    return out


def test_writes_tables_json_and_plots(out: Path) -> None:
    markdown = (out / "suite.md").read_text(encoding="utf-8")
    for section in ("## Machine", "## Targets", "## Summary", *(f"## {s}" for s in STREAMS)):
        assert section in markdown
    assert "| streamlearn (memory off) " in markdown
    assert "river StandardScaler \\| LinearRegression" in markdown  # regression peers
    assert "deep-river" in markdown and "skipped" in markdown
    # peers left out are named under the targets, which are over the peers that ran
    assert "**Not every peer ran** (deep-river on 3 of 3 streams" in markdown
    assert "seeds 3, 4: every stream and model run at each" in markdown
    assert "accuracy at each seed" in markdown and "MAE at each seed" in markdown
    for stream in STREAMS:
        png = (out / f"suite-{stream}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5_000


def test_numbers_come_from_the_run(out: Path) -> None:
    data = json.loads((out / "suite.json").read_text(encoding="utf-8"))
    sea = data["streams"]["sea-gradual"]
    assert sea["drift_positions"] == [133, 266]
    models = sea["models"]
    assert {"streamlearn", "streamlearn-memory-off", "river-scaled-lr", "river-hat"} <= set(models)
    assert set(sea["seeds"]) == {"3", "4"}
    for key, model in models.items():  # means over the seeds' own runs, events pooled
        runs = [sea["seeds"][seed]["models"][key] for seed in ("3", "4")]
        assert all(run["events"] == 400 for run in runs) and model["events"] == 800
        assert model["value_per_seed"] == [run["value"] for run in runs]
        assert model["value"] == pytest.approx((runs[0]["value"] + runs[1]["value"]) / 2)
        assert model["events_per_s"] == pytest.approx(800 / sum(r["seconds"] for r in runs))
    # the seeds draw different streams: the two runs differ
    assert models["streamlearn"]["value_per_seed"][0] != models["streamlearn"]["value_per_seed"][1]
    summary = sea["summary"]
    best = max(m["value"] for k, m in models.items() if not k.startswith("streamlearn"))
    assert summary["gap"] == pytest.approx(100 * (models["streamlearn"]["value"] - best))
    assert len(summary["memory_gain_after_drift"]) == 2
    chick = data["streams"]["chick-weights"]
    assert chick["task"] == "regression" and chick["summary"]["metric"] == "MAE"
    assert chick["seeds"]["3"]["models"]["streamlearn"]["events"] == 400  # 578 rows, cut
    assert set(chick["models"]) >= {"river-linreg", "river-scaled-linreg", "river-hatr"}
    assert chick["summary"]["speed"]["peer"] == "river StandardScaler | LinearRegression"
    # string features reach the linear peers one-hot encoded (river's LR alone raises on them)
    stagger = data["streams"]["stagger-recurring"]["models"]
    assert stagger["river-scaled-lr"]["events"] == stagger["river-lr"]["events"] == 800
    assert len(data["targets"]) == 5
    assert all(isinstance(t["met"], bool) for t in data["targets"])


def test_targets_over_no_stream_of_their_kind_are_not_judged(monkeypatch) -> None:
    """A run of regression streams only: the classification targets read "—" (met None), not
    "missed" over NaN; the regression target is judged."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[2] / "benchmarks"))
    from prequential_report import StreamResult
    from report import ModelRun, score_from_errors
    from suite_report import SeededStream, targets, targets_section

    result = StreamResult("chick-weights", "chicks", "regression", [])
    for key, name, error in (
        ("streamlearn", "streamlearn", 1.0),
        ("river-scaled-linreg", "river StandardScaler | LinearRegression", 2.0),
    ):
        result.add(ModelRun(key, name, score_from_errors([error] * 10), 0.01))
    stream = SeededStream({1: result})
    by_target = {t["target"]: t for t in targets([stream])}
    regression = by_target["MAE ≤ the best peer's on every regression stream"]
    assert regression["met"] is True and regression["measured"] == "chick-weights +50.0 %"
    unjudged = [t for t in by_target.values() if t["met"] is None]
    assert len(unjudged) == 2 and all("no such stream" in t["measured"] for t in unjudged)
    section = targets_section([stream])
    assert "nan" not in section and section.count("| —          |") == 2


def test_a_model_missing_at_some_seed_is_not_compared(monkeypatch) -> None:
    """Means over the seeds compare like with like: a peer that ran at one seed of two is left
    out of the best peer and named with the seeds it ran at."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[2] / "benchmarks"))
    from prequential_report import StreamResult
    from report import ModelRun, score_from_hits
    from suite_report import SeededStream, best_peer, summarise

    by_seed = {}
    for seed, (ours, theirs) in {1: (0.8, 0.7), 2: (0.6, 0.5)}.items():
        result = StreamResult("phishing", "pages", "binary", [])
        for key, share in (("streamlearn", ours), ("river-scaled-lr", theirs)):
            hits = [True] * int(share * 10) + [False] * (10 - int(share * 10))
            result.add(ModelRun(key, key, score_from_hits(hits), 0.5))
        if seed == 1:  # a strong peer that ran at one seed only
            result.add(ModelRun("river-arf", "river ARF", score_from_hits([True] * 10), 0.5))
        by_seed[seed] = result
    stream = SeededStream(by_seed)
    assert stream.compared() == ["streamlearn", "river-scaled-lr"]
    assert best_peer(stream) == "river-scaled-lr"
    assert stream.skipped() == {"river-arf": "ran at 1 of 2 seeds: not compared"}
    summary = summarise(stream)
    assert summary["streamlearn"] == pytest.approx(0.7) and summary["best_peer_value"] == 0.6
    assert summary["gap"] == pytest.approx(10.0) and summary["at_least_best"]
    assert stream.events_per_s("streamlearn") == pytest.approx(20 / 1.0)
