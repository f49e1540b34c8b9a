"""The host functions a component imports: `records`, `directory`, `log`.

Each answers only inside the scope the policy decision granted to the invocation running
on the calling thread; anything else answers `denied`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from wasmtime.component import Linker, Record, Variant

from host.errors import StoreUnavailable
from host.policy.obligations import apply_to_text as apply_obligations
from host.runtime.calls import RecordReader
from host.runtime.engine import WIT_PACKAGE, WIT_VERSION
from host.runtime.values import add_search_func
from host.types import DirectoryQuery, Scope

PseudonymSource = Callable[[str], str]
DirectorySearch = Callable[[DirectoryQuery, int], list[dict[str, str | None]]]
DIRECTORY_LIMIT = 20


class Bounded:
    """Text collected up to a byte budget; the rest is counted and dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.dropped = 0
        self.lines: list[str] = []

    def add(self, text: str) -> None:
        size = len(text.encode("utf-8", "replace"))
        if self.used + size > self.limit:
            self.dropped += size
            return
        self.used += size
        self.lines.append(text)


@dataclass
class CallContext:
    scope: Scope
    read: RecordReader
    log: Bounded
    pseudonym: PseudonymSource | None = None
    directory: DirectorySearch | None = None
    withheld: set[str] = field(default_factory=set)


# Host imports run synchronously on the thread that called into the instance, so
# the thread knows which invocation, and so which scope, an import call belongs to.
_current = threading.local()


@contextmanager
def bound_to(context: CallContext) -> Iterator[None]:
    _current.context = context
    try:
        yield
    finally:
        _current.context = None


def _records_search(_store: object, patient_id: str, resource_type: str) -> list[str] | Variant:
    context: CallContext | None = getattr(_current, "context", None)
    if context is None:
        return Variant("denied", "no invocation is running")
    scope = context.scope
    if scope.patient_id is None or patient_id != scope.patient_id:
        return Variant("denied", "this invocation is not authorised for that patient")
    if resource_type not in scope.resource_types:
        return Variant("denied", f"this invocation may not read {resource_type}")
    try:
        bodies = context.read(patient_id, resource_type)
    except StoreUnavailable:
        return Variant("unavailable", "the record store is unavailable")
    if not scope.mask and not scope.drop:
        return bodies
    # Masked and dropped fields never enter the sandbox: the function cannot leak what it never had.
    try:
        return [apply_obligations(body, scope.mask, scope.drop, context.withheld) for body in bodies]
    except (ValueError, TypeError):
        return Variant("unavailable", "a stored record could not be filtered")


def _records_pseudonym(_store: object, patient_id: str) -> str | Variant:
    context: CallContext | None = getattr(_current, "context", None)
    if context is None or context.pseudonym is None:
        return Variant("denied", "no pseudonyms in this invocation")
    if context.scope.patient_id is None or patient_id != context.scope.patient_id:
        return Variant("denied", "this invocation is not authorised for that patient")
    return context.pseudonym(patient_id)


def _directory_search(_store: object, query: Record, limit: int) -> list[Record] | Variant:
    context: CallContext | None = getattr(_current, "context", None)
    if context is None or context.directory is None or not context.scope.directory:
        return Variant("denied", "this invocation may not search the patient directory")
    wanted = DirectoryQuery(
        name=getattr(query, "name", None),
        birth_date=getattr(query, "birth-date", None),
        identifier=getattr(query, "identifier", None),
    )
    if not wanted.keys():
        return Variant("denied", "a search needs a name, a birth date or an identifier")
    try:
        found = context.directory(wanted, max(0, min(limit, DIRECTORY_LIMIT)))
    except StoreUnavailable:
        return Variant("unavailable", "the record store is unavailable")
    matches = []
    for item in found:
        match = Record()
        for wit_name, key in (("id", "id"), ("name", "name"), ("birth-date", "birth_date"), ("gender", "gender")):
            setattr(match, wit_name, item.get(key))
        matches.append(match)
    return matches


def _log_write(_store: object, level: str, message: str) -> None:
    context: CallContext | None = getattr(_current, "context", None)
    if context is not None:
        context.log.add(f"{level}: {message}")


def define_imports(linker: Linker) -> None:
    """Satisfy the world's imports on `linker` with the functions above."""
    with linker.root() as root:
        with root.add_instance(f"{WIT_PACKAGE}/records@{WIT_VERSION}") as records:
            # The hottest import: converted directly, not by wasmtime-py's generic conversion.
            add_search_func(records, "search", _records_search)
            records.add_func("pseudonym", _records_pseudonym)
        with root.add_instance(f"{WIT_PACKAGE}/directory@{WIT_VERSION}") as patients:
            patients.add_func("search", _directory_search)
        with root.add_instance(f"{WIT_PACKAGE}/log@{WIT_VERSION}") as log:
            log.add_func("write", _log_write)
