"""Policy decisions: the engine interface, the embedded Rego engine (regopy), the input document,
and the decision cache.

The host asks one question of package `healthcare.his`: the values of five rules, `allow`,
`deny`, `reasons`, `obligations` and `break_glass` (`DECISION_QUERY`). Deny wins. Every failure to answer
fails closed: it raises `PolicyUnavailable`, never returns an allow. The OPA sidecar engine is
in `host.opa`; both read the answer with `read_document`, so they cannot differ in how.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Protocol, TypeVar

import regopy
from regopy.rego_shared import rego_node_value

from host.errors import ConfigurationError, PolicyUnavailable
from host.policy.obligations import parse_selector
from host.types import Decision, Obligations, Subject

PACKAGE = "healthcare.his"
QUERY = f"data.{PACKAGE}"
# The rules the host reads. Each is asked for by name, as a comprehension so that an undefined
# rule is an empty list rather than an undefined query: rego-cpp evaluates only these (and what
# they depend on), about 1 ms, where the whole package document costs several. Both engines
# are asked exactly this question.
RULES = ("allow", "deny", "reasons", "obligations", "break_glass")
DECISION_QUERY = "; ".join(f"{rule} := [x | x := data.{PACKAGE}.{rule}]" for rule in RULES)
DEFAULT_REASON = "denied by policy"

_T = TypeVar("_T")


class PolicyEngine(Protocol):
    """Anything that can answer the host's policy question."""

    @property
    def revision(self) -> str:
        """A stable identifier of the policy being enforced (recorded with each decision)."""
        ...

    def decide(self, input: dict[str, Any]) -> Decision:
        """Decide one request; raise `PolicyUnavailable` rather than guess."""
        ...

    def healthy(self) -> bool:
        """Whether the engine can answer right now."""
        ...

    def close(self) -> None:
        """Release the engine's threads and connections."""
        ...


def build_input(
    subject: Subject,
    action: str,
    purpose: str,
    patient: dict[str, Any] | None,
    break_glass_reason: str | None = None,
) -> dict[str, Any]:
    """The input document in the host's shape (see policies/his.rego).

    `patient` is None for an action on no single patient, else `{"id", "care_team",
    "consent_directives"}` as the store holds them.
    """
    document: dict[str, Any] = {
        "subject": {"id": subject.id, "roles": list(subject.all_roles)},
        "action": action,
        "purpose": purpose,
        "patient": patient,
        # Always true: the host writes the audit record before any function runs, and
        # refuses the request (AuditUnavailable) when it cannot.
        "audit": {"enabled": True},
    }
    if break_glass_reason is not None:
        document["break_glass"] = {"reason": break_glass_reason}
    return document


