"""Instances prepared (and warmed) ahead of demand, so instantiation stays off the request path.

With wasmtime's pooling allocator (host.runtime.engine) a fresh instance lands in a slot whose
memory is still resident, reset to the function's initial image: its first call costs what a
warm call does, so the pool only instantiates (`warm=False`, about 1.5 ms of CPU an instance
against 20-40 with a warm-up call). Prepared instances then take at most half the allocator's
slots, leaving the rest to calls in flight, reused instances and stranded calls.

Two things keep the pool from costing the host more than it saves. Memory: the prepared
instances of every function share one budget (each instance's warm-up runs under a lower
memory cap, and what the host grew by while making it is counted against the budget until the
instance is taken). Failures: a function whose warm-up fails is tried again after a delay that
doubles with each failure up to a ceiling, logged once when it starts failing and once when it
recovers, so an idle host with a broken function sits idle.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass

from wasmtime.component import Component

from host.errors import ArtifactRejected, FunctionFailed, Unavailable, WardfnError
from host.metrics import Metrics
from host.runtime.calls import SandboxLimits, Warmup
from host.runtime.sandbox import PreparedInstance, Sandbox

log = logging.getLogger("wardfn.pool")
MIB = 1024 * 1024
# The longest the filling thread sleeps with nothing due: a safety net, not a schedule.
IDLE_WAIT_S = 60.0


def resident_bytes() -> int:
    """This process's resident memory (Linux `/proc/self/statm`); 0 where that cannot be read."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class _Slot:
    component: Component
    limits: SandboxLimits
    warmup: Warmup | None
    reuse: bool
    ready: queue.LifoQueue[PreparedInstance]
    label: str = ""
    failures: int = 0
    retry_at: float = 0.0
    attempts: int = 0


