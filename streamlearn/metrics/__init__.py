"""Prometheus metrics, one module per role: :mod:`.worker` and :mod:`.serve`.

Nothing is registered at import (as in prometheus/client_python's own examples): the
composition root (streamlearn/app.py) makes one CollectorRegistry per process and hands it to
``WorkerMetrics`` or ``ServeMetrics``; tests make a fresh one each. Names start with
``streamlearn_worker_`` / ``streamlearn_serve_`` and end in their unit (``_total``,
``_seconds``, ``_bytes``). Known label values are created up front, so their series exist at 0
before the first event (``rate()`` and alerts then see the first increment). Nothing is
re-exported here: importing the serving metrics pulls in nothing of the worker's.
"""