def input_hash(input: dict[str, Any]) -> str:
    """sha256 of the input's canonical JSON: what the decision log keeps to replay a decision."""
    return hashlib.sha256(canonical_json(input).encode("utf-8")).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class RegoPolicyEngine:
    """The embedded engine: Rego compiled once by regopy (rego-cpp), queried per decision.

    Each worker thread (`workers` of them) compiles its own interpreter, and its regopy
    objects are touched by no other thread: the rego-cpp interpreter keeps mutable state (the
    input is set on the interpreter, then the bundle is queried) and regopy documents no
    thread safety. regopy releases the GIL while it evaluates, so workers decide in parallel;
    one decision of the HIS policy takes about 1 ms.

    Timeout: `decide` waits at most `timeout_s` for a worker (queueing included) and then
    raises `PolicyUnavailable`. It cannot stop the evaluation already running in native code:
    that runs to its end and holds its worker. Until it finishes the engine is unhealthy and
    refuses every decision: fail closed, and `healthy()` reports it meanwhile.
    """

    engine_name = f"regopy {regopy.__version__}"

    def __init__(self, sources: dict[str, str], timeout_s: float, workers: int = 1) -> None:
        """Compile `sources` ({file name: Rego text}) on each worker; prefer `from_directory`."""
        if timeout_s <= 0:
            raise ConfigurationError("WARDFN_POLICY_TIMEOUT_MS must be positive")
        if workers < 1:
            raise ConfigurationError("WARDFN_POLICY_WORKERS must be at least 1")
        if not sources:
            raise ConfigurationError("no Rego policy given: put a .rego file in WARDFN_POLICY_DIR")
        self._timeout_s = timeout_s
        self._revision = _revision(sources)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wardfn-policy")
        self._closed = False
        # When each evaluation now running began (time.monotonic), by worker thread; read by healthy().
        self._busy_since: dict[int, float] = {}
        # Each worker thread's interpreter and bundles.
        self._local = threading.local()
        try:
            # Compilation is not under the decision timeout: it happens once per worker, at start-up.
            # The barrier holds each worker until all have one task, so every thread compiles.
            barrier = threading.Barrier(workers)
            compiled = [self._executor.submit(self._compile, sources, barrier) for _ in range(workers)]
            for future in compiled:
                future.result()
            # Once, the whole package: it must exist and evaluate for an empty request.
            probe = self._run(lambda: self._evaluate({}, whole_package=True))
        except PolicyUnavailable as exc:
            self.close()
            raise ConfigurationError(
                f"the policy cannot decide even an empty request ({exc}): fix the .rego files in WARDFN_POLICY_DIR"
            ) from exc
        except BaseException:
            self.close()
            raise
        if not isinstance(probe, dict):
            self.close()
            raise ConfigurationError(
                f"the policy defines no rules in package {PACKAGE}: check the package line "
                "of the .rego files in WARDFN_POLICY_DIR"
            )

    @classmethod
    def from_directory(cls, policy_dir: Path, timeout_s: float, workers: int = 1) -> RegoPolicyEngine:
        """Load every `*.rego` in `policy_dir` except `*_test.rego`, and compile them once a worker."""
        sources = load_sources(policy_dir)
        return cls(sources, timeout_s, workers)

    @property
    def revision(self) -> str:
        return self._revision

    def decide(self, input: dict[str, Any]) -> Decision:
        """Decide one request: allow only if `allow` is true and `deny` is not."""
        if not self._closed and not self.healthy():
            raise PolicyUnavailable(
                "an earlier policy evaluation is still running past WARDFN_POLICY_TIMEOUT_MS: no decision until it ends"
            )
        document = self._run(lambda: self._evaluate(input))
        return read_document(document, engine=self.engine_name, revision=self._revision, input=input)

    def healthy(self) -> bool:
        """Open, and not stuck in an evaluation older than the timeout. Never blocks."""
        if self._closed:
            return False
        now = time.monotonic()
        return all(now - started < self._timeout_s for started in list(self._busy_since.values()))

    def close(self) -> None:
        """Stop the worker thread; a running evaluation is left to finish on its own."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, call: Callable[[], _T]) -> _T:
        def timed() -> _T:
            worker = threading.get_ident()
            self._busy_since[worker] = time.monotonic()
            try:
                return call()
            finally:
                self._busy_since.pop(worker, None)

        try:
            future = self._executor.submit(timed)
        except RuntimeError as exc:  # the executor was shut down
            raise PolicyUnavailable("the policy engine is closed") from exc
        try:
            return future.result(timeout=self._timeout_s)
        except FutureTimeout as exc:
            future.cancel()
            raise PolicyUnavailable(
                f"the policy decision took longer than {self._timeout_s:g} s (WARDFN_POLICY_TIMEOUT_MS)"
            ) from exc
        except PolicyUnavailable:
            raise
        except Exception as exc:
            raise PolicyUnavailable(f"the policy engine failed: {type(exc).__name__}") from exc

    def _compile(self, sources: dict[str, str], barrier: threading.Barrier) -> None:
        """Runs on a worker thread: that thread's interpreter. Then waits for the other workers."""
        try:
            self._compile_here(sources)
        except BaseException:
            barrier.abort()  # the others stop waiting; the first error is the one reported
            raise
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError as exc:
            raise ConfigurationError("the policy could not be compiled on every worker") from exc

    def _compile_here(self, sources: dict[str, str]) -> None:
        interpreter = regopy.Interpreter()
        # Without this, a built-in that errors (or that rego-cpp lacks) answers undefined,
        # which a rule could read as "no objection".
        interpreter.strict_built_in_errors = True
        # rego-cpp prints compile errors to the process's stdout; we report them ourselves.
        interpreter.log_level = regopy.LogLevel.NONE
        try:
            for name, text in sources.items():
                interpreter.add_module(name, text)
            bundle = interpreter.build(DECISION_QUERY)
            package_bundle = interpreter.build(QUERY)
        except regopy.RegoError as exc:
            raise ConfigurationError(
                f"the Rego policy does not compile: {_error_summary(str(exc))}; "
                "fix the .rego files in WARDFN_POLICY_DIR"
            ) from exc
        if not bundle.ok() or not package_bundle.ok():
            raise ConfigurationError("the Rego policy does not compile: fix the .rego files")
        self._local.interpreter = interpreter
        self._local.bundle = bundle
        self._local.package_bundle = package_bundle

    def _evaluate(self, input: dict[str, Any], whole_package: bool = False) -> Any:
        """Runs on the worker thread. The rules the host reads as a document (the whole package
        document with `whole_package`), or None when the package is undefined."""
        interpreter: regopy.Interpreter = self._local.interpreter
        # Build the input first: if it is not JSON-like this raises before the interpreter
        # is touched, so the previous request's input is never queried by mistake.
        value = regopy.Input(input)
        interpreter.set_input(value)
        try:
            output = interpreter.query_bundle(self._local.package_bundle if whole_package else self._local.bundle)
        except ValueError as exc:
            # regopy's Output() parses the answer as JSON. Some rego-cpp errors (a call to an
            # unknown function) come back marked ok but as an error tree, and that parse fails.
            raise PolicyUnavailable(
                "the policy answered with an error the host cannot read (an unknown function?)"
            ) from exc
        if not output.ok():
            raise PolicyUnavailable(f"the policy could not be evaluated: {_output_errors(output)}")
        if len(output.results) != 1:
            raise PolicyUnavailable("the policy gave an answer the host cannot read")
        if not whole_package:
            return document_from_bindings(output.results[0].bindings)
        expressions = output.results[0].expressions
        if not expressions:
            return None  # the whole package is undefined
        if len(expressions) != 1:
            raise PolicyUnavailable("the policy gave an answer the host cannot read")
        return expressions[0]


