"""Per-subject budgets over a sliding window, on an injected clock."""

from __future__ import annotations

import pytest

from host.ratelimit import Budget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_budget_is_per_subject_and_refills_as_the_window_slides() -> None:
    clock = Clock()
    budget = Budget(2, 60, clock)
    assert [budget.spend("a"), budget.spend("a"), budget.spend("a")] == [True, True, False]
    assert budget.spend("b") is True
    clock.now += 59.9
    assert budget.spend("a") is False
    clock.now += 0.1
    assert budget.spend("a") is True and budget.spend("a") is True and budget.spend("a") is False


def test_a_refused_spend_costs_nothing() -> None:
    clock = Clock()
    budget = Budget(1, 10, clock)
    assert budget.spend("a") is True
    for _ in range(5):
        clock.now += 1
        assert budget.spend("a") is False
    clock.now += 5
    assert budget.spend("a") is True


def test_zero_allows_nothing() -> None:
    assert Budget(0, 10).spend("a") is False


@pytest.mark.parametrize(("limit", "window"), [(-1, 10), (1, 0)])
def test_nonsense_budgets_are_refused(limit: int, window: float) -> None:
    with pytest.raises(ValueError):
        Budget(limit, window)
