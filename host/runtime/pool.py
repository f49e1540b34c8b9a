"""Instances prepared (and warmed) ahead of demand, so instantiation stays off the request path."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

from wasmtime.component import Component

from host.errors import ArtifactRejected, FunctionFailed
from host.metrics import Metrics
from host.runtime.calls import SandboxLimits, Warmup
from host.runtime.sandbox import PreparedInstance, Sandbox


@dataclass
class _Slot:
    component: Component
    limits: SandboxLimits
    warmup: Warmup | None
    reuse: bool
    ready: queue.LifoQueue[PreparedInstance]
    label: str = ""


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
    ) -> None:
        self._sandbox = sandbox
        self._size = size
        self._reuse_size = reuse_size
        self._max_reuses = max_reuses
        self._metrics = metrics if metrics is not None else Metrics()
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
        self._wake.set()

    def unregister(self, key: str) -> None:
        with self._lock:
            slot = self._slots.pop(key, None)
        while slot is not None and not slot.ready.empty():
            slot.ready.get_nowait().discard()

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
                prepared = slot.ready.get_nowait()
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
        self, component: Component, limits: SandboxLimits, label: str, warmup: Warmup | None, reusable: bool
    ) -> PreparedInstance:
        started = time.perf_counter()
        prepared = self._sandbox.prepare(component, limits, warmup, reusable)
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
        while not self._stop.is_set():
            self._wake.wait(timeout=1)
            self._wake.clear()
            with self._lock:
                slots = list(self._slots.values())
            # Every instance is warmed, even when demand outruns the pool: measured on the full path
            # (two workers, 16 connections), instantiating only when the pool ran dry served 101
            # requests/s against 243 warming every one; a first call on the request path costs its
            # caller more than a warm-up costs this thread.
            # One instance per function a round: after a start or a reload every function has one
            # ready within a round, instead of the last waiting for all the others' full pools.
            wanting = slots
            while wanting and not self._stop.is_set():
                topped: list[_Slot] = []
                for slot in wanting:
                    # Reusable instances are made on demand and kept: topping up to one is enough.
                    if slot.ready.qsize() >= (1 if slot.reuse else self._size):
                        continue
                    try:
                        prepared = self._prepare(slot.component, slot.limits, slot.label, slot.warmup, slot.reuse)
                    except (FunctionFailed, ArtifactRejected):
                        continue  # not this function again until the next wake
                    try:
                        slot.ready.put_nowait(prepared)
                    except queue.Full:
                        prepared.discard()
                        continue
                    self._metrics.pool_ready.labels(slot.label).set(slot.ready.qsize())
                    topped.append(slot)
                wanting = topped
