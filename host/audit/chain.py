"""The audit chains' rows: how a record is laid out, hashed, read back and checked against its predecessor.

The trail is many chains, one per writer process (`chain`, a random id), each numbered from 1
(`n`); `seq` numbers every record of the trail in commit order. Each record's hash is sha256
over the previous record's hash in its chain followed by the canonical JSON of all the record's
other fields, its seq, chain and n included. Changing, deleting or reordering a stored record
therefore breaks its chain, and `check_chains` says where.

Records written before the trail had chains (migration 5) form the chain `""` (LEGACY_CHAIN),
with n equal to seq, and hash as they did: without the chain and n fields.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from host.types import AuditEvent, AuditRecord, VerifyReport

GENESIS_HASH = "0" * 64
LEGACY_CHAIN = ""


# The table is made by host.migrations.
COLUMNS = (
    "seq", "ts", "request_id", "subject_id", "role", "function", "patient_id", "purpose",
    "decision_id", "allowed", "reasons", "outcome", "latency_ms",
    "policy_revision", "input_hash", "break_glass", "review", "break_glass_reason",
    "function_version", "query", "org_unit", "chain", "n",
    "prev_hash", "hash",
)  # fmt: skip


def chain_hash(fields: dict[str, Any]) -> str:
    """sha256 of the previous hash followed by the canonical JSON of a record's other fields."""
    return hashlib.sha256((fields["prev_hash"] + canonical_json(fields)).encode()).hexdigest()


def record_fields(
    seq: int, ts: str, event: AuditEvent, prev_hash: str, chain: str = LEGACY_CHAIN, n: int | None = None
) -> dict[str, Any]:
    """Every field of a record except its hash, as hashed: allowed a bool, reasons a list."""
    place: dict[str, Any] = {} if chain == LEGACY_CHAIN else {"chain": chain, "n": n}
    return {
        **place,
        "seq": seq,
        "ts": ts,
        "request_id": event.request_id,
        "subject_id": event.subject_id,
        "role": event.role,
        "function": event.function,
        "patient_id": event.patient_id,
        "purpose": event.purpose,
        "decision_id": event.decision_id,
        "allowed": event.allowed,
        "reasons": list(event.reasons),
        "outcome": event.outcome,
        # Normalised to what the columns give back, so that a stored record hashes the same.
        "latency_ms": float(event.latency_ms),
        "prev_hash": prev_hash,
        **_decision_fields(event),
    }


def stored_row(fields: dict[str, Any], event: AuditEvent, digest: str) -> list[Any]:
    """A record's column values, in COLUMNS order, from its hashed fields, its event and its hash."""
    row = {
        **fields,
        "allowed": flag_column(event.allowed),
        "reasons": canonical_json(list(event.reasons)),
        "policy_revision": event.policy_revision,
        "input_hash": event.input_hash,
        "break_glass": int(event.break_glass),
        "review": int(event.review),
        "break_glass_reason": event.break_glass_reason,
        "function_version": event.function_version,
        "query": event.query,
        "org_unit": event.org_unit,
    }
    return [*(row[c] for c in COLUMNS[:-1]), digest]


def _decision_fields(event: AuditEvent) -> dict[str, Any]:
    """The decision log's fields, hashed only when set: records from before them hash as they did."""
    fields: dict[str, Any] = {}
    if event.policy_revision is not None:
        fields["policy_revision"] = event.policy_revision
    if event.input_hash is not None:
        fields["input_hash"] = event.input_hash
    if event.break_glass:
        fields["break_glass"] = True
    if event.review:
        fields["review"] = True
    if event.break_glass_reason is not None:
        fields["break_glass_reason"] = event.break_glass_reason
    if event.function_version is not None:
        fields["function_version"] = event.function_version
    if event.query is not None:
        fields["query"] = event.query
    if event.org_unit is not None:
        fields["org_unit"] = event.org_unit
    return fields


