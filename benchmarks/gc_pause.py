"""GC pause: one full garbage collection of a worker's and of a server's start-up heap, and the
worker loop through Kafka with that heap frozen out of full collections (streamlearn/heap.py, as
``streamlearn worker`` and ``streamlearn serve`` do) or not.

    python benchmarks/gc_pause.py --out benchmarks/results      # starts its own tansu broker
    python benchmarks/gc_pause.py --bootstrap HOST:PORT --clients confluent

The pause: in a fresh Python process per role, what the role builds before it runs (worker:
the worker's modules, both Kafka clients and a ``Prequential`` at the defaults; server: the
serving app and runtime on a filesystem registry, and onnxruntime, which the first model
loads), then the median seconds of one full collection (``gc.collect()``) over ``--repeats``,
before and after ``freeze_startup_heap()``, with the objects the collector tracks.

The loop: the real ``Worker`` through a local tansu broker (``kafka_throughput.through_kafka``,
defaults, ``--events`` events), with each of ``--clients``, each without and with
predictions to an output topic, once with the heap frozen and once not in each of ``--rounds``
interleaved rounds: events/s (its timed span, as kafka_throughput.py times it) and the seconds
spent in the collector over the whole run (``gc.callbacks``; the group join included), with
the full collections counted. Not frozen, the heap holds the benchmark's own messages as well
as the worker's start-up objects, as a worker's heap holds what it built.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kafka_throughput import frozen_heap, load_topic, settings_for, start_tansu, through_kafka
from report import RunStart, command_line, doc_parser, fmt_rate, markdown_table, write_json

from streamlearn.heap import freeze_startup_heap
from streamlearn.worker.kafka.produce import synthetic_messages

ROLES = ("worker", "server")
CLIENTS = ("confluent", "kafka-python")


def build_role(role: str, scratch: Path) -> Any:
    """What a ``role`` process has built when it starts to run; kept alive by the caller."""
    from streamlearn.app import build_prequential, build_registry, build_server
    from streamlearn.settings import load_settings

    if role == "worker":
        import confluent_kafka  # noqa: F401  (the clients' modules, as a worker holds them)
        import kafka  # noqa: F401

        import streamlearn.worker.loop  # noqa: F401

        return build_prequential(load_settings())
    import onnxruntime  # noqa: F401
    from prometheus_client import CollectorRegistry

    settings = load_settings(registry={"kind": "filesystem", "path": str(scratch)})
    return build_server(settings, build_registry(settings), CollectorRegistry())


def collection_seconds(repeats: int) -> float:
    """The median seconds of one full collection, over ``repeats``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pause_in_this_process(role: str, repeats: int) -> dict[str, Any]:
    """The pause of one full collection after ``role``'s start-up, before and after the
    freeze (run in a fresh process: see measure_pause)."""
    with tempfile.TemporaryDirectory() as scratch:
        built = build_role(role, Path(scratch))
        before = {"seconds": collection_seconds(repeats), "tracked": len(gc.get_objects())}
        frozen = freeze_startup_heap()
        after = {"seconds": collection_seconds(repeats), "tracked": len(gc.get_objects())}
        del built
    return {"before": before, "after": after, "frozen": frozen}


def measure_pause(role: str, repeats: int) -> dict[str, Any]:
    """pause_in_this_process in a fresh Python process: only what the role imports and builds."""
    out = subprocess.run(
        [sys.executable, __file__, "--pause-of", role, "--repeats", str(repeats)],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


class CollectorClock:
    """Seconds inside the garbage collector and collections per generation, while installed."""

    def __init__(self) -> None:
        self.seconds, self.collections, self._started = 0.0, [0, 0, 0], 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    @contextmanager
    def installed(self) -> Iterator[CollectorClock]:
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)


def loop_runs(
    bootstrap: str,
    topic: str,
    clients: Sequence[str],
    events: int,
    rounds: int,
    progress: Callable[[str], None],
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per path (each client without and with an output topic), per "frozen"/"not frozen":
    each round's events/s, GC seconds and collections."""
    paths = [client + output for client in clients for output in ("", "+output")]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        path: {"frozen": [], "not frozen": []} for path in paths
    }
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(rounds):
            for path in paths:
                client, _, output = path.partition("+")
                order = ("frozen", "not frozen") if round_ % 2 == 0 else ("not frozen", "frozen")
                for state in order:
                    progress(f"round {round_ + 1}/{rounds}: {path}, heap {state} ...")
                    predictions = f"{topic}-{uuid.uuid4().hex[:6]}" if output else None
                    settings = settings_for(
                        bootstrap, topic, client, predictions, Path(scratch) / uuid.uuid4().hex, {}
                    )
                    with frozen_heap(state == "frozen"), CollectorClock().installed() as clock:
                        seconds, learned, *_ = through_kafka(settings, events)
                    runs[path][state].append({
                        "events_per_s": learned / seconds, "gc_s": clock.seconds,
                        "collections": clock.collections,
                    })  # fmt: skip
    return runs


