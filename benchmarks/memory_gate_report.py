"""The error memory's gain before and after a change, per stream, from ``suite.py`` runs.

Reads the ``suite.json`` of runs of the code before (``--before``) and after (``--after``) and
writes one markdown table: per stream, the memory's gain (on minus off: accuracy points, or
MAE off minus on) overall and over the 1,000 events after each drift, before and after, and
the memory-on events/s against memory off. Each side may be several runs (different streams);
their commands and machines are listed.

  python benchmarks/memory_gate_report.py --before /tmp/a/suite.json --after /tmp/b/suite.json \
      --out benchmarks/results/memory_gate.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from report import fmt_rate, markdown_table
from suite_report import MEMORY_OFF


def _load(paths: Sequence[Path]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Streams by name and the runs' meta, from several suite.json files."""
    streams: dict[str, Any] = {}
    metas = []
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        streams.update(data["streams"])
        metas.append(data["meta"])
    return streams, metas


def _gain(value: float, regression: bool) -> str:
    return f"{value:+.3f}" if regression else f"{value:+.2f}"


def _gains(summary: dict[str, Any]) -> tuple[str, str]:
    regression = summary["metric"] == "MAE"
    after = summary.get("memory_gain_after_drift") or []
    return (
        _gain(summary["memory_gain_overall"], regression),
        " / ".join(_gain(g, regression) for g in after) or "—",
    )


def _speed(stream: dict[str, Any]) -> str:
    """Memory-on events/s as a share of memory-off's, in the same run."""
    models = stream["models"]
    on, off = models["streamlearn"]["events_per_s"], models[MEMORY_OFF]["events_per_s"]
    return f"{fmt_rate(on)} / {fmt_rate(off)}"


def render(before: Sequence[Path], after: Sequence[Path]) -> str:
    old, old_meta = _load(before)
    new, new_meta = _load(after)
    rows = []
    for name, stream in new.items():
        if name not in old:
            continue
        summary, previous = stream["summary"], old[name]["summary"]
        was_overall, was_drift = _gains(previous)
        now_overall, now_drift = _gains(summary)
        rows.append(
            [
                name,
                summary["metric"],
                was_overall,
                now_overall,
                was_drift,
                now_drift,
                _speed(old[name]),
                _speed(stream),
            ]
        )
    headers = [
        "stream",
        "metric",
        "gain overall, before",
        "after",
        "gain after each drift, before",
        "after",
        "events/s on / off, before",
        "after",
    ]
    lines = ["## Runs", ""]
    for label, metas in (("before", old_meta), ("after", new_meta)):
        for meta in metas:
            machine = meta["machine"]
            lines.append(
                f"- {label}: `{meta['command']}` (started {meta['started']}, {meta['seconds']} s, "
                f"{meta['events']:,} events, seed {meta['seed']}; {machine['cpu_count']} logical "
                f"cores, {machine['cpu']}; load average {meta['load_average_1m']})"
            )
    return "\n".join([markdown_table(headers, rows), "", *lines, ""])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--before", type=Path, nargs="+", required=True, help="suite.json files")
    p.add_argument("--after", type=Path, nargs="+", required=True, help="suite.json files")
    p.add_argument("--out", type=Path, help="write the table here (default: print it)")
    args = p.parse_args(argv)
    text = render(args.before, args.after)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
