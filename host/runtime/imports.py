"""The host functions a component imports: `records` (`search`, `query`, `pseudonym`), `directory`, `log`.

Each answers only inside the scope the policy decision granted to the invocation running
on the calling thread; anything else answers `denied`. Each refuses an oversized argument
before doing any work with it (an id or a name is at most `MAX_ARGUMENT_CHARS` long, a
directory search answers at most `DIRECTORY_LIMIT` matches), and checks the time left before
each unit of work: past the invocation's deadline, the call ends as timed out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from wasmtime.component import Linker, Record, Variant

from host.errors import FunctionTimedOut, InvalidRequest, SearchBudgetSpent, StoreUnavailable
from host.policy.obligations import apply_to_text as apply_obligations
from host.runtime.calls import RecordQuery, RecordReader
from host.runtime.capture import Bounded
from host.runtime.engine import WIT_PACKAGE, WIT_VERSION
from host.runtime.lookup_values import add_directory_func, add_pseudonym_func
from host.runtime.query_values import QueryLimits, add_query_func
from host.runtime.values import TOO_LONG, add_log_func, add_search_func
from host.types import DirectoryQuery, Scope

PseudonymSource = Callable[[str], str]
DirectorySearch = Callable[[DirectoryQuery, int], list[dict[str, str | None]]]
DIRECTORY_LIMIT = 20
# The search parameters that neither filter nor sort on a date.
UNDATED_PARAMETERS = frozenset(
    {"_count", "_offset", "_elements", "code", "category", "status", "clinical-status", "class"}
)
# Patient ids, resource types, names, birth dates and identifiers are all far shorter: anything
# longer is refused before the host reads it (a resource type is at most 64, a UUID 36).
MAX_ARGUMENT_CHARS = 256
# A query's parameters: how many, and how long a name or value may be (a list of codes, comma-separated).
QUERY_LIMITS = QueryLimits(argument_bytes=MAX_ARGUMENT_CHARS * 4, params=32, param_bytes=4096)


@dataclass
class CallContext:
    scope: Scope
    read: RecordReader
    log: Bounded
    pseudonym: PseudonymSource | None = None
    directory: DirectorySearch | None = None
    withheld: set[str] = field(default_factory=set)
    # time.perf_counter() at which the invocation's deadline passes; none for no deadline.
    deadline: float | None = None
    query: RecordQuery | None = None

    def check_time(self) -> None:
        """Before each unit of work: past the deadline, the call ends as timed out (a trap of the guest)."""
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            raise FunctionTimedOut("the function's deadline passed inside a host import")


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


def _reader(patient_id: str, resource_type: str) -> CallContext | Variant:
    """The running invocation's context if its scope may read this patient's `resource_type`, else `denied`."""
    context: CallContext | None = getattr(_current, "context", None)
    if context is None:
        return Variant("denied", "no invocation is running")
    scope = context.scope
    if scope.patient_id is None or patient_id != scope.patient_id:
        return Variant("denied", "this invocation is not authorised for that patient")
    if resource_type not in scope.resource_types:
        return Variant("denied", f"this invocation may not read {resource_type}")
    return context


def _records_search(_store: object, patient_id: str, resource_type: str) -> list[str] | Variant:
    context = _reader(patient_id, resource_type)
    if isinstance(context, Variant):
        return context
    context.check_time()
    try:
        bodies = context.read(patient_id, resource_type)
    except StoreUnavailable:
        return Variant("unavailable", "the record store is unavailable")
    return _obliged(context, bodies)


def _records_query(
    _store: object, patient_id: str, resource_type: str, params: list[tuple[str, str]]
) -> list[str] | Variant:
    context = _reader(patient_id, resource_type)
    if isinstance(context, Variant):
        return context
    scope = context.scope
    if context.query is None:
        return Variant("unavailable", "search parameters are not served here")
    if scope.generalise and any(name.split(":")[0] not in UNDATED_PARAMETERS for name, _ in params):
        # The index holds full dates: filtering or sorting on them would tell a function whose dates
        # are generalised (research's, to the year) what it may not see, one bisection at a time.
        return Variant("invalid", "this invocation's dates are generalised: search by code, category or status only")
    context.check_time()
    try:
        bodies = context.query(patient_id, resource_type, params)
    except InvalidRequest as exc:
        # Names the parameter the function sent, never a record.
        return Variant("invalid", str(exc))
    except StoreUnavailable:
        return Variant("unavailable", "the record store is unavailable")
    return _obliged(context, bodies)


def _obliged(context: CallContext, bodies: list[str]) -> list[str] | Variant:
    """The bodies with the decision's masks and drops applied, checking the time before each."""
    scope = context.scope
    if not scope.mask and not scope.drop and not scope.generalise:
        return bodies
    # Masked, dropped and generalised fields never enter the sandbox whole: the function cannot leak what it never had.
    filtered = []
    try:
        for body in bodies:
            context.check_time()
            filtered.append(apply_obligations(body, scope.mask, scope.drop, context.withheld, scope.generalise))
    except (ValueError, TypeError):
        return Variant("unavailable", "a stored record could not be filtered")
    return filtered