def report(results: dict[str, Any], out: Path) -> Path:
    pause_rows = [
        [
            role,
            f"{r['before']['tracked']:,}",
            f"{1e3 * r['before']['seconds']:.1f}",
            f"{r['frozen']:,}",
            f"{r['after']['tracked']:,}",
            f"{1e3 * r['after']['seconds']:.2f}",
        ]
        for role, r in results["pause"].items()
    ]
    loop_rows = []
    for path, states in results["loop"].items():
        for state, runs in states.items():
            rates = [r["events_per_s"] for r in runs]
            loop_rows.append([
                path, state, fmt_rate(statistics.median(rates)),
                " / ".join(fmt_rate(r) for r in rates),
                " / ".join(f"{1e3 * r['gc_s']:.0f}" for r in runs),
                " / ".join(str(r["collections"][2]) for r in runs),
            ])  # fmt: skip
    meta = results["meta"]
    text = "\n".join(
        [
            "# GC pause: full collections of the start-up heap, frozen or not",
            "",
            f"Produced by `{meta['command']}` (started {meta['started']}, {meta['seconds']} s). "
            "See the script's docstring for what each part does. Machine: "
            f"{meta['machine'].get('cpu')}, {meta['machine'].get('cpu_count')} logical cores; "
            f"load average (1 min) at start / end: {meta['load_average_1m']['start']} / "
            f"{meta['load_average_1m']['end']}.",
            "",
            "## One full collection after start-up",
            "",
            markdown_table(
                [
                    "process",
                    "objects tracked",
                    "full collection (ms)",
                    "frozen",
                    "tracked after the freeze",
                    "full collection after (ms)",
                ],
                pause_rows,
            ),
            "",
            f"## The worker loop through Kafka ({results['events']:,} events, defaults)",
            "",
            "Events/s over the timed span (median of the rounds; runs in round order); the "
            "collector's milliseconds and full (oldest-generation) collections over each whole "
            "run.",
            "",
            markdown_table(
                [
                    "path",
                    "heap",
                    "events/s",
                    "runs (events/s)",
                    "in the collector (ms)",
                    "full collections",
                ],
                loop_rows,
            ),
            "",
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gc_pause.md"
    path.write_text(text, encoding="utf-8")
    write_json(out / "gc_pause.json", results)
    return path


def client_list(text: str) -> list[str]:
    """``--clients``: comma-separated names, each one of CLIENTS."""
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(CLIENTS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown client(s) {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(CLIENTS)}"
        )
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = doc_parser("gc_pause.py", __doc__ or "")
    parser.add_argument("--repeats", type=int, default=5, help="full collections timed per state")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the loop")
    parser.add_argument("--events", type=int, default=51_200, help="events per loop run")
    parser.add_argument("--bootstrap", help="use this broker instead of starting tansu")
    parser.add_argument(
        "--clients",
        type=client_list,
        default=list(CLIENTS),
        help=f"comma-separated Kafka clients of the loop runs (default: {','.join(CLIENTS)})",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results"), help="folder for gc_pause.md/.json"
    )
    parser.add_argument("--pause-of", choices=ROLES, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args(argv)
    if args.pause_of:
        print(json.dumps(pause_in_this_process(args.pause_of, args.repeats)))
        return 0
    start = RunStart.now()

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    pause = {}
    for role in ROLES:
        progress(f"the pause of a {role}'s full collection ...")
        pause[role] = measure_pause(role, args.repeats)
    broker, bootstrap = (None, args.bootstrap) if args.bootstrap else start_tansu()
    try:
        messages = list(synthetic_messages("agrawal-drift", args.events, 42))
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        load_topic(bootstrap, topic, messages)
        loop = loop_runs(bootstrap, topic, args.clients, args.events, args.rounds, progress)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    results = {
        "meta": start.meta(command_line()),
        "events": args.events,
        "pause": pause,
        "loop": loop,
    }
    print(report(results, args.out).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
