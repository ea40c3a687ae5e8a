"""Speed of this tree against an earlier commit, both measured alike in one run (issue 18).

streamlearn's default model (the prequential benchmark's `streamlearn` column) runs at a
baseline commit REV and in this working tree. Every run is a subprocess of
benchmarks/timing_runner.py with PYTHONPATH set to one source tree: this one, or a `git
worktree` of REV in a temporary folder (where REV has a setup.py, its compiled kernels are
built there first, as installing it would; the folder is removed afterwards). One untimed
warm-up run per side comes first (kernels that compile on first use do so then); then, per
stream, baseline, current, baseline, current, ... `repeats` times each, so that load from other
work hits both sides alike. A side's figure on a stream is the median events/s of its runs; the
ratio is current / baseline per stream and over all streams (all events / the sum of each
side's median seconds). The target: the ratio over all streams ≥ 0.95.

prequential.py --baseline REV runs it and writes <out>/speed_vs_baseline.md and .json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from typing import Any

from report import RunStart, fmt_float, fmt_rate, load_average, markdown_table, write_json
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).with_name("timing_runner.py")
SIDES = ("baseline", "current")
TARGET_RATIO = 0.95
WARMUP_EVENTS = 2_000  # events of the untimed warm-up run per side
WATCHED = ("streamlearn", "setup.py", "pyproject.toml")  # what makes a working tree "changed"
NAME = "speed_vs_baseline"


# -- git ----------------------------------------------------------------------------------------
def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def resolve(rev: str) -> str:
    """REV's full commit hash; ValueError where this repository has no such commit."""
    try:
        return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RuntimeError:
        raise ValueError(f"{rev!r} is not a commit of {ROOT}") from None


def _commit(sha: str) -> dict[str, str]:
    return {"commit": sha, "subject": git("log", "-1", "--format=%s", sha)}


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """A checkout of ``commit`` in a temporary folder, with its compiled kernels built where
    it builds them with setup.py; removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix="streamlearn-baseline-")).resolve()
    tree = folder / commit[:12]
    git("worktree", "add", "--detach", str(tree), commit)
    try:
        if (tree / "setup.py").exists():
            build = [sys.executable, "setup.py", "-q", "build_ext", "--inplace"]
            done = subprocess.run(build, cwd=tree, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"building {commit[:12]}'s kernels:\n{done.stderr[-3000:]}")
        yield tree
    finally:
        git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(folder, ignore_errors=True)


# -- measuring ----------------------------------------------------------------------------------
def timed_run(tree: Path, stream: str, events: int, seed: int) -> dict[str, Any]:
    """One run of timing_runner.py with ``tree``'s streamlearn: its JSON line, plus the load
    average just before it. Raises RuntimeError when it fails or runs another tree's code."""
    command = [sys.executable, str(RUNNER), "--stream", stream]
    command += ["--events", str(events), "--seed", str(seed)]
    load = load_average()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"timing_runner.py on {stream} with {tree}:\n{done.stderr[-3000:]}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(run["prequential_file"]).resolve().is_relative_to(tree):
        raise RuntimeError(f"PYTHONPATH={tree} ran Prequential of {run['prequential_file']}")
    return {**run, "load_average_1m": load}


def compare(
    rev: str,
    streams: Sequence[str],
    events: int,
    seed: int,
    repeats: int,
    command: str,
) -> dict[str, Any]:
    """Measure both sides, interleaved, and summarise them (the JSON document written)."""
    baseline = resolve(rev)
    start = RunStart.now()
    changed = git("status", "--porcelain", "--", *WATCHED).splitlines()
    sides = {
        "baseline": {"rev": rev, **_commit(baseline)},
        "current": {**_commit(git("rev-parse", "HEAD")), "uncommitted_files": len(changed)},
    }
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with worktree(baseline) as tree:
        trees = {"baseline": tree, "current": ROOT}
        for side in SIDES:
            timed_run(trees[side], streams[0], min(events, WARMUP_EVENTS), seed)
        for stream in streams:
            runs[stream] = {side: [] for side in SIDES}
            for i in range(repeats):
                for side in SIDES:
                    run = timed_run(trees[side], stream, events, seed)
                    runs[stream][side].append(run)
                    tqdm.write(
                        f"  {stream:<14} {side:<8} {i + 1}/{repeats}"
                        f"  {fmt_rate(run['events_per_s']):>9} events/s  ({run['kernel']})"
                    )
            if len({r["rows_sha256"] for side in SIDES for r in runs[stream][side]}) > 1:
                raise RuntimeError(f"{stream}: the two commits generate different rows")
    meta = start.meta(
        command,
        events=events,
        seed=seed,
        repeats=repeats,
        warmup_events=min(events, WARMUP_EVENTS),
    )
    return {**meta, **sides, **summarise(runs)}


def _side(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    first = runs[0]
    keep = ("accuracy", "kernel", "prequential", "settings")
    return {
        "events_per_s": median(r["events_per_s"] for r in runs),
        "runs_events_per_s": [r["events_per_s"] for r in runs],
        "load_average_1m": [r["load_average_1m"] for r in runs],
        **{key: first[key] for key in keep},
    }


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return {prefix: value}
    return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}.{key}").items()}


