"""Markdown, targets and the rate-sweep plot of benchmarks/serving.py's results."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from report import fmt_float, markdown_table

TARGET_P99_MS, TARGET_RATE, TARGET_PUBLISH_S = 10.0, 2000, 2.0
LATE_OK_MS = 2.0  # the generator kept its schedule if its wake-ups were this late at p99
# a run was shared with other programs if they kept more than this many cores busy on average,
# or more than OTHER_PEAK over some half second (enough to spoil a p99)
OTHER_CORES, OTHER_PEAK = 0.1, 0.3
TRANSPORTS = {
    "v1": "HTTP v1", "v2": "HTTP v2", "grpc": "gRPC",
    "http-live": "HTTP GET /v2/health/live", "grpc-live": "gRPC ServerLive",
}  # fmt: skip
STACK_RUN = {"v1": "http-live", "v2": "http-live", "grpc": "grpc-live"}  # each one's stack alone
IN_PROCESS = {
    "onnxruntime.run": "onnxruntime.run (floor)",
    "v1 path": "v1 model path (encode + onnxruntime + error memory)",
    "ASGI app v1": "ASGI app, v1 (Starlette, limits, handler, JSON, metrics)",
    "ASGI app v2": "ASGI app, v2",
    "gRPC handler": "gRPC ModelInfer handler (parse, checks, inference, serialize, metrics)",
}
APP = {"v1": "ASGI app v1", "v2": "ASGI app v2", "grpc": "gRPC handler"}  # what each calls
STACK = {"v1": "HTTP", "v2": "HTTP", "grpc": "gRPC"}


def shared(stats: dict[str, Any]) -> bool:
    """Whether other programs took a share of the machine during a run."""
    peak = stats.get("other_peak_cores") or 0.0
    return stats["other_cores"] > OTHER_CORES or peak > OTHER_PEAK


def _met_at(stats: dict[str, Any], rate: float) -> bool:
    p99 = stats["p99_ms"]
    return (
        p99 is not None
        and p99 < TARGET_P99_MS
        and stats["rps"] >= 0.97 * rate
        and stats["failures"] == 0
    )


def targets(data: dict[str, Any]) -> dict[str, Any]:
    """Each target of issue 20, from this run: the numbers and met or not."""
    r, rate = data["results"], data["args"]["rate"]
    paced = {}
    for t, s in r["paced"].items():
        again = r["sweep"].get(t, {}).get(str(float(rate)))  # the sweep's run at this rate
        paced[t] = {
            "p99_ms": s["p99_ms"], "rps": s["rps"], "failures": s["failures"],
            "sweep_p99_ms": again and again["p99_ms"],
            "met": _met_at(s, rate) and (again is None or _met_at(again, rate)),
        }  # fmt: skip
    swaps = r["swaps"].values()
    worst = [s["publish_to_serve_ms"]["max"] for s in swaps]
    runs = [*r["paced"].values(), *(s for sw in swaps for s in sw["load"].values())]
    late = [s["generator_late_p99_ms"] for s in runs if s["generator_late_p99_ms"] is not None]
    return {
        "rate": rate,
        "at_target_rate": rate == TARGET_RATE,
        "paced": paced,
        "p99_met": bool(paced) and all(p["met"] for p in paced.values()),
        "swap_failures": {k: s["failures"] for k, s in r["swaps"].items()},
        "no_failures": bool(r["swaps"])
        and all(s["failures"] == 0 and not s["unknown_versions"] for s in swaps),
        "publish_to_serve_max_ms": max((w for w in worst if w is not None), default=None),
        "publish_met": bool(r["swaps"])
        and all(w is not None and w < TARGET_PUBLISH_S * 1e3 for w in worst)
        and all(s["publish_to_serve_ms"]["never"] == 0 for s in swaps),
        "generator_late_p99_ms": max(late, default=None),
        "generator_kept_schedule": bool(late) and max(late) < LATE_OK_MS,
    }


# -- tables --------------------------------------------------------------------------------------
def _cost(stats: dict[str, Any]) -> list[str]:
    return [
        f"{stats['client_cpu_us']:,.0f}",
        f"{stats['server_cpu_us']:,.0f}",
        f"{stats['machine_busy']:.0%}",
        f"{stats['other_cores']:.2f} / {_f2(stats.get('other_peak_cores'))}",
    ]


def _f2(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _row(label: str, stats: dict[str, Any]) -> list[Any]:
    return [label, f"{stats['rps']:,.0f}", *_ms(stats), stats["failures"], *_cost(stats)]


def _ms(stats: dict[str, Any]) -> list[str]:
    return [fmt_float(stats[k]) for k in ("p50_ms", "p99_ms", "max_ms")]


def _latency_rows(data: dict[str, Any]) -> list[list[Any]]:
    r, a = data["results"], data["args"]
    rows: list[list[Any]] = []
    for name, label in IN_PROCESS.items():
        rows.append([f"in-process {label}", "-", *_ms(r["in_process"][name]), *["-"] * 5])
    for t, stats in r["closed"].items():
        rows.append(_row(f"{TRANSPORTS[t]} closed loop, {a['concurrency']} in flight", stats))
    for t, stats in r["paced"].items():
        rows.append(_row(f"{TRANSPORTS[t]} paced at {a['rate']:,.0f}/s", stats))
    for t, stats in r.get("stack", {}).items():
        rows.append(_row(f"{TRANSPORTS[t]} paced at {a['rate']:,.0f}/s (stack alone)", stats))
    return rows


def _sweep_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for t, points in data["results"]["sweep"].items():
        for rate, stats in points.items():
            rows.append(_row(f"{TRANSPORTS[t]} at {float(rate):,.0f}/s", stats))
    return rows


def _swap_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for backend, s in data["results"]["swaps"].items():
        to_serve = s["publish_to_serve_ms"]
        load = " + ".join(f"{TRANSPORTS[t]} {rate:,.0f}/s" for t, rate in s["rates"].items())
        answered = sum(stats["n"] for stats in s["load"].values())
        rows.append(
            [
                backend,
                load,
                s["versions_published"],
                s["versions_seen_in_responses"],
                f"{s['failures']} of {answered + s['failures']:,}",
                fmt_float(s["overall"]["p99_ms"]),
                fmt_float(s["during_swaps"]["p99_ms"]),
                fmt_float(s["during_swaps"]["max_ms"]),
                fmt_float(to_serve["median"], 1),
                fmt_float(to_serve["max"], 1),
            ]
        )
    return rows


def _command(data: dict[str, Any]) -> str:
    """The command line, each note shown as … (the notes are printed in full below)."""
    command = data["command"]
    for note in data.get("notes", []):
        command = command.replace(shlex.quote(note), "…")
    return command


def _met(ok: bool | None) -> str:
    return "—" if ok is None else "**met**" if ok else "**not met**"


def _target_lines(data: dict[str, Any]) -> list[str]:
    t, r = data["targets"], data["results"]
    rate = f"{t['rate']:,.0f} requests/s"
    if not t["at_target_rate"]:
        rate += f" (this run's --rate; the target is {TARGET_RATE:,})"
    lines = [f"- p99 under {TARGET_P99_MS:g} ms at {rate} → {_met(t['p99_met'])}:"]
    for k, p in t["paced"].items():
        again = p.get("sweep_p99_ms")
        lines.append(
            f"  - {TRANSPORTS[k]}: {fmt_float(p['p99_ms'])} ms at {p['rps']:,.0f}/s"
            + (f", {p['failures']} failed" if p["failures"] else "")
            + ("" if again is None else f"; in the sweep's run at this rate {fmt_float(again)} ms")
            + f" → {_met(p['met'])}"
        )
    if r["swaps"]:
        failed = ", ".join(f"{k} {n}" for k, n in t["swap_failures"].items())
        lines += [
            f"- hot swaps under {rate} with 0 failed requests: {failed} failed → "
            f"{_met(t['no_failures'])}",
            f"- publish → first response by the new version under {TARGET_PUBLISH_S:g} s: "
            f"worst {fmt_float(t['publish_to_serve_max_ms'], 1)} ms{_never(r)} → "
            f"{_met(t['publish_met'])}",
        ]
    kept = t["generator_kept_schedule"]
    lines.append(
        f"- the load generator kept its schedule (wake-ups late by under {LATE_OK_MS:g} ms at "
        f"p99): worst {fmt_float(t['generator_late_p99_ms'])} ms → "
        + ("yes" if kept else "**no** (its lateness is part of the latencies measured)")
    )
    lines += ["", *_interference(r, data["args"].get("retries"))]
    return lines


def _interference(r: dict[str, Any], retries: int | None) -> list[str]:
    """What other programs did to this run: waits, repeated runs, runs shared anyway."""
    runs = _load_runs(r)
    waited = sum(s.get("quiet_wait_s", 0.0) for s in [*runs.values(), *r["swaps"].values()])
    repeated = {label: s["attempts"] for label, s in runs.items() if s.get("attempts", 1) > 1}
    busy = {label: s for label, s in runs.items() if shared(s)}
    text = (
        f"Other programs on the machine: before each load run the benchmark waited for a quiet "
        f"second ({waited:,.0f} s in all), and repeated (up to {retries} times) a run during "
        "which they kept more than "
        f"{OTHER_CORES:g} cores busy on average, or {OTHER_PEAK:g} over some half second"
    )
    if repeated:
        text += " (" + ", ".join(f"{k}: {n} attempts" for k, n in repeated.items()) + ")"
    text += ". "
    if busy:
        named = ", ".join(
            f"{label} {s['other_cores']:.2f} / {_f2(s.get('other_peak_cores'))}"
            for label, s in busy.items()
        )
        text += (
            f"Still shared with them ({len(busy)} of {len(runs)} runs; their cores on average / "
            f"at the peak): {named}: those runs measured the server on a busy machine, not alone."
        )
    else:
        text += f"None of the {len(runs)} runs kept was shared with them beyond that."
    return [text]


def _never(r: dict[str, Any]) -> str:
    """How many published versions no response came from, if any."""
    never = sum(s["publish_to_serve_ms"]["never"] for s in r["swaps"].values())
    return f", {never} version(s) never served" if never else ""


def _load_runs(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every load run of the results, by a short label."""
    runs = {f"{TRANSPORTS[t]} closed": s for t, s in r["closed"].items()}
    runs |= {f"{TRANSPORTS[t]} paced": s for t, s in r["paced"].items()}
    runs |= {f"{TRANSPORTS[t]} (stack alone)": s for t, s in r.get("stack", {}).items()}
    for t, points in r["sweep"].items():
        runs |= {f"{TRANSPORTS[t]} sweep {float(rate):,.0f}/s": s for rate, s in points.items()}
    for backend, swaps in r["swaps"].items():
        runs |= {f"{TRANSPORTS[t]} swaps ({backend})": s for t, s in swaps["load"].items()}
    return runs


