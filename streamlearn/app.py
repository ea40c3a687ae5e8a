"""Composition root: builds sources and learners from Settings. No logic of its own."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from streamlearn.errors import ConfigError, RegistryError
from streamlearn.heap import freeze_startup_heap
from streamlearn.settings import Settings, env_var
from streamlearn.sources import FileSource, Source, SyntheticSource

if TYPE_CHECKING:  # the learner (torch), serving stack and Kafka: only where a command uses them
    import socket
    import threading
    from collections.abc import Callable, Iterable
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry
    from starlette.applications import Starlette

    from streamlearn.core.prequential import Prequential
    from streamlearn.metrics.worker import WorkerMetrics
    from streamlearn.registry.base import Registry
    from streamlearn.serve.runtime import ServingRuntime
    from streamlearn.worker.checkpoint import CheckpointStore
    from streamlearn.worker.distributed.group import RankGroup
    from streamlearn.worker.health import Heartbeat
    from streamlearn.worker.loop import ExportHook, Worker
    from streamlearn.worker.publisher import Publisher

__all__ = [
    "build_export_hook",
    "build_prequential",
    "build_publisher",
    "build_registry",
    "build_server",
    "build_source",
    "build_worker",
    "configure_logging",
    "join_ranks",
    "rank_settings",
    "run_produce",
    "run_server",
    "run_worker",
    "start_metrics_server",
]


def build_source(settings: Settings) -> Source:
    """The source named by ``settings.source.kind``."""
    src = settings.source
    if src.kind == "file":
        assert src.path is not None  # enforced by SourceSettings
        return FileSource(src.path)
    if src.kind == "kafka":
        from streamlearn.worker.kafka.source import KafkaSource

        w = settings.worker
        return KafkaSource(settings.kafka, w.max_wait_s, max_bytes=w.max_event_bytes)
    return SyntheticSource(src.stream, src.n_events, src.seed)


def build_prequential(settings: Settings) -> Prequential:
    """The prequential chain on the compute backend ``learner.kernel`` selects, chosen here once
    (the choice is logged)."""
    from streamlearn.core.learner import learner_backend, learner_device
    from streamlearn.core.prequential import Prequential

    lrn = settings.learner
    device = learner_device(lrn, settings.features)
    if lrn.device == "auto":
        logging.getLogger(__name__).info(
            "learner.device auto: %s (by the model's size; set cpu or cuda to choose)", device
        )
    return Prequential.from_settings(settings, learner_backend(lrn, settings.features, device))


def _startup_error(key: str, problem: str, fix: str) -> ConfigError:
    """The one-line error for a setting that cannot be used at start-up: the key and its
    environment variable, what is wrong, and what to do (the command line exits 2)."""
    return ConfigError(f"{key} ({env_var(key)}): {problem}; {fix}")


def _unlistenable(key: str, host: str, port: int, exc: OSError, flag: str) -> ConfigError:
    return _startup_error(
        key,
        f"cannot listen on {host}:{port} ({exc.strerror or exc})",
        f"free the port or choose another ({flag})",
    )


def build_registry(settings: Settings, *, publishing: bool = False) -> Registry:
    """The registry named by ``settings.registry.kind`` (filesystem or Redis), checked once:
    a Redis server that does not answer, or a directory that cannot be created (or written,
    when ``publishing``), is a ConfigError naming the key, raised before anything else starts.
    """
    reg = settings.registry
    if reg.kind == "redis":
        from streamlearn.registry.redis import RedisRegistry

        password = reg.password.get_secret_value() if reg.password else None
        try:
            registry = RedisRegistry(reg.url, prefix=reg.prefix, keep=reg.keep, password=password)
        except ValueError as exc:  # a URL redis-py cannot parse
            raise _startup_error("registry.url", str(exc), "correct the URL") from None
        try:
            registry.ping()
        except RegistryError as exc:
            registry.close()
            raise _startup_error(
                "registry.url",
                f"the Redis registry does not answer ({exc})",
                "start Redis there or set registry.url to a server that is up",
            ) from None
        return registry
    from streamlearn.registry.filesystem import FilesystemRegistry

    try:
        files = FilesystemRegistry(reg.path, keep=reg.keep)
        if publishing:
            files.check_writable()
    except RegistryError as exc:
        raise _startup_error(
            "registry.path",
            str(exc),
            "make it a writable directory or set registry.path (serve: --registry) to one",
        ) from None
    return files


def build_publisher(
    settings: Settings, registry: Registry, *, push_after_batch: bool = True
) -> Publisher:
    """The worker's export stage (call maybe_publish and push_memory after each batch);
    ``push_after_batch`` False: the caller pushes the error memory (scaled-out rank 0)."""
    from streamlearn.worker.publisher import Publisher

    return Publisher(registry, settings.export, push_after_batch=push_after_batch)


def build_server(
    settings: Settings,
    registry: Registry,
    metrics_registry: CollectorRegistry | None = None,
    *,
    watch: bool = True,
) -> tuple[Starlette, ServingRuntime]:
    """The serving ASGI app and its runtime (model slot + registry watcher)."""
    from prometheus_client import CollectorRegistry

    from streamlearn.metrics.serve import ServeMetrics
    from streamlearn.serve.app import build_app
    from streamlearn.serve.runtime import ServingRuntime

    metrics = ServeMetrics(metrics_registry or CollectorRegistry())
    srv = settings.serve
    runtime = ServingRuntime(
        registry,
        metrics,
        poll_s=settings.registry.poll_s,
        memory_poll_s=srv.memory_poll_s,
        warm_rows=srv.warm_rows,
        compensate=srv.compensate,
    )
    return build_app(runtime, srv, watch=watch), runtime


def run_server(settings: Settings) -> None:
    """``streamlearn serve``: ``serve.processes`` server processes (0: one per CPU this process
    may use) on the HTTP port and the KServe v2 gRPC port, until SIGINT/SIGTERM; an unusable
    port or registry is a ConfigError before anything serves.

    One process serves in this one; several are forked children (serve/processes.py), each a
    whole server on ``SO_REUSEPORT`` sockets while this process holds the ports."""
    import contextlib
    import tempfile
    import threading
    from pathlib import Path

    from streamlearn.kernels.cpus import available_cpus
    from streamlearn.serve.processes import reserve_port, serve_processes

    log = logging.getLogger(__name__)

    srv = settings.serve
    count = srv.processes or max(1, int(available_cpus()))
    build_registry(settings).close()  # checked once here; each server process opens its own
    if count > 1 and threading.current_thread() is not threading.main_thread():
        log.warning("serving from a thread: one server process (signals need the main thread)")
        count = 1
    if count == 1:
        _serve(settings, srv.port, srv.grpc_port, shared=False)
        return
    with contextlib.ExitStack() as held:
        http = held.enter_context(_reserve(reserve_port, srv.host, srv.port, "serve.port"))
        grpc = None
        if srv.grpc_port is not None:
            grpc = held.enter_context(
                _reserve(reserve_port, srv.host, srv.grpc_port, "serve.grpc_port")
            ).getsockname()[1]
        http_port = http.getsockname()[1]
        log.info(
            "%d server processes on %s: HTTP port %d, gRPC port %s",
            count, srv.host, http_port, grpc if grpc is not None else "off",
        )  # fmt: skip
        metrics_dir = Path(held.enter_context(tempfile.TemporaryDirectory(prefix="streamlearn-")))
        serve_processes(count, lambda: _serve(settings, http_port, grpc, shared=True), metrics_dir)


def _reserve(
    reserve: Callable[[str, int], socket.socket], host: str, port: int, key: str
) -> socket.socket:
    """``reserve(host, port)``, an OSError turned into the ConfigError naming ``key``."""
    try:
        return reserve(host, port)
    except OSError as exc:
        flag = "--port" if key == "serve.port" else "a port, 0 or off"
        raise _unlistenable(key, host, port, exc, flag) from None


def _serve(settings: Settings, http_port: int, grpc_port: int | None, *, shared: bool) -> None:
    """One server process: the registry, the runtime and its watcher, uvicorn on ``http_port``
    and the gRPC service on ``grpc_port`` (unless None), until SIGTERM/SIGINT; gRPC stops
    gracefully after uvicorn, then the registry closes. ``shared``: the ports are held by the
    parent and bound here with ``SO_REUSEPORT`` beside the other server processes."""
    import contextlib
    import functools
    import signal
    import threading

    import uvicorn

    from streamlearn.serve.limits import uvicorn_options
    from streamlearn.serve.processes import bound_socket

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(0)  # unwinds the stack below, as the worker exits 0 on SIGTERM

    srv = settings.serve
    with contextlib.ExitStack() as stack:  # on the way out: gRPC stops, then the registry
        registry = build_registry(settings)
        stack.callback(registry.close)
        if threading.current_thread() is threading.main_thread():
            # uvicorn handles SIGTERM itself, then re-raises it once drained: by default that
            # would end the process before the gRPC server stops gracefully
            previous = signal.signal(signal.SIGTERM, terminate)
            stack.callback(signal.signal, signal.SIGTERM, previous)
        app, runtime = build_server(settings, registry)
        # a full collection's pause would hold requests up; frozen before the first model
        # loads, so that a model swapped out later is collected as any other object
        freeze_startup_heap()
        # load what the registry holds before taking connections: beside other processes on
        # the port, one still loading would answer 503 while another says the pod is ready
        runtime.refresh_model()
        runtime.refresh_memory()
        listen = functools.partial(bound_socket, reuse_port=shared)
        http = stack.enter_context(_reserve(listen, srv.host, http_port, "serve.port"))
        if grpc_port is not None:
            from streamlearn.serve.grpc_server import GrpcServer

            try:
                grpc = GrpcServer(runtime, srv, port=grpc_port, shared=shared)
            except OSError as exc:
                raise _unlistenable(
                    "serve.grpc_port", srv.host, grpc_port, exc, "a port, 0 or off"
                ) from None
            stack.callback(grpc.stop)
        config = uvicorn.Config(
            app, log_level="info", access_log=False, **uvicorn_options(srv, runtime.metrics)
        )
        uvicorn.Server(config).run(sockets=[http])


# -- Kafka worker and producer (issue 4) --------------------------------------------------------
def configure_logging(level: str, client_level: str = "CRITICAL") -> None:
    """Timestamped lines on stderr; Kafka client libraries (they log per retry) kept quiet."""

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(client_level)  # kafka-python and kafka.librdkafka


def _open_checkpoints(settings: Settings) -> CheckpointStore:
    """The store at ``checkpoint.dir``; ConfigError naming the key if the directory cannot be
    created or written."""
    from streamlearn.worker.checkpoint import CheckpointStore

    c = settings.checkpoint
    try:
        return CheckpointStore(c.dir, c.keep)
    except OSError as exc:
        raise _startup_error(
            "checkpoint.dir",
            f"cannot create or write {c.dir} ({exc.strerror or exc})",
            "make it a writable directory or set checkpoint.dir (--checkpoint-dir) to one",
        ) from None


def build_worker(
    settings: Settings,
    stop: threading.Event,
    export: ExportHook | None = None,
    metrics: WorkerMetrics | None = None,
    heartbeat: Heartbeat | None = None,
    group: RankGroup | None = None,
    publisher: Publisher | None = None,
) -> Worker | None:
    """Connect (retrying through an outage) and assemble the worker; None if stopped first.
    ``group``: this worker is one rank of several keeping one model (see join_ranks); then
    ``publisher`` (rank 0's) pushes every rank's error memory, gathered."""

    from streamlearn.worker.backoff import Backoff, BrokerHealth, retry
    from streamlearn.worker.kafka.client import open_reader, open_writer
    from streamlearn.worker.loop import Worker, no_export

    store = _open_checkpoints(settings)  # a ConfigError now, not after connecting
    w = settings.worker
    health = BrokerHealth(
        Backoff(w.backoff_initial_s, w.backoff_max_s), logging.getLogger(__name__)
    )
    reader = retry(lambda: open_reader(settings.kafka), health, stop, "connect")
    writer = retry(lambda: open_writer(settings.kafka), health, stop, "connect")
    if reader is None or writer is None:  # stopped while the broker was unreachable
        if reader is not None:
            reader.close()
        return None
    preq = build_prequential(settings)
    lockstep = None
    if group is not None:
        from streamlearn.worker.distributed.lockstep import Lockstep

        lockstep = Lockstep(group, w.poll_timeout_s, publisher)
    return Worker(
        settings, preq, reader, writer, store, export or no_export, stop=stop, metrics=metrics,
        heartbeat=heartbeat, lockstep=lockstep,
    )  # fmt: skip


def join_ranks(settings: Settings) -> RankGroup | None:
    """The torch.distributed group of a scaled-out worker, from torch's ``env://`` variables
    (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT, LOCAL_RANK); None for a single worker. Ranks
    share one model, so every rank must put a feature and a class in the same slot: a fixed
    schema (features.numeric / features.categorical) and, to classify, fixed learner.classes
    are required (a ConfigError otherwise). A collective waits for the other ranks at most
    ``worker.liveness_timeout_s``."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return None
    f, lrn = settings.features, settings.learner
    if not (f.numeric or f.categorical):
        raise _startup_error(
            "features.numeric", "ranks would give features slots in different orders",
            "name the features (features.numeric, features.categorical) to run several ranks",
        )  # fmt: skip
    if lrn.task != "regression" and not lrn.classes:
        raise _startup_error(
            "learner.classes", "ranks would give classes slots in different orders",
            "list the classes (learner.classes) to run several ranks",
        )  # fmt: skip
    from streamlearn.worker.distributed.group import join_from_env

    return join_from_env(settings.worker.liveness_timeout_s)


def build_export_hook(publisher: Publisher, metrics: WorkerMetrics) -> ExportHook:
    """The worker's export hook: the publisher's step, its outcome counted."""

    def export(preq: Prequential, batches: int) -> None:
        result = publisher.after_batch(preq, batches)
        metrics.observe_publish(result, publisher.memory_pushes)

    return export


def start_metrics_server(
    settings: Settings, registry: CollectorRegistry, heartbeat: Heartbeat, port_offset: int = 0
) -> WSGIServer | None:
    """Serve ``registry`` (``/metrics``) and ``heartbeat`` (``/livez``, ``/readyz``) on
    ``metrics.host:metrics.port`` + ``port_offset`` (a rank's LOCAL_RANK: ranks sharing a
    machine under torchrun each need a port) from a daemon thread (None: off); ConfigError
    naming ``metrics.port`` if it cannot be listened on."""
    from streamlearn.worker.health import serve_metrics_and_health

    m = settings.metrics
    if m.port is None:
        return None
    port = m.port + port_offset if m.port else 0  # 0: any free port, for every rank
    try:
        server = serve_metrics_and_health(m.host, port, registry, heartbeat)
    except OSError as exc:
        raise _unlistenable("metrics.port", m.host, port, exc, "--metrics-port") from None
    return server


def rank_settings(settings: Settings, world: int, rank: int) -> Settings:
    """The settings rank ``rank`` of ``world`` runs (``settings`` itself for a single worker):
    its micro-batch is its share of the one model's (``source.rank_batch`` and decision 0029;
    a ConfigError if some rank's share would be empty), and the expert pool is off (a switch
    decided on one rank would be averaged with the others' live models; a collective switch
    is not built), with a WARNING saying so."""
    if world <= 1:
        return settings
    source = settings.source
    batch = source.rank_batch(world, rank)
    if batch < 1:
        raise _startup_error(
            "source.batch_size", f"{source.batch_size} events cannot be shared out over {world} "
            "ranks", "raise source.batch_size to at least the number of ranks, or set "
            "source.rank_batch_size (events per micro-batch on each rank)",
        )  # fmt: skip
    update: dict[str, Any] = {"source": source.model_copy(update={"batch_size": batch})}
    if settings.experts.enabled:
        logging.getLogger(__name__).warning(
            "experts.enabled: the expert pool is off with %d ranks (a switch on one rank would "
            "be averaged away by the others); set experts.enabled false to silence this",
            world,
        )
        update["experts"] = settings.experts.model_copy(update={"enabled": False})
    return settings.model_copy(update=update)


def run_worker(settings: Settings) -> None:
    """``streamlearn worker``: runs until SIGTERM/SIGINT, then checkpoints, commits, returns.

    Settings that cannot be used (metrics port, registry, checkpoint directory) are a
    ConfigError before Kafka is contacted; an unreachable broker is retried, not an error."""
    import os
    import signal
    import threading

    from prometheus_client import CollectorRegistry

    from streamlearn.metrics.worker import WorkerMetrics
    from streamlearn.worker.health import Heartbeat

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    registry = CollectorRegistry()
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)  # the rank label before the rendezvous
    rank = int(os.environ.get("RANK", "0")) if world > 1 else 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0) if world > 1 else 0
    settings = rank_settings(settings, world, rank)
    metrics = WorkerMetrics(registry, settings.metrics.smoothing, rank, max(world, 1))
    heartbeat = Heartbeat(settings.worker.liveness_timeout_s)
    # up before Kafka: scrapeable, and alive, through an outage at start-up
    server = start_metrics_server(settings, registry, heartbeat, local_rank)
    group = join_ranks(settings)
    try:
        export = publisher = None
        if group is None or group.leader:  # one rank exports and publishes
            models = build_registry(settings, publishing=True)
            publisher = build_publisher(settings, models, push_after_batch=group is None)
            export = build_export_hook(publisher, metrics)
        worker = build_worker(settings, stop, export, metrics, heartbeat, group, publisher)
        if worker is not None:
            freeze_startup_heap()  # what is built lives on: out of the full collections
            worker.run()
    finally:
        if group is not None:
            group.close()
        if server is not None:
            server.shutdown()
            server.server_close()


def run_produce(
    settings: Settings,
    messages: Iterable[tuple[bytes | None, bytes]],
    rate: float,
    total: int | None,
    progress: bool = True,
) -> int:
    """``streamlearn produce``: send ``messages`` to ``kafka.topic``; returns how many."""
    from streamlearn.worker.kafka.client import open_writer
    from streamlearn.worker.kafka.produce import produce

    writer = open_writer(settings.kafka)
    try:
        return produce(writer, settings.kafka.topic, messages, rate, total, progress)
    finally:
        writer.close()