def _differences(stream: str, base: Mapping[str, Any], cur: Mapping[str, Any]) -> list[str]:
    """What differs on a stream between the sides besides speed: accuracy, settings."""
    notes = []
    if base["accuracy"] != cur["accuracy"]:
        notes.append(
            f"{stream}: accuracy differs, {fmt_float(base['accuracy'], 4)} at the baseline, "
            f"{fmt_float(cur['accuracy'], 4)} now"
        )
    old, new = _flat(base["settings"]), _flat(cur["settings"])
    differ = sorted(k.lstrip(".") for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if differ:
        notes.append(f"{stream}: settings differ in {', '.join(differ)}")
    return notes


def summarise(runs: Mapping[str, Mapping[str, Sequence[dict[str, Any]]]]) -> dict[str, Any]:
    """Per stream each side's median events/s and the ratio; the same over all streams; the
    target; notes on anything that makes the two sides differ other than their code's speed."""
    streams: dict[str, dict[str, Any]] = {}
    seconds = dict.fromkeys(SIDES, 0.0)
    notes: list[str] = []
    for stream, by_side in runs.items():
        events = by_side["baseline"][0]["events"]
        entry: dict[str, Any] = {"events": events, **{s: _side(by_side[s]) for s in SIDES}}
        entry["ratio"] = entry["current"]["events_per_s"] / entry["baseline"]["events_per_s"]
        streams[stream] = entry
        for side in SIDES:
            seconds[side] += events / entry[side]["events_per_s"]
        notes += _differences(stream, entry["baseline"], entry["current"])
    events = sum(s["events"] for s in streams.values())
    overall = {side: events / seconds[side] for side in SIDES}
    ratio = overall["current"] / overall["baseline"]
    kernels = {side: sorted({s[side]["kernel"] for s in streams.values()}) for side in SIDES}
    if kernels["baseline"] != kernels["current"]:
        notes.insert(
            0,
            f"the sides ran different training steps (baseline {', '.join(kernels['baseline'])}, "
            f"current {', '.join(kernels['current'])}): the ratio is not the code's alone",
        )
    return {
        "streams": streams,
        "overall": {"events_per_s": overall, "ratio": ratio},
        "target": {"ratio_min": TARGET_RATIO, "ratio": ratio, "met": bool(ratio >= TARGET_RATIO)},
        "notes": notes,
    }


# -- report -------------------------------------------------------------------------------------
def _current_name(current: Mapping[str, Any]) -> str:
    changed = current["uncommitted_files"]
    state = f"with {changed} uncommitted file(s) in {', '.join(WATCHED)}" if changed else "clean"
    return f"the working tree at {current['commit'][:7]} ({state})"


def section(data: Mapping[str, Any]) -> str:
    """The comparison as a markdown section: the table, the target line and the notes."""
    base, cur = data["baseline"], data["current"]
    rows = []
    for stream, entry in data["streams"].items():
        b, c = entry["baseline"], entry["current"]
        rows.append(
            [
                stream,
                fmt_rate(b["events_per_s"]),
                fmt_rate(c["events_per_s"]),
                f"{entry['ratio']:.3f}",
                " / ".join(fmt_rate(v) for v in b["runs_events_per_s"]),
                " / ".join(fmt_rate(v) for v in c["runs_events_per_s"]),
                f"{fmt_float(b['accuracy'], 4)} / {fmt_float(c['accuracy'], 4)}",
            ]
        )
    total = data["overall"]
    rows.append(
        [
            "all streams",
            fmt_rate(total["events_per_s"]["baseline"]),
            fmt_rate(total["events_per_s"]["current"]),
            f"{total['ratio']:.3f}",
            "",
            "",
            "",
        ]
    )
    target = data["target"]
    verdict = "met" if target["met"] else "NOT met"
    first = next(iter(data["streams"].values()))
    lines = [
        f"## Speed against {base['rev']} (issue 18)",
        "",
        f"Baseline: {base['commit'][:7]} ({base['subject']}); current: {_current_name(cur)}. "
        f"streamlearn's default model through Prequential.process_columns, {data['events']:,} "
        f"events per stream, seed {data['seed']}, each run a fresh process "
        "(benchmarks/timing_runner.py) with one tree on PYTHONPATH; after one untimed warm-up "
        f"run per side, {data['repeats']} timed run(s) per side and stream, interleaved "
        "(baseline, current, baseline, …). events/s: the median of a side's runs; all "
        "streams: all events / the sum of the medians' seconds.",
        "",
        markdown_table(
            [
                "stream",
                f"{base['commit'][:7]} events/s",
                "current events/s",
                "current / baseline",
                "baseline runs",
                "current runs",
                "accuracy baseline / current",
            ],
            rows,
        ),
        "",
        f"**ratio ≥ {target['ratio_min']:g}: {verdict}** (all streams: {target['ratio']:.3f})",
        "",
        f"- training step: baseline {first['baseline']['kernel']} "
        f"(Prequential from {first['baseline']['prequential']}), current "
        f"{first['current']['kernel']} (from {first['current']['prequential']})",
        *(f"- {note}" for note in data["notes"]),
        "",
    ]
    return "\n".join(lines)


def render(data: Mapping[str, Any]) -> str:
    """speed_vs_baseline.md: provenance, machine and load, then the section."""
    m, load = data["machine"], data["load_average_1m"]
    return "\n".join(
        [
            f"# streamlearn speed: this tree against {data['baseline']['rev']}",
            "",
            f"Produced by `{data['command']}` (started {data['started']}, {data['seconds']:,} s).",
            "",
            f"- CPU: {m['cpu_count']} logical cores ({m['cpu']}); {m['platform']}; python "
            f"{m['python']}, torch {m['torch']}",
            f"- load average (1 min) at start / end: {load['start']} / {load['end']} (other "
            "work on the machine lowers both sides' events/s; the interleaving spreads it over "
            "both)",
            "",
            section(data),
        ]
    )


def write(out: Path, data: Mapping[str, Any]) -> str:
    """Write <out>/speed_vs_baseline.md and .json; return the markdown."""
    markdown = render(data)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.md").write_text(markdown, encoding="utf-8")
    write_json(out / f"{NAME}.json", data)
    return markdown
