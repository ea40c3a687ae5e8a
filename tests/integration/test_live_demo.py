"""`streamlearn demo --serve`: learn, publish and serve in one process; requests get answers
from the published versions."""

from __future__ import annotations

import contextlib
import io
import re
import threading
import time

import httpx
from serving_support import small_settings

from streamlearn.cli import main
from streamlearn.demo.serving import run_live_demo


def test_live_demo_learns_publishes_and_serves(tmp_path):
    settings = small_settings(
        source={"stream": "agrawal-drift", "n_events": 3000, "batch_size": 64},
        memory={"enabled": True},
        export={"every_steps": 10, "min_rows": 128},
        registry={"path": str(tmp_path / "registry"), "poll_s": 0.1},
        serve={"port": 0, "memory_poll_s": 0.2},
    )
    out, stop, reports = io.StringIO(), threading.Event(), []
    thread = threading.Thread(
        target=lambda: reports.append(run_live_demo(settings, stop=stop, out=out))
    )
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while "still serving" not in out.getvalue():
            assert thread.is_alive() and time.monotonic() < deadline, out.getvalue()
            time.sleep(0.05)
        text = out.getvalue()
        url = re.search(r"serving on (http://\S+)", text).group(1)
        assert "curl -s -X POST" in text and ":predict" in text
        time.sleep(0.5)  # let the watcher take the final version and the memory
        with httpx.Client(base_url=url) as client:
            r = client.post(
                "/v1/models/streamlearn:predict", json={"instances": [{"salary": 50_000.0}]}
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["predictions"][0]) == 2 and body["compensated"] is True
    finally:
        stop.set()
        thread.join(30)
    report = reports[0]
    assert report.events == 3000 and len(report.published) >= 2
    assert int(body["model_version"]) == report.published[-1]


def test_demo_help_mentions_serve(capsys):
    with contextlib.suppress(SystemExit):
        main(["demo", "--help"])
    assert "--serve" in capsys.readouterr().out
    with contextlib.suppress(SystemExit):
        main(["serve", "--help"])
    assert "--redis" in capsys.readouterr().out
