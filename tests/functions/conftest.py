"""Guest code under plain CPython: the WIT bindings componentize-py generates, importable as in a component."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from host.catalogue.build import generate_bindings
from host.catalogue.manifest import SHARED_DIR
from host.config import PROJECT_ROOT
from host.errors import InvalidRequest
from tests.functions.fake_query import evaluate

FUNCTIONS = PROJECT_ROOT / "functions"
# What the bindings and the guests put in sys.modules; removed again after each test module.
GUEST_MODULES = (
    "wit_world",
    "componentize_py_types",
    "componentize_py_async_support",
    "poll_loop",
    "wardfn_guest",
    "wardfn_withheld",
)


@dataclass
class Records:
    """The host's `records` import, played by the test: resources by type, and what it refuses."""

    resources: dict[str, list[str]] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)
    unavailable: bool = False
    pseudonym_denied: bool = False
    query_invalid: bool = False  # every records.query refused as `invalid`, as for a parameter the host lacks


@dataclass
class Outcome:
    """What `handle` did: a response body, or a WIT error case and its text."""

    body: Any = None
    error: str | None = None
    message: str | None = None


class Guest:
    """The generated bindings on sys.path, and each function's `app` module loaded against them."""

    def __init__(self, bindings: Path) -> None:
        self._apps: dict[str, ModuleType] = {}
        sys.path[:0] = [str(bindings), str(FUNCTIONS / SHARED_DIR)]
        from componentize_py_types import Err
        from wit_world.imports import directory, records, types

        self.Err, self.records, self.directory, self.types = Err, records, directory, types

    def app(self, function: str) -> ModuleType:
        """`functions/<function>/app.py`, its siblings importable as they are inside the component."""
        if function not in self._apps:
            directory = FUNCTIONS / function
            sys.path.insert(0, str(directory))
            spec = importlib.util.spec_from_file_location(f"guest_app_{function}", directory / "app.py")
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self._apps[function] = module
        return self._apps[function]

    def serve(self, store: Records, monkeypatch: pytest.MonkeyPatch) -> None:
        """Answer the guest's `records` imports from `store` (for the current test only)."""
        access = self.records

        def search(patient_id: str, resource_type: str) -> list[str]:
            if store.unavailable:
                raise self.Err(access.AccessError_Unavailable("store down"))
            if resource_type in store.denied:
                raise self.Err(access.AccessError_Denied(f"{resource_type} not granted"))
            return list(store.resources.get(resource_type, []))

        def query(patient_id: str, resource_type: str, params: list[tuple[str, str]]) -> list[str]:
            # Evaluated as the host does (tests/functions/fake_query.py), over the same fake records.
            if store.unavailable:
                raise self.Err(access.QueryError_Unavailable("store down"))
            if resource_type in store.denied:
                raise self.Err(access.QueryError_Denied(f"{resource_type} not granted"))
            if store.query_invalid:
                raise self.Err(access.QueryError_Invalid("not supported"))
            try:
                return evaluate(resource_type, params, store.resources.get(resource_type, []))
            except InvalidRequest as exc:
                raise self.Err(access.QueryError_Invalid(str(exc))) from None

        def pseudonym(patient_id: str) -> str:
            if store.unavailable:
                raise self.Err(access.AccessError_Unavailable("store down"))
            if store.pseudonym_denied:
                raise self.Err(access.AccessError_Denied("no pseudonyms"))
            return "pseudo-" + patient_id[:4]

        monkeypatch.setattr(access, "search", search)
        monkeypatch.setattr(access, "query", query)
        monkeypatch.setattr(access, "pseudonym", pseudonym)

    def call(self, function: str, patient_id: str | None = None, args: str = "{}") -> Outcome:
        """`Handler().handle(request)` as the host would call it; a WIT error comes back as an Outcome too."""
        request = self.types.Request(patient_id=patient_id, purpose="TREAT", args=args)
        try:
            response = self.app(function).Handler().handle(request)
        except self.Err as err:
            return Outcome(error=type(err.value).__name__.removeprefix("Error_"), message=err.value.value)
        return Outcome(body=json.loads(response.body))


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """Bindings generated from wit/ (componentize-py, about a second), for one test module."""
    out = tmp_path_factory.mktemp("bindings")
    generate_bindings(PROJECT_ROOT / "wit", out)
    saved_path = list(sys.path)
    _forget_guest_modules()  # a guest module loaded by another test module holds other classes (Withheld)
    try:
        yield Guest(out)
    finally:
        sys.path[:] = saved_path
        _forget_guest_modules()


def _forget_guest_modules() -> None:
    """Drop the bindings and every module loaded from functions/ from sys.modules."""
    for name, module in list(sys.modules.items()):
        source = getattr(module, "__file__", None) or ""
        if name.split(".")[0] in GUEST_MODULES or name.startswith("guest_app_") or source.startswith(str(FUNCTIONS)):
            del sys.modules[name]
