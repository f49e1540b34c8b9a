"""The server's log is JSON lines, one a record, and never a traceback: a real uvicorn server, whose route
raises an error that is none of the host's, answers 500 and logs it as single JSON lines."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time

import httpx

SERVER = textwrap.dedent(
    """
    import sys
    import uvicorn
    from fastapi import FastAPI
    from host.http.errors import install_error_handlers
    from host.http.logs import configure_logging, server_log_config
    from host.http.middleware import RequestContext

    app = FastAPI()
    app.add_middleware(RequestContext, max_body=1024)
    install_error_handlers(app)

    @app.get("/boom/{patient_id}")
    async def boom(patient_id: str) -> dict[str, str]:
        raise RuntimeError(f"a bug that quotes {patient_id}")

    configure_logging()
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=server_log_config(), log_level="warning")
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unexpected_error_is_one_json_line_with_its_type_and_no_traceback() -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                url = f"http://127.0.0.1:{port}/boom/pid-4711"
                response = httpx.get(url, headers={"X-Request-ID": "req-boom-0001"})
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "the test server did not start"
                time.sleep(0.1)
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    lines = [line for line in output.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert "Traceback" not in output and "pid-4711" not in output
    assert {"event": "unexpected_error", "request_id": "req-boom-0001", "type": "RuntimeError"} in records
    assert any(r.get("error_type") == "RuntimeError" for r in records)  # uvicorn's own record of it
    [request_line] = [r for r in records if r.get("request_id") == "req-boom-0001" and "route" in r]
    assert request_line["status"] == 500 and request_line["route"] == "/boom/{patient_id}"
