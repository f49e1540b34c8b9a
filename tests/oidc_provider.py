"""A small OpenID Connect provider for the console's sign-in tests: discovery, an authorization endpoint
that signs in whichever user the test set (no login page), and a token endpoint that checks the PKCE
verifier (S256), the redirect URI and the client, and spends each code once."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

CLIENT_ID = "wardfn-console"


class Provider:
    """Serves on a loopback port until stop(); `user` is who signs in next; `tokens(sub, role)` mints."""

    def __init__(self, tokens: Callable[[str, str], str]) -> None:
        self.user = ("co-ramos", "compliance_officer")
        self.tokens = tokens
        self.codes: dict[str, dict[str, str]] = {}
        self.refused: list[str] = []  # why each refused token request was refused
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/.well-known/openid-configuration":
                    self._json(200, provider.discovery())
                elif parts.path == "/authorize":
                    self._authorize({k: v[0] for k, v in parse_qs(parts.query).items()})
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if urlsplit(self.path).path != "/token":
                    self._json(404, {"error": "not_found"})
                    return
                status, body = provider.token(form)
                self._json(status, body)

            def _authorize(self, query: dict[str, str]) -> None:
                if (
                    query.get("response_type") != "code"
                    or query.get("client_id") != CLIENT_ID
                    or query.get("code_challenge_method") != "S256"
                    or not query.get("code_challenge")
                ):
                    self._json(400, {"error": "invalid_request"})
                    return
                code = secrets.token_urlsafe(24)
                sub, role = provider.user
                provider.codes[code] = {
                    "challenge": query["code_challenge"],
                    "redirect_uri": query["redirect_uri"],
                    "sub": sub,
                    "role": role,
                }
                target = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query.get('state', '')})}"
                self.send_response(302)
                self.send_header("Location", target)
                self.end_headers()

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
        }

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = self.codes.pop(form.get("code", ""), None)  # a code is spent by its first use
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        problem = (
            "unknown or spent code" if grant is None
            else "wrong client" if form.get("client_id") != CLIENT_ID
            else "wrong redirect_uri" if form.get("redirect_uri") != grant["redirect_uri"]
            else "PKCE verifier does not match" if digest != grant["challenge"]
            else None
        )  # fmt: skip
        if problem is not None or grant is None:
            self.refused.append(problem or "")
            return 400, {"error": "invalid_grant"}
        return 200, {"access_token": self.tokens(grant["sub"], grant["role"]), "token_type": "Bearer"}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
