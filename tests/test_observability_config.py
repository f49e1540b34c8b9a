"""runtimeclass/observability/: promtool accepts the alert rules; every dashboard query names a metric the
host exports; the Promtail pipeline keeps request ids out of Loki labels."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from host.config import PROJECT_ROOT, load_settings
from host.metrics import exported_series

OBSERVABILITY = PROJECT_ROOT / "runtimeclass" / "observability"
PROMTOOL = load_settings().tools_dir / "promtool"
METRIC = re.compile(r"\b(wardfn_[a-z0-9_]+)\b")


def test_promtool_checks_the_alert_rules() -> None:
    done = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(OBSERVABILITY / "wardfn-alerts.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


def test_promtool_runs_the_review_overdue_alert_tests() -> None:
    done = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(OBSERVABILITY / "wardfn-alerts.test.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_fail_when_client_errors_page(tmp_path: pytest.TempPathFactory) -> None:
    rules = (OBSERVABILITY / "wardfn-alerts.yaml").read_text()
    paging = re.sub(r'outcome=~"function_\([^)]*\)', 'outcome=~"function_.*', rules, count=1)
    assert paging != rules
    (tmp_path / "wardfn-alerts.yaml").write_text(paging)  # type: ignore[operator]
    tests = (OBSERVABILITY / "wardfn-alerts.test.yaml").read_text()
    (tmp_path / "wardfn-alerts.test.yaml").write_text(tests)  # type: ignore[operator]
    done = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(tmp_path / "wardfn-alerts.test.yaml")],  # type: ignore[operator]
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "WardfnHighErrorRate" in done.stdout + done.stderr


def test_promtool_refuses_a_broken_rule(tmp_path: pytest.TempPathFactory) -> None:
    broken = (OBSERVABILITY / "wardfn-alerts.yaml").read_text().replace("> 0.2", "> > 0.2")
    path = tmp_path / "broken.yaml"  # type: ignore[operator]
    path.write_text(broken)
    done = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0


def test_alert_rules_cover_the_issue_and_name_exported_metrics() -> None:
    rules = yaml.safe_load((OBSERVABILITY / "wardfn-alerts.yaml").read_text())["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    assert {"WardfnHighErrorRate", "WardfnP99OverBudget", "WardfnAuditBacklog", "WardfnPolicyEngineDown"} <= names
    exported = exported_series()
    for rule in rules:
        used = set(METRIC.findall(rule["expr"]))
        assert used and used <= exported, (rule["alert"], used - exported)


def test_every_dashboard_panel_queries_an_exported_metric() -> None:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    exported = exported_series()
    assert dashboard["panels"]
    covered = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(METRIC.findall(target["expr"]))
            assert used, (panel["title"], target["expr"])
            assert used <= exported, (panel["title"], used - exported)
            covered |= used
    # Every family the issue asks for is on the dashboard.
    for family in ("invocation", "instantiate", "cold_start", "policy_decision", "instance_pool", "audit_write",
                   "audit_backlog"):  # fmt: skip
        assert any(family in name for name in covered), family


def test_scrape_config_and_promtail_pipeline() -> None:
    scrape = yaml.safe_load((OBSERVABILITY / "prometheus-scrape.yaml").read_text())
    assert scrape["scrape_configs"][0]["job_name"] == "wardfn"
    promtail = yaml.safe_load((OBSERVABILITY / "promtail.yaml").read_text())
    stages = promtail["scrape_configs"][0]["pipeline_stages"]
    extracted = next(s["json"]["expressions"] for s in stages if "json" in s)
    assert {"request_id", "function", "outcome", "latency_ms"} <= set(extracted)
    labels = next(s["labels"] for s in stages if "labels" in s)
    assert "request_id" not in labels  # unbounded: it stays in the line, never a label
    # A line that is not JSON (a traceback, a stray print) is dropped, never shipped.
    assert next(s["json"] for s in stages if "json" in s)["drop_malformed"] is True
