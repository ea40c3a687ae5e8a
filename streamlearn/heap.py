"""A long-running process's start-up heap, kept out of the garbage collector's full collections.

CPython's cyclic collector traverses every tracked container in a full (oldest-generation)
collection. Once a worker or a server process has started it holds a few hundred thousand of
them (torch's, onnxruntime's and the clients' modules), so each full collection stops the
process for a long pause (``benchmarks/gc_pause.py`` measures it): the loop learns nothing
meanwhile; in a server, requests would wait (its steady requests allocate in balance and were
measured to start none: there this is insurance). The more of the loop's own objects survive a
while (a producer's buffered messages, say), the more often a full collection comes. The
start-up objects live as long as the process, so :func:`freeze_startup_heap` moves them out of
the collector's reach (``gc.freeze``, Python's permanent generation); later collections traverse
only what was allocated since.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["freeze_startup_heap"]

log = logging.getLogger(__name__)


def freeze_startup_heap() -> int:
    """Collect what start-up left as garbage, then freeze every object still tracked; returns
    how many objects are frozen (in all, this process so far).

    Call once, when a long-running process has built what it keeps (clients, model, server):
    a frozen object is still freed when its last reference goes, but one later left in an
    unreachable reference cycle is never collected, so what is frozen should be what lives
    on. Memory use does not change; only what a full collection walks does."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("%d start-up objects frozen out of the garbage collector's full collections", frozen)
    return frozen
