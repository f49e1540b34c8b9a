"""Prometheus metrics for one host: a registry of its own, so tests can build as many hosts as they like.

Services call the methods here; only `app.py` serves `/metrics`. Labels are bounded and never
carry patient data: `function` is a name from the registry (never raw request input), `outcome`
is an error code or `ok`, `result` is allow, deny or error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
UNKNOWN_FUNCTION = "unknown"

# Seconds. The seed's budget is P99 < 200 ms and cold start < 50 ms: buckets are dense below both.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
FAST_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    """Every metric the host exports. Names are listed in `NAMES` for the dashboard and alert checks."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.invocation_seconds = Histogram(
            "wardfn_invocation_duration_seconds",
            "Invocation latency from policy to audit, by function and outcome (ok or the error code).",
            ["function", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.instantiate_seconds = Histogram(
            "wardfn_instantiate_duration_seconds",
            "Time to instantiate a fresh sandbox (store, WASI context, component instance).",
            ["function"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.cold_start_seconds = Histogram(
            "wardfn_cold_start_duration_seconds",
            "Time a request waited for an instance when none was prepared (instantiated on the request path).",
            ["function"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.component_load_seconds = Histogram(
            "wardfn_component_load_duration_seconds",
            "Time to load a precompiled component into the engine at start-up.",
            ["function"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.policy_seconds = Histogram(
            "wardfn_policy_decision_duration_seconds",
            "Policy decision latency.",
            ["result"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.policy_decisions = Counter(
            "wardfn_policy_decisions", "Policy decisions by result (allow, deny, error).", ["result"], registry=r
        )
        self.policy_up = Gauge(
            "wardfn_policy_engine_up", "1 when the policy engine answers, 0 when it does not.", registry=r
        )
        self.pool_ready = Gauge(
            "wardfn_instance_pool_ready", "Prepared instances waiting, by function.", ["function"], registry=r
        )
        self.pool_target = Gauge(
            "wardfn_instance_pool_target",
            "Prepared instances the pool keeps ready, by function.",
            ["function"],
            registry=r,
        )
        self.pool_memory_bytes = Gauge(
            "wardfn_instance_pool_memory_bytes",
            "Resident memory the prepared instances account for, against WARDFN_POOL_MEMORY_BUDGET_BYTES.",
            registry=r,
        )
        self.warmup_failures = Counter(
            "wardfn_warmup_failures",
            "Warm-ups that failed (trap, timeout, memory share exceeded), by function.",
            ["function"],
            registry=r,
        )
        self.warmup_backoff_seconds = Gauge(
            "wardfn_warmup_backoff_seconds",
            "How long the pool waits before the next warm-up of a function whose warm-ups fail; 0 when healthy.",
            ["function"],
            registry=r,
        )
        self.stranded_calls = Gauge(
            "wardfn_stranded_calls",
            "Calls abandoned past their deadline while blocked in a host call, still holding a worker and a store.",
            registry=r,
        )
        self.relay_backlog = Gauge(
            "wardfn_audit_relay_backlog",
            "Audit records the broker has not yet confirmed, as this process's relay last saw them "
            "(reported only by the process whose relay leads; see wardfn_audit_relay_leader).",
            registry=r,
        )
        self.relay_leader = Gauge(
            "wardfn_audit_relay_leader", "1 while this process's audit relay is the one publishing.", registry=r
        )
        self.audit_seconds = Histogram(
            "wardfn_audit_write_duration_seconds",
            "Time to make one audit record durable, waiting for the write lock included.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.audit_backlog = Gauge(
            "wardfn_audit_backlog", "Audit records waiting to be written or being written now.", registry=r
        )
        self.audit_failures = Counter(
            "wardfn_audit_write_failures", "Audit records that could not be written (the caller got 503).", registry=r
        )

        self.review_open = Gauge(
            "wardfn_review_open", "Break-the-glass accesses waiting for review (no disposition yet).", registry=r
        )
        self.review_oldest_seconds = Gauge(
            "wardfn_review_oldest_open_seconds",
            "How long the oldest break-the-glass access without a disposition has waited, in seconds (0 when none).",
            registry=r,
        )
        self.review_max_age_seconds = Gauge(
            "wardfn_review_max_age_seconds",
            "How long an access may wait for review before it is overdue (WARDFN_REVIEW_MAX_AGE_H).",
            registry=r,
        )

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)

    def watch_policy(self, healthy: Callable[[], bool]) -> None:
        """Report the policy engine's health at every scrape."""
        self.policy_up.set_function(lambda: 1.0 if healthy() else 0.0)

    def watch_stranded(self, count: Callable[[], int]) -> None:
        """Report the calls stranded past their deadline at every scrape."""
        self.stranded_calls.set_function(lambda: float(count()))

    def watch_reviews(self, queue: Callable[[], tuple[int, float]], max_age_s: float) -> None:
        """Report the review queue (its size and its oldest's age) at every scrape, read once a scrape."""
        self.review_max_age_seconds.set(max_age_s)
        latest: list[tuple[int, float]] = []

        def size() -> float:
            try:
                latest[:] = [queue()]
            except Exception:  # a trail that cannot be read reports nothing rather than a wrong queue
                latest[:] = [(-1, float("nan"))]
            return float(latest[0][0])

        # Gauges are collected in the order they were made: the size reads the queue, the age reuses it.
        self.review_open.set_function(size)
        self.review_oldest_seconds.set_function(lambda: latest[0][1] if latest else 0.0)

    def relay_progress(self, leading: bool, backlog: int) -> None:
        """The audit relay's report: whether this process leads, and the backlog it last saw."""
        self.relay_leader.set(int(leading))
        if leading:
            self.relay_backlog.set(backlog)

    @contextmanager
    def audit_write(self) -> Iterator[None]:
        """Time one audit append and count it in the backlog while it waits and runs."""
        self.audit_backlog.inc()
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self.audit_failures.inc()
            raise
        finally:
            self.audit_seconds.observe(time.perf_counter() - started)
            self.audit_backlog.dec()


def exported_series() -> frozenset[str]:
    """Every series name the host exports, as queries name them (histograms' _bucket, _sum and _count,
    counters' _total), with the label names each carries. For the dashboard and alert-rule checks."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        elif family.type == "counter":
            names.update((f"{family.name}_total", f"{family.name}_created"))
        else:
            names.add(family.name)
    return frozenset(names)
