"""host/metrics.py: a registry per host, the audit timer's backlog and failures, the exported names."""

from __future__ import annotations

import pytest

from host.metrics import Metrics, exported_series


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_host_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.policy_decisions.labels("allow").inc()
    assert _value(first, "wardfn_policy_decisions_total", result="allow") == 1
    assert _value(second, "wardfn_policy_decisions_total", result="allow") is None


def test_audit_write_counts_backlog_while_running_and_failures_after() -> None:
    metrics = Metrics()
    with metrics.audit_write():
        assert _value(metrics, "wardfn_audit_backlog") == 1
    with pytest.raises(OSError), metrics.audit_write():
        raise OSError("disk full")
    assert _value(metrics, "wardfn_audit_backlog") == 0
    assert _value(metrics, "wardfn_audit_write_duration_seconds_count") == 2
    assert _value(metrics, "wardfn_audit_write_failures_total") == 1


def test_policy_up_is_read_at_scrape_time() -> None:
    metrics = Metrics()
    healthy = [True]
    metrics.watch_policy(lambda: healthy[0])
    assert _value(metrics, "wardfn_policy_engine_up") == 1
    healthy[0] = False
    assert _value(metrics, "wardfn_policy_engine_up") == 0
    assert b"wardfn_policy_engine_up 0.0" in metrics.exposition()


def test_exported_series_name_histogram_and_counter_series() -> None:
    names = exported_series()
    assert {
        "wardfn_invocation_duration_seconds_bucket",
        "wardfn_policy_decisions_total",
        "wardfn_audit_backlog",
    } <= names
    assert "wardfn_invocation_duration_seconds" not in names  # queries name the _bucket, _sum or _count series
