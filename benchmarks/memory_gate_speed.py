"""What the error memory's gate costs in events/s: gate on, gate off, memory off, interleaved.

Suite runs time memory on and off once each, seconds apart, on a shared machine; this runs the
three settings in turn, ``--repeats`` times on the same rows of each stream, and prints the
median events/s of each as a markdown table (streamlearn's defaults otherwise).

  python benchmarks/memory_gate_speed.py sine-abrupt waveform friedman-gradual
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

from prequential import run_streamlearn
from report import fmt_rate, markdown_table
from suite_streams import SUITE, suite_rows

from streamlearn.settings import load_settings

VARIANTS = {"gate on": {}, "gate off": {"gate": False}, "memory off": {"enabled": False}}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("streams", nargs="+", choices=list(SUITE), metavar="STREAM")
    p.add_argument("--events", type=int, default=30_000, help="events per stream (30,000)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each setting (3)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    rows_out = []
    for name in args.streams:
        spec, rows = SUITE[name], suite_rows(name, args.events, args.seed)
        rates: dict[str, list[float]] = {key: [] for key in VARIANTS}
        for _ in range(args.repeats):
            for key, memory in VARIANTS.items():
                settings = load_settings(
                    learner={"task": spec.task, "seed": args.seed}, memory=memory
                )
                rates[key].append(run_streamlearn(settings, rows, progress=False).events_per_s)
        rows_out.append([name, *(fmt_rate(statistics.median(rates[key])) for key in VARIANTS)])
    print(markdown_table(["stream", *(f"{key}, events/s" for key in VARIANTS)], rows_out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
