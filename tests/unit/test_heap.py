"""The start-up heap frozen out of full collections: what is frozen, what is not, and that the
worker and the server freeze theirs before they run."""

from __future__ import annotations

import gc
import signal
import weakref

import pytest
import uvicorn
from serving_support import small_settings

from streamlearn import app
from streamlearn.heap import freeze_startup_heap


class Node:
    """A container that refers to itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def unfrozen():
    """Each test starts and ends with nothing frozen (the freeze is process-wide)."""
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.collect()


def test_start_up_garbage_is_collected_and_what_lives_is_frozen(unfrozen):
    garbage, kept = Node(), Node()
    dead, alive = weakref.ref(garbage), weakref.ref(kept)
    del garbage
    frozen = freeze_startup_heap()
    assert dead() is None  # collected first, not frozen
    assert frozen == gc.get_freeze_count() > 0
    assert all(o is not kept for o in gc.get_objects())  # out of every generation
    del kept
    gc.collect()
    assert alive() is not None  # a frozen cycle is never collected: why only start-up's
    gc.unfreeze()
    gc.collect()
    assert alive() is None


def test_the_worker_freezes_its_heap_before_its_loop_runs(unfrozen, monkeypatch, tmp_path):
    settings = small_settings(
        registry={"kind": "filesystem", "path": str(tmp_path / "registry")},
        checkpoint={"dir": str(tmp_path / "ckpt")},
        metrics={"port": None},
    )
    seen: list[int] = []

    class Loop:
        def run(self) -> None:
            seen.append(gc.get_freeze_count())

    monkeypatch.setattr(app, "build_worker", lambda *args, **kwargs: Loop())
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        app.run_worker(settings)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert len(seen) == 1 and seen[0] > 0


def test_a_server_process_freezes_its_heap_before_the_model_loads(unfrozen, monkeypatch, tmp_path):
    settings = small_settings(registry={"kind": "filesystem", "path": str(tmp_path / "registry")})
    at: dict[str, int] = {}
    build = app.build_server

    def built(*args, **kwargs):
        server, runtime = build(*args, **kwargs)
        refresh = runtime.refresh_model

        def refresh_model(*a, **k):
            at.setdefault("model loads", gc.get_freeze_count())
            return refresh(*a, **k)

        runtime.refresh_model = refresh_model
        return server, runtime

    monkeypatch.setattr(app, "build_server", built)
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: at.setdefault("serves", 0)
    )
    app._serve(settings, 0, None, shared=False)
    assert at["model loads"] > 0 and "serves" in at
