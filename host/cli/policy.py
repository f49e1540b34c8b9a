"""`wardfn policy`: evaluate one input, run the decision table, write the OPA bundle."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from host.cli.common import cli_settings
from host.config import Settings

ENGINE = click.option(
    "--policy",
    "engine",
    type=click.Choice(["embedded", "opa"]),
    default=None,
    help="The engine: embedded (regopy) or opa (a running sidecar). Default: WARDFN_POLICY.",
)
OPA_URL = click.option("--opa-url", default=None, help="The OPA sidecar's URL (with --policy opa).")


def _settings(engine: str | None, opa_url: str | None) -> Settings:
    return cli_settings(policy=engine, opa_url=opa_url)


@click.group()
def policy() -> None:
    """The access policy: evaluate, test, bundle."""


@policy.command("eval")
@click.option("--input", "input_file", type=click.Path(dir_okay=False, path_type=Path), required=True)
@ENGINE
@OPA_URL
def policy_eval(input_file: Path, engine: str | None, opa_url: str | None) -> None:
    """Print the decision for the input document in FILE as JSON."""
    from host.assembly import open_policy_engine

    try:
        document = json.loads(input_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.ClickException(f"cannot read {input_file}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{input_file} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise click.ClickException(f"{input_file} must hold a JSON object, the policy input")
    # A bare input document, or {"input": {...}} as OPA's REST API takes it.
    if set(document) == {"input"} and isinstance(document["input"], dict):
        document = document["input"]
    engine_ = open_policy_engine(_settings(engine, opa_url))
    try:
        decision = engine_.decide(document)
    finally:
        engine_.close()
    click.echo(json.dumps(decision.as_json(), indent=2))


@policy.command("test")
@click.option(
    "--table",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The decision table (JSON). Default: the one shipped with wardfn (host/policy/decision_table.json).",
)
@ENGINE
@OPA_URL
def policy_test(table: Path | None, engine: str | None, opa_url: str | None) -> None:
    """Run every case of the decision table; exit non-zero if any fails."""
    from host.assembly import open_policy_engine
    from host.errors import PolicyUnavailable
    from host.policy.table import DEFAULT_TABLE, load_table, mismatches

    cases = load_table(table or DEFAULT_TABLE)
    engine_ = open_policy_engine(_settings(engine, opa_url))
    passed = failed = 0
    try:
        for case in cases:
            try:
                problems = mismatches(engine_.decide(case["input"]), case)
            except PolicyUnavailable as exc:
                problems = [f"no decision: {exc}"]
            if problems:
                failed += 1
                click.echo(f"FAIL {case['name']}")
                for problem in problems:
                    click.echo(f"     {problem}")
            else:
                passed += 1
    finally:
        engine_.close()
    click.echo(f"{passed} passed, {failed} failed")
    if failed:
        sys.exit(1)


@policy.command("bundle")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .tar.gz to write.")
def policy_bundle(out: Path) -> None:
    """Write an OPA bundle of the policy (tar.gz with .manifest and revision) for the sidecar."""
    from host.policy.bundle import write_bundle

    revision = write_bundle(cli_settings().policy_dir, out)
    click.echo(f"wrote {out} (revision {revision})", err=True)
