"""Plain values passed between the host's services. Imports nothing from the package."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Subject:
    """Who is calling, as the verified token says: `role` is the token's `role` claim, `roles` any more."""

    id: str
    role: str
    roles: tuple[str, ...] = ()
    # The organisation unit the token names (its `org_unit` claim: a ward, a department), if any.
    org_unit: str | None = None

    @property
    def all_roles(self) -> tuple[str, ...]:
        """Every role the subject holds, `role` first, without repeats."""
        return tuple(dict.fromkeys(r for r in (self.role, *self.roles) if r))


# The imports a decision can grant besides `records`, which `Obligations.resource_types` scopes.
IMPORTS = frozenset({"directory", "pseudonym", "log"})
# Fields that name a patient outright: a pseudonym is never granted unless all of them are dropped.
IDENTIFYING_FIELDS = frozenset(
    {"Patient.name", "Patient.identifier", "Patient.telecom", "Patient.address", "Patient.photo", "Patient.contact"}
)
# Generalisations that leave nothing identifying of their field (Safe Harbor's three ZIP digits): beside
# a pseudonym they count as dropping it.
DEIDENTIFYING_GENERALISATIONS = frozenset({"Patient.address:zip3"})


@dataclass(frozen=True)
class Obligations:
    """What an allow binds the function to: the resource types it may read, fields masked, dropped, generalised.

    Field selectors are `Type.element` or `*.element` (any type); `Type.element(CODE)` narrows a
    list of identifiers to those whose v2-0203 type code is CODE (e.g. `Patient.identifier(SS)`).
    Generalisations are `Type.element:method` (`*.*:year` for every element of every type).
    """

    resource_types: frozenset[str] = frozenset()
    mask: frozenset[str] = frozenset()
    drop: frozenset[str] = frozenset()
    # The host imports granted besides `records` (a subset of IMPORTS): the manifest asks, this grants.
    imports: frozenset[str] = frozenset()
    generalise: frozenset[str] = frozenset()

    def as_json(self) -> dict[str, list[str]]:
        return {
            "resource_types": sorted(self.resource_types),
            "mask": sorted(self.mask),
            "drop": sorted(self.drop),
            "imports": sorted(self.imports),
            "generalise": sorted(self.generalise),
        }


@dataclass(frozen=True)
class Decision:
    """A policy engine's answer. `allow` is already deny-wins: false if any deny rule matched."""

    id: str
    allow: bool
    reasons: tuple[str, ...] = ()
    engine: str = ""
    obligations: Obligations = Obligations()
    break_glass: bool = False
    revision: str = ""
    input_hash: str = ""
    cached: bool = False

    def as_json(self) -> dict[str, Any]:
        """The decision as `wardfn policy eval` prints it."""
        return {
            "allow": self.allow,
            "reasons": list(self.reasons),
            "obligations": self.obligations.as_json(),
            "break_glass": self.break_glass,
            "decision_id": self.id,
            "engine": self.engine,
            "policy_revision": self.revision,
            "input_hash": self.input_hash,
        }


@dataclass(frozen=True)
class Scope:
    """What one invocation may reach: the patient, resource types and imports the decision allowed."""

    patient_id: str | None
    resource_types: frozenset[str] = frozenset()
    mask: frozenset[str] = frozenset()
    drop: frozenset[str] = frozenset()
    # The imports linked besides `records`: what the manifest asked for and the decision granted.
    imports: frozenset[str] = frozenset()
    generalise: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AuditEvent:
    """One invocation attempt, allowed or not, as the audit trail records it. Never holds a token."""

    request_id: str
    subject_id: str | None
    role: str | None
    function: str | None
    patient_id: str | None
    purpose: str | None
    decision_id: str | None
    allowed: bool | None
    reasons: tuple[str, ...]
    outcome: str
    latency_ms: float
    function_version: str | None = None
    query: str | None = None
    # The decision log: enough to replay and explain the answer later. Break-glass access is
    # flagged for review. None/False for records made before issue 3 (and for 401s).
    policy_revision: str | None = None
    input_hash: str | None = None
    break_glass: bool = False
    review: bool = False
    break_glass_reason: str | None = None
    # The subject's organisation unit, as their token named it; None when it named none.
    org_unit: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    """An audit event as stored: its place in the chain and the hashes that bind it there."""

    seq: int  # the trail's order: commit order, across every chain
    timestamp: str
    event: AuditEvent
    prev_hash: str  # the hash of the record before it in its chain
    hash: str
    chain: str = ""  # the writer's chain ("" for records from before chains)
    n: int = 0  # the record's place in its chain, from 1


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of checking the audit chain."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None
    chains: int = 0


