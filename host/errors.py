"""The host's one exception tree. Third-party errors are translated into it at one place each.

WardfnError
├── ConfigurationError           settings unusable; the message names the setting
├── AuthenticationError          token missing, expired, forged, wrong issuer or audience
├── InvalidRequest               the caller's input is malformed
│   └── InvalidArguments         `args` do not match the function's published schema; names field and rule
├── FunctionNotFound             no such function in the registry
├── PatientNotFound              no such patient (raised only after the policy allowed)
├── PolicyDenied                 the policy said no; carries its reasons
├── SearchBudgetSpent            a directory query past the subject's search budget (the import answers denied)
├── Unavailable                  fail closed: no patient data leaves
│   ├── PolicyUnavailable        the policy engine could not answer
│   ├── AuditUnavailable         the audit record could not be made durable
│   ├── StoreUnavailable         the record store could not answer
│   └── FunctionUnavailable      earlier calls still stuck past their deadlines, or the host is shutting down
├── BrokerUnavailable            the audit relay's broker took no message; the relay retries later
├── ArchiveRefused               archiving the trail's old months would break retention or verification; says what to do
├── BuildError                   componentize or compile failed
├── ArtifactRejected             a cached artifact is not one the host compiled
└── FunctionFailed               the invocation ended badly; the host goes on
    ├── FunctionTimedOut         the deadline passed
    ├── FunctionTrapped          a trap, an exhausted limit or an uncaught exception
    ├── FunctionOutputRejected   output too large or not the promised shape
    └── FunctionReturnedError    the function's own `error` result
"""

from __future__ import annotations


class WardfnError(Exception):
    """Base of every error the host raises on purpose."""

    code = "error"


class ConfigurationError(WardfnError):
    code = "configuration_error"


class AuthenticationError(WardfnError):
    code = "unauthenticated"


class InvalidRequest(WardfnError):
    code = "invalid_request"


class InvalidArguments(InvalidRequest):
    """`args` that do not match the function's schema: each problem as (field, rule), never the value."""

    def __init__(self, message: str, problems: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.problems = problems


class FunctionNotFound(WardfnError):
    code = "function_not_found"


class PatientNotFound(WardfnError):
    code = "patient_not_found"


class ReviewNotFound(WardfnError):
    """No record with that seq waits for break-the-glass review."""

    code = "review_not_found"


class PolicyDenied(WardfnError):
    code = "policy_denied"

    def __init__(self, reasons: list[str], decision_id: str) -> None:
        super().__init__("; ".join(reasons) or "denied by policy")
        self.reasons = reasons
        self.decision_id = decision_id


class SearchBudgetSpent(WardfnError):
    code = "search_budget_spent"


class Unavailable(WardfnError):
    code = "unavailable"


class PolicyUnavailable(Unavailable):
    code = "policy_unavailable"


class AuditUnavailable(Unavailable):
    code = "audit_unavailable"


class StoreUnavailable(Unavailable):
    code = "store_unavailable"


class FunctionUnavailable(Unavailable):
    code = "function_unavailable"


class BrokerUnavailable(WardfnError):
    """Not under Unavailable: the relay streams records already durable, so no invocation waits on the broker."""

    code = "broker_unavailable"


class ArchiveRefused(WardfnError):
    """Archiving that range would drop records still kept (too young, under open review) or not vouched
    for by a signed checkpoint; nothing was archived or dropped."""

    code = "archive_refused"


class BuildError(WardfnError):
    code = "build_failed"


class ArtifactRejected(WardfnError):
    code = "artifact_rejected"


class FunctionFailed(WardfnError):
    code = "function_failed"


class FunctionTimedOut(FunctionFailed):
    code = "function_timed_out"


class FunctionTrapped(FunctionFailed):
    code = "function_trapped"


class FunctionOutputRejected(FunctionFailed):
    code = "function_output_rejected"


# The reasons a function may give for refusing its input, safe to show to the caller: a fixed list,
# so nothing the function writes (which may hold patient data) ever reaches the answer. A function
# gives one by starting its `invalid-input` string with `code:<reason>` (docs/functions.md).
INVALID_INPUT_REASONS: dict[str, str] = {
    "missing": "a required argument is missing",
    "wrong_type": "an argument has the wrong type",
    "out_of_range": "a number is outside the range the function accepts",
    "not_one_of": "a value is not one of those the function accepts",
    "conflicting": "arguments that cannot be given together",
    "too_broad": "a search that would match too many patients; narrow it",
    "needs_patient": "the function needs a patient id",
    "takes_no_patient": "the function works on no patient; give no patient id",
}


class FunctionReturnedError(FunctionFailed):
    """The function answered with its WIT `error` case: `kind` is the case name; `reason`, a code from
    INVALID_INPUT_REASONS the function marked safe to show, or None."""

    code = "function_error"

    def __init__(self, kind: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason
        self.code = f"function_{kind.replace('-', '_')}"
