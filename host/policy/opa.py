"""The OPA sidecar engine: the same question as the embedded engine, asked over HTTP with
opa-python-client's async client, on an event loop of its own.

Fail closed, always: OPA unreachable, slower than the timeout, not healthy (`/health?bundles`)
or answering an error is `PolicyUnavailable` (503), never an allow. The question is the
embedded engine's (`DECISION_QUERY`, through `POST /v1/query`); a rule that is undefined, or no
policy loaded at all, is an ordinary deny, never an error to retry.

A monitor asks `/health?bundles` every `health_interval_s`. The engine counts as healthy only
while the last probe succeeded, is recent, and no decision has failed since; while unhealthy,
decisions are refused without asking OPA, so the decision cache (which is bypassed while
unhealthy) never answers for an engine that is down.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import urlsplit

from opa_client.opa_async import AsyncOpaClient

from host.errors import ConfigurationError, PolicyUnavailable
from host.policy.document import DECISION_QUERY, document_from_bindings, read_document
from host.types import Decision

UNKNOWN_REVISION = "unknown"
# The embedded engine's question, plus the revision of the bundle that answers it (OPA keeps
# each bundle's manifest under data.system.bundles), in one round trip.
REVISION_QUERY = "revision := [r | some name; r := data.system.bundles[name].manifest.revision]"
OPA_QUERY = f"{DECISION_QUERY}; {REVISION_QUERY}"


class OpaPolicyEngine:
    """Decisions from an OPA server at `url`, which serves the bundle `wardfn policy bundle` wrote."""

    def __init__(self, url: str, timeout_s: float, health_interval_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"WARDFN_OPA_URL {url!r} is not an http(s) URL such as http://127.0.0.1:8181")
        if timeout_s <= 0 or health_interval_s <= 0:
            raise ConfigurationError("WARDFN_POLICY_TIMEOUT_MS and WARDFN_OPA_HEALTH_INTERVAL_MS must be positive")
        self.url = url
        self.engine_name = f"opa at {parts.scheme}://{parts.hostname}:{parts.port or 8181}"
        self._timeout_s = timeout_s
        self._interval_s = health_interval_s
        self._closed = False
        self._healthy = False
        self._last_ok = 0.0
        self._revision = UNKNOWN_REVISION
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="wardfn-opa", daemon=True)
        self._thread.start()
        # No retries: a failed call is answered at once (503), not after a backoff.
        self._client = AsyncOpaClient(
            host=parts.hostname, port=parts.port or 8181, ssl=parts.scheme == "https", timeout=timeout_s, retries=0
        )
        self._submit(self._client.__aenter__()).result(timeout=5)
        self._submit(self._probe()).result(timeout=timeout_s + 5)
        self._monitor: Future[None] = self._submit(self._watch())

    @property
    def revision(self) -> str:
        return self._revision

    def healthy(self) -> bool:
        """The last health probe succeeded within two intervals, and no decision failed since."""
        with self._lock:
            fresh = time.monotonic() - self._last_ok < 2 * self._interval_s + self._timeout_s
            return not self._closed and self._healthy and fresh

    def decide(self, input: dict[str, Any]) -> Decision:
        if self._closed:
            raise PolicyUnavailable("the OPA policy engine is closed")
        if not self.healthy():
            raise PolicyUnavailable("the OPA sidecar is not healthy (/health?bundles): no decision until it is")
        future = self._submit(self._query(input))
        try:
            document, revision = future.result(timeout=self._timeout_s)
        except FutureTimeout as exc:
            future.cancel()
            self._mark_unhealthy()
            raise PolicyUnavailable(
                f"OPA did not answer within {self._timeout_s:g} s (WARDFN_POLICY_TIMEOUT_MS)"
            ) from exc
        except PolicyUnavailable:
            self._mark_unhealthy()
            raise
        except Exception as exc:  # connection refused, HTTP error, bad JSON: all mean no decision
            self._mark_unhealthy()
            raise PolicyUnavailable(f"OPA could not decide ({type(exc).__name__})") from exc
        self._revision = revision
        return read_document(document, engine=self.engine_name, revision=revision, input=input)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._monitor.cancel()
        try:
            self._submit(self._client.close_connection()).result(timeout=2)
        except Exception:  # closing is best effort; the loop goes anyway
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2)
        if not self._thread.is_alive():
            self._loop.close()

    def _submit(self, coroutine: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _mark_unhealthy(self) -> None:
        with self._lock:
            self._healthy = False

    async def _query(self, input: dict[str, Any]) -> tuple[Any, str]:
        # POST /v1/query. The client leaves out an empty input, which Rego reads the same way.
        answer = await self._client.ad_hoc_query(OPA_QUERY, input)
        if not isinstance(answer, dict):
            raise PolicyUnavailable("OPA answered something that is not a JSON object")
        results = answer.get("result")
        if not results:
            return None, UNKNOWN_REVISION  # undefined: a deny
        if not isinstance(results, list) or len(results) != 1 or not isinstance(results[0], dict):
            raise PolicyUnavailable("OPA gave an answer the host cannot read")
        return document_from_bindings(results[0]), _revision(answer)

    async def _probe(self) -> None:
        ok = bool(await self._client.check_health(query={"bundles": "true"}))
        if ok:
            # The revision too, so that a bundle replaced under a cache full of hits is noticed
            # (the cache empties when the revision changes) within one interval.
            try:
                answer = await self._client.ad_hoc_query(REVISION_QUERY)
                self._revision = _revision(answer)
            except Exception:
                ok = False
        with self._lock:
            self._healthy = ok
            if ok:
                self._last_ok = time.monotonic()

    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._interval_s)
            try:
                await self._probe()
            except Exception:  # the probe itself failing is an unhealthy sidecar, nothing more
                self._mark_unhealthy()


def _revision(answer: Any) -> str:
    """The one loaded bundle's revision from an answer to REVISION_QUERY, else UNKNOWN_REVISION."""
    results = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != 1 or not isinstance(results[0], dict):
        return UNKNOWN_REVISION
    revisions = results[0].get("revision")
    if isinstance(revisions, list) and len(revisions) == 1 and isinstance(revisions[0], str):
        return revisions[0]
    return UNKNOWN_REVISION
