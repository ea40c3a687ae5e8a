"""Markdown, JSON and targets of benchmarks/kafka_throughput.py's results."""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
from datetime import datetime
from typing import Any

from report import command_line, fmt_rate, load_average, machine_info, markdown_table, write_json

from streamlearn.settings import Settings

TARGET_RATE = 150_000  # confluent-kafka, events/s
# × the same learner from memory; kafka-python's in the worker's process or a child's
TARGET_RATIO = {"confluent": 0.8, "kafka-python": 0.6, "kafka-python-process": 0.6}
# from-memory runs further apart than this (fastest over slowest): the machine's load moved by
# more than the ratios' differences, and the report says so
NOISY_SPREAD = 1.2
_SETTINGS = {  # --preset: what the settings line calls the settings every path ran with
    "defaults": "streamlearn's defaults",
    "throughput": "the throughput preset (`--preset throughput`, on top of the defaults)",
}
NAMES = {
    "memory": "from memory: the worker's decoder (msgspec rows → slots) + learn",
    "memory-predecoded": "from memory, pre-decoded (learn only)",
    "stdlib": "from memory: events.decode (json.loads) + learn by dicts, as before",
    "kafka-python": "Kafka, kafka-python",
    "kafka-python+output": "Kafka, kafka-python, predictions to an output topic",
    "kafka-python-own-parser": "Kafka, kafka-python with its own record parser (before "
    "`records.c`)",
    "kafka-python-own-parser+output": "Kafka, kafka-python with its own record parser, "
    "predictions to an output topic",
    "kafka-python-process": "Kafka, kafka-python in a child process (`kafka.reader_process`)",
    "kafka-python-process+output": "Kafka, kafka-python in a child process, predictions to an "
    "output topic",
    "confluent": "Kafka, confluent-kafka",
    "confluent+output": "Kafka, confluent-kafka, predictions to an output topic",
}
PARSING = {
    "polled": "kafka-python polls + decode + learn, one thread",
    "polled-thread": "kafka-python polls on a thread of their own + decode + learn",
}
DECODE = {
    "consume": "confluent-kafka consume from the broker, no decoding",
    "consume+json": "+ `json.loads`",
    "consume-kafka-python": "kafka-python consume from the broker, no decoding (its own parser)",
    "consume-kafka-python-native": "kafka-python consume, records parsed by streamlearn's "
    "`records.c` (the worker's reader), no decoding",
    "json": "`json.loads` alone (from memory)",
    "orjson": "`orjson.loads` alone",
    "msgspec": "`msgspec` typed decode alone (the wire format as a Struct)",
    "events.decode": "`events.decode` alone (json.loads + validation: the reference)",
    "EventDecoder.event": "`EventDecoder.event` alone (msgspec, validated Event with a dict)",
    "EventDecoder.rows": "`EventDecoder.rows` + `features` (validated rows → encoded batch)",
}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def targets(results: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """confluent-kafka: ≥ TARGET_RATE events/s and ≥ its ratio; kafka-python: ≥ its ratio
    (the median of its runs' ratios to the from-memory runs right before them), both with the
    loop's time in checkpoints and lag lookups at the default cadence counted."""
    met = {}
    for client, ratio in TARGET_RATIO.items():
        if client in results:
            result = results[client]
            fast = client != "confluent" or result["loop_events_per_s"] >= TARGET_RATE
            met[client] = result["loop_ratio"] >= ratio and fast
    return met


STAGES = ("poll", "decode", "learn", "metrics")
STAGE_HEADER = [
    "path", *STAGES, "rest", "total (µs/event)", "lag lookup (ms)", "checkpoint (ms)",
]  # fmt: skip


def reference_spread(results: dict[str, dict[str, Any]]) -> str:
    """A line on how far apart the run's from-memory runs (every ratio's reference) were,
    saying when they were too far apart (NOISY_SPREAD) for the ratios to be compared."""
    rates = [rate for result in results.values() for rate in result["reference_runs"]]
    low, high = min(rates), max(rates)
    line = (
        f"The from-memory runs (each ratio's reference) took {low:,.0f}–{high:,.0f} events/s, "
        f"the fastest {high / low:.2f}× the slowest"
    )
    if high / low > NOISY_SPREAD:
        return (
            f"{line}: **a noisy run** (over {NOISY_SPREAD:g}×): the machine's load changed "
            "between runs by more than the ratios differ; rerun on a quieter machine before "
            "comparing its figures."
        )
    return f"{line}."


def _apart(seconds: float, interval_s: float) -> str:
    """One periodic step's ms and its share of the loop's time at ``interval_s``."""
    return f"{1000 * seconds:.0f} ({100 * seconds / (interval_s + seconds):.1f} %)"


def _stage_rows(
    results: dict[str, dict[str, Any]], lag_interval_s: float, checkpoint_s: float
) -> list[list[str]]:
    """µs per event (and share of the counted time) in each stage and in the rest of the loop,
    for each Kafka path; then one lag lookup's and one checkpoint's ms, and their share at the
    default intervals."""
    rows = []
    for key, result in results.items():
        stages = result.get("stages_s")
        if not stages:
            continue
        total = stages["total"]
        spent = [stages[stage] for stage in STAGES]
        cells = [
            f"{1e6 * s / result['events']:.2f} ({100 * s / total:.0f} %)"
            for s in (*spent, total - sum(spent))
        ]
        rows.append([
            NAMES[key], *cells, f"{1e6 * total / result['events']:.2f}",
            _apart(stages["lag"], lag_interval_s), _apart(stages["checkpoint"], checkpoint_s),
        ])  # fmt: skip
    return rows


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, Any]],
    extra: dict[str, Any],
    started: datetime,
    load_start: float | None,
    broker: str,
    settings: Settings,
) -> None:
    """The Markdown and JSON results; ``settings``: those every path ran with (the defaults,
    or ``args.preset`` on top)."""
    shown = {**results, "stdlib": extra["stdlib"]}
    rows = [
        [NAMES[k], fmt_rate(r["events_per_s"]), f"{r['ratio']:.2f}", _with_periodic(r),
         " / ".join(fmt_rate(x) for x in r["runs"]), _first_batch_ms(r)]
        for k, r in shown.items()
    ]  # fmt: skip
    met = targets(results)
    machine = machine_info()
    for package in ("kafka-python", "confluent-kafka", "msgspec", "orjson"):
        machine[package.replace("-", "_")] = _version(package)
    load_end = load_average()
    lag_interval = settings.metrics.lag_interval_s
    decode = extra["decode"]
    lines = [
        "# Kafka throughput: the worker through a broker vs the same learner from memory",
        "",
        f"Produced by `{command_line()}` (started {started.isoformat(timespec='seconds')}); "
        f"{args.events:,} events of `{args.stream}`; broker: {broker}, one partition. "
        f"{args.repeats} rounds, each running every path once in turn, every other path right "
        "after a from-memory run of its own: events/s is the median of a path's runs, × from "
        "memory the median of its runs' ratios to the from-memory runs right before them (on a "
        "shared machine the load drifts, and the learner's speed with it: runs seconds apart "
        "see about the same load). Every run starts with the process's heap frozen out of the "
        "garbage collector's full collections, as `streamlearn worker` freezes its start-up heap "
        "(`streamlearn/heap.py`; `benchmarks/gc_pause.py` measures a full collection's pause).",
        "",
        "Kafka rows time the real `Worker` (poll → decode/validate → score → drift → learn → "
        "metrics → commits) from the end of its first batch to its last learned event, against "
        "a topic that already holds every event; the consumer-group join is not counted, and "
        "the wait from the partitions' assignment to the first batch (the first fetch's round "
        "trip) is shown in its own column. A checkpoint and a consumer-lag lookup come every "
        f"{settings.checkpoint.every_s:g} s and {lag_interval:g} s at the defaults, less often "
        "than a timed span lasts, so each is timed apart on the loop's thread and its share at "
        "that cadence added back in the fourth column, the one the targets are judged on. "
        '"From memory" is the worker\'s intake without the transport: the same decoder '
        "(`streamlearn/worker/decode.py`: msgspec validates while it decodes, into the columns "
        "of a micro-batch) and the same learner, "
        "fed the message values from a list. "
        f"Settings: {_SETTINGS[args.preset]} (batch size {settings.source.batch_size}, "
        f"learner updates={settings.learner.updates}, lr={settings.learner.lr:g}, "
        f"replay_ratio={settings.learner.replay_ratio}).",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu_count']} logical cores ({machine['cpu']}); {machine['platform']}",
        f"- python {machine['python']}, torch {machine['torch']} ({machine['torch_threads']} "
        f"thread(s)), kafka-python {machine['kafka_python']}, confluent-kafka "
        f"{machine['confluent_kafka']}, msgspec {machine['msgspec']}, orjson "
        f"{machine['orjson']}",
        f"- load average (1 min) at start / end: {load_start} / {load_end} (the broker runs on "
        "the same machine and shares its cores)",
        "",
        "## Results",
        "",
        markdown_table(
            [
                "path",
                "events/s",
                "× from memory",
                "with checkpoints and lag lookups: events/s, ×",
                "runs (events/s)",
                "first batch after (ms)",
            ],
            rows,
            "lrrrrr",
        ),
        "",
        reference_spread(results),
        "",
        "## Where the Kafka path's time goes",
        "",
        "µs per event (share of the timed span) in the median run: the client's `poll` (fetch "
        "waits, building records), `split` (decode, validate, label check), `Prequential` "
        "(score, learn, drift, error memory), the batch's metrics (histograms and smoothed "
        "scores; the rest is read at scrape time) and the rest of the loop (the decoded rows "
        "into the batch's feature columns, batching, offsets, dead letters, predictions). The "
        "last two columns: one consumer-lag lookup (`metrics.lag_interval_s`, a round trip to "
        "the broker; with confluent-kafka the loop only starts it on a thread of its own, "
        "`worker/lag.py`) and one checkpoint (`checkpoint.every_s`: settle, then the state's "
        "bytes; the file is written and fsynced on a thread of its own), each with its share "
        "of the loop's time at the default interval.",
        "",
        markdown_table(
            STAGE_HEADER,
            _stage_rows(results, lag_interval, settings.checkpoint.every_s),
            "lrrrrrrrr",
        ),
        "",
        f"## Decode ceiling (one core; median of {args.repeats})",
        "",
        "Each step alone on the same message values: consuming the topic from its start with "
        "one client (no group; timed from its first fetch), then each decoder from memory in "
        "micro-batches of 32.",
        "",
        markdown_table(
            ["step", "messages/s"],
            [[DECODE[k], "not installed" if v is None else fmt_rate(v)] for k, v in decode.items()],
            "lr",
        ),
        "",
        *_parsing_thread(extra, args.repeats),
        f"## Targets: confluent-kafka ≥ {TARGET_RATE:,} events/s and "
        f"≥ {TARGET_RATIO['confluent']}× from memory; kafka-python ≥ "
        f"{TARGET_RATIO['kafka-python']}×",
        "",
    ]
    stdlib = extra["stdlib"]
    for client, ok in met.items():
        result = results[client]
        lines.append(
            f"- {NAMES[client]}: {fmt_rate(result['loop_events_per_s'])} events/s, "
            f"{result['loop_ratio']:.2f}× from memory with checkpoints and lag lookups "
            f"({fmt_rate(result['events_per_s'])}, {result['ratio']:.2f}× without) — "
            f"{'met' if ok else 'NOT met'} "
            f"({_per_round(result, stdlib):.2f}× the from-memory rate with events.decode, the "
            "baseline before msgspec)"
        )
    for key in results:
        if key not in TARGET_RATIO and key.startswith(("kafka", "confluent")):
            result = results[key]
            lines.append(
                f"- {NAMES[key]}: {fmt_rate(result['events_per_s'])} events/s, "
                f"{result['ratio']:.2f}× (no target)"
            )
    lines += [
        "",
        "Notes: every row runs the same `Prequential` with the same settings. Decoding is in "
        "the first row and in the Kafka rows, so the gap between them is the transport: the "
        "client's fetches and records, batching, offsets, metrics and, on a 2-core machine, the "
        "broker and the client's threads competing with the learner (which runs its updates on "
        "a second thread) for the cores. "
        "kafka-python parses every record in Python on the thread that calls `poll` (its "
        "own-parser consume row above; on a thread of its own that parsing still holds the GIL "
        "the loop needs, as the section above measures); the worker's kafka-python reader "
        "therefore has each fetched record batch parsed by `records.c` "
        "(`streamlearn/worker/kafka/native_records.py`), straight into its records. "
        "`kafka.reader_process: true` runs the client in a child process, which hands the "
        "loop plain tuples through a pipe, at the cost of a third process on the cores. "
        "confluent-kafka (`kafka.client: confluent`) parses in C. Publishing one "
        "prediction message per event costs kafka-python most (its "
        "`send` is pure Python, ~50 µs a message); confluent-kafka's C producer costs a "
        "fraction of that.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kafka_throughput.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_json(
        args.out / "kafka_throughput.json",
        {
            "command": command_line(),
            "started": started.isoformat(),
            "events": args.events,
            "preset": args.preset,
            "settings": {
                "batch_size": settings.source.batch_size,
                "updates": settings.learner.updates,
                "lr": settings.learner.lr,
            },
            "stream": args.stream,
            "repeats": args.repeats,
            "broker": broker,
            "machine": machine,
            "load_average": {"start": load_start, "end": load_end},
            "results": results,
            "memory_stdlib": extra["stdlib"],
            "parsing_thread": {k: extra[k] for k in PARSING if k in extra},
            "decode_ceiling": decode,
            "target_met": met,
        },
    )
    print("\n".join(lines))


