"""A small W3C WebDriver client over httpx, for Debian's chromium driven headless by chromium-driver.

Just what the console's browser test needs (open a page, find by CSS, type, click, read, screenshot):
the protocol is plain JSON over HTTP, so no Selenium and its dependencies.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import free_port

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
CHROMIUM = ("chromium", "/usr/bin/chromium")
DRIVER = ("chromedriver", "/usr/bin/chromedriver")
INSTALL_HINT = "Debian's chromium and chromium-driver are needed: `make chromium` installs them"


def find(names: tuple[str, ...]) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(f"{names[0]} not found. {INSTALL_HINT}")


class Browser:
    """One headless chromium session through a chromedriver of its own; close() ends both."""

    def __init__(self, width: int = 1200, height: int = 900) -> None:
        binary, driver = find(CHROMIUM), find(DRIVER)
        port = free_port()
        self._driver = subprocess.Popen(
            [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        self._wait_for_driver()
        options = {
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"],
        }  # fmt: skip
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _wait_for_driver(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self._http.get("/status").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("chromedriver did not start")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(
            method, path, json=body if body is not None else ({} if method == "POST" else None)
        )
        value = response.json().get("value")
        if response.status_code != 200:
            raise RuntimeError(f"webdriver {method} {path}: {value}")
        return value

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def get(self, url: str) -> None:
        self._call("POST", self._s("/url"), {"url": url})

    @property
    def url(self) -> str:
        return str(self._call("GET", self._s("/url")))

    @property
    def title(self) -> str:
        return str(self._call("GET", self._s("/title")))

    def until_title(self, text: str, timeout_s: float = 20) -> None:
        """Wait until the page's title holds `text` (a form's answer has loaded)."""
        self.until(lambda: text in self.title, f"a page titled {text!r}", timeout_s)

    def until(self, done: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
        """Wait until `done()` holds: the page a click led to has loaded."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if done():
                    return
            except RuntimeError:  # the element is not there yet: the old page, or the new one loading
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout_s} s for {what}; now at {self.title!r}")
            time.sleep(0.05)

    def source(self) -> str:
        return str(self._call("GET", self._s("/source")))

    def find(self, css: str) -> str:
        return str(self._call("POST", self._s("/element"), {"using": "css selector", "value": css})[ELEMENT])

    def find_all(self, css: str) -> list[str]:
        found = self._call("POST", self._s("/elements"), {"using": "css selector", "value": css})
        return [str(e[ELEMENT]) for e in found]

    def type(self, css: str, text: str) -> None:
        self._call("POST", self._s(f"/element/{self.find(css)}/value"), {"text": text})

    def click(self, css: str) -> None:
        self._call("POST", self._s(f"/element/{self.find(css)}/click"))

    def text(self, css: str) -> str:
        return str(self._call("GET", self._s(f"/element/{self.find(css)}/text")))

    def active_id(self) -> str:
        """The focused element's id, for keyboard-use checks."""
        element = self._call("GET", self._s("/element/active"))[ELEMENT]
        return str(self._call("GET", self._s(f"/element/{element}/attribute/id")) or "")

    def keys(self, text: str) -> None:
        """Type into whatever has the focus (keyboard use): \\ue004 is Tab, \\ue007 Enter."""
        actions = [{"type": "keyDown", "value": c} for c in text] + [{"type": "keyUp", "value": c} for c in text]
        ordered = [a for pair in zip(actions[: len(text)], actions[len(text) :], strict=True) for a in pair]
        self._call("POST", self._s("/actions"), {"actions": [{"type": "key", "id": "kb", "actions": ordered}]})

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._call("GET", self._s("/screenshot"))))

    def close(self) -> None:
        try:
            self._http.delete(self._s(""))
        finally:
            self._http.close()
            self._driver.terminate()
            try:
                self._driver.wait(10)
            except subprocess.TimeoutExpired:
                self._driver.kill()
