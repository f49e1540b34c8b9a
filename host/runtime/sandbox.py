"""Runs functions in wasmtime sandboxes: one engine, one linker, a fresh store per invocation.

The linker satisfies the world's imports. `records` answers only inside the scope
the policy decision granted; `log` keeps a bounded buffer; the WASI preview 2
imports that componentize-py's CPython needs are wasmtime's, configured with
nothing behind them (no preopened directory, no environment, no arguments, no
network; stdout and stderr captured into a bounded buffer).

A wasmtime `Store` used by two threads at once aborts the whole process, so a
store belongs to exactly one invocation, on one thread at a time, and is dropped after it.
Guest code (instantiation, the warm-up, the call) runs on a worker of the `CallRunner`, which
the caller waits for no longer than the deadline plus a margin: a guest blocked in a WASI call
past its deadline is left to that worker, which closes the store when the call returns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from wasmtime import Engine, Store, WasiConfig, WasmtimeError
from wasmtime.component import Component, Func, Linker, Record

from host.errors import (
    ArtifactRejected,
    FunctionFailed,
    FunctionOutputRejected,
    FunctionTimedOut,
    FunctionTrapped,
    FunctionUnavailable,
)
from host.runtime.calls import CallResult, FunctionRequest, RecordQuery, RecordReader, SandboxLimits, Warmup
from host.runtime.capture import Bounded, capture_stdio
from host.runtime.engine import HANDLER_EXPORT
from host.runtime.imports import CallContext, DirectorySearch, PseudonymSource, bound_to, define_imports
from host.runtime.query_values import trim_after_flood
from host.runtime.results import parse_body, unwrap
from host.runtime.runner import LEFT_RUNNING, CallRunner
from host.runtime.values import call_handle, handle_has_known_shape
from host.types import Scope

# A guest call is waited for this long past its deadline before it is left to its worker: room
# for the epoch tick and a busy machine's scheduling, far below any caller's patience.
DEFAULT_MARGIN_S = 0.5
# What wasmtime's pooling allocator says when every slot is taken (its error carries no code).
POOL_FULL = "maximum concurrent limit of"


def runner_key(component: Component) -> str:
    """The name strandings are counted under: one per loaded component (a function's version)."""
    return f"component-{id(component):x}"


class PreparedInstance:
    """An instantiated component in its own store, not yet given any patient data.

    A one-shot instance serves one invocation and is then dropped. A reusable one (only for
    functions that read no records and receive no patient id) serves many, one at a time.
    """

    def __init__(
        self,
        store: Store,
        handle: Func,
        stdio: Bounded,
        reusable: bool = False,
        direct: bool = False,
        key: str = "",
    ) -> None:
        self._store: Store | None = store
        self.handle = handle
        # `handle` has the WIT's exact shape: called with direct conversion (host.runtime.values).
        self.direct = direct
        self.stdio = stdio
        self.reusable = reusable
        self.calls = 0
        self.key = key
        # Resident memory the host grew by while this instance was made and warmed (the pool's budget).
        self.footprint = 0

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

    def abandon(self) -> None:
        """Forget the store without touching it: a stranded call's worker still uses it, and closes it."""
        self._store = None


class Sandbox:
    """Instantiates and calls components; owns the linker shared by all of them."""

    def __init__(
        self,
        engine: Engine,
        read: RecordReader,
        tick_ms: int,
        pseudonym: PseudonymSource | None = None,
        directory: DirectorySearch | None = None,
        runner: CallRunner | None = None,
        query: RecordQuery | None = None,
        query_session: Callable[[], RecordQuery] | None = None,
    ) -> None:
        self.engine = engine
        self._read = read
        self._query = query
        # A fresh query per invocation (the store keeps what one search opened for the next): preferred to `query`.
        self._query_session = query_session
        self._tick_ms = tick_ms
        self._pseudonym = pseudonym
        self._directory = directory
        self.runner = runner if runner is not None else CallRunner(DEFAULT_MARGIN_S, 2, 4)
        self.linker = Linker(engine)
        self.linker.add_wasip2()
        define_imports(self.linker)

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
        warm_memory_bytes: int | None = None,
    ) -> PreparedInstance:
        """A fresh store and instance, with the memory cap and an empty WASI context; warmed if asked.

        With `warm_memory_bytes`, the warm-up runs under that lower memory cap: an instance that
        would grow past it fails its warm-up and is not kept (the pool's share per instance).
        """
        stdio = Bounded(limits.stdio_bytes)
        store = Store(self.engine)
        wasi = WasiConfig()  # empty: no preopens, no env, no args, no network
        capture_stdio(wasi, stdio)
        store.set_wasi(wasi)
        ceiling = limits.memory_bytes
        if warmup is not None and warm_memory_bytes is not None:
            ceiling = min(ceiling, warm_memory_bytes)
        store.set_limits(memory_size=ceiling)
        key = runner_key(component)

        def work() -> PreparedInstance:
            prepared = self._instantiate(store, component, stdio, reusable, key, limits)
            if warmup is not None:
                self._warm(prepared, warmup, limits)
            return prepared

        # Instantiation and the warm-up each get the function's deadline.
        budget_s = limits.deadline_ms / 1000 * (2 if warmup is not None else 1)
        try:
            prepared = self.runner.run(key, work, budget_s, cleanup=store.close)
        except LEFT_RUNNING:
            raise  # the store is the worker's now
        except BaseException:
            store.close()
            raise
        if ceiling != limits.memory_bytes:
            store.set_limits(memory_size=limits.memory_bytes)
        return prepared

    def _instantiate(
        self, store: Store, component: Component, stdio: Bounded, reusable: bool, key: str, limits: SandboxLimits
    ) -> PreparedInstance:
        store.set_epoch_deadline(math.ceil(limits.deadline_ms / self._tick_ms) + 1)
        try:
            instance = self.linker.instantiate(store, component)
            export = instance.get_export_index(store, HANDLER_EXPORT)
            handle = instance.get_func(store, "handle") if export is None else None
            if export is not None:
                index = instance.get_export_index(store, "handle", export)
                handle = instance.get_func(store, index) if index is not None else None
        except WasmtimeError as exc:
            if POOL_FULL in str(exc):  # wasmtime's pooling allocator has no slot left: load, not a defect
                raise FunctionUnavailable("the host is running as many instances as it can; try again") from exc
            raise FunctionTrapped("the function could not be instantiated") from exc
        if handle is None:
            raise ArtifactRejected(f"the component does not export {HANDLER_EXPORT}#handle")
        direct = handle_has_known_shape(component, store, handle)
        return PreparedInstance(store, handle, stdio, reusable, direct, key)

    def _warm(self, prepared: PreparedInstance, warmup: Warmup, limits: SandboxLimits) -> None:
        """One synthetic call; the function's own error answer is fine, a trap discards the instance."""
        assert prepared._store is not None
        context = CallContext(scope=warmup.scope, read=warmup.read, log=Bounded(limits.log_bytes), query=warmup.query)
        try:
            self._run(prepared._store, prepared, warmup.request, context, limits)
        except FunctionFailed:
            prepared.discard()
            raise
        # What the warm-up printed is not the caller's.
        prepared.stdio.reset()

    def call(
        self,
        prepared: PreparedInstance,
        request: FunctionRequest,
        scope: Scope,
        limits: SandboxLimits,
        directory: DirectorySearch | None = None,
    ) -> CallResult:
        """Run the handler once, within the limits, reading only inside `scope`; then drop a one-shot store.

        `directory`, when given, answers this call's directory searches in place of the sandbox's own
        (the service's, which charges each query to the caller's budget and keeps it for the audit
        record); either way only a scope whose imports hold "directory" reaches it."""
        if prepared.reusable and (scope.patient_id is not None or scope.resource_types):
            # The isolation rule, held here as well as in the manifest: an instance that can
            # read patient records never serves a second invocation.
            raise RuntimeError("a reusable instance may not be given access to patient records")
        context = CallContext(
            scope=scope,
            read=self._read,
            log=Bounded(limits.log_bytes),
            pseudonym=self._pseudonym,
            directory=directory if directory is not None else self._directory,
            query=self._query_session() if self._query_session is not None else self._query,
        )
        store = prepared.claim()
        stdio_before = prepared.stdio.used
        try:
            call_ms, raw = self.runner.run(
                prepared.key,
                lambda: self._run(store, prepared, request, context, limits),
                limits.deadline_ms / 1000,
                cleanup=store.close,
            )
        except LEFT_RUNNING:
            prepared.abandon()  # its worker closes the store once the blocked call returns
            raise
        except BaseException:
            if prepared.reusable:
                prepared.discard()  # after a trap or a timeout the instance's state is unknown
            else:
                store.close()
            raise
        if not prepared.reusable:
            store.close()
        prepared.calls += 1
        try:
            body = parse_body(unwrap(raw), limits.output_bytes, limits.answer_memory_bytes)
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
        context: CallContext,
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
        context.deadline = started + limits.deadline_ms / 1000
        store.set_epoch_deadline(ticks)
        try:
            with bound_to(context):
                if prepared.direct:
                    result: object = call_handle(
                        store, handle, request.patient_id, request.purpose, args, limits.output_bytes
                    )
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
        finally:
            trim_after_flood()  # wasmtime has freed what it lifted by now
        return (time.perf_counter() - started) * 1000, result


def _request_record(request: FunctionRequest, args: str) -> Record:
    """The request for wasmtime-py's generic conversion, which reads the attributes named as in the WIT."""
    record = Record()
    record.__dict__.update({"patient-id": request.patient_id, "purpose": request.purpose, "args": args})
    return record