def _parsing_thread(extra: dict[str, Any], repeats: int) -> list[str]:
    """The section comparing kafka-python's polls on the learning thread with polls on a
    thread of their own (absent when kafka-python was not run)."""
    if not all(key in extra for key in PARSING):
        return []
    rows = [
        [PARSING[key], fmt_rate(extra[key]["events_per_s"]), f"{extra[key]['ratio']:.2f}",
         " / ".join(f"{r:.2f}" for r in extra[key]["ratios"])]
        for key in PARSING
    ]  # fmt: skip
    return [
        f"## kafka-python's parsing on a thread of its own (median of {repeats} rounds)",
        "",
        "Could kafka-python's record parsing (pure Python, on the thread that calls `poll`) "
        "run beside the learner instead of before it? Both rows poll kafka-python (assigned, "
        "no group, the same micro-batch size) into the worker's decoder and learner, without "
        "the rest of the worker; in the second the polls run on a thread of their own that "
        "fills a queue up to 4 batches ahead. × from memory as above, per round.",
        "",
        markdown_table(["path", "events/s", "× from memory", "runs (×)"], rows, "lrrr"),
        "",
    ]


def _per_round(result: dict[str, Any], baseline: dict[str, Any]) -> float:
    """The median of a path's runs' ratios to ``baseline``'s run of the same round."""
    return statistics.median(r / b for r, b in zip(result["runs"], baseline["runs"], strict=True))


def _with_periodic(result: dict[str, Any]) -> str:
    """A Kafka path's events/s and ratio with checkpoints and lag lookups; "—" from memory."""
    if "loop_ratio" not in result:
        return "—"
    return f"{fmt_rate(result['loop_events_per_s'])}, {result['loop_ratio']:.2f}"


def _first_batch_ms(result: dict[str, Any]) -> str:
    """The Kafka runs' waits from assignment to the first batch, in ms; "—" from memory."""
    waits = result.get("first_batch_s")
    return " / ".join(f"{1000 * w:.0f}" for w in waits) if waits else "—"
