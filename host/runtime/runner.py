"""Where guest code runs: worker threads a call can be abandoned on when its deadline passes.

Epoch interruption stops a guest only while it executes instructions. A guest blocked in a
WASI host call (a clock subscription and a poll: `time.sleep`) runs no instructions, and
wasmtime-py offers no way to cancel that call: `Linker.add_wasip2()` has no hook, the WASI
`pollable` resource is wasmtime's own (every stream, socket and clock hands it out, so the
clock and poll imports cannot be shadowed one at a time), and the C API's async calls
abort the process when a WASI sleep finds no Tokio runtime (tried on wasmtime 50.0.1). So
every entry into a guest runs on one of these workers, and the caller waits for it no
longer than the deadline plus a margin. A call still running then is *stranded*: the
caller moves on (the function timed out), and the worker finishes the call whenever the
blocking host call returns (the epoch has passed by then, so the guest traps at once), then
runs the cleanup it was handed (closing the store, on the thread that last used it).

A stranded call still holds its store's memory, so strandings are bounded: per function
(a key the caller names) and for the whole host. Past either bound, new work for that key
is refused at once (503) instead of tying up another worker.

When the host shuts down, `abandon_all` stops waiting for every call in flight at once (each
caller raises `CallAbandoned`, a 503 the service audits like any outcome) and refuses every
later call: the drain answers its calls within the grace period, whatever the guests do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from host.errors import FunctionTimedOut, FunctionUnavailable, WardfnError

T = TypeVar("T")
IDLE_WORKERS_KEPT = 8


class CallStranded(FunctionTimedOut):
    """The deadline passed with the guest still blocked: its worker keeps the call (and what it uses)."""


class ShuttingDown(FunctionUnavailable):
    """The host is shutting down: the call was not started."""


class CallAbandoned(ShuttingDown):
    """The host is shutting down and stopped waiting for the call: its worker keeps it (and what it uses)."""


# After these, the work and everything it uses belong to its worker, which runs its cleanup.
LEFT_RUNNING: tuple[type[WardfnError], ...] = (CallStranded, CallAbandoned)


@dataclass(eq=False)  # kept in a set while its caller waits
class _Job(Generic[T]):
    work: Callable[[], T]
    cleanup: Callable[[], None] | None
    # Set when the work has finished, or when the runner stops waiting for it (abandon_all).
    settled: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    result: T | None = None
    error: BaseException | None = None
    abandoned: bool = False


class _Worker:
    def __init__(self, runner: CallRunner) -> None:
        self._runner = runner
        self._wake = threading.Event()
        self.job: _Job[object] | None = None
        self.key = ""
        threading.Thread(target=self._loop, name="wardfn-guest", daemon=True).start()

    def give(self, job: _Job[object], key: str) -> None:
        self.job, self.key = job, key
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            job, key = self.job, self.key
            if job is None:
                return  # told to stop
            try:
                job.result = job.work()
            except BaseException as exc:  # handed to the caller, or dropped with the stranded call
                job.error = exc
            self.job = None
            if not self._runner._finished(self, job, key):
                return


class CallRunner:
    """Runs guest work on worker threads, waiting for each no longer than its deadline plus `margin_s`."""

    def __init__(self, margin_s: float, stranded_per_key: int, stranded_max: int) -> None:
        self.margin_s = margin_s
        self.stranded_per_key = stranded_per_key
        self.stranded_max = stranded_max
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._stranded: dict[str, int] = {}
        self._waiting: set[_Job[Any]] = set()
        self._closed = False
        self._draining = False

    def stranded(self, key: str | None = None) -> int:
        """Calls abandoned (past their deadline, or by abandon_all) and still running: for `key`, or the host."""
        with self._lock:
            return self._stranded.get(key, 0) if key is not None else sum(self._stranded.values())

    def run(self, key: str, work: Callable[[], T], timeout_s: float, cleanup: Callable[[], None] | None = None) -> T:
        """`work()` on a worker; its answer or its exception, or FunctionTimedOut after `timeout_s` + the margin.

        Once the host shuts down (abandon_all), CallAbandoned at once, and ShuttingDown for later calls.
        Once abandoned, the work is the worker's: `cleanup` runs there after `work` returns, and the
        caller must not touch what the work uses (a store used by two threads aborts the process).
        """
        job: _Job[T] = _Job(work, cleanup)
        with self._lock:
            if self._draining:
                raise ShuttingDown(
                    "the host is shutting down; send the call again (another replica, or this one once restarted)"
                )
            own = self._stranded.get(key, 0)
            if own >= self.stranded_per_key or sum(self._stranded.values()) >= self.stranded_max:
                raise FunctionUnavailable(
                    "earlier calls of this function are still blocked past their deadlines; try again later"
                )
            worker = self._idle.pop() if self._idle else None
            self._waiting.add(job)
        if worker is None:
            worker = _Worker(self)
        worker.give(job, key)  # type: ignore[arg-type]
        woken = job.settled.wait(timeout_s + self.margin_s)
        with self._lock:
            self._waiting.discard(job)
            if not job.finished:
                job.abandoned = True
                self._stranded[key] = self._stranded.get(key, 0) + 1
        if job.abandoned:
            if woken:  # by abandon_all, before the deadline
                raise CallAbandoned("the host is shutting down and stopped the call before it ended; send it again")
            raise CallStranded(
                f"the function was still blocked {round((timeout_s + self.margin_s) * 1000)} ms after it started"
            )
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def abandon_all(self) -> int:
        """Stop waiting for every call in flight (each raises CallAbandoned) and refuse every later one.

        For the end of a drain: the callers answer and audit now, and the workers keep the calls
        until their host calls return (daemon threads: they do not hold the process's exit).
        Returns how many calls were in flight.
        """
        with self._lock:
            self._draining = True
            waiting = list(self._waiting)
        for job in waiting:
            job.settled.set()
        return len(waiting)

    def close(self) -> None:
        """Let idle workers go; stranded ones end on their own when their host call returns."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.give(None, "")  # type: ignore[arg-type]

    def _finished(self, worker: _Worker, job: _Job[object], key: str) -> bool:
        """Called by a worker after its work; whether it should wait for more."""
        with self._lock:
            job.finished = True
            job.settled.set()
            abandoned = job.abandoned
        if abandoned:
            try:
                if job.cleanup is not None:
                    job.cleanup()
            finally:
                with self._lock:
                    left = self._stranded.get(key, 1) - 1
                    if left > 0:
                        self._stranded[key] = left
                    else:
                        self._stranded.pop(key, None)
        with self._lock:
            if self._closed or len(self._idle) >= IDLE_WORKERS_KEPT:
                return False
            self._idle.append(worker)
            return True