def _budget_lines(data: dict[str, Any]) -> list[str]:
    """CPU per request at the paced rate: the server's split into its stack alone (the
    cheapest request at the same rate), the app (timed in-process) and the rest; the client's;
    both times the rate against the machine's cores."""
    r, cores, rate = data["results"], data["machine"]["cpu_count"], data["args"]["rate"]
    lines = []
    for t, s in r["paced"].items():
        app = r["in_process"][APP[t]]["mean_ms"] * 1e3
        stack = r.get("stack", {}).get(STACK_RUN[t])
        server, client = s["server_cpu_us"] * rate / 1e6, s["client_cpu_us"] * rate / 1e6
        split = f"{s['server_system_us']:,.0f} µs of it in the kernel; "
        if stack is not None:
            rest = s["server_cpu_us"] - stack["server_cpu_us"] - app
            split += (
                f"{stack['server_cpu_us']:,.0f} µs the {STACK[t]} stack alone "
                f"({TRANSPORTS[STACK_RUN[t]]}), {app:,.0f} µs the app in-process, "
                f"{rest:,.0f} µs the rest"
            )
        else:
            split += f"{app:,.0f} µs the app in-process"
        lines.append(
            f"- {TRANSPORTS[t]}: server {s['server_cpu_us']:,.0f} µs per request ({split}): "
            f"{server:.2f} cores at {rate:,.0f}/s; client {s['client_cpu_us']:,.0f} µs "
            f"({client:.2f} cores): {server + client:.2f} of {cores} cores; the machine was "
            f"{s['machine_busy']:.0%} busy"
        )
    return lines


