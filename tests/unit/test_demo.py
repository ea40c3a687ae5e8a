"""`streamlearn demo`, the embedded main job: a drifting stream through the learner, a summary
with drift detections, and a PNG of prequential accuracy with the drift points."""

from __future__ import annotations

import io
import json
import os
import re
from itertools import pairwise
from pathlib import Path

import pytest

from streamlearn.cli import main
from streamlearn.demo.job import DemoReport, run_demo
from streamlearn.kernels.cpu import binding
from streamlearn.settings import load_settings

EVENTS = 4000


def _settings(**source):
    return load_settings(
        source={"stream": "sea-drift", "n_events": EVENTS, "seed": 3, **source},
        learner={"task": "binary", "seed": 3},
    )


@pytest.fixture(scope="module")
def sea(tmp_path_factory: pytest.TempPathFactory):
    """(report, what it printed on stdout, output folder); the progress bar goes elsewhere."""
    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        printed = io.StringIO()
        patch.setattr("sys.stdout", printed)
        report = run_demo(_settings(), out, stream=io.StringIO())
    return report, printed.getvalue(), out


def test_learns_every_event_and_beats_chance(sea) -> None:
    report, _, _ = sea
    assert report.events == EVENTS and not report.rejected
    assert 0.7 < report.overall <= 1.0  # SEA with 10 % label noise: ~0.85 when learned
    assert report.seconds >= report.process_seconds > 0


def test_reports_drifts_around_the_true_ones(sea) -> None:
    report, printed, _ = sea
    assert report.true_drifts == [1000, 2000, 3000]
    assert [w.position for w in report.around] == [1000, 2000, 3000]
    assert all(0 <= w.before <= 1 and 0 <= w.after <= 1 for w in report.around)
    assert report.detected  # SEA's concept changes are abrupt: some are caught
    for position in report.detected:  # each detection is printed as it happens
        assert f"drift detected at event {position:,}" in printed
    # segments between detections cover the whole stream, in order
    bounds = [(a, b) for a, b, _ in report.segments]
    assert bounds[0][0] == 0 and bounds[-1][1] == EVENTS
    assert all(b == c for (_, b), (c, _) in pairwise(bounds))


def test_summary_names_speed_accuracy_and_plot(sea) -> None:
    report, _, out = sea
    text = report.render()
    assert f"events learned    {EVENTS:,}" in text
    match = re.search(r"events/s +([\d,]+) end to end .*, ([\d,]+) in Prequential.process", text)
    assert match is not None
    end_to_end, learner = (int(g.replace(",", "")) for g in match.groups())
    assert 0 < end_to_end <= learner  # the source's own time only adds to the end-to-end figure
    assert f"prequential accuracy {report.overall:.4f}" in text
    assert report.linear_share is not None and 0.0 <= report.linear_share <= 1.0
    assert f"linear model      {report.linear_share:.2f} of the prediction" in text
    assert "true drifts       [1000, 2000, 3000]" in text
    assert report.switches is not None  # the pool is on by default
    past, fresh = report.switches
    assert f"model switches    {past} to past models, {fresh} to fresh ones" in text
    try:  # the compiled kernels wherever the installation built them
        binding.load()
        step = "compiled C kernels (learner.kernel), cpu"
        if len(os.sched_getaffinity(0)) >= 2:  # learner.overlap: auto
            step += ", updates on a second thread (learner.overlap)"
    except binding.KernelsUnavailable:
        step = "torch ops, cpu"
    assert f"training step     {step}" in text
    png = out / "demo-sea-drift.png"
    assert report.plot == png and png.read_bytes().startswith(b"\x89PNG")


def test_file_source_counts_bad_lines_and_goes_on(tmp_path: Path) -> None:
    lines = [json.dumps({"id": i, "x": {"a": i % 7, "b": "u" if i % 2 else "v"}, "y": i % 2})
             for i in range(200)]  # fmt: skip
    lines[10] = "not json"
    lines[20] = json.dumps({"id": 20, "x": {"a": float("inf")}})  # Infinity: non-finite
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = load_settings(source={"kind": "file", "path": path})
    report = run_demo(settings, None, stream=io.StringIO())
    assert report.events == 198 and report.plot is None
    assert report.rejected == {"not_json": 1, "non_finite": 1}
    assert "rejected          {'not_json': 1, 'non_finite': 1}" in report.render()


def test_command_line_prints_the_summary(tmp_path: Path, capsys) -> None:
    code = main(
        ["demo", "--stream", "sea-drift", "--events", "1500", "--seed", "5",
         "--out", str(tmp_path), "--no-plot"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "events learned    1,500" in printed and "prequential accuracy" in printed
    assert not list(tmp_path.iterdir())  # --no-plot: no PNG


def test_summary_says_when_there_is_no_linear_model() -> None:
    assert "linear model      none (regression" in DemoReport(linear_share=None).render()


def test_summary_names_the_neighbour_votes_share() -> None:
    assert "neighbour vote    none (regression" in DemoReport().render()
    assert "neighbour vote    0.25 of the prediction" in DemoReport(neighbour_share=0.25).render()


def test_summary_says_when_there_is_no_expert_pool() -> None:
    text = DemoReport(switches=None).render()
    assert "model switches    none (experts.enabled: false)" in text
