"""deploy/grafana/streamlearn.json and deploy/prometheus/alerts.yml as files: the dashboard is
importable by Grafana (structure of its JSON model) and portable (datasource variable); the
rules carry severity, summary, description and a runbook_url; and every metric either names is one
streamlearn/metrics/ defines. (A real Prometheus evaluates them in
tests/integration/test_prometheus.py.)"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from deploy_support import GRAFANA_SRC, PROMETHEUS_SRC, load_yaml
from prometheus_client import CollectorRegistry

from streamlearn.metrics.serve import ServeMetrics
from streamlearn.metrics.worker import SCORE_SERIES, WorkerMetrics

DASHBOARD = GRAFANA_SRC / "streamlearn.json"
RULES = PROMETHEUS_SRC / "alerts.yml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def _series_names() -> set[str]:
    """Every sample name streamlearn's metrics can produce (labelled families included)."""
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    ServeMetrics(registry)
    names = set()
    for family in registry.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names | set(SCORE_SERIES)  # scores: made with the first batch


def _metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\bstreamlearn_[a-z_]+\b", expr))


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    targets = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return targets + [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]


def test_dashboard_model_is_importable(dashboard):
    assert dashboard["uid"] == "streamlearn" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard.get("id") is None  # Grafana assigns ids on import
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid) and all(isinstance(v, int) for v in grid.values())
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        taken = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}  # fmt: skip
        assert not cells & taken, f"{panel['title']!r} overlaps another panel"
        cells |= taken


def test_rows_cover_throughput_learning_lifecycle_serving_and_processes(dashboard):
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == [
        "Throughput and lag",
        "Ranks",
        "Learning",
        "Model lifecycle",
        "Serving",
        "Processes",
    ]


def test_every_panel_queries_the_datasource_variable(dashboard):
    for panel in (p for p in dashboard["panels"] if p["type"] != "row"):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == DATASOURCE
    variable = dashboard["templating"]["list"][0]
    assert variable["name"] == "datasource" and variable["type"] == "datasource"
    assert variable["query"] == "prometheus"


# -- namespace / job / instance: deployments on one data source stay apart ---------------------
SCOPE = ("namespace", "job", "instance")
_SELECTOR = re.compile(
    r"\b(streamlearn_[a-z_]+|process_[a-z_]+|python_gc_[a-z_]+|up)\b(\{[^}]*\})?(?!\s*\()"
)


