"""A sorted search's two ways to its first results (sorting the matches, or walking the index's kept
order) answer the same: every page of a sorted search is the same slice of the whole answer."""

from __future__ import annotations

import json

import pytest

from host.data.history import history_patient
from host.search.columns import KEPT_PER_ENTRY, Columns
from host.search.memory import evaluate
from host.search.params import Index
from host.search.query import DENSE, parse_query

LOINC = "http://loinc.org"


@pytest.fixture(scope="module")
def observations() -> list[str]:
    chart = history_patient(20261202, 4, 3000)
    found = [json.dumps(r) for r in chart if r["resourceType"] == "Observation"]
    assert len(found) > DENSE * 4
    return found


def _ids(bodies: list[str]) -> list[str]:
    return [json.loads(b)["id"] for b in bodies]


@pytest.mark.parametrize("sort", ["date", "-date"])
@pytest.mark.parametrize(
    "tests",
    [
        [],  # every Observation: the kept order is walked
        [("category", "vital-signs")],
        [("code", f"{LOINC}|8867-4")],  # one vital sign: few of many, the matches are sorted
        [("code", f"{LOINC}|8867-4,{LOINC}|8480-6"), ("status", "final,amended")],
        [("code", "no-such-code")],
        # The narrowest token walked in date order, the others and the dates tested on each entry.
        [("category", "vital-signs"), ("code", f"{LOINC}|8867-4"), ("date", "ge2015"), ("date", "lt2020-06")],
        [("status", "final,amended,preliminary"), ("category", "vital-signs,laboratory")],
    ],
)
def test_every_page_of_a_sorted_search_is_a_slice_of_the_whole(
    observations: list[str], sort: str, tests: list[tuple[str, str]]
) -> None:
    whole = _ids(evaluate("Observation", [*tests, ("_sort", sort)], observations))
    for offset, count in [(0, 1), (0, 7), (3, 5), (len(whole) - 2, 5), (len(whole) + 1, 1)]:
        params = [*tests, ("_sort", sort), ("_offset", str(max(offset, 0))), ("_count", str(count))]
        assert _ids(evaluate("Observation", params, observations)) == whole[max(offset, 0) : max(offset, 0) + count]


def test_what_an_index_keeps_of_the_questions_asked_stays_within_its_budget(observations: list[str]) -> None:
    # A function asking ever new combinations of codes must not grow what the host keeps with them.
    index = Index("Observation")
    for body in observations:
        index.add(json.loads(body))
    columns = Columns(index.to_bytes())
    budget = KEPT_PER_ENTRY * columns.count + 1024
    codes = sorted({code for param, _, code in columns.tokens if param == "code"})
    # Every prefix of the code list is a new combination of tokens, carried by more entries each time.
    asked = [[("category", "vital-signs,laboratory"), ("code", ",".join(codes[: i + 1]))] for i in range(len(codes))]
    asked += [[("status", "final"), ("code", code), ("_sort", "-date"), ("_count", "1")] for code in codes]
    for params in asked * 3:
        parse_query("Observation", params).select(columns)
        assert sum(map(len, columns._carrying.values())) <= budget
        assert sum(map(len, columns._within.values())) <= budget
        assert sum(len(v) + 1 for v in columns.matching.values()) <= budget
    assert len(asked) > 20 and columns._carrying  # the questions were asked, and some answers kept
