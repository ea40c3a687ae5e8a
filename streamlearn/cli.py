"""Command line: parses arguments into Settings and hands them to the app. No logic here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamlearn import __version__
from streamlearn.errors import StreamlearnError
from streamlearn.extras import first_missing
from streamlearn.settings import load_settings
from streamlearn.sources.synthetic import STREAMS

__all__ = ["main"]

_EPILOG = """\
configuration: a YAML file (--config) with sections source, features, learner, drift, memory,
experts, linear, neighbours, export, registry, serve, kafka, worker, checkpoint, metrics;
every key can be overridden by an environment variable STREAMLEARN_<SECTION>__<KEY>, e.g.
STREAMLEARN_LEARNER__LR=0.01; a list as JSON or comma-separated, e.g.
STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS=broker-1:9092,broker-2:9092. Options given here override
both. A setting that cannot be used stops start-up with exit code 2 and one line naming it.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamlearn",
        description="Online learning for production: score every event, then learn from it.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"streamlearn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="run a drifting synthetic stream through the learner (no Kafka or Redis needed)",
        description="Embedded main job: streams events through the prequential learner, prints "
        "drift detections and a summary, and writes a PNG of accuracy over time.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--config", type=Path, help="YAML settings file")
    demo.add_argument(
        "--stream", choices=sorted(STREAMS), help="synthetic stream (default: agrawal-drift)"
    )
    demo.add_argument("--file", type=Path, help="read events from a JSONL file instead")
    demo.add_argument("--events", type=int, help="events in the synthetic stream (default 30000)")
    demo.add_argument("--batch-size", type=int, help="events per micro-batch (default 32)")
    demo.add_argument("--seed", type=int, help="stream seed (default 42)")
    demo.add_argument(
        "--task", choices=["binary", "multiclass", "regression"], help="learning task"
    )
    demo.add_argument(
        "--out", type=Path, default=Path("demo-output"), help="where the PNG goes (demo-output)"
    )
    demo.add_argument("--no-plot", action="store_true", help="skip the PNG")
    demo.add_argument(
        "--serve",
        action="store_true",
        help="full embedded loop: learn, publish ONNX models to a filesystem registry and serve "
        "them over HTTP, hot-swapping each new version (Ctrl-C to stop)",
    )
    demo.add_argument("--port", type=int, help="--serve: HTTP port (default 8080; 0 = any free)")

    serve = commands.add_parser(
        "serve",
        help="serve published models over HTTP (KServe v2, v1 :predict, /metrics)",
        description="Watches the registry, hot-swaps each new model version (sha256-checked, "
        "loaded and warmed first) and applies the worker's error memory.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--config", type=Path, help="YAML settings file")
    serve.add_argument("--registry", type=Path, help="filesystem registry directory")
    serve.add_argument("--redis", metavar="URL", help="use the Redis registry at URL instead")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument(
        "--processes",
        type=int,
        help="server processes, each a whole server on the same ports (default 0: one per CPU "
        "this process may use, cgroup limits included)",
    )

    _add_worker(commands)
    _add_produce(commands)
    commands.add_parser("streams", help="list the named synthetic streams")
    return parser


_KAFKA_EPILOG = (
    _EPILOG
    + """
Kafka keys live in the sections kafka (bootstrap_servers, client, topic, labels_topic,
dead_letter_topic, output_topic, group_id, security_protocol, sasl_*, ssl_*; client settings
passed through: client_options to the consumer and the producer, consumer_options and
producer_options to one of them), worker (max_wait_s, label_cache_size, label_ttl_s,
backoff_*, ...) and checkpoint (dir, every_batches, every_s, keep). Secrets are best given by
environment, e.g. STREAMLEARN_KAFKA__SASL_PASSWORD.
"""
)


def _kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML settings file")
    parser.add_argument(
        "--bootstrap-servers", metavar="HOST:PORT[,...]", help="brokers (default localhost:9092)"
    )
    parser.add_argument("--topic", help="events topic (default: events)")
    parser.add_argument(
        "--client", choices=["kafka-python", "confluent"], help="Kafka client library"
    )


def _add_worker(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="learn from a Kafka topic for as long as it runs, with exactly-once model state",
        description="The long-running worker: scores every event, then learns from it; "
        "malformed messages go to the dead-letter topic; late labels are joined by id; the "
        "whole state is checkpointed with the partition offsets, so a restart resumes where "
        "the last checkpoint ended. SIGTERM/SIGINT: finish the batch, checkpoint, commit, "
        "exit 0. A broker outage is retried with back-off. With WORLD_SIZE > 1 (torchrun, or "
        "RANK, MASTER_ADDR, MASTER_PORT set) it is one rank of several keeping one model, "
        "checkpoints being consistent cuts over all ranks (needs fixed features and classes).",
        epilog=_KAFKA_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _kafka_options(worker)
    worker.add_argument("--group", help="consumer group id (default: streamlearn)")
    worker.add_argument("--checkpoint-dir", type=Path, help="checkpoint directory")
    worker.add_argument(
        "--batch-size", type=int,
        help="events per micro-batch (default 32); with several ranks, shared out over them",
    )  # fmt: skip
    worker.add_argument(
        "--metrics-port", type=int, help="serve Prometheus /metrics on this port (default: off)"
    )
    worker.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="streamlearn's own log level (default INFO)",
    )