def document_from_bindings(bindings: Any) -> dict[str, Any]:
    """The answer to DECISION_QUERY as a package document holding only the rules that are defined."""
    if not isinstance(bindings, dict):
        raise PolicyUnavailable("the policy gave an answer the host cannot read")
    document: dict[str, Any] = {}
    for rule in RULES:
        values = bindings.get(rule)
        if not isinstance(values, list) or len(values) > 1:
            raise PolicyUnavailable(f"the policy's answer for {rule} cannot be read")
        if values:
            document[rule] = values[0]
    return document


def read_document(document: Any, *, engine: str, revision: str, input: dict[str, Any]) -> Decision:
    """The decision in the package document; undefined rules count as not true (deny)."""
    allow, reasons = _read_allow(document)
    obligations, break_glass = Obligations(), False
    if allow:
        assert isinstance(document, dict)
        obligations = _read_obligations(document.get("obligations"))
        break_glass = _boolean(document, "break_glass")
    return Decision(
        id=uuid.uuid4().hex,
        allow=allow,
        reasons=reasons,
        engine=engine,
        obligations=obligations,
        break_glass=break_glass,
        revision=revision,
        input_hash=input_hash(input),
    )


def _read_allow(document: Any) -> tuple[bool, tuple[str, ...]]:
    """(allow, reasons) from the package document."""
    if document is None:
        return False, (DEFAULT_REASON,)
    if not isinstance(document, dict):
        raise PolicyUnavailable(f"data.{PACKAGE} is not an object")
    allow = _boolean(document, "allow")
    deny = _boolean(document, "deny")
    raw_reasons = document.get("reasons", [])
    if not isinstance(raw_reasons, list) or not all(isinstance(r, str) for r in raw_reasons):
        raise PolicyUnavailable(f"data.{PACKAGE}.reasons is not a set of strings")
    allowed = allow and not deny
    if allowed:
        return True, ()
    reasons = tuple(sorted(set(raw_reasons))) or (DEFAULT_REASON,)
    return False, reasons