def check_chains(rows: Iterator[tuple[Any, ...]], bases: dict[str, tuple[int, str]] | None = None) -> VerifyReport:
    """Walk the rows in (chain, n) order, each chain from its first record, or from the record after
    its base in `bases` ((n, hash) of its last archived record); `checked` counts the records found
    sound before any bad one, `chains` the chains walked."""
    checked = chains = 0
    chain: str | None = None
    previous_n, previous_seq, previous_hash = 0, 0, GENESIS_HASH
    for row in rows:
        values = dict(zip(COLUMNS, row, strict=True))
        if values["chain"] != chain:
            chain, chains = values["chain"], chains + 1
            previous_n, previous_hash = (bases or {}).get(values["chain"], (0, GENESIS_HASH))
            previous_seq = 0
        fault = _fault(values, row, previous_n, previous_seq, previous_hash)
        if fault is not None:
            bad_seq, problem = fault
            return VerifyReport(ok=False, checked=checked, first_bad_seq=bad_seq, problem=problem, chains=chains)
        checked += 1
        previous_n, previous_seq, previous_hash = values["n"], values["seq"], values["hash"]
    return VerifyReport(ok=True, checked=checked, chains=chains)


def describe_chain(chain: str) -> str:
    return "the chain from before chains" if chain == LEGACY_CHAIN else f"chain {chain}"


def _fault(
    values: dict[str, Any], row: tuple[Any, ...], previous_n: int, previous_seq: int, previous_hash: str
) -> tuple[int, str] | None:
    """What is wrong with one row given the one before it in its chain, as (seq to blame, words), or None."""
    seq, n, stored_prev, stored_hash = values["seq"], values["n"], values["prev_hash"], values["hash"]
    where = describe_chain(values["chain"])
    expected = previous_n + 1
    if n > expected:
        return seq, f"record {expected} of {where} is missing (before record {seq})"
    if n != expected or seq <= previous_seq:
        return seq, f"record {seq} is out of sequence in {where}"
    try:
        record = record_from_row(row)
        fields = record_fields(seq, record.timestamp, record.event, stored_prev, record.chain, record.n)
        intact = chain_hash(fields) == stored_hash
    except (TypeError, ValueError):  # a column no longer holds what append wrote
        intact = False
    if not intact:
        return seq, f"record {seq} was altered"
    if stored_prev != previous_hash:
        if previous_n == 0:
            return seq, f"record {seq} does not start {where}"
        if previous_seq == 0:
            return seq, f"record {seq} does not follow its record {previous_n}, the last archived, in {where}"
        return seq, f"record {seq} does not follow record {previous_seq}"
    return None


def record_from_row(row: tuple[Any, ...]) -> AuditRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    reasons = json.loads(values["reasons"])
    if not isinstance(reasons, list):
        raise ValueError("reasons is not a JSON array")
    if values["allowed"] not in (None, 0, 1):
        raise ValueError("allowed is not NULL, 0 or 1")
    event = AuditEvent(
        request_id=values["request_id"],
        subject_id=values["subject_id"],
        role=values["role"],
        function=values["function"],
        patient_id=values["patient_id"],
        purpose=values["purpose"],
        decision_id=values["decision_id"],
        allowed=None if values["allowed"] is None else bool(values["allowed"]),
        reasons=tuple(reasons),
        outcome=values["outcome"],
        latency_ms=values["latency_ms"],
        policy_revision=values["policy_revision"],
        input_hash=values["input_hash"],
        break_glass=_flag(values["break_glass"]),
        review=_flag(values["review"]),
        break_glass_reason=values["break_glass_reason"],
        function_version=values["function_version"],
        query=values["query"],
        org_unit=values["org_unit"],
    )
    return AuditRecord(
        seq=values["seq"],
        timestamp=values["ts"],
        event=event,
        prev_hash=values["prev_hash"],
        hash=values["hash"],
        chain=values["chain"],
        n=values["n"],
    )


def _flag(value: Any) -> bool:
    if value not in (0, 1):
        raise ValueError("a flag column is not 0 or 1")
    return bool(value)


def flag_column(flag: bool | None) -> int | None:
    return None if flag is None else int(flag)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the form a record is hashed in."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