def render(data: dict[str, Any]) -> str:
    m, a, r = data["machine"], data["args"], data["results"]
    v = data["versions"]
    cost = ["client CPU µs/req", "server CPU µs/req", "machine busy", "others: cores, peak"]
    header = ["what", "requests/s", "p50", "p99", "max", "failures", *cost]
    swap_header = [
        "registry", "load", "published", "seen in responses", "failed requests", "p99 overall",
        "p99 ≤250 ms after a publish", "max ≤250 ms after a publish",
        "publish→served median", "publish→served max",
    ]  # fmt: skip
    spread = {t: s["spread"] for t, s in r["paced"].items()}
    lines = [
        "# Serving benchmark",
        "",
        f"Command: `{_command(data)}`  ",
        f"Date: {data['date']}, commit {data.get('commit') or '—'}  ",
        f"Machine: {m['cpu_count']} logical cores ({m['cpu']}), {m['platform']}, "
        f"Python {m['python']}, onnxruntime {v['onnxruntime']}, uvicorn {v['uvicorn']}, "
        f"grpcio {v['grpcio']}; load average at the start {data['load_average']}, at the end "
        f"{data.get('load_average_end')}",
        "",
        f"Server: `streamlearn serve --processes {a['processes']}`: "
        f"**{r['server_processes']} server process(es)** on the same HTTP and gRPC ports "
        "(SO_REUSEPORT), a subprocess of the benchmark. Client, in the benchmark process: "
        f"{a['connections']} keep-alive HTTP/1.1 connections driven by asyncio protocol "
        f"callbacks (no task per request), and {a['channels']} `grpc.aio` channels (one TCP "
        "connection each) sending ModelInfer with `raw_input_contents`, each call on the "
        "channel with the fewest in flight. Loopback, one-row requests, server and client on "
        "the same cores. Model: default settings (64 numeric + 16 categorical slots, 64-64 MLP, "
        "16 class slots), error memory on (top-k, 256 rows). Paced latency is measured from "
        "the scheduled send time (a wait for a free connection, and any lateness of the "
        f"generator, included); each run follows {a['warmup']:g} s of unmeasured warm-up. CPU "
        "per request: the client's (this process, grpc's threads included) and the server "
        "processes' (from /proc), over everything a run sent.",
        "",
        *(
            [
                f"The load average at the start ({data['load_average']} on {m['cpu_count']} "
                "cores) counts the last minutes' work, this benchmark's own preparation "
                "included; what other programs took during each load run is measured, "
                "under the targets.",
                "",
            ]
            if (data["load_average"] or 0) > 0.5
            else []
        ),
        *(
            ["## Notes", "", *(f"- {note}" for note in data.get("notes", [])), ""]
            if data.get("notes")
            else []
        ),
        "## Targets",
        "",
        *_target_lines(data),
        "",
        "## Latency (ms), throughput and CPU",
        "",
        markdown_table(header, _latency_rows(data)),
        "",
        "Established connections per server process during the paced runs (the kernel "
        "assigns each connection to one process): "
        + "; ".join(f"{TRANSPORTS[t]} {'/'.join(map(str, c))}" for t, c in spread.items()),
        "",
        "## Where the CPU goes at the paced rate",
        "",
        "CPU time per request (server processes and client from /proc and `process_time`, "
        "over a whole paced run), split into what the server's stack costs alone (its "
        "cheapest request at the same rate), what the app costs in-process without a network "
        "(tables above), and the rest (reading a body, larger messages, contention):",
        "",
        *_budget_lines(data),
        "",
    ]
    if r["sweep"]:
        lines += [
            "## Rate sweep",
            "",
            f"Paced runs of {a['sweep_seconds']:g} s each.",
            "",
            markdown_table(header, _sweep_rows(data)),
            "",
            "![p99 latency against the offered rate](serving-sweep.png)",
            "",
        ]
    if r["swaps"]:
        lines += [
            f"## Hot swaps under {a['rate']:,.0f} requests/s, a new version every "
            f"{a['swap_every']} s",
            "",
            markdown_table(swap_header, _swap_rows(data)),
            "",
        ]
    return "\n".join(lines)


