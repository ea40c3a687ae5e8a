"""``streamlearn worker`` with a :class:`CountingJoin`: the same worker, which also keeps, per event
id, how many late-label pairs it completed, in its checkpointed state (so a test can check from
the final checkpoint that each id was learned once through any number of kill -9s).

Run as ``python tests/integration/counting_worker.py --config FILE``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: worker_support

from worker_support import CountingJoin

from streamlearn.app import build_worker, configure_logging
from streamlearn.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    settings = load_settings(parser.parse_args().config)
    configure_logging("INFO", settings.worker.client_log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = build_worker(settings, stop)
    if worker is None:
        return
    w = settings.worker
    worker.join = CountingJoin(
        (w.label_cache_size, w.label_ttl_s), (w.early_label_cache_size, w.early_label_ttl_s)
    )
    worker.run()


if __name__ == "__main__":
    main()
