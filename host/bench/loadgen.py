"""The load generator: its own process, raw HTTP/1.1 keep-alive over asyncio (uvloop when present).

Run as `python -m host.bench.loadgen` with a JSON spec on stdin; prints a JSON result on stdout.
Deliberately minimal (no HTTP library): the generator shares the CPUs with the host under
test, so every microsecond it spends is one the host does not get. Both loops measure the
floor (a trivial endpoint) the same way, so the ratios stay fair.

- closed loop: `connections` clients, each sending its next request when the last answer came;
- open loop: requests sent at a fixed `rate` whatever the answers do, each timed from when it
  was due (not from when it was sent), so a stalled server shows in the latency instead of
  silently lowering the offered load (coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

MAX_OPEN_LOOP_CONNECTIONS = 512
# uvicorn closes a keep-alive connection idle for 5 s; one idle longer than this is replaced
# before use, so that its closing is never counted as the server's error.
MAX_IDLE_S = 2.0


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = time.perf_counter()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def exchange(self, raw: bytes) -> int:
        """Send one request, read the whole answer; the status code."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
                break
        else:
            raise RuntimeError("an answer without Content-Length")
        if length:
            await self.reader.readexactly(length)
        self.used = time.perf_counter()
        return status

    def close(self) -> None:
        self.writer.close()


def _encode(host: str, request: dict[str, Any]) -> bytes:
    body = request.get("body")
    payload = json.dumps(body).encode() if body is not None else b""
    lines = [f"{request.get('method', 'GET')} {request['path']} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in request.get("headers", {}).items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


class Recorder:
    def __init__(self, measure_from: float, measure_until: float) -> None:
        self.measure_from = measure_from
        self.measure_until = measure_until
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.errors = 0
        self.failures: dict[str, int] = {}
        # Answers the server gave within the window, whenever they were due: what its CPU over the
        # window paid for (an overloaded server is still answering requests due before it).
        self.answered_in_window = 0

    def record(self, due: float, done: float, status: int | None, failure: str | None = None) -> None:
        if status is not None and self.measure_from <= done < self.measure_until:
            self.answered_in_window += 1
        if not self.measure_from <= due < self.measure_until:
            return  # warm-up, or sent after the window: not counted
        if status is not None:
            self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        if status != 200:
            self.errors += 1
            if failure:
                self.failures[failure] = self.failures.get(failure, 0) + 1
            return
        self.latencies.append((done - due) * 1000)


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) the process `pid` has used, from /proc; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


async def _watch_cpu(pid: int | None, recorder: Recorder) -> float | None:
    """The CPU seconds `pid` used over the measured window (the server's cost of the requests in it)."""
    if pid is None:
        return None
    await asyncio.sleep(max(0.0, recorder.measure_from - time.perf_counter()))
    first = process_cpu_s(pid)
    await asyncio.sleep(max(0.0, recorder.measure_until - time.perf_counter()))
    last = process_cpu_s(pid)
    return None if first is None or last is None else round(last - first, 4)


async def closed_loop(spec: dict[str, Any], requests: list[bytes], host: str, port: int) -> dict[str, Any]:
    start = time.perf_counter()
    recorder = Recorder(start + spec["warmup_s"], start + spec["warmup_s"] + spec["duration_s"])
    watch = asyncio.create_task(_watch_cpu(spec.get("watch_pid"), recorder))
    stop_at = recorder.measure_until
    counter = iter(range(1 << 62))

    async def client() -> None:
        connection = await Connection.open(host, port)
        try:
            while (now := time.perf_counter()) < stop_at:
                raw = requests[next(counter) % len(requests)]
                try:
                    status = await connection.exchange(raw)
                    recorder.record(now, time.perf_counter(), status)
                except (OSError, RuntimeError, ValueError, asyncio.IncompleteReadError) as exc:
                    recorder.record(now, time.perf_counter(), None, type(exc).__name__)
                    connection.close()
                    connection = await Connection.open(host, port)
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(spec["connections"])))
    return _result(recorder, spec["duration_s"], await watch)


async def open_loop(spec: dict[str, Any], requests: list[bytes], host: str, port: int) -> dict[str, Any]:
    rate = float(spec["rate"])
    total_s = spec["warmup_s"] + spec["duration_s"]
    idle: list[Connection] = [await Connection.open(host, port) for _ in range(min(16, spec["connections"] or 16))]
    opened = len(idle)
    start = time.perf_counter() + 0.05
    recorder = Recorder(start + spec["warmup_s"], start + total_s)
    watch = asyncio.create_task(_watch_cpu(spec.get("watch_pid"), recorder))
    tasks: set[asyncio.Task[None]] = set()
    dropped = 0

    async def one(index: int, due: float) -> None:
        nonlocal opened
        connection = idle.pop() if idle else None
        if connection is not None and time.perf_counter() - connection.used > MAX_IDLE_S:
            connection.close()
            connection = await Connection.open(host, port)
        if connection is None:
            opened += 1
            connection = await Connection.open(host, port)
        try:
            status = await connection.exchange(requests[index % len(requests)])
        except (OSError, RuntimeError, ValueError, asyncio.IncompleteReadError) as exc:
            recorder.record(due, time.perf_counter(), None, type(exc).__name__)
            connection.close()
            opened -= 1
            return
        recorder.record(due, time.perf_counter(), status)
        idle.append(connection)

    count = int(total_s * rate)
    for index in range(count):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if opened >= MAX_OPEN_LOOP_CONNECTIONS and not idle:
            dropped += 1  # the server is this far behind: counted as an error, not waited for
            recorder.record(due, time.perf_counter(), None, "generator_saturated")
            continue
        task = asyncio.create_task(one(index, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    for connection in idle:
        connection.close()
    result = _result(recorder, spec["duration_s"], await watch)
    result["offered_rate"] = rate
    result["connections_opened"] = opened
    return result


def _result(recorder: Recorder, duration_s: float, server_cpu_s: float | None = None) -> dict[str, Any]:
    return {
        "server_cpu_s": server_cpu_s,
        "answered_in_window": recorder.answered_in_window,
        "completed": len(recorder.latencies),
        "errors": recorder.errors,
        "statuses": recorder.statuses,
        "failures": recorder.failures,
        "duration_s": duration_s,
        "throughput": round(len(recorder.latencies) / duration_s, 2),
        "latencies_ms": recorder.latencies,
    }


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    url = urlsplit(spec["url"])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    requests = [_encode(f"{host}:{port}", r) for r in spec["requests"]]
    if spec["mode"] == "closed":
        return await closed_loop(spec, requests, host, port)
    return await open_loop(spec, requests, host, port)


def main() -> None:
    spec = json.loads(sys.stdin.read())
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        runner = asyncio.run
    json.dump(runner(run(spec)), sys.stdout)


if __name__ == "__main__":
    main()
