"""Policy engines: the interface every engine offers, and the embedded Rego engine (regopy).

Every failure to answer fails closed: it raises `PolicyUnavailable`, never returns an allow. The
question and the reading of its answer are in `host.policy.document`, shared with the OPA sidecar
engine (`host.policy.opa`), so the engines cannot differ in how they read a decision.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Protocol, TypeVar

import regopy
from regopy.rego_shared import rego_node_value

from host.errors import ConfigurationError, PolicyUnavailable
from host.policy.document import DECISION_QUERY, document_from_bindings, read_document
from host.policy.sources import PACKAGE, QUERY, load_sources, revision_of
from host.types import Decision

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
        self._revision = revision_of(sources)
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
        # is touched, so the previous request's input is never queried by mistake. As JSON text:
        # regopy.Input(dict) does not escape strings, so a backslash or a quote in a value (a
        # break-the-glass reason, a token's subject) made the query fail (found by the API fuzzer).
        term = json.dumps(input, ensure_ascii=False, allow_nan=False)
        interpreter.set_input_term(term)
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
