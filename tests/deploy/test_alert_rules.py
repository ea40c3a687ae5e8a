"""deploy/prometheus/alerts.yml against its unit tests (alerts_test.yml, run by `promtool test
rules`: every alert fires on the series that should raise it and stays quiet on the others),
and the conventions of the rules: every alert has such tests, a runbook section, and
aggregations that keep `namespace` and `job` (two releases on one Prometheus never merge).

promtool comes from Debian's `prometheus` package (`make install-test` installs it as root);
without it the promtool tests are skipped, the others run."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
from deploy_support import PROMETHEUS_SRC, load_yaml

RULES = PROMETHEUS_SRC / "alerts.yml"
RULE_TESTS = PROMETHEUS_SRC / "alerts_test.yml"
RUNBOOKS = PROMETHEUS_SRC / "runbooks.md"
RUNBOOK_BASE = "https://github.com/streamlearn/streamlearn/blob/main/deploy/prometheus/runbooks.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="no promtool binary: `apt-get install prometheus` (Debian/Ubuntu, as root; "
    "`make install-test` does it when it can)",
)


@pytest.fixture(scope="module")
def alerts() -> list[dict[str, Any]]:
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=PROMETHEUS_SRC, capture_output=True, text=True, timeout=120
    )


@needs_promtool
def test_promtool_checks_the_rules():
    result = _promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_pass():
    result = _promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing(alerts):
    tests = load_yaml(RULE_TESTS)
    assert tests["rule_files"] == [RULES.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in alerts}
    assert sorted(names - firing) == [], "alerts without a firing test"
    assert sorted(names - quiet) == [], "alerts without a not-firing test"
    assert (firing | quiet) <= names, "tests of alerts that do not exist"


def test_every_alert_has_a_runbook_section(alerts):
    headings = re.findall(r"^## (\S+)$", RUNBOOKS.read_text(encoding="utf-8"), re.M)
    assert len(headings) == len(set(headings))
    for alert in alerts:
        annotations = alert["annotations"]
        assert "runbook" not in annotations, "the conventional name is runbook_url"
        assert annotations["runbook_url"] == f"{RUNBOOK_BASE}#{alert['alert'].lower()}"
        assert alert["alert"] in headings, f"runbooks.md has no section {alert['alert']}"
    assert sorted(headings) == sorted(a["alert"] for a in alerts), "stale runbook sections"


def test_aggregations_keep_namespace_and_job(alerts):
    """`sum by (instance)` would merge the same instance name of two releases, `sum` alone
    every release: each by/on clause keeps namespace and job (the compose stack's targets
    have no namespace label, which such a clause keeps as empty)."""
    for alert in alerts:
        clauses = re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", alert["expr"])
        bare = re.findall(r"\b(?:sum|max|min|avg|count)\s*\(", alert["expr"])
        assert not bare, f"{alert['alert']}: aggregation without `by`"
        for clause in clauses:
            labels = {label.strip() for label in clause.split(",")}
            assert {"namespace", "job"} <= labels, f"{alert['alert']}: by/on ({clause})"


def test_ranks_are_kept_apart_and_rank_0_duties_judged_per_group(alerts):
    """A scaled-out worker is N processes (ranks) of one group: a per-process aggregation (one
    that keeps `instance`) keeps `rank` too; what rank 0 alone does (publish, checkpoint) is
    judged over the group, or every other rank would raise it."""
    by_name = {a["alert"]: a["expr"] for a in alerts}
    for name, expr in by_name.items():
        for clause in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            labels = {label.strip() for label in clause.split(",")}
            if "instance" in labels and "streamlearn_worker_" in expr:
                assert "rank" in labels, f"{name}: by/on ({clause})"
    for name in ("StreamlearnNoPublish", "StreamlearnCheckpointTooOld"):
        clauses = re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", by_name[name])
        assert clauses and set(clauses) == {"namespace, job"}, name


def test_scrape_targets_and_broker_have_alerts(alerts):
    exprs = {a["alert"]: a["expr"].strip() for a in alerts}
    for job in ("streamlearn-worker", "streamlearn-server"):
        assert f'absent(up{{job="{job}"}})' in exprs.values(), f"no absent() alert for {job}"
        assert f'up{{job="{job}"}} == 0' in exprs.values(), f"no down alert for {job}"
    assert any("streamlearn_worker_broker_up" in e and "== 0" in e for e in exprs.values())
