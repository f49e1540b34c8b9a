"""Typed settings from `WARDFN_*` environment variables, validated at start-up.

Defaults give the embedded development mode (SQLite, in-process Rego, a development
token issuer). Production (`WARDFN_ENV=production`) refuses anything unsafe.

Long because every setting carries its description here, beside its type and default: the
settings page (docs/settings.md, `make docs`) is generated from this model alone.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEV_ISSUER = "wardfn-dev"
MIB = 1024 * 1024
KEK_BYTES = 32
# What a pooling slot keeps resident of its tables (componentize-py's function tables are well under it).
POOL_TABLE_KEEP_RESIDENT_BYTES = MIB


class Settings(BaseSettings):
    """Every tunable of the host. Each field reads `WARDFN_<NAME>`."""

    # hide_input_in_errors: a refused setting may be a secret (WARDFN_KEK, a password in WARDFN_AMQP_URL).
    model_config = SettingsConfigDict(env_prefix="WARDFN_", extra="ignore", frozen=True, hide_input_in_errors=True)

    env: Literal["development", "production"] = Field(
        default="development",
        description="`production` refuses development tokens and every unsafe setting (no key-encryption key, no "
        "checkpoint key, no JWT key, the development issuer, a PostgreSQL URL without `sslmode=verify-full`, an "
        "`amqp://` broker).",
    )
    home: Path = Field(
        default=Path(".wardfn"),
        description="The state directory: the SQLite file `wardfn.db`, keys under `keys/`, the artifact cache, "
        "the audit checkpoint files.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Compiled artifacts (the content-addressed, HMAC-verified `.cwasm` cache), private to the host's "
        "user. Unset: `$WARDFN_HOME/cache`.",
    )
    database: Path | None = Field(
        default=None,
        description="The SQLite file, used when `WARDFN_DATABASE_URL` is unset. Unset: `$WARDFN_HOME/wardfn.db`.",
    )
    # A secret: it may hold the password.
    database_url: SecretStr | None = Field(
        default=None,
        description="A PostgreSQL URL, `postgresql://USER:PASSWORD@HOST:5432/DB?sslmode=verify-full`: the store and "
        "the audit trail live there instead of the SQLite file (migrate it with `wardfn db migrate`). Never printed "
        "with its password; production requires `sslmode=verify-full`.",
    )
    database_pool_size: int = Field(
        default=10,
        ge=1,
        description="PostgreSQL connections each pool (the store's, the audit trail's) keeps at most, per process; "
        "keep it above `WARDFN_INVOKE_THREADS`, as a call waits at most 2 s for a connection before its 503.",
    )

    functions_dirs: list[Path] = Field(
        default_factory=lambda: [PROJECT_ROOT / "functions"],
        description="Directories holding functions (each a subdirectory with a `function.toml`).",
    )
    wit_dir: Path = Field(
        default=PROJECT_ROOT / "wit",
        description="The WIT contract the functions are built against; part of every artifact's cache key.",
    )
    packages_dirs: list[Path] = Field(
        default_factory=list,
        description="Signed OCI layouts written by `wardfn package` (each entry a layout, or a directory of "
        "layouts) to load; needs `WARDFN_PACKAGE_PUBLIC_KEY_FILE`.",
    )
    package_public_key_file: Path | None = Field(
        default=None,
        description="The pinned Ed25519 public key (PEM) packages must be signed with; required when "
        "`WARDFN_PACKAGES_DIRS` is set.",
    )
    policy_dir: Path = Field(
        default=PROJECT_ROOT / "policies",
        description="The Rego policy: the embedded engine loads every `*.rego` but `*_test.rego`, and "
        "`wardfn policy bundle` packs it for OPA.",
    )

    host: str = Field(
        default="127.0.0.1",
        description="The address `wardfn serve` listens on and `wardfn invoke` calls; `--host` overrides it.",
    )
    port: int = Field(
        default=8000, description="The port `wardfn serve` listens on and `wardfn invoke` calls; `--port` overrides it."
    )
    # One by default, as in a Kubernetes pod limited to one core (scale with replicas there).
    workers: int = Field(
        default=1,
        ge=0,
        description="Server processes; `0` is one per CPU core. Each has its own engine, pool, connections, metrics "
        "and budgets, and SIGHUP restarts them rather than swapping functions in place: one per pod, scaled with "
        "replicas, is the default.",
    )
    invoke_threads: int = Field(
        default=4,
        ge=1,
        description="Threads per server process that run invocations (Wasm, policy, audit) off the event loop.",
    )

    jwt_issuer: str = Field(
        default=DEV_ISSUER,
        description=f"The `iss` every bearer token must carry; production refuses the development issuer "
        f"`{DEV_ISSUER}`.",
    )
    jwt_audience: str = Field(default="wardfn", description="The `aud` every bearer token must carry.")
    jwt_public_key_file: Path | None = Field(
        default=None,
        description="The identity provider's public key (PEM) that verifies tokens; this or `WARDFN_JWKS_URL` is "
        "required in production.",
    )
    jwks_url: str | None = Field(
        default=None,
        description="The identity provider's JWKS URL, whose keys verify tokens; this or "
        "`WARDFN_JWT_PUBLIC_KEY_FILE` is required in production.",
    )
    jwt_leeway_s: int = Field(
        default=5,
        ge=0,
        le=300,
        description="Clock skew, in seconds, allowed when checking a token's expiry and other time claims: a token "
        "is accepted up to this long past its `exp`. Kept small; `GET /v1/policy` states it (`token_leeway_s`).",
    )

    # Ceilings on what a manifest may ask for; the defaults (200 ms, 128 MiB, 1 MiB) are the manifest's.
    max_deadline_ms: int = Field(
        default=10_000,
        gt=0,
        description="The longest deadline a manifest may ask for (a manifest's default is 200 ms).",
    )
    min_deadline_ms: int = Field(
        default=0,
        ge=0,
        description="The shortest deadline a call gets: a manifest's shorter deadline is raised to it (at most "
        "WARDFN_MAX_DEADLINE_MS). 0 keeps the manifests' own. For nodes too slow or too shared for them "
        "(the test suite sets it on busy machines).",
    )
    max_memory_bytes: int = Field(
        default=64 * MIB,
        gt=0,
        description="The most linear memory one invocation may have, whatever its manifest asks (a manifest's "
        "default is 128 MiB; more is cut to this). The guest's memory is the host's, and what a guest hands an "
        "import wasmtime lifts and converts before the host can refuse it, at a cost the guest's memory bounds: "
        "64 MiB keeps one invocation of a Python function under 384 MiB of the Deployment's 1 GiB (measured worst "
        "case 192 MiB; see docs/functions.md). The shipped functions export a 50,000-resource chart in pages of "
        "5,000 within it.",
    )
    max_output_bytes: int = Field(
        default=32 * MIB,
        gt=0,
        description="The most output a manifest may ask for (a manifest's default is 1 MiB).",
    )
    answer_memory_bytes: int = Field(
        default=288 * MIB,
        gt=0,
        description="The most memory parsing a function's answer may take, bounded before parsing from its "
        "separators and its length (96 bytes for each `,` `:` `[` `{` and 8 for each byte: 16 MiB of "
        "`[[],[],...]` takes 490 MiB to parse); a larger answer is refused (500, audited). The bound of a 16 MiB "
        "page of FHIR JSON is about 270 MiB (it takes 85).",
    )
    stdio_limit_bytes: int = Field(
        default=64 * 1024,
        ge=0,
        description="A function's stdout and stderr kept per invocation (captured, never written to the host's "
        "logs); the rest is counted and dropped.",
    )
    function_log_limit_bytes: int = Field(
        default=16 * 1024,
        ge=0,
        description="A function's `log.write` messages kept per invocation (never written to the host's logs); the "
        "rest is counted and dropped.",
    )
    epoch_tick_ms: int = Field(
        default=5,
        gt=0,
        description="How often the ticker thread advances wasmtime's epoch: the granularity of every deadline.",
    )
    prepared_instances: int = Field(
        default=2,
        ge=0,
        description="Fresh instances kept ready per function (each warmed with a synthetic call when "
        "`WARDFN_POOLING` is off). With pooling one is made in about 1.5 ms of CPU, so a short queue suffices.",
    )
    pooling: bool = Field(
        default=True,
        description="wasmtime's pooling allocator: instance slots reserved once and handed to the next instance "
        "of the same function with their first `WARDFN_POOL_KEEP_RESIDENT_BYTES` of linear memory still resident, "
        "reset to the function's initial image. A fresh instance then costs what a warm one does, so prepared "
        "instances get no synthetic warm-up call. Off: a fresh heap per instance, warmed before it is offered.",
    )
    pool_instance_slots: int = Field(
        default=24,
        ge=4,
        description="With pooling: instances alive at once, all functions together (prepared, in a call, reused, "
        "stranded). A call past it is refused with 503. Each slot once used keeps up to "
        "`WARDFN_POOL_KEEP_RESIDENT_BYTES` (and 1 MiB of tables) resident: slots times that, at most "
        "`WARDFN_POOL_MEMORY_BUDGET_BYTES`, is the pool's share of the host's memory. Prepared instances take at "
        "most half the slots; the rest is for calls.",
    )
    pool_keep_resident_bytes: int = Field(
        default=12 * MIB,
        ge=0,
        description="With pooling: linear memory a slot keeps resident after its instance ends (reset to the "
        "function's initial image, never unmapped), so the next instance's first call takes no page faults there.",
    )
    reusable_instances: int = Field(
        default=16,
        ge=1,
        description="Warm instances kept per function that declares `reuse_instances = true`.",
    )
    pool_memory_budget_bytes: int = Field(
        default=320 * MIB,
        ge=0,
        description="Resident memory all prepared instances together may hold (what the host grew by making "
        "each, counted until it is taken); past it the pool stops preparing and calls start cold. With pooling, "
        "also the most the slots may keep resident (see `WARDFN_POOL_INSTANCE_SLOTS`). Keeps the host, with every "
        "function deployed and the pool full, inside 600 MiB.",
    )
    pool_instance_memory_bytes: int = Field(
        default=64 * MIB,
        gt=0,
        description="The memory cap a prepared instance's warm-up runs under (each function's own cap applies to "
        "its calls): an instance that grows past it while warming is not kept prepared.",
    )
    warmup_backoff_max_s: float = Field(
        default=300.0,
        gt=0,
        description="The longest the pool waits before warming a function again after its warm-ups failed; the "
        "wait starts at 1 s and doubles with each failure up to this.",
    )
    deadline_margin_ms: int = Field(
        default=500,
        gt=0,
        description="How long past its deadline a call blocked in a host call (a WASI sleep or poll, which epoch "
        "interruption cannot reach) is waited for before it is answered 504 and left to finish on its own thread.",
    )
    stranded_calls_per_function: int = Field(
        default=2,
        ge=1,
        description="Calls of one function left running past their deadline (see `WARDFN_DEADLINE_MARGIN_MS`) "
        "before its new calls are refused with 503 until they end; each holds its store's memory.",
    )
    stranded_calls_max: int = Field(
        default=4,
        ge=1,
        description="Calls of all functions left running past their deadline before every new call is refused with "
        "503 until they end: each holds up to `WARDFN_MAX_MEMORY_BYTES`, so the default's 4 times 64 MiB stays "
        "inside the 424 MiB the Deployment's 1 GiB leaves above the idle host's 600 MiB.",
    )
    max_request_bytes: int = Field(
        default=64 * 1024, gt=0, description="The request body cap; a larger body is refused with 413."
    )
    policy_timeout_ms: int = Field(
        default=1000, gt=0, description="A decision slower than this is a deny with 503 (fail closed)."
    )
    token_cache_size: int = Field(
        default=4096,
        ge=0,
        description="Verified tokens remembered until they expire, so a signature is checked once (`0`: off).",
    )

    import_max_bytes: int = Field(
        default=32 * MIB, gt=0, description="The largest FHIR bundle file `wardfn data import` accepts."
    )
    shutdown_grace_s: int = Field(
        default=15,
        ge=0,
        description="After SIGTERM, how long in-flight calls may run before the host stops (the Kubernetes drain).",
    )
    tools_dir: Path = Field(
        default=PROJECT_ROOT / ".wardfn" / "tools" / "bin",
        description="Where `make tools` installs kustomize, gator, oras and promtool; `wardfn deploy` runs "
        "kustomize and gator from here.",
    )
    policy: Literal["embedded", "opa"] = Field(
        default="embedded",
        description="Which engine decides: `embedded` (regopy, in-process) or `opa` (a sidecar at `WARDFN_OPA_URL`).",
    )
    policy_workers: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Embedded engine: interpreters deciding in parallel (regopy releases the GIL while it evaluates).",
    )
    opa_url: str | None = Field(
        default=None, description="The OPA sidecar's http(s) URL; required with `WARDFN_POLICY=opa`."
    )
    opa_health_interval_ms: int = Field(
        default=250,
        gt=0,
        description="How often the sidecar's `/health?bundles` is probed and its bundle revision read.",
    )
    decision_cache_size: int = Field(
        default=10_000,
        ge=0,
        description="Decisions remembered, keyed by the whole input and emptied when the policy revision changes; "
        "`0` turns the cache off.",
    )
    break_glass_budget: int = Field(
        default=5,
        ge=0,
        description="Break-the-glass accesses a subject may make within `WARDFN_BREAK_GLASS_WINDOW_S`; past it the "
        "allow becomes a 403.",
    )
    break_glass_window_s: int = Field(
        default=3600, gt=0, description="The sliding window of the break-the-glass budget, in seconds."
    )
    search_budget: int = Field(
        default=60,
        ge=0,
        description="Searches a subject may make within `WARDFN_SEARCH_WINDOW_S`; past it the allow becomes a 403.",
    )
    search_window_s: int = Field(default=60, gt=0, description="The sliding window of the search budget, in seconds.")

    kek: SecretStr | None = Field(
        default=None,
        description="The key-encryption key that wraps every patient's data key: 32 random bytes in base64 "
        "(`openssl rand -base64 32`). Set this or `WARDFN_KEK_FILE`, not both; production requires one; in "
        "development, with neither, one is generated once at `$WARDFN_HOME/keys/kek.key`.",
    )
    kek_file: Path | None = Field(
        default=None,
        description="A file holding the key-encryption key (32 bytes, raw or base64), instead of `WARDFN_KEK`.",
    )

    # Audit checkpoints (issue 5): the chain's head, signed with a key kept out of the database.
    audit_checkpoint_key_file: Path | None = Field(
        default=None,
        description="The Ed25519 private key (PEM) that signs audit checkpoints, kept where the database's users "
        "cannot read it; production requires one; in development one is generated once at "
        "`$WARDFN_HOME/keys/audit-checkpoint.pem`.",
    )
    audit_checkpoint_file: Path | None = Field(
        default=None,
        description="Where checkpoints are appended. Unset: `$WARDFN_HOME/audit-checkpoints-<trail>.jsonl`, "
        "`<trail>` being 12 hex digits of the SHA-256 of the database's identity (the SQLite file's resolved path, "
        "or PostgreSQL's host, port and database), so trails sharing a home never mix.",
    )
    audit_checkpoint_interval_s: float = Field(
        default=5.0, gt=0, description="How often, in seconds, the host signs the chain's head when it moved."
    )
    audit_retention_years: int = Field(
        default=6,
        ge=1,
        description="How many years audit records are kept before `wardfn audit archive` may archive and drop them "
        "(six, HIPAA's documentation rule, by default; production refuses fewer). A month is archived only once "
        "all of it is older ([audit.md](audit.md#retention)).",
    )

    # The privacy office (issue 19): access reports and the break-the-glass review queue.
    access_report_names_subjects: bool = Field(
        default=False,
        description="Whether a patient's access report names the subject (the token's `sub`) of each access "
        "besides their role; compliance officers always see it.",
    )
    console_idle_timeout_s: int = Field(
        default=900,
        ge=30,
        le=8 * 3600,
        description="The console signs its user out after this many seconds without a request "
        "(HIPAA 164.312(a)(2)(iii), automatic logoff).",
    )
    console_oidc_issuer: str | None = Field(
        default=None,
        description="The OpenID Connect provider the console signs in through (authorization code with PKCE; "
        "its discovery document at `<issuer>/.well-known/openid-configuration`). The access token it issues must "
        "verify as API tokens do (`WARDFN_JWKS_URL`, `WARDFN_JWT_ISSUER`, `WARDFN_JWT_AUDIENCE`). Unset: the "
        "console signs in only with a pasted token, in development.",
    )
    console_oidc_client_id: str = Field(
        default="wardfn-console",
        min_length=1,
        description="The console's client id at the OpenID Connect provider (a public client: PKCE, no secret).",
    )
    review_max_age_h: float = Field(
        default=72.0,
        gt=0,
        description="How long, in hours, a break-the-glass access may wait for review before the "
        "`WardfnReviewOverdue` alert fires (exported as `wardfn_review_max_age_seconds`).",
    )

    # The audit relay publishes every audit record at least once. A secret: the URL may carry a password.
    amqp_url: SecretStr | None = Field(
        default=None,
        description="Stream every audit record to this RabbitMQ broker (unset: no relay). Never printed with its "
        "password; production requires `amqps://`.",
    )
    amqp_exchange: str = Field(
        default="wardfn.audit",
        min_length=1,
        description="The durable topic exchange audit records and checkpoints are published to.",
    )
    amqp_ca_file: Path | None = Field(
        default=None,
        description="The CA (PEM) that signed the broker's certificate, for `amqps://`. Unset: the system's trust "
        "store.",
    )
    amqp_retry_max_s: float = Field(
        default=10.0,
        gt=0,
        description="The longest wait, in seconds, between reconnection attempts while the broker is unreachable.",
    )
    amqp_batch: int = Field(
        default=256,
        ge=1,
        le=10_000,
        description="Records the relay reads per round; each is confirmed before the cursor moves past it.",
    )

    seed_patients: int = Field(
        default=1000,
        ge=0,
        description="Synthetic patients `wardfn serve` seeds into an empty development database (and "
        "`wardfn bench load` into its own).",
    )
    seed: int = Field(default=20261125, description="The synthetic generator's seed: the same seed, the same patients.")

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def database_path(self) -> Path:
        return self.database if self.database is not None else self.home / "wardfn.db"

    @property
    def postgresql(self) -> bool:
        """True if WARDFN_DATABASE_URL names a PostgreSQL database (an empty variable counts as unset)."""
        return bool(self.database_url and self.database_url.get_secret_value())

    @property
    def artifact_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.home / "cache"

    @property
    def key_dir(self) -> Path:
        return self.home / "keys"

    @property
    def package_signing_key(self) -> Path:
        """The development signing key `wardfn package` uses when given no --key."""
        return self.key_dir / "package-signing.pem"

    @property
    def audit_checkpoint_key_given(self) -> bool:
        """True if WARDFN_AUDIT_CHECKPOINT_KEY_FILE is set (an empty variable counts as unset)."""
        return self.audit_checkpoint_key_file is not None and str(self.audit_checkpoint_key_file) not in ("", ".")

    @property
    def audit_checkpoint_key_path(self) -> Path:
        """The checkpoint signing key: the configured file, or the development key under the key directory."""
        if self.audit_checkpoint_key_given:
            assert self.audit_checkpoint_key_file is not None
            return self.audit_checkpoint_key_file
        return self.key_dir / "audit-checkpoint.pem"

    @property
    def audit_checkpoint_path(self) -> Path:
        """Where checkpoints are appended: the configured file, or one per audit trail under home."""
        if self.audit_checkpoint_file is not None and str(self.audit_checkpoint_file) not in ("", "."):
            return self.audit_checkpoint_file
        # Named after the trail's resolved path: several databases may share one home (tests,
        # benchmarks), and one trail's checkpoints must never be checked against another's.
        trail = hashlib.sha256(self._trail_identity().encode()).hexdigest()[:12]
        return self.home / f"audit-checkpoints-{trail}.jsonl"

    def _trail_identity(self) -> str:
        """The audit trail's database: the SQLite file's resolved path, or PostgreSQL's host, port and
        database name (not the user, password or options, which may change while the trail stays)."""
        if self.postgresql:
            assert self.database_url is not None
            parts = urlsplit(self.database_url.get_secret_value())
            return f"postgresql://{parts.hostname}:{parts.port or 5432}{parts.path}"
        return str(self.database_path.resolve())

    @model_validator(mode="after")
    def _pool_fits_its_slots(self) -> Settings:
        kept = self.pool_instance_slots * (self.pool_keep_resident_bytes + POOL_TABLE_KEEP_RESIDENT_BYTES)
        if self.pooling and kept > self.pool_memory_budget_bytes:
            raise ValueError(
                "WARDFN_POOL_INSTANCE_SLOTS times (WARDFN_POOL_KEEP_RESIDENT_BYTES + 1 MiB of tables) is what the "
                "slots keep resident, and may be at most WARDFN_POOL_MEMORY_BUDGET_BYTES: lower the slots or what "
                "each keeps, or raise the budget"
            )
        return self

    @model_validator(mode="after")
    def _deadline_floor_under_its_ceiling(self) -> Settings:
        if self.min_deadline_ms > self.max_deadline_ms:
            raise ValueError("WARDFN_MIN_DEADLINE_MS is above WARDFN_MAX_DEADLINE_MS: lower it, or raise the ceiling")
        return self

    @model_validator(mode="after")
    def _packages_need_a_pinned_key(self) -> Settings:
        if self.packages_dirs and self.package_public_key_file is None:
            raise ValueError(
                "WARDFN_PACKAGES_DIRS is set but WARDFN_PACKAGE_PUBLIC_KEY_FILE is not: "
                "packaged functions load only when signed by a pinned public key"
            )
        return self

    @model_validator(mode="after")
    def _need_opa_url(self) -> Settings:
        if self.policy == "opa":
            url = self.opa_url or ""
            if not url.startswith(("http://", "https://")):
                raise ValueError(
                    "WARDFN_POLICY=opa needs WARDFN_OPA_URL, the sidecar's http(s) URL (e.g. http://127.0.0.1:8181)"
                )
        return self

    @property
    def amqp(self) -> str | None:
        """The broker URL, or None when no relay is configured (an empty variable counts as unset)."""
        return (self.amqp_url.get_secret_value() if self.amqp_url else "") or None

    @model_validator(mode="after")
    def _oidc_issuer_is_https(self) -> Settings:
        issuer = self.console_oidc_issuer
        if issuer and not issuer.startswith("https://") and (self.production or not issuer.startswith("http://")):
            raise ValueError("WARDFN_CONSOLE_OIDC_ISSUER must be an https:// URL (http:// only in development)")
        return self

    @model_validator(mode="after")
    def _amqp_url_is_amqp(self) -> Settings:
        url = self.amqp
        if url is not None and not url.startswith(("amqp://", "amqps://")):
            raise ValueError("WARDFN_AMQP_URL must be an amqps:// (or, outside production, amqp://) URL")
        return self

    @property
    def kek_given(self) -> bool:
        """True if WARDFN_KEK or WARDFN_KEK_FILE is set (an empty variable counts as unset)."""
        return bool(self.kek and self.kek.get_secret_value()) or (
            self.kek_file is not None and str(self.kek_file) not in ("", ".")
        )

    @model_validator(mode="after")
    def _kek_is_a_key(self) -> Settings:
        # Checked here so a malformed key fails at start-up; the message never repeats the value.
        if self.kek and self.kek.get_secret_value():
            try:
                key = base64.b64decode(self.kek.get_secret_value(), validate=True)
            except ValueError:
                key = b""
            if len(key) != KEK_BYTES:
                raise ValueError(
                    f"WARDFN_KEK must be {KEK_BYTES} random bytes in base64 (make one with `openssl rand -base64 32`)"
                )
            if self.kek_file is not None and str(self.kek_file) not in ("", "."):
                raise ValueError("set WARDFN_KEK or WARDFN_KEK_FILE, not both")
        return self

    @model_validator(mode="after")
    def _database_url_is_postgresql(self) -> Settings:
        # The message never repeats the URL: it may hold a password.
        if self.postgresql:
            assert self.database_url is not None
            parts = urlsplit(self.database_url.get_secret_value())
            if parts.scheme not in ("postgresql", "postgres") or not parts.netloc:
                raise ValueError(
                    "WARDFN_DATABASE_URL must be a PostgreSQL URL, postgresql://USER:PASSWORD@HOST:5432/DBNAME; "
                    "unset it to use the embedded SQLite file"
                )
            if self.production and dict(parse_qsl(parts.query)).get("sslmode") != "verify-full":
                raise ValueError(
                    "WARDFN_ENV=production needs WARDFN_DATABASE_URL to verify the server's certificate: add "
                    "sslmode=verify-full (and sslrootcert=/path/to/ca.pem if the CA is not the system's), e.g. "
                    "postgresql://wardfn:PASSWORD@db.example:5432/wardfn?sslmode=verify-full"
                )
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if not self.production:
            return self
        # An empty variable reads as Path(".") or "": treat it as unset.
        key_file = self.jwt_public_key_file is not None and str(self.jwt_public_key_file) not in ("", ".")
        if not key_file and not self.jwks_url:
            raise ValueError(
                "WARDFN_ENV=production needs WARDFN_JWT_PUBLIC_KEY_FILE or WARDFN_JWKS_URL: "
                "development tokens are never accepted in production"
            )
        if self.jwt_issuer == DEV_ISSUER:
            raise ValueError(
                f"WARDFN_JWT_ISSUER is still the development issuer {DEV_ISSUER!r}: "
                "set it to your identity provider's issuer"
            )
        if not self.kek_given:
            raise ValueError(
                "WARDFN_ENV=production needs WARDFN_KEK or WARDFN_KEK_FILE, the key-encryption key of the "
                "patient data: a generated development key is never used in production"
            )
        if not self.audit_checkpoint_key_given:
            raise ValueError(
                "WARDFN_ENV=production needs WARDFN_AUDIT_CHECKPOINT_KEY_FILE, the Ed25519 private key (PEM) that "
                "signs audit checkpoints, kept where the database's users cannot read it: create one with "
                "`openssl genpkey -algorithm ed25519 -out audit-checkpoint.pem && chmod 600 audit-checkpoint.pem`"
            )
        if self.audit_retention_years < 6:
            raise ValueError(
                "WARDFN_AUDIT_RETENTION_YEARS is below six, HIPAA's documentation rule: production keeps audit "
                "records at least six years"
            )
        if self.amqp is not None and not self.amqp.startswith("amqps://"):
            # The records name patients: they cross the network only encrypted.
            raise ValueError(
                "WARDFN_AMQP_URL must use amqps:// (TLS) in production: audit records name patients; "
                "enable a TLS listener on the broker and change the scheme"
            )
        return self


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags, tests) on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