def test_scope_variables_chain_and_allow_all(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource", *SCOPE]
    for name in SCOPE:
        variable = variables[name]
        assert variable["type"] == "query" and variable["datasource"] == DATASOURCE
        # "All" matches series without the label too (the compose stack has no namespace)
        assert variable["includeAll"] and variable["multi"] and variable["allValue"] == ".*"
        assert variable["definition"] == variable["query"]["query"]
        assert re.fullmatch(rf"label_values\(up\{{[^}}]*\}}, {name}\)", variable["definition"])
    # each one narrows the next
    assert "$namespace" in variables["job"]["definition"]
    assert "$namespace" in variables["instance"]["definition"]
    assert "$job" in variables["instance"]["definition"]


def test_every_query_uses_the_scope_variables(dashboard):
    """Every series selector of every panel query and annotation is narrowed by the three
    variables, and every aggregation keeps `namespace` and `job`, so two releases never merge
    (the alert rules' convention)."""
    for expr in _exprs(dashboard):
        selectors = _SELECTOR.findall(expr)
        assert selectors, expr
        for metric, matchers in selectors:
            for name in SCOPE:
                assert f'{name}=~"${name}"' in matchers, (metric, expr)
        for clause in re.findall(r"\bby \(([^)]*)\)", expr):
            assert {"namespace", "job"} <= set(clause.split(", ")), expr
        assert not re.search(r"\b(sum|min|max|avg|count)\s*\(", expr), f"unscoped: {expr}"


# -- ranks: every worker family carries `rank` (one torch.distributed group of N processes) ----
def _by_clauses(expr: str) -> list[set[str]]:
    return [set(c.split(", ")) for c in re.findall(r"\bby \(([^)]*)\)", expr)]


def test_per_process_worker_aggregations_keep_the_rank(dashboard):
    """An aggregation that keeps one worker process apart (its instance) keeps its rank too, so
    legends and tooltips name the rank, which, unlike the pod's address, survives a restart."""
    for expr in _exprs(dashboard):
        if "streamlearn_worker_" not in expr:
            continue
        for labels in _by_clauses(expr):
            if "instance" in labels:
                assert "rank" in labels, expr


RANK_PANELS = {
    "Events per second by rank": "streamlearn_worker_events_consumed_total",
    "Consumer lag by rank": "streamlearn_worker_consumer_lag_messages",
    "Time in collectives by rank": "streamlearn_worker_collective_seconds_total",
    "Collective bytes per second by rank": "streamlearn_worker_collective_bytes_total",
}


def test_ranks_row_shows_each_rank(dashboard):
    panels = {p["title"]: p for p in dashboard["panels"]}
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    ranks_row = next(r for r in rows if r["title"] == "Ranks")
    below = min(r["gridPos"]["y"] for r in rows if r["gridPos"]["y"] > ranks_row["gridPos"]["y"])
    for title, metric in RANK_PANELS.items():
        panel = panels[title]
        assert ranks_row["gridPos"]["y"] < panel["gridPos"]["y"] < below, title
        (target,) = panel["targets"]
        assert metric in target["expr"] and _by_clauses(target["expr"]) == [
            {"namespace", "job", "rank"}
        ]
        assert "{{rank}}" in target["legendFormat"]
        if metric.endswith("_total"):
            assert f"rate({metric}{{" in target["expr"], "a counter is read as a rate"
    # seconds in collectives per second of wall time: a share of the time, 0..1
    collectives = panels["Time in collectives by rank"]["fieldConfig"]["defaults"]
    assert collectives["unit"] == "percentunit" and (collectives["min"], collectives["max"]) == (
        0,
        1,
    )
    assert panels["Collective bytes per second by rank"]["fieldConfig"]["defaults"]["unit"] == "Bps"
    # ranks reporting (count) against the world size they were started with (max)
    world = [t["expr"] for t in panels["Ranks reporting / world size"]["targets"]]
    assert all("streamlearn_worker_world_size" in e for e in world)
    assert sorted(e.split(" ")[0] for e in world) == ["count", "max"]


def test_group_level_panels_do_not_split_by_rank(dashboard):
    """Rank 0 alone publishes and checkpoints: per-process lines would show the other ranks as
    never publishing or as an ever older checkpoint, so these read the group's newest value."""
    panels = {p["title"]: p for p in dashboard["panels"]}
    for title, metric in (
        ("Model version: published vs served", "streamlearn_worker_model_version"),
        ("Checkpoint age", "streamlearn_worker_checkpoint_last_success_timestamp_seconds"),
        ("Checkpoint size", "streamlearn_worker_checkpoint_size_bytes"),
        ("Since last publish", "streamlearn_worker_last_publish_timestamp_seconds"),
    ):
        (expr,) = [t["expr"] for t in panels[title]["targets"] if metric in t["expr"]]
        assert re.search(r"\bmax by \(namespace, job\) \(" + metric, expr), expr


def test_every_panel_has_a_description(dashboard):
    for panel in (p for p in dashboard["panels"] if p["type"] != "row"):
        assert len(panel.get("description", "")) >= 20, panel["title"]


def test_no_line_spans_an_outage(dashboard):
    for panel in dashboard["panels"]:
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
        assert custom.get("spanNulls", False) is False, panel["title"]
        if panel["type"] == "timeseries":
            assert custom["spanNulls"] is False, panel["title"]


def test_every_panel_has_explicit_thresholds(dashboard):
    """Grafana's implicit thresholds (green, red at 80) colour values by accident."""
    for panel in (p for p in dashboard["panels"] if p["type"] != "row"):
        thresholds = panel["fieldConfig"]["defaults"]["thresholds"]
        assert thresholds["mode"] == "absolute" and thresholds["steps"][0]["value"] is None


def _color(panel: dict[str, Any], value: float) -> str:
    """The colour a value gets: its value mapping, else its threshold step."""
    defaults = panel["fieldConfig"]["defaults"]
    for mapping in defaults.get("mappings", []):
        hit = mapping["options"].get(str(int(value))) if mapping["type"] == "value" else None
        if hit and "color" in hit:
            return hit["color"]
    steps = defaults["thresholds"]["steps"]
    return [s for s in steps if s["value"] is None or value >= s["value"]][-1]["color"]


def test_a_down_worker_or_broker_shows_red(dashboard):
    (up,) = [p for p in dashboard["panels"] if p["title"] == "Worker up"]
    assert [t["legendFormat"].split()[0] for t in up["targets"]] == [
        "scrape",
        "broker",
        "partitions",
    ]
    assert _color(up, 0) == "red" and _color(up, 1) == "green"
    assert up["options"]["colorMode"] == "background"
    ages = {p["title"]: p for p in dashboard["panels"] if p["title"] in ("Checkpoint age",)}
    assert _color(ages["Checkpoint age"], 60) == "green"
    assert _color(ages["Checkpoint age"], 1800) == "red"


def test_counts_from_increase_are_whole_numbers(dashboard):
    for panel in (p for p in dashboard["panels"] if p["type"] != "row"):
        counted = [t["expr"] for t in panel["targets"] if "increase(" in t["expr"]]
        if not counted:
            continue
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["decimals"] == 0 and defaults["unit"] == "short", panel["title"]
        for expr in counted:
            assert expr.startswith(("round(", "sort_desc(round(")), expr


def test_drift_detections_are_annotations(dashboard):
    drifts = [a for a in dashboard["annotations"]["list"] if "drift" in a["name"].lower()]
    assert len(drifts) == 1 and drifts[0]["enable"]
    assert drifts[0]["datasource"] == DATASOURCE
    assert "streamlearn_worker_drifts_total" in drifts[0]["expr"]


def test_lag_panel_tolerates_a_wrong_end_offset(dashboard):
    lag = [e for e in _exprs(dashboard) if "consumer_lag_messages" in e]
    assert lag and all("clamp_min(" in e for e in lag)


def test_dashboard_and_rules_name_only_defined_metrics(dashboard, rules):
    known = _series_names()
    used = set().union(*(_metrics_in(e) for e in _exprs(dashboard) + [r["expr"] for r in rules]))
    assert used and used <= known, sorted(used - known)


REQUIRED_ALERTS = {
    "StreamlearnWorkerDown",
    "StreamlearnWorkerAbsent",
    "StreamlearnWorkerBrokerDown",
    "StreamlearnServerDown",
    "StreamlearnServerAbsent",
    "StreamlearnConsumerLagGrowing",
    "StreamlearnNoPublish",
    "StreamlearnLossSpikeNotRecovering",
    "StreamlearnServingErrorRatio",
    "StreamlearnServingLatencyP99",
    "StreamlearnCheckpointTooOld",
    "StreamlearnWorkerRanksMissing",
    "StreamlearnWorkerCollectiveBound",
}


def test_rules_are_complete_alerts(rules):
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)) and set(names) >= REQUIRED_ALERTS
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule["alert"]
    down = next(r for r in rules if r["alert"] == "StreamlearnWorkerDown")
    assert 'job="streamlearn-worker"' in down["expr"] and down["labels"]["severity"] == "critical"


def test_scrape_config_loads_the_rules_next_to_it():
    config = load_yaml(PROMETHEUS_SRC / "prometheus.yml")
    assert config["rule_files"] == [RULES.name]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"streamlearn-server", "streamlearn-worker"}