def write_sweep_plot(data: dict[str, Any], path: Path) -> Path:
    """p99 (log scale) and achieved requests/s against the offered rate, per transport."""
    import matplotlib.pyplot as plt  # after report, which picks the file-only backend

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    for t, points in data["results"]["sweep"].items():
        rates = [float(rate) for rate in points]
        left.plot(rates, [p["p99_ms"] for p in points.values()], "o-", label=TRANSPORTS[t])
        right.plot(rates, [p["rps"] for p in points.values()], "o-", label=TRANSPORTS[t])
        for rate, p in zip(rates, points.values(), strict=True):
            if shared(p) and p["p99_ms"] is not None:
                left.annotate("shared", (rate, p["p99_ms"]), fontsize=7, xytext=(4, 4),
                              textcoords="offset points")  # fmt: skip
    left.axhline(TARGET_P99_MS, color="red", linestyle="--", linewidth=1, label="target p99")
    left.axvline(TARGET_RATE, color="grey", linestyle=":", linewidth=1, label="target rate")
    left.set(yscale="log", xlabel="offered requests/s", ylabel="p99 latency (ms)")
    top = max(float(rate) for pts in data["results"]["sweep"].values() for rate in pts)
    right.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1, label="offered")
    right.set(xlabel="offered requests/s", ylabel="answered requests/s")
    m = data["machine"]
    fig.suptitle(
        f"streamlearn serve, {data['results']['server_processes']} processes, "
        f"{m['cpu_count']} cores ({m['cpu']}), client on the same cores"
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
