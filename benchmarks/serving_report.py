"""Markdown rendering of benchmarks/serving.py results (tables, targets, machine)."""

from __future__ import annotations

from typing import Any

from report import fmt_float, markdown_table

TARGET_P99_MS, TARGET_RATE, TARGET_PUBLISH_S = 10.0, 500, 2.0


def _latency_rows(data: dict) -> list[list[Any]]:
    r, a = data["results"], data["args"]
    rows: list[list[Any]] = []
    for name, label in (("onnxruntime.run", "floor"), ("v1 path", "encode + ort + memory")):
        f = r["floor"][name]
        rows.append([f"in-process {name} ({label})", "-", *_ms(f), "-"])
    for name in ("v1", "v2"):
        c, p = r["closed"][name], r["paced"][name]
        rows.append([f"{name} closed loop, {a['concurrency']} connections", _rps(c), *_ms(c)])
        rows[-1].append(c["failures"])
        rows.append([f"{name} paced at {a['rate']:g}/s", _rps(p), *_ms(p), p["failures"]])
    return rows


def _ms(stats: dict) -> list[str]:
    return [fmt_float(stats["p50_ms"]), fmt_float(stats["p99_ms"])]


def _rps(stats: dict) -> str:
    return f"{stats['rps']:,.0f}"


def _swap_rows(data: dict) -> list[list[Any]]:
    rows = []
    for backend, s in data["results"]["swaps"].items():
        during, to_serve = s["during_swaps"] or {}, s["publish_to_serve_ms"]
        rows.append(
            [
                backend,
                s["versions_published"],
                s["versions_seen_in_responses"],
                s["load"]["failures"],
                fmt_float(s["load"]["p99_ms"]),
                fmt_float(during.get("p99_ms")),
                fmt_float(during.get("max_ms")),
                fmt_float(to_serve["median"], 1),
                fmt_float(to_serve["max"], 1),
            ]
        )
    return rows


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def render(data: dict) -> str:
    t, m, a = data["targets"], data["machine"], data["args"]
    swap_header = [
        "registry",
        "published",
        "seen in responses",
        "failed requests",
        "p99 overall",
        "p99 ≤250 ms after a publish",
        "max ≤250 ms after a publish",
        "publish→served median",
        "publish→served max",
    ]
    lines = [
        "# Serving benchmark",
        "",
        f"Command: `{data['command']}`  ",
        f"Date: {data['date']}  ",
        f"Machine: {m['cpu_count']} logical cores ({m['cpu']}), {m['platform']}, "
        f"Python {m['python']}, onnxruntime {data['versions']['onnxruntime']}, "
        f"uvicorn {data['versions']['uvicorn']}; load average at start {data['load_average']}",
        "",
        "Server: a `streamlearn serve` subprocess (uvicorn, one process). Client: a minimal "
        "asyncio HTTP/1.1 keep-alive client in the benchmark process. Loopback, one-row "
        "requests, server and client on the same cores. Model: default settings (64 numeric "
        "+ 16 categorical slots, 64-64 MLP, 16 class slots), error memory on (top-k, 256 rows). "
        "Paced latency is measured from the scheduled send time (queueing included).",
        "",
        *(
            [
                f"Other work was running on the machine (load average {data['load_average']} "
                "on 2 cores at the start): numbers vary from run to run; rerun on an idle "
                "machine for a baseline.",
                "",
            ]
            if (data["load_average"] or 0) > 0.5
            else []
        ),
        "## Latency (ms) and throughput",
        "",
        markdown_table(["what", "requests/s", "p50", "p99", "failures"], _latency_rows(data)),
        "",
        f"## Hot swaps under {a['rate']:g} requests/s (v1), a new version every "
        f"{a['swap_every']} s",
        "",
        markdown_table(swap_header, _swap_rows(data)),
        "",
        "## Targets",
        "",
        f"- p99 under {TARGET_P99_MS:g} ms at {TARGET_RATE} requests/s: v1 "
        f"{fmt_float(t['p99_v1_ms'])} ms, v2 {fmt_float(t['p99_v2_ms'])} ms → {_met(t['p99_met'])}",
        f"- publish → first response by the new version under {TARGET_PUBLISH_S:g} s: worst "
        f"{fmt_float(t['publish_to_serve_max_ms'], 1)} ms → {_met(t['publish_met'])}",
        f"- no failed request and no unpublished version during swaps: {_met(t['no_failures'])}",
        "",
    ]
    return "\n".join(lines)
