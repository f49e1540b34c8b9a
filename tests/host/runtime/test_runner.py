"""The call runner on its own: work that overruns is abandoned, cleaned up on its worker, and bounded."""

from __future__ import annotations

import threading

import pytest

from host.errors import FunctionTimedOut, FunctionUnavailable
from host.runtime.runner import CallAbandoned, CallRunner, CallStranded, ShuttingDown


def test_work_that_ends_in_time_answers_on_the_callers_behalf() -> None:
    runner = CallRunner(margin_s=0.05, stranded_per_key=1, stranded_max=2)
    assert runner.run("f", lambda: 42, timeout_s=5) == 42
    with pytest.raises(ValueError, match="from the work"):
        runner.run("f", _raise, timeout_s=5)
    runner.close()


def test_blocked_work_is_abandoned_and_cleaned_up_on_its_own_worker() -> None:
    runner = CallRunner(margin_s=0.05, stranded_per_key=1, stranded_max=2)
    release = threading.Event()
    cleaned: list[str] = []

    def blocked() -> str:
        release.wait(30)
        return "late"

    with pytest.raises(CallStranded) as caught:
        runner.run("f", blocked, timeout_s=0.05, cleanup=lambda: cleaned.append(threading.current_thread().name))
    assert isinstance(caught.value, FunctionTimedOut)  # a 504 to the caller
    assert runner.stranded("f") == 1 and cleaned == []
    # Past the per-function bound, the function's next call is refused without running.
    ran: list[bool] = []
    with pytest.raises(FunctionUnavailable):
        runner.run("f", lambda: ran.append(True), timeout_s=1)
    assert ran == []
    assert runner.run("g", lambda: "other functions still run", timeout_s=1) == "other functions still run"
    release.set()
    for _ in range(200):
        if runner.stranded() == 0:
            break
        threading.Event().wait(0.01)
    assert runner.stranded() == 0
    assert cleaned == ["wardfn-guest"]  # the store is closed by the thread that used it
    assert runner.run("f", lambda: "served again", timeout_s=1) == "served again"
    runner.close()


def test_the_host_wide_bound_refuses_every_function() -> None:
    runner = CallRunner(margin_s=0.01, stranded_per_key=5, stranded_max=2)
    release = threading.Event()
    for key in ("a", "b"):
        with pytest.raises(CallStranded):
            runner.run(key, lambda: release.wait(30), timeout_s=0.01)
    with pytest.raises(FunctionUnavailable):
        runner.run("c", lambda: None, timeout_s=1)
    release.set()
    runner.close()


def test_abandon_all_answers_the_calls_in_flight_and_refuses_later_ones() -> None:
    runner = CallRunner(margin_s=0.05, stranded_per_key=5, stranded_max=5)
    started, release = threading.Event(), threading.Event()
    cleaned: list[str] = []
    raised: list[BaseException] = []

    def blocked() -> str:
        started.set()
        release.wait(60)
        return "late"

    def caller() -> None:
        try:
            # A deadline far beyond the test: only abandon_all can end this wait.
            runner.run("f", blocked, timeout_s=60, cleanup=lambda: cleaned.append(threading.current_thread().name))
        except BaseException as exc:
            raised.append(exc)

    waiting = threading.Thread(target=caller)
    waiting.start()
    assert started.wait(10)
    assert runner.abandon_all() == 1
    waiting.join(10)
    assert not waiting.is_alive()
    [error] = raised
    assert isinstance(error, CallAbandoned) and isinstance(error, FunctionUnavailable)  # a 503 to the caller
    assert error.code == "function_unavailable" and "shutting down" in str(error)
    # The worker still has the call, and only it may clean up after it.
    assert runner.stranded("f") == 1 and cleaned == []
    # Every later call is refused without running, whatever its function.
    ran: list[bool] = []
    for key in ("f", "g"):
        with pytest.raises(ShuttingDown) as refused:
            runner.run(key, lambda: ran.append(True), timeout_s=1)
        assert not isinstance(refused.value, CallAbandoned)
    assert ran == []
    release.set()
    for _ in range(200):
        if runner.stranded() == 0:
            break
        threading.Event().wait(0.01)
    assert runner.stranded() == 0
    assert cleaned == ["wardfn-guest"]
    runner.close()


def test_abandon_all_leaves_nothing_to_answer_when_no_call_is_in_flight() -> None:
    runner = CallRunner(margin_s=0.05, stranded_per_key=1, stranded_max=2)
    assert runner.run("f", lambda: 1, timeout_s=5) == 1
    assert runner.abandon_all() == 0
    assert runner.stranded() == 0
    with pytest.raises(ShuttingDown):
        runner.run("f", lambda: 2, timeout_s=5)
    runner.close()


def _raise() -> None:
    raise ValueError("from the work")
