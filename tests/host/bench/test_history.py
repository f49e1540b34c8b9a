"""The history bench's measuring loop: every call counted by what it answered, a failure never a crash."""

from __future__ import annotations

import httpx

from host.bench.history import BenchPatient, _measure

PATIENT = BenchPatient(50_000, 3, "p", "d", {"Patient": 1, "Observation": 49_999}, 1.0, 2.0)


def _client(answers: list[int | None]) -> httpx.Client:
    pending = iter(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        status = next(pending)
        if status is None:
            raise httpx.ReadTimeout("too slow", request=request)
        if status == 200:
            return httpx.Response(200, content=b"x" * 200)
        return httpx.Response(status, json={"error": {"code": f"code_{status}", "message": "m", "request_id": "r"}})

    return httpx.Client(base_url="http://bench.invalid", transport=httpx.MockTransport(answer))


def test_errors_are_counted_by_status_and_timed() -> None:
    with _client([200, 504, 200, 504, 504, None]) as client:
        run = _measure(client, "summary", PATIENT, {"method": "GET", "url": "/x"}, calls=5, warmup=1)

    assert run["status"] == {"200": 1, "504": 3, "client_timeout": 1}
    assert run["errors"] == 4 and run["calls"] == 5 and run["resources"] == 50_000
    assert run["latency_ms"]["n"] == 5 and run["latency_ok_ms"]["n"] == 1
    assert run["response_bytes_p50"] == 200
    assert run["error_codes"] == {"code_504": 3}


def test_a_size_where_every_call_fails_has_no_ok_latency() -> None:
    with _client([504, 504]) as client:
        run = _measure(client, "summary", PATIENT, {"method": "GET", "url": "/x"}, calls=2, warmup=0)

    assert run["status"] == {"504": 2} and run["latency_ok_ms"]["p99"] is None
    assert run["response_bytes_p50"] is None
