"""deploy/grafana/streamlearn.json and deploy/prometheus/alerts.yml as files: the dashboard is
importable by Grafana (structure of its JSON model) and portable (datasource variable); the
rules carry severity, summary, description and a runbook; and every metric either names is one
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
from streamlearn.metrics.worker import WorkerMetrics

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
    return names


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


def test_rows_cover_throughput_learning_lifecycle_and_serving(dashboard):
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Throughput and lag", "Learning", "Model lifecycle", "Serving"]


def test_every_panel_queries_the_datasource_variable(dashboard):
    for panel in (p for p in dashboard["panels"] if p["type"] != "row"):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == DATASOURCE
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "datasource" and variable["type"] == "datasource"
    assert variable["query"] == "prometheus"


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
    "StreamlearnConsumerLagGrowing",
    "StreamlearnNoPublish",
    "StreamlearnLossSpikeNotRecovering",
    "StreamlearnServingErrorRatio",
    "StreamlearnServingLatencyP99",
    "StreamlearnCheckpointTooOld",
}


def test_rules_are_complete_alerts(rules):
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)) and set(names) >= REQUIRED_ALERTS
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
    down = next(r for r in rules if r["alert"] == "StreamlearnWorkerDown")
    assert 'job="streamlearn-worker"' in down["expr"] and down["labels"]["severity"] == "critical"


def test_scrape_config_loads_the_rules_next_to_it():
    config = load_yaml(PROMETHEUS_SRC / "prometheus.yml")
    assert config["rule_files"] == [RULES.name]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"streamlearn-server", "streamlearn-worker"}
