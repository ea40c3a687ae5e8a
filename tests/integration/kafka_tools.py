"""Helpers for the Kafka integration tests: broker process, topics, reading back, a TCP proxy."""

from __future__ import annotations

import contextlib
import selectors
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from streamlearn.settings import Settings, load_settings

# consumer-group timings that make a join take ~3 s against tansu instead of ~23 s
FAST_GROUP = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 7000,
}


def start_broker(binary: str, port: int, advertised_port: int, log: Path) -> subprocess.Popen:
    """tansu with in-memory storage on loopback; returns once it accepts connections."""
    handle = log.open("wb")
    proc = subprocess.Popen(
        [
            binary, "broker",
            "--listener-url", f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url", f"tcp://127.0.0.1:{advertised_port}",
            "--storage-engine", "memory://tansu/",
        ],
        stdout=handle, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited: {log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"tansu did not listen on {port}: {log.read_text(errors='replace')}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> str:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return name


def send(
    bootstrap: str,
    topic: str,
    values: list[bytes],
    *,
    keys: list[bytes | None] | None = None,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for i, value in enumerate(values):
            key = keys[i] if keys else None
            producer.send(topic, value=value, key=key, partition=partition, headers=headers or [])
        producer.flush(30)
    finally:
        producer.close()


def read_topic(bootstrap: str, topic: str, n: int, timeout_s: float = 20.0) -> list[Any]:
    """At least ``n`` records of every partition of ``topic`` from the start (no group)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout_s
        partitions: set[int] | None = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(partitions or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        while len(out) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


def event(i: int, y: Any = "__default__", **x: Any) -> bytes:
    """A wire-format event whose label is learnable: y = (a > 0)."""
    import json

    a = ((i * 37) % 101 - 50) / 25.0
    features = {"a": a, "b": ((i * 13) % 7) / 3.0, "c": "red" if i % 2 else "blue", **x}
    doc: dict[str, Any] = {"id": f"e-{i}", "x": features}
    doc["y"] = int(a > 0) if y == "__default__" else y
    if doc["y"] is None:
        del doc["y"]
    return json.dumps(doc).encode()


def worker_settings(bootstrap: str, checkpoints: Path, **sections: dict[str, Any]) -> Settings:
    """A small, fast, CPU-only worker configuration on fresh topic and group names."""
    base: dict[str, dict[str, Any]] = {
        "kafka": {
            "bootstrap_servers": [bootstrap], "topic": unique("events"),
            "group_id": unique("group"), "dead_letter_topic": None, **FAST_GROUP,
        },
        "learner": {"task": "binary", "hidden": [32], "device": "cpu", "seed": 0},
        "features": {"numeric_slots": 8, "categorical_slots": 4, "hash_buckets": 256},
        "source": {"batch_size": 16},
        "worker": {"max_wait_s": 0.5, "backoff_initial_s": 0.2, "backoff_max_s": 1.0},
        "checkpoint": {"dir": checkpoints, "every_batches": 10, "every_s": 0},
    }  # fmt: skip
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return load_settings(**base)


class TcpProxy:
    """Forwards a loopback port to a broker; ``cut`` drops every connection and refuses new
    ones (a broker outage as clients see it), ``restore`` listens again on the same port."""

    def __init__(self, target_port: int, port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = port
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._thread: threading.Thread | None = None

    def start(self) -> TcpProxy:
        self._stop.clear()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(0.2):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def restore(self) -> None:
        self.start()


class Running:
    """A Worker's ``run`` on a thread, for tests that watch it and then stop it."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # handed to the test thread by stop()
            self.error = exc

    def wait_for(self, predicate: Any, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.error is not None:
                raise self.error
            if predicate():
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout_s: float = 30.0) -> None:
        self.worker.stop()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error