def _read_obligations(raw: Any) -> Obligations:
    """Missing obligations bind to nothing readable (fail closed); malformed ones are an engine error."""
    if raw is None:
        return Obligations()
    if not isinstance(raw, dict):
        raise PolicyUnavailable(f"data.{PACKAGE}.obligations is not an object")
    parts: dict[str, frozenset[str]] = {}
    for key in ("resource_types", "mask", "drop"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PolicyUnavailable(f"data.{PACKAGE}.obligations.{key} is not a set of strings")
        parts[key] = frozenset(value)
    for selector in parts["mask"] | parts["drop"]:
        try:
            parse_selector(selector)
        except ValueError as exc:
            raise PolicyUnavailable(f"data.{PACKAGE}.obligations names a field the host cannot apply: {exc}") from exc
    return Obligations(resource_types=parts["resource_types"], mask=parts["mask"], drop=parts["drop"])


def _boolean(document: dict[str, Any], rule: str) -> bool:
    if rule not in document:
        return False  # undefined: the rule did not match
    value = document[rule]
    if not isinstance(value, bool):
        raise PolicyUnavailable(f"data.{PACKAGE}.{rule} is {type(value).__name__}, not a boolean")
    return value


def load_sources(policy_dir: Path) -> dict[str, str]:
    """{file name: text} of every `*.rego` in `policy_dir` except `*_test.rego`."""
    if not policy_dir.is_dir():
        raise ConfigurationError(
            f"policy directory {policy_dir} does not exist: set WARDFN_POLICY_DIR to the "
            "directory holding the .rego files"
        )
    paths = sorted(p for p in policy_dir.glob("*.rego") if not p.name.endswith("_test.rego"))
    if not paths:
        raise ConfigurationError(
            f"no .rego policy in {policy_dir} (test files *_test.rego are not loaded): "
            "set WARDFN_POLICY_DIR to the directory holding his.rego"
        )
    sources: dict[str, str] = {}
    for path in paths:
        try:
            sources[path.name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read policy file {path}: {exc}") from exc
    return sources


def revision_of(sources: dict[str, str]) -> str:
    """The policy revision: sha256 over the sources' names and texts (the bundle carries the same)."""
    return _revision(sources)


def _revision(sources: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(sources):
        for part in (name, sources[name]):
            data = part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)
    return digest.hexdigest()


_ERRORMSG = re.compile(r"\(errormsg \d+:([^)\n]*)\)")


def _error_summary(text: str) -> str:
    """The messages of a rego-cpp error tree, e.g. "this is unclosed", without the AST dump."""
    messages = list(dict.fromkeys(_ERRORMSG.findall(text)))
    return "; ".join(messages[:3]) if messages else "unknown error"


def _output_errors(output: regopy.Output) -> str:
    """The error codes and messages of a failed query, e.g. "eval_type_error: operand 1 must be ..."."""
    kinds = regopy.NodeKind
    found: list[str] = []
    try:
        errors = output.node()
        for i in range(len(errors)):
            error = errors.at(i)
            if error.kind != kinds.Error:
                continue
            parts = {error.at(j).kind: error.at(j) for j in range(len(error))}
            message = _node_text(parts.get(kinds.ErrorMessage))
            code = _node_text(parts.get(kinds.ErrorCode))
            found.append(f"{code}: {message}" if code else message)
    except Exception:  # the details are for people reading logs; never fail on them
        pass
    return "; ".join(found[:3]) or "unknown error"


def _node_text(node: regopy.Node | None) -> str:
    # Node.value refuses error nodes, so read the text through the C API wrapper.
    return "" if node is None else str(rego_node_value(node._impl))