class InstancePool:
    """Fresh instances prepared (and warmed) ahead of demand, so instantiation stays off the request path.

    A one-shot instance serves one invocation and is then discarded: nothing read for one
    patient can survive into the next call. A function registered with `reuse=True` (one
    that reads no records and receives no patient id) gets instances that go back to the
    pool after each call, one caller at a time.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        size: int,
        reuse_size: int = 16,
        metrics: Metrics | None = None,
        max_reuses: int = 10_000,
        *,
        memory_budget_bytes: int = 320 * MIB,
        instance_memory_bytes: int | None = 64 * MIB,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 300.0,
        warm: bool = True,
        slots: int | None = None,
    ) -> None:
        self._sandbox = sandbox
        self._size = size
        self._reuse_size = reuse_size
        self._max_reuses = max_reuses
        self._metrics = metrics if metrics is not None else Metrics()
        self._memory_budget = memory_budget_bytes
        self._instance_memory = instance_memory_bytes
        self._backoff_initial = backoff_initial_s
        self._backoff_max = max(backoff_max_s, backoff_initial_s)
        self._warm = warm
        # Ready instances, all functions together, stay within this (half the pooling allocator's slots).
        self._ready_cap = max(slots // 2, 1) if slots is not None else None
        self._held = 0  # resident bytes the ready instances account for
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="wardfn-prepare", daemon=True)

    def register(
        self,
        key: str,
        component: Component,
        limits: SandboxLimits,
        function: str | None = None,
        *,
        warmup: Warmup | None = None,
        reuse: bool = False,
    ) -> None:
        """Keep instances of `component` ready under `key`; `function` names it in metrics."""
        label = function or key.split("@")[0]
        with self._lock:
            capacity = max(self._reuse_size if reuse else self._size, 1)
            self._slots[key] = _Slot(component, limits, warmup, reuse, queue.LifoQueue(maxsize=capacity), label)
        self._metrics.pool_target.labels(label).set(1 if reuse else self._size)
        self._metrics.pool_ready.labels(label).set(0)
        self._metrics.warmup_backoff_seconds.labels(label).set(0)
        self._wake.set()

    def unregister(self, key: str) -> None:
        with self._lock:
            slot = self._slots.pop(key, None)
        while slot is not None and not slot.ready.empty():
            self._release(slot.ready.get_nowait()).discard()

    def attempts(self, key: str) -> int:
        """Warm instances the filling thread has tried to make for `key` (for tests and diagnostics)."""
        with self._lock:
            slot = self._slots.get(key)
        return slot.attempts if slot is not None else 0

    @property
    def held_bytes(self) -> int:
        """Resident memory the ready instances account for, against the pool's budget."""
        return self._held

    def _release(self, prepared: PreparedInstance) -> PreparedInstance:
        """`prepared` leaves the pool: its memory no longer counts against the budget."""
        with self._lock:
            self._held = max(0, self._held - prepared.footprint)
            prepared.footprint = 0
        self._metrics.pool_memory_bytes.set(self._held)
        return prepared

    def take(self, key: str, component: Component, limits: SandboxLimits) -> PreparedInstance:
        """A prepared instance if one is ready, else one made now: a cold start (not warmed, to answer
        sooner), and measured as one. A key no longer registered still gets a fresh one-shot instance,
        so a call that looked its function up just before a reload runs on that version."""
        with self._lock:
            slot = self._slots.get(key)
        label = slot.label if slot is not None else key.split("@")[0]
        prepared = None
        if slot is not None:
            try:
                prepared = self._release(slot.ready.get_nowait())
            except queue.Empty:
                pass  # a cold start, below
            self._metrics.pool_ready.labels(label).set(slot.ready.qsize())
        if prepared is None:
            started = time.perf_counter()
            reusable = slot is not None and slot.reuse
            prepared = self._prepare(component, limits, label, None, reusable)
            self._metrics.cold_start_seconds.labels(label).observe(time.perf_counter() - started)
        # Refilling now would compete with this very call for the GIL (wasmtime-py lets go of it
        # and takes it back around every ctypes call), doubling the call's time: the refill waits
        # for `finished`, unless the pool is running low.
        if slot is None or (not slot.reuse and slot.ready.qsize() < max(1, self._size // 2)):
            self._wake.set()
        return prepared

    def finished(self, key: str) -> None:
        """A call on a one-shot instance taken under `key` is over: replace it now, off the call's path."""
        self._wake.set()

    def give_back(self, key: str, prepared: PreparedInstance) -> None:
        """Return a reusable instance after its call; a one-shot or broken one is dropped."""
        with self._lock:
            slot = self._slots.get(key)
        if slot is None or not slot.reuse or not prepared.reusable or not prepared.usable:
            prepared.discard()
            return
        if prepared.calls >= self._max_reuses:
            prepared.discard()
            self._wake.set()
            return
        try:
            slot.ready.put_nowait(prepared)
        except queue.Full:
            prepared.discard()

    def _prepare(
        self,
        component: Component,
        limits: SandboxLimits,
        label: str,
        warmup: Warmup | None,
        reusable: bool,
        warm_memory_bytes: int | None = None,
    ) -> PreparedInstance:
        started = time.perf_counter()
        prepared = self._sandbox.prepare(component, limits, warmup, reusable, warm_memory_bytes)
        self._metrics.instantiate_seconds.labels(label).observe(time.perf_counter() - started)
        return prepared

    def start(self) -> None:
        if self._size > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _fill(self) -> None:
        timeout: float | None = None
        while not self._stop.is_set():
            self._wake.wait(timeout=timeout)
            self._wake.clear()
            with self._lock:
                slots = list(self._slots.values())
            # Without pooling every instance is warmed, even when demand outruns the pool: measured on the full path
            # (two workers, 16 connections), instantiating only when the pool ran dry served 101
            # requests/s against 243 warming every one; a first call on the request path costs its
            # caller more than a warm-up costs this thread.
            # One instance per function a round: after a start or a reload every function has one
            # ready within a round, instead of the last waiting for all the others' full pools.
            wanting = slots
            while wanting and not self._stop.is_set():
                topped: list[_Slot] = []
                for slot in wanting:
                    if self._top_up(slot):
                        topped.append(slot)
                wanting = topped
            timeout = self._next_due(slots)

    def _top_up(self, slot: _Slot) -> bool:
        """One more warm instance for `slot`, if it wants one, is not backing off and fits the budget."""
        # Reusable instances are made on demand and kept: topping up to one is enough.
        if slot.ready.qsize() >= (1 if slot.reuse else self._size):
            return False
        if time.monotonic() < slot.retry_at or self._held >= self._memory_budget:
            return False
        if self._ready_cap is not None and self._ready_total() >= self._ready_cap:
            return False
        slot.attempts += 1
        before = resident_bytes()
        warmup = slot.warmup if self._warm else None
        try:
            prepared = self._prepare(slot.component, slot.limits, slot.label, warmup, slot.reuse, self._instance_memory)
        except (FunctionFailed, ArtifactRejected, Unavailable) as exc:
            self._failed(slot, exc)
            return False
        # What the host grew by making it: the instance's linear memory as far as it was touched,
        # its tables and wasmtime's own records (other threads' allocations blur it; never below 0).
        prepared.footprint = max(0, resident_bytes() - before)
        if self._held + prepared.footprint > self._memory_budget:
            prepared.discard()
            return False
        if slot.failures:
            log.info(json.dumps({"event": "warmup_recovered", "function": slot.label, "failures": slot.failures}))
            slot.failures, slot.retry_at = 0, 0.0
            self._metrics.warmup_backoff_seconds.labels(slot.label).set(0)
        try:
            slot.ready.put_nowait(prepared)
        except queue.Full:
            prepared.discard()
            return False
        with self._lock:
            self._held += prepared.footprint
        self._metrics.pool_memory_bytes.set(self._held)
        self._metrics.pool_ready.labels(slot.label).set(slot.ready.qsize())
        return True

    def _ready_total(self) -> int:
        with self._lock:
            return sum(slot.ready.qsize() for slot in self._slots.values())

    def _failed(self, slot: _Slot, exc: WardfnError) -> None:
        """A warm-up failed: not this function again until its backoff has passed."""
        slot.failures += 1
        delay = min(self._backoff_initial * 2 ** (slot.failures - 1), self._backoff_max)
        slot.retry_at = time.monotonic() + delay
        self._metrics.warmup_failures.labels(slot.label).inc()
        self._metrics.warmup_backoff_seconds.labels(slot.label).set(delay)
        if slot.failures == 1:
            # One line when it starts failing; the metrics count the rest, until it recovers.
            log.warning(
                json.dumps(
                    {
                        "event": "warmup_failing",
                        "function": slot.label,
                        "outcome": exc.code,
                        "backoff_s": delay,
                        "backoff_max_s": self._backoff_max,
                    }
                )
            )

    def _next_due(self, slots: list[_Slot]) -> float | None:
        """How long the filling thread may sleep: until the earliest backoff ends, or until woken."""
        now = time.monotonic()
        due = [
            slot.retry_at - now
            for slot in slots
            if slot.retry_at > now and slot.ready.qsize() < (1 if slot.reuse else self._size)
        ]
        return min(max(min(due), 0.01), IDLE_WAIT_S) if due else IDLE_WAIT_S
