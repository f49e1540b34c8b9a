"""Runs functions in wasmtime sandboxes: one engine, one linker, a fresh store per invocation.

The linker satisfies the world's imports. `records` answers only inside the scope
the policy decision granted; `log` keeps a bounded buffer; the WASI preview 2
imports that componentize-py's CPython needs are wasmtime's, configured with
nothing behind them (no preopened directory, no environment, no arguments, no
network; stdout and stderr captured into a bounded buffer).

A wasmtime `Store` used by two threads at once aborts the whole process, so a
store belongs to exactly one invocation, on one thread, and is dropped after it.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import orjson
from wasmtime import Config, Engine, Store, WasiConfig, WasmtimeError
from wasmtime.component import Component, Func, Linker, Record, Variant

from host.directory import DirectoryQuery
from host.errors import (
    ArtifactRejected,
    FunctionFailed,
    FunctionOutputRejected,
    FunctionReturnedError,
    FunctionTimedOut,
    FunctionTrapped,
    StoreUnavailable,
)
from host.metrics import Metrics
from host.obligations import apply_to_text as apply_obligations
from host.types import Scope
from host.wasm_values import add_search_func, call_handle, handle_has_known_shape

WIT_PACKAGE = "wardfn:patient"
WIT_VERSION = "0.1.0"
HANDLER_EXPORT = f"{WIT_PACKAGE}/handler@{WIT_VERSION}"

RecordReader = Callable[[str, str], list[str]]
PseudonymSource = Callable[[str], str]
DirectorySearch = Callable[[DirectoryQuery, int], list[dict[str, str | None]]]
DIRECTORY_LIMIT = 20


def create_engine() -> Engine:
    """The process's one engine. Its settings are part of every artifact's cache key."""
    config = Config()
    config.epoch_interruption = True
    return Engine(config)


def engine_fingerprint() -> str:
    """What a serialized component depends on: the wasmtime version and the engine settings."""
    return f"wasmtime={package_version('wasmtime')};epoch_interruption=1"


class EpochTicker:
    """Advances the engine's epoch at a fixed interval so deadlines interrupt running code."""

    def __init__(self, engine: Engine, interval_ms: int) -> None:
        self._engine = engine
        self._interval = interval_ms / 1000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wardfn-epoch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._engine.increment_epoch()


@dataclass(frozen=True)
class SandboxLimits:
    """Per-invocation limits, from the settings and the function's manifest."""

    deadline_ms: int
    memory_bytes: int
    output_bytes: int
    stdio_bytes: int
    log_bytes: int


@dataclass(frozen=True)
class FunctionRequest:
    patient_id: str | None
    purpose: str
    args: dict[str, Any]


@dataclass
class CallResult:
    """The function's parsed answer and what the host saw while it ran."""

    body: Any
    call_ms: float
    log: list[str] = field(default_factory=list)
    stdio_bytes: int = 0
    # The strings the obligations kept from the function: its answer must not hold them.
    withheld: set[str] = field(default_factory=set)


