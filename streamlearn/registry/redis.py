"""RedisRegistry: artifacts as Redis hashes, a version pointer, pub/sub for new versions.

Keys under ``prefix`` (default ``streamlearn``)::

    {prefix}:next              INCR counter handing out version numbers
    {prefix}:artifact:{v}      hash with fields ``onnx`` and ``meta`` (raw bytes)
    {prefix}:versions          sorted set of stored versions (score = version)
    {prefix}:current           the served version
    {prefix}:memory            the error-memory snapshot (bytes)
    {prefix}:events            pub/sub channel: "model <v>" on publish and rollback

A publish writes the hash, the set entry and the pointer in one MULTI/EXEC transaction, then
announces the version. Replicas block on the channel in :meth:`wait`, and re-read the pointer
after every wake-up *and* every ``timeout``: a missed message (a reconnect, a replica started
late) costs at most one poll interval, never a stale model.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import redis

from streamlearn.errors import ArtifactError, RegistryError
from streamlearn.export.artifact import Artifact
from streamlearn.registry.base import StoredArtifact, rollback_target

__all__ = ["RedisRegistry"]


class RedisRegistry:
    """Registry for many serving replicas; ``client`` may be passed in (tests, pools)."""

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "streamlearn",
        keep: int = 20,
        password: str | None = None,
        client: redis.Redis | None = None,
        socket_timeout: float = 5.0,
    ) -> None:
        self.prefix = prefix
        self.keep = keep
        self.client = client or redis.Redis.from_url(
            url,
            password=password,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            health_check_interval=30,
        )
        self.channel = f"{prefix}:events"
        self._pubsub: Any = None
        self._closed = threading.Event()

    def _key(self, *parts: object) -> str:
        return ":".join((self.prefix, *map(str, parts)))

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except redis.RedisError as exc:
            raise RegistryError(f"redis {what} failed: {exc}") from exc

    def ping(self) -> None:
        """RegistryError unless the server answers now (within the socket timeout): a start-up
        check, since nothing else talks to the server before the first publish or poll."""
        self._call("PING", self.client.ping)

    # -- versions -------------------------------------------------------------------------
    def versions(self) -> list[int]:
        raw = self._call("ZRANGE", self.client.zrange, self._key("versions"), 0, -1)
        return sorted(int(v) for v in raw)

    def publish(self, artifact: Artifact) -> int:
        version = int(self._call("INCR", self.client.incr, self._key("next")))
        stamped = artifact.with_version(version)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            self._key("artifact", version),
            mapping={"onnx": stamped.onnx, "meta": stamped.meta_bytes()},
        )
        pipe.zadd(self._key("versions"), {str(version): version})
        pipe.set(self._key("current"), version)
        self._call("publish transaction", pipe.execute)
        self._announce(version)
        self._prune(version)
        return version

    def _announce(self, version: int) -> None:
        self._call("PUBLISH", self.client.publish, self.channel, f"model {version}")

    def _prune(self, current: int) -> None:
        stale = [v for v in self.versions()[: -self.keep] if v != current]
        if stale:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(*(self._key("artifact", v) for v in stale))
            pipe.zrem(self._key("versions"), *map(str, stale))
            self._call("prune", pipe.execute)

    def current(self) -> int | None:
        raw = self._call("GET", self.client.get, self._key("current"))
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise RegistryError(f"{self._key('current')} holds {raw[:20]!r}") from None

    def fetch(self, version: int) -> StoredArtifact:
        fields = self._call("HGETALL", self.client.hgetall, self._key("artifact", version))
        if not fields:
            raise RegistryError(f"version {version} is not stored in redis")
        missing = [f for f in ("onnx", "meta") if f.encode() not in fields]
        if missing:
            raise ArtifactError("missing_file", f"version {version} lacks {', '.join(missing)}")
        return StoredArtifact(version, fields[b"onnx"], fields[b"meta"])

    def fetch_meta(self, version: int) -> bytes:
        key = self._key("artifact", version)
        meta: bytes | None = self._call("HGET", self.client.hget, key, "meta")
        if meta is None:
            if not self._call("EXISTS", self.client.exists, key):
                raise RegistryError(f"version {version} is not stored in redis")
            raise ArtifactError("missing_file", f"version {version} lacks meta")
        return meta

    def rollback(self, version: int | None = None) -> int:
        target = rollback_target(self.versions(), self.current(), version)
        self._call("SET", self.client.set, self._key("current"), target)
        self._announce(target)
        return target

    # -- error memory ---------------------------------------------------------------------
    def push_memory(self, blob: bytes) -> None:
        self._call("SET", self.client.set, self._key("memory"), blob)

    def pull_memory(self) -> bytes | None:
        blob: bytes | None = self._call("GET", self.client.get, self._key("memory"))
        return blob

    # -- watching -------------------------------------------------------------------------
    def wait(self, timeout: float) -> bool:
        """True on an announcement, False after ``timeout``; polling if pub/sub is down.

        Messages published between two calls wait in the subscription, so none is lost.
        """
        deadline = time.monotonic() + timeout
        try:
            if self._pubsub is None:
                self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                self._pubsub.subscribe(self.channel)
            while not self._closed.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if self._pubsub.get_message(timeout=min(remaining, 0.5)) is not None:
                    return True
        except (redis.RedisError, OSError, ValueError):
            self._drop_pubsub()  # fall back to polling; resubscribe on the next call
            self._closed.wait(max(0.0, deadline - time.monotonic()))
        return False

    def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()

    def close(self) -> None:
        self._closed.set()
        self._drop_pubsub()
        with contextlib.suppress(redis.RedisError):
            self.client.close()
