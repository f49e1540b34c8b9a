"""ASGI middleware: request ids, the request body cap, one log line per request."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

log = logging.getLogger("wardfn.http")


class RequestContext:
    """ASGI middleware: a request id on every request and response, a body size cap, and one log line
    per request that names the route template, never the path (paths carry patient ids)."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        offered = headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = offered if _SAFE_REQUEST_ID.match(offered) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            declared = headers.get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
                await self._too_large(request_id, send_with_id)
            else:
                received, refused = 0, False

                async def capped_receive() -> Message:
                    # Past the cap, answer 413 ourselves and tell the app the client left:
                    # the app's own body parsing would turn an exception into a 400.
                    nonlocal received, refused
                    if refused:
                        return {"type": "http.disconnect"}
                    message = await receive()
                    if message["type"] == "http.request":
                        received += len(message.get("body", b""))
                        if received > self.max_body:
                            refused = True
                            await self._too_large(request_id, send_with_id)
                            return {"type": "http.disconnect"}
                    return message

                async def guarded_send(message: Message) -> None:
                    if not refused:
                        await send_with_id(message)

                await self.app(scope, capped_receive, guarded_send)
        except Exception:
            # The server's error handler answers 500 after this (and logs it as one JSON line).
            status = status or 500
            raise
        finally:
            route = scope.get("route")
            state = scope["state"]
            line = {
                "request_id": request_id,
                "method": scope.get("method"),
                "route": getattr(route, "path", "unmatched"),
                "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            # Set by the invocation routes: a registered function's name (never the requested
            # name, which is caller input) and the outcome code. Nothing else about the call.
            if "function" in state:
                line["function"] = state["function"]
            if "outcome" in state:
                line["outcome"] = state["outcome"]
            log.info(json.dumps(line))

    async def _too_large(self, request_id: str, send: Callable[[Message], Awaitable[None]]) -> None:
        body = {
            "error": {
                "code": "payload_too_large",
                "message": f"request bodies are limited to {self.max_body} bytes",
                "request_id": request_id,
            }
        }
        await JSONResponse(body, status_code=413)({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
