"""The chart's copies of deploy/prometheus and deploy/grafana (the single source of truth) are
byte-identical to the originals, and the templates that read them take them verbatim.

Helm reads only files inside the chart, so helm/sync-chart-files.sh copies the originals into
helm/streamlearn/files/; these tests fail while a copy is missing, differs or is stale."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from deploy_support import CHART, GRAFANA_SRC, PROMETHEUS_SRC, REPO, render

COPIES = {
    "prometheus": (PROMETHEUS_SRC, ("*.yml", "*.yaml")),
    "grafana": (GRAFANA_SRC, ("*.json",)),
}


def _files(directory: Path, patterns: tuple[str, ...]) -> dict[str, bytes]:
    """The files the sync copies: promtool's unit tests (*_test.yml) stay out of the chart."""
    if not directory.is_dir():
        return {}
    return {
        p.name: p.read_bytes()
        for pattern in patterns
        for p in directory.glob(pattern)
        if not p.stem.endswith("_test")
    }


@pytest.mark.parametrize("kind", sorted(COPIES))
def test_chart_copies_are_byte_identical_to_the_sources(kind):
    source, patterns = COPIES[kind]
    originals = _files(source, patterns)
    copies = _files(CHART / "files" / kind, patterns)
    assert originals, f"deploy/{kind}/ has no {' or '.join(patterns)} files"
    missing = sorted(set(originals) - set(copies))
    stale = sorted(set(copies) - set(originals))
    differ = sorted(n for n in set(originals) & set(copies) if originals[n] != copies[n])
    hint = "run helm/sync-chart-files.sh"
    assert (missing, stale, differ) == ([], [], []), hint


RULES = """\
groups:
  - name: streamlearn-serving
    rules:
      - alert: StreamlearnServerDown
        expr: up{job="streamlearn-server"} == 0
        for: 2m
        labels: {severity: critical}
        annotations:
          summary: "{{ $labels.instance }} is down"
          description: 'value {{ $value | humanize }}'
  - name: streamlearn-learning
    rules:
      - record: streamlearn:events:rate5m
        expr: sum(rate(streamlearn_worker_events_total[5m]))
"""
MORE_RULES = """\
groups:
  - name: streamlearn-drift
    rules:
      - alert: StreamlearnDriftStorm
        expr: increase(streamlearn_worker_drifts_total[1h]) > 5
"""
SCRAPE = """\
global: {scrape_interval: 15s}
rule_files: [rules.yml]
scrape_configs:
  - job_name: streamlearn-server
    static_configs: [{targets: ["server:8080"]}]
"""
DASHBOARD = {
    "title": "streamlearn",
    "uid": "streamlearn",
    "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
    "panels": [{"type": "timeseries", "datasource": {"uid": "${datasource}"}, "targets": []}],
}


@pytest.fixture
def scratch_chart(tmp_path: Path) -> Path:
    """A copy of the chart with sample observability files put in by the real sync script."""
    repo = tmp_path / "repo"
    shutil.copytree(CHART, repo / "helm" / "streamlearn")
    shutil.copy(REPO / "helm" / "sync-chart-files.sh", repo / "helm")
    (repo / "deploy" / "prometheus").mkdir(parents=True)
    (repo / "deploy" / "prometheus" / "rules.yml").write_text(RULES)
    (repo / "deploy" / "prometheus" / "slo-rules.yaml").write_text(MORE_RULES)
    (repo / "deploy" / "prometheus" / "prometheus.yml").write_text(SCRAPE)
    (repo / "deploy" / "prometheus" / "rules_test.yml").write_text("rule_files: [rules.yml]\n")
    (repo / "deploy" / "grafana").mkdir(parents=True)
    (repo / "deploy" / "grafana" / "streamlearn.json").write_text(json.dumps(DASHBOARD))
    # a stale copy the sync must remove
    (repo / "helm" / "streamlearn" / "files" / "grafana" / "old.json").write_text("{}")
    subprocess.run(
        ["bash", str(repo / "helm" / "sync-chart-files.sh")], check=True, capture_output=True
    )
    return repo / "helm" / "streamlearn"


def test_sync_script_copies_and_prunes(scratch_chart):
    files = scratch_chart / "files"
    assert sorted(p.name for p in (files / "prometheus").iterdir()) == [
        ".gitkeep",
        "prometheus.yml",
        "rules.yml",
        "slo-rules.yaml",
    ]
    assert sorted(p.name for p in (files / "grafana").iterdir()) == [".gitkeep", "streamlearn.json"]
    assert (files / "prometheus" / "rules.yml").read_text() == RULES


def test_prometheus_rule_takes_every_rules_file_verbatim(scratch_chart):
    with helm.Chart.load(scratch_chart) as chart:
        out = render(chart)
        off = render(chart, {"metrics": {"prometheusRule": {"enabled": False}}})
    (rule,) = out.all("PrometheusRule")
    # files in name order (rules.yml, slo-rules.yaml), each file's groups in order
    expected = yaml.safe_load(RULES)["groups"] + yaml.safe_load(MORE_RULES)["groups"]
    assert rule["spec"]["groups"] == expected
    # Prometheus templating in annotations reaches the operator untouched
    annotations = rule["spec"]["groups"][0]["rules"][0]["annotations"]
    assert annotations["summary"] == "{{ $labels.instance }} is down"
    assert "no alert rules" not in out.notes
    assert off.all("PrometheusRule") == []


def test_dashboard_configmap_holds_every_dashboard(scratch_chart):
    with helm.Chart.load(scratch_chart) as chart:
        out = render(chart)
        off = render(chart, {"metrics": {"grafanaDashboard": {"enabled": False}}})
        custom = render(
            chart, {"metrics": {"grafanaDashboard": {"namespace": "monitoring", "folder": ""}}}
        )
    (configmap,) = [c for c in out.all("ConfigMap") if c["metadata"]["name"].endswith("dashboards")]
    kubernetes_validate.validate(configmap, "1.33", strict=True)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "streamlearn"}
    assert json.loads(configmap["data"]["streamlearn.json"]) == DASHBOARD
    assert not [c for c in off.all("ConfigMap") if c["metadata"]["name"].endswith("dashboards")]
    (moved,) = [c for c in custom.all("ConfigMap") if c["metadata"]["name"].endswith("dashboards")]
    assert moved["metadata"]["namespace"] == "monitoring" and "annotations" not in moved["metadata"]


def test_invalid_rules_file_fails_the_render(scratch_chart):
    (scratch_chart / "files" / "prometheus" / "rules.yml").write_text("groups: [unclosed\n")
    with helm.Chart.load(scratch_chart) as chart, pytest.raises(helm.HelmRenderError):
        render(chart)