class _Bounded:
    """Text collected up to a byte budget; the rest is counted and dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.dropped = 0
        self.lines: list[str] = []

    def add(self, text: str) -> None:
        size = len(text.encode("utf-8", "replace"))
        if self.used + size > self.limit:
            self.dropped += size
            return
        self.used += size
        self.lines.append(text)


@dataclass
class _CallContext:
    scope: Scope
    read: RecordReader
    log: _Bounded
    pseudonym: PseudonymSource | None = None
    directory: DirectorySearch | None = None
    withheld: set[str] = field(default_factory=set)


# Host imports run synchronously on the thread that called into the instance, so
# the thread knows which invocation, and so which scope, an import call belongs to.
_current = threading.local()


@contextmanager
def _bound_to(context: _CallContext) -> Iterator[None]:
    _current.context = context
    try:
        yield
    finally:
        _current.context = None


def _records_search(_store: object, patient_id: str, resource_type: str) -> list[str] | Variant:
    context: _CallContext | None = getattr(_current, "context", None)
    if context is None:
        return Variant("denied", "no invocation is running")
    scope = context.scope
    if scope.patient_id is None or patient_id != scope.patient_id:
        return Variant("denied", "this invocation is not authorised for that patient")
    if resource_type not in scope.resource_types:
        return Variant("denied", f"this invocation may not read {resource_type}")
    try:
        bodies = context.read(patient_id, resource_type)
    except StoreUnavailable:
        return Variant("unavailable", "the record store is unavailable")
    if not scope.mask and not scope.drop:
        return bodies
    # Masked and dropped fields never enter the sandbox: the function cannot leak what it never had.
    try:
        return [apply_obligations(body, scope.mask, scope.drop, context.withheld) for body in bodies]
    except (ValueError, TypeError):
        return Variant("unavailable", "a stored record could not be filtered")


def _records_pseudonym(_store: object, patient_id: str) -> str | Variant:
    context: _CallContext | None = getattr(_current, "context", None)
    if context is None or context.pseudonym is None:
        return Variant("denied", "no pseudonyms in this invocation")
    if context.scope.patient_id is None or patient_id != context.scope.patient_id:
        return Variant("denied", "this invocation is not authorised for that patient")
    return context.pseudonym(patient_id)


def _directory_search(_store: object, query: Record, limit: int) -> list[Record] | Variant:
    context: _CallContext | None = getattr(_current, "context", None)
    if context is None or context.directory is None or not context.scope.directory:
        return Variant("denied", "this invocation may not search the patient directory")
    wanted = DirectoryQuery(
        name=getattr(query, "name", None),
        birth_date=getattr(query, "birth-date", None),
        identifier=getattr(query, "identifier", None),
    )
    if not wanted.keys():
        return Variant("denied", "a search needs a name, a birth date or an identifier")
    try:
        found = context.directory(wanted, max(0, min(limit, DIRECTORY_LIMIT)))
    except StoreUnavailable:
        return Variant("unavailable", "the record store is unavailable")
    matches = []
    for item in found:
        match = Record()
        for wit_name, key in (("id", "id"), ("name", "name"), ("birth-date", "birth_date"), ("gender", "gender")):
            setattr(match, wit_name, item.get(key))
        matches.append(match)
    return matches


def _log_write(_store: object, level: str, message: str) -> None:
    context: _CallContext | None = getattr(_current, "context", None)
    if context is not None:
        context.log.add(f"{level}: {message}")


@dataclass(frozen=True)
class Warmup:
    """A synthetic invocation run once on a fresh instance before it is offered to a caller.

    CPython inside the component does its lazy start-up work (imports, caches) on the first
    call: warming moves that off the request path. The request and the records are
    synthetic, never patient data, so the instance has still read no patient's records.
    """

    request: FunctionRequest
    scope: Scope
    read: RecordReader


class PreparedInstance:
    """An instantiated component in its own store, not yet given any patient data.

    A one-shot instance serves one invocation and is then dropped. A reusable one (only for
    functions that read no records and receive no patient id) serves many, one at a time.
    """

    def __init__(
        self, store: Store, handle: Func, stdio: _Bounded, reusable: bool = False, direct: bool = False
    ) -> None:
        self._store: Store | None = store
        self.handle = handle
        # `handle` has the WIT's exact shape: called with direct conversion (host.wasm_values).
        self.direct = direct
        self.stdio = stdio
        self.reusable = reusable
        self.calls = 0

    @property
    def usable(self) -> bool:
        return self._store is not None

    def claim(self) -> Store:
        """The store: once for a one-shot instance, which is dropped after that invocation."""
        store = self._store
        if store is None:
            raise RuntimeError("this instance already served an invocation; take a fresh one")
        if not self.reusable:
            self._store = None
        return store

    def discard(self) -> None:
        """Drop the store now (after a failed call, or when the pool lets the instance go)."""
        store, self._store = self._store, None
        if store is not None:
            store.close()


class Sandbox:
    """Instantiates and calls components; owns the linker shared by all of them."""

    def __init__(
        self,
        engine: Engine,
        read: RecordReader,
        tick_ms: int,
        pseudonym: PseudonymSource | None = None,
        directory: DirectorySearch | None = None,
    ) -> None:
        self.engine = engine
        self._read = read
        self._tick_ms = tick_ms
        self._pseudonym = pseudonym
        self._directory = directory
        self.linker = Linker(engine)
        self.linker.add_wasip2()
        with self.linker.root() as root:
            with root.add_instance(f"{WIT_PACKAGE}/records@{WIT_VERSION}") as records:
                # The hottest import: converted directly, not by wasmtime-py's generic conversion.
                add_search_func(records, "search", _records_search)
                records.add_func("pseudonym", _records_pseudonym)
            with root.add_instance(f"{WIT_PACKAGE}/directory@{WIT_VERSION}") as patients:
                patients.add_func("search", _directory_search)
            with root.add_instance(f"{WIT_PACKAGE}/log@{WIT_VERSION}") as log:
                log.add_func("write", _log_write)

    def load(self, cwasm_path: Path) -> Component:
        """Load a precompiled component; the caller has verified it is one the host compiled."""
        try:
            return Component.deserialize_file(self.engine, str(cwasm_path))
        except WasmtimeError as exc:
            raise ArtifactRejected(f"{cwasm_path}: wasmtime cannot load it; rebuild with `wardfn build`") from exc

    def prepare(
        self,
        component: Component,
        limits: SandboxLimits,
        warmup: Warmup | None = None,
        reusable: bool = False,
    ) -> PreparedInstance:
        """A fresh store and instance, with the memory cap and an empty WASI context; warmed if asked."""
        stdio = _Bounded(limits.stdio_bytes)
        store = Store(self.engine)
        wasi = WasiConfig()  # empty: no preopens, no env, no args, no network
        wasi.stdout_custom = lambda data: stdio.add(data.decode("utf-8", "replace"))
        wasi.stderr_custom = lambda data: stdio.add(data.decode("utf-8", "replace"))
        store.set_wasi(wasi)
        store.set_limits(memory_size=limits.memory_bytes)
        store.set_epoch_deadline(1_000_000)  # instantiation runs no guest code of note
        try:
            instance = self.linker.instantiate(store, component)
            export = instance.get_export_index(store, HANDLER_EXPORT)
            handle = instance.get_func(store, "handle") if export is None else None
            if export is not None:
                index = instance.get_export_index(store, "handle", export)
                handle = instance.get_func(store, index) if index is not None else None
        except WasmtimeError as exc:
            store.close()
            raise FunctionTrapped("the function could not be instantiated") from exc
        if handle is None:
            store.close()
            raise ArtifactRejected(f"the component does not export {HANDLER_EXPORT}#handle")
        direct = handle_has_known_shape(component, store, handle)
        prepared = PreparedInstance(store, handle, stdio, reusable, direct)
        if warmup is not None:
            self._warm(prepared, warmup, limits)
        return prepared

    def _warm(self, prepared: PreparedInstance, warmup: Warmup, limits: SandboxLimits) -> None:
        """One synthetic call; the function's own error answer is fine, a trap discards the instance."""
        assert prepared._store is not None
        context = _CallContext(scope=warmup.scope, read=warmup.read, log=_Bounded(limits.log_bytes))
        try:
            self._run(prepared._store, prepared, warmup.request, context, limits)
        except FunctionFailed:
            prepared.discard()
            raise
        # What the warm-up printed is not the caller's.
        prepared.stdio.used = prepared.stdio.dropped = 0
        prepared.stdio.lines = []

    def call(
        self, prepared: PreparedInstance, request: FunctionRequest, scope: Scope, limits: SandboxLimits
    ) -> CallResult:
        """Run the handler once, within the limits, reading only inside `scope`; then drop a one-shot store."""
        if prepared.reusable and (scope.patient_id is not None or scope.resource_types):
            # The isolation rule, held here as well as in the manifest: an instance that can
            # read patient records never serves a second invocation.
            raise RuntimeError("a reusable instance may not be given access to patient records")
        context = _CallContext(
            scope=scope,
            read=self._read,
            log=_Bounded(limits.log_bytes),
            pseudonym=self._pseudonym,
            directory=self._directory,
        )
        store = prepared.claim()
        stdio_before = prepared.stdio.used
        ok = False
        try:
            result = self._run(store, prepared, request, context, limits)
            ok = True
        finally:
            if not prepared.reusable:
                store.close()
            elif not ok:
                prepared.discard()  # after a trap or a timeout the instance's state is unknown
        prepared.calls += 1
        call_ms, raw = result
        try:
            body = _parse_body(_unwrap(raw), limits.output_bytes)
        except FunctionOutputRejected:
            if prepared.reusable:
                prepared.discard()
            raise
        stdio_bytes = prepared.stdio.used - stdio_before
        return CallResult(
            body=body, call_ms=call_ms, log=context.log.lines, stdio_bytes=stdio_bytes, withheld=context.withheld
        )

    def _run(
        self,
        store: Store,
        prepared: PreparedInstance,
        request: FunctionRequest,
        context: _CallContext,
        limits: SandboxLimits,
    ) -> tuple[float, object]:
        """One call into the handler under the deadline; (milliseconds, the raw lifted result)."""
        handle = prepared.handle
        args = orjson.dumps(request.args).decode()
        ticks = math.ceil(limits.deadline_ms / self._tick_ms) + 1
        # The clock starts before the deadline is set: the epoch can run out no sooner than
        # deadline_ms after this, so an interrupt is never mistaken for a trap (a 500 for a 504)
        # when setting the deadline itself waited (the GIL, on a busy machine).
        started = time.perf_counter()
        store.set_epoch_deadline(ticks)
        try:
            with _bound_to(context):
                if prepared.direct:
                    result: object = call_handle(store, handle, request.patient_id, request.purpose, args)
                else:
                    result = handle(store, _request_record(request, args))
                handle.post_return(store)
        except WasmtimeError as exc:
            # A failed call carries no trap code we can rely on: the host's own clock decides.
            if (time.perf_counter() - started) * 1000 >= limits.deadline_ms:
                raise FunctionTimedOut(f"the function ran past its {limits.deadline_ms} ms deadline") from exc
            raise FunctionTrapped("the function trapped") from exc
        except (ValueError, TypeError, UnicodeError) as exc:
            raise FunctionOutputRejected("the function's answer is not the promised shape") from exc
        return (time.perf_counter() - started) * 1000, result


def _request_record(request: FunctionRequest, args: str) -> Record:
    """The request for wasmtime-py's generic conversion, which reads the attributes named as in the WIT."""
    record = Record()
    record.__dict__.update({"patient-id": request.patient_id, "purpose": request.purpose, "args": args})
    return record


def _unwrap(result: object) -> str:
    """wasmtime lifts `result<response, error>` as a Record (ok) or a Variant (err)."""
    if isinstance(result, Variant):
        raise FunctionReturnedError(result.tag, str(result.payload)[:500])
    body = getattr(result, "body", None)
    if not isinstance(body, str):
        raise FunctionOutputRejected("the function's answer is not a response record")
    return body


def _parse_body(body: str, limit: int) -> Any:
    if len(body.encode("utf-8")) > limit:
        raise FunctionOutputRejected(f"the function's answer exceeds the {limit} byte output limit")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FunctionOutputRejected("the function's answer is not JSON") from exc


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