@dataclass(frozen=True)
class ChainHead:
    """One chain's newest record (`n`, its place in the chain, and its hash), and whether the chain is closed."""

    chain: str
    n: int
    hash: str
    closed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"chain": self.chain, "n": self.n, "hash": self.hash, "closed": self.closed}


@dataclass(frozen=True)
class ArchiveNote:
    """What an archive's checkpoint signs besides its heads (each chain's last archived record): the
    month it archived before, how many records, the SHA-256 of the archive file's record lines, and
    where each chain's archived records start (the previous archive's boundary, or n 0)."""

    before: str
    records: int
    sha256: str
    starts: tuple[ChainHead, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "records": self.records,
            "sha256": self.sha256,
            "starts": [{"chain": h.chain, "n": h.n, "hash": h.hash} for h in self.starts],
        }


@dataclass(frozen=True)
class Checkpoint:
    """Audit chains' heads at one moment, signed with a key the database does not hold.

    A checkpoint from before chains (`legacy`) signed `{seq, hash, ts, key_id}`: the head of the
    one chain there was, which is now the chain "" with n equal to seq.
    """

    heads: tuple[ChainHead, ...]
    ts: str
    key_id: str
    signature: str = ""
    legacy: bool = False
    # Set on an archive's checkpoint (host/audit/retention.py): its heads are the last records archived.
    archive: ArchiveNote | None = None

    def signed_fields(self) -> dict[str, Any]:
        """What the signature covers (as canonical JSON): everything but the signature."""
        if self.legacy:
            (head,) = self.heads
            return {"seq": head.n, "hash": head.hash, "ts": self.ts, "key_id": self.key_id}
        fields = {"heads": [h.as_json() for h in self.heads], "ts": self.ts, "key_id": self.key_id}
        return fields if self.archive is None else {**fields, "archive": self.archive.as_json()}

    def as_json(self) -> dict[str, Any]:
        """The checkpoint as one line of the checkpoint file, or one message on the stream."""
        return {**self.signed_fields(), "sig": self.signature}


@dataclass(frozen=True)
class CheckpointReport:
    """The outcome of checking the audit chain against its signed checkpoints."""

    ok: bool
    checkpoints: int
    latest: Checkpoint | None = None
    problem: str | None = None


@dataclass(frozen=True)
class PatientFacts:
    """What the store knows of a patient that the access decision needs, read in one round trip."""

    exists: bool
    care_team: tuple[str, ...] = ()
    consent_directives: tuple[dict[str, Any], ...] = ()


NAME_KINDS = ("family", "given", "full")


def normalise(text: str) -> str:
    """Casefolded, accents removed, runs of spaces, hyphens and apostrophes made one space."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[\s\-'’.]+", " ", bare.casefold()).strip()


@dataclass(frozen=True)
class DirectoryQuery:
    """A search of the patient directory: every key given must match exactly, after `normalise`."""

    name: str | None = None
    birth_date: str | None = None
    identifier: str | None = None

    def keys(self) -> list[tuple[tuple[str, ...], str]]:
        """(kinds, key) pairs that must all match; empty when the query names nothing."""
        pairs: list[tuple[tuple[str, ...], str]] = []
        if self.name and normalise(self.name):
            pairs.append((NAME_KINDS, normalise(self.name)))
        if self.birth_date and self.birth_date.strip():
            pairs.append((("birth_date",), self.birth_date.strip()))
        if self.identifier and self.identifier.strip():
            pairs.append((("identifier",), normalise(self.identifier)))
        return pairs