def _records_pseudonym(_store: object, patient_id: str) -> str | Variant:
    context: CallContext | None = getattr(_current, "context", None)
    if context is None or context.pseudonym is None or "pseudonym" not in context.scope.imports:
        return Variant("denied", "the decision grants no pseudonyms to this invocation")
    if len(patient_id) > MAX_ARGUMENT_CHARS:
        return Variant("denied", TOO_LONG)
    if context.scope.patient_id is None or patient_id != context.scope.patient_id:
        return Variant("denied", "this invocation is not authorised for that patient")
    context.check_time()
    return context.pseudonym(patient_id)


def _directory_search(_store: object, query: Record, limit: int) -> list[Record] | Variant:
    context: CallContext | None = getattr(_current, "context", None)
    if context is None or context.directory is None or "directory" not in context.scope.imports:
        return Variant("denied", "the decision grants no directory search to this invocation")
    wanted = DirectoryQuery(
        name=getattr(query, "name", None),
        birth_date=getattr(query, "birth-date", None),
        identifier=getattr(query, "identifier", None),
    )
    if any(len(value) > MAX_ARGUMENT_CHARS for value in (wanted.name, wanted.birth_date, wanted.identifier) if value):
        return Variant("denied", TOO_LONG)
    if wanted.name is None and wanted.birth_date is None and wanted.identifier is None:
        return Variant("denied", "a search needs a name, a birth date or an identifier")
    # A key that normalises to nothing ("-", " ", a lone accent) is a search like any other: it
    # matches no one (the store answers none for a query without keys), and is audited as made.
    context.check_time()
    try:
        found = context.directory(wanted, max(0, min(limit, DIRECTORY_LIMIT)))
    except StoreUnavailable:
        return Variant("unavailable", "the record store is unavailable")
    except SearchBudgetSpent:
        return Variant("denied", "the caller's search budget is used up")
    matches = []
    for item in found:
        match = Record()
        for wit_name, key in (("id", "id"), ("name", "name"), ("birth-date", "birth_date"), ("gender", "gender")):
            setattr(match, wit_name, item.get(key))
        matches.append(match)
    return matches


def _log_write(level: str, size: int, read: Callable[[], str]) -> None:
    context: CallContext | None = getattr(_current, "context", None)
    if context is None or "log" not in context.scope.imports:
        return  # a log the decision did not grant: the message is not read
    # Decided on the declared length: a message over the budget is counted, never copied.
    if not context.log.room(len(level) + 2 + size):
        context.log.drop(size)
        return
    context.log.add(f"{level}: {read()}")


def define_imports(linker: Linker) -> None:
    """Satisfy the world's imports on `linker` with the functions above."""
    with linker.root() as root:
        with root.add_instance(f"{WIT_PACKAGE}/records@{WIT_VERSION}") as records:
            # The hottest import: converted directly, not by wasmtime-py's generic conversion.
            add_search_func(records, "search", _records_search, MAX_ARGUMENT_CHARS * 4)
            add_query_func(records, "query", _records_query, QUERY_LIMITS)
            # Every import that takes a string from the guest reads its length before copying it.
            add_pseudonym_func(records, "pseudonym", _records_pseudonym, MAX_ARGUMENT_CHARS * 4)
        with root.add_instance(f"{WIT_PACKAGE}/directory@{WIT_VERSION}") as patients:
            add_directory_func(patients, "search", _directory_search, MAX_ARGUMENT_CHARS * 4)
        with root.add_instance(f"{WIT_PACKAGE}/log@{WIT_VERSION}") as log:
            add_log_func(log, "write", _log_write)