def _add_produce(commands: Any) -> None:
    produce = commands.add_parser(
        "produce",
        help="send a synthetic stream or a JSONL file to a Kafka topic (to try the worker)",
        description="Sends events in the wire format to the events topic, keyed by id, at "
        "--rate events/s (0 = as fast as possible), with a progress bar.",
        epilog=_KAFKA_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _kafka_options(produce)
    what = produce.add_mutually_exclusive_group()
    what.add_argument(
        "--stream", choices=sorted(STREAMS), help="synthetic stream (default: agrawal-drift)"
    )
    what.add_argument("--file", type=Path, help="send the lines of a JSONL file instead")
    produce.add_argument("--events", type=int, default=30_000, help="synthetic events (30000)")
    produce.add_argument("--seed", type=int, default=42, help="stream seed (default 42)")
    produce.add_argument("--rate", type=float, default=0.0, help="events/s (0 = unthrottled)")
    produce.add_argument("--no-progress", action="store_true", help="no progress bar")


def _demo_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    source: dict[str, Any] = {}
    if args.file is not None:
        source.update(kind="file", path=args.file)
    if args.stream is not None:
        source["stream"] = args.stream
    for key in ("events", "batch_size", "seed"):
        value = getattr(args, key)
        if value is not None:
            source["n_events" if key == "events" else key] = value
    learner: dict[str, Any] = {}
    if args.task is not None:
        learner["task"] = args.task
    elif args.stream is not None:
        learner["task"] = STREAMS[args.stream].task
    return {"source": source, "learner": learner}


def _serve_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    registry: dict[str, Any] = {}
    if args.registry is not None:
        registry.update(kind="filesystem", path=args.registry)
    if args.redis is not None:
        registry.update(kind="redis", url=args.redis)
    given = (("host", args.host), ("port", args.port), ("processes", args.processes))
    serve = {k: v for k, v in given if v is not None}
    return {"registry": registry, "serve": serve}


def _live_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """demo --serve: a filesystem registry under --out, the port if given."""
    overrides = _demo_overrides(args)
    overrides["registry"] = {"kind": "filesystem", "path": args.out / "registry"}
    overrides["serve"] = {} if args.port is None else {"port": args.port}
    return overrides


def _kafka_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    kafka: dict[str, Any] = {}
    if args.bootstrap_servers:
        kafka["bootstrap_servers"] = args.bootstrap_servers  # settings read the list
    for key in ("topic", "client", "group"):
        if getattr(args, key, None) is not None:
            kafka["group_id" if key == "group" else key] = getattr(args, key)
    overrides: dict[str, dict[str, Any]] = {"kafka": kafka}
    if getattr(args, "checkpoint_dir", None) is not None:
        overrides["checkpoint"] = {"dir": args.checkpoint_dir}
    if getattr(args, "batch_size", None) is not None:
        overrides["source"] = {"batch_size": args.batch_size}
    if getattr(args, "metrics_port", None) is not None:
        overrides["metrics"] = {"port": args.metrics_port}
    return overrides


def _kafka_command(args: argparse.Namespace) -> int:
    from streamlearn import app

    settings = load_settings(args.config, **_kafka_overrides(args))
    if args.command == "worker":
        app.configure_logging(args.log_level, settings.worker.client_log_level)
        app.run_worker(settings)
        return 0
    from streamlearn.worker.kafka.produce import file_messages, synthetic_messages

    app.configure_logging("WARNING", settings.worker.client_log_level)
    if args.file is not None:
        messages, total = file_messages(args.file), None
    else:
        stream = args.stream or "agrawal-drift"
        messages, total = synthetic_messages(stream, args.events, args.seed), args.events
    sent = app.run_produce(settings, messages, args.rate, total, not args.no_progress)
    print(f"sent {sent:,} events to {settings.kafka.topic}")
    return 0


def _extras(args: argparse.Namespace) -> list[str]:
    """The extras of the package a command needs (pyproject.toml declares what each holds)."""
    if args.command == "serve":
        return ["serve"]
    if args.command == "demo" and not args.serve and not args.no_plot:
        return ["worker", "plots"]
    return [] if args.command == "streams" else ["worker"]


def _lacking(command: str, module: str, extras: Sequence[str]) -> int:
    """One line naming what to install, and the exit code of a usage error."""
    wanted = f"streamlearn[{','.join(extras)}]"
    print(
        f"streamlearn: error: `streamlearn {command}` needs {wanted}; {module} is not "
        f"installed: pip install '{wanted}'",
        file=sys.stderr,
    )
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    extras = _extras(args)
    for extra in extras:
        missing = first_missing(extra)
        if missing is not None:
            return _lacking(args.command, missing, [extra])
    try:
        if args.command == "streams":
            for name, spec in sorted(STREAMS.items()):
                print(f"{name:15s} {spec.task:11s} {spec.description}")
            return 0
        if args.command in ("worker", "produce"):
            return _kafka_command(args)
        if args.command == "serve":
            from streamlearn.app import configure_logging, run_server

            settings = load_settings(args.config, **_serve_overrides(args))
            configure_logging("INFO")
            run_server(settings)
            return 0
        if args.serve:
            from streamlearn.demo.serving import run_live_demo

            run_live_demo(load_settings(args.config, **_live_overrides(args)))
            return 0
        from streamlearn.demo.job import run_demo

        settings = load_settings(args.config, **_demo_overrides(args))
        report = run_demo(settings, None if args.no_plot else args.out)
        print(report.render())
        return 0
    except StreamlearnError as exc:  # one line: what an operator can fix, no traceback
        message = " ".join(line.strip() for line in str(exc).splitlines())
        print(f"streamlearn: error: {message}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # installed metadata unknown or out of step
        if not extras or exc.name is None or exc.name.startswith("streamlearn"):
            raise
        return _lacking(args.command, exc.name.split(".")[0], extras)
    except KeyboardInterrupt:
        return 130
