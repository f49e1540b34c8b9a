"""Typed settings from `WARDFN_*` environment variables, validated at start-up.

Defaults give the embedded development mode (SQLite, in-process Rego, a development
token issuer). Production (`WARDFN_ENV=production`) refuses anything unsafe.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEV_ISSUER = "wardfn-dev"
MIB = 1024 * 1024


class Settings(BaseSettings):
    """Every tunable of the host. Each field reads `WARDFN_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="WARDFN_", extra="ignore", frozen=True)

    env: Literal["development", "production"] = "development"
    home: Path = Path(".wardfn")
    cache_dir: Path | None = None
    database: Path | None = None

    functions_dirs: list[Path] = Field(default_factory=lambda: [PROJECT_ROOT / "functions"])
    wit_dir: Path = PROJECT_ROOT / "wit"
    policy_dir: Path = PROJECT_ROOT / "policies"

    host: str = "127.0.0.1"
    port: int = 8000
    # Server processes; 0 means one per CPU core. Each has its own engine, pool and connections.
    workers: int = Field(default=0, ge=0)
    # Threads per server process that run invocations (Wasm, policy, audit) off the event loop.
    invoke_threads: int = Field(default=4, ge=1)

    jwt_issuer: str = DEV_ISSUER
    jwt_audience: str = "wardfn"
    jwt_public_key_file: Path | None = None
    jwks_url: str | None = None
    jwt_leeway_s: int = 5

    deadline_ms: int = Field(default=200, gt=0)
    memory_limit_bytes: int = Field(default=128 * MIB, gt=0)
    output_limit_bytes: int = Field(default=1 * MIB, gt=0)
    stdio_limit_bytes: int = Field(default=64 * 1024, ge=0)
    function_log_limit_bytes: int = Field(default=16 * 1024, ge=0)
    epoch_tick_ms: int = Field(default=5, gt=0)
    prepared_instances: int = Field(default=8, ge=0)
    reusable_instances: int = Field(default=16, ge=1)
    max_request_bytes: int = Field(default=64 * 1024, gt=0)
    policy_timeout_ms: int = Field(default=1000, gt=0)
    # Identical policy inputs within this time get the decision already made (0: off).
    decision_cache_ttl_ms: int = Field(default=10_000, ge=0)
    decision_cache_size: int = Field(default=10_000, ge=0)
    # Verified tokens remembered until they expire, so a signature is checked once (0: off).
    token_cache_size: int = Field(default=4096, ge=0)

    seed_patients: int = Field(default=1000, ge=0)
    seed: int = 20261125

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
    def artifact_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.home / "cache"

    @property
    def key_dir(self) -> Path:
        return self.home / "keys"

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if not self.production:
            return self
        if self.jwt_public_key_file is None and self.jwks_url is None:
            raise ValueError(
                "WARDFN_ENV=production needs WARDFN_JWT_PUBLIC_KEY_FILE or WARDFN_JWKS_URL: "
                "development tokens are never accepted in production"
            )
        if self.jwt_issuer == DEV_ISSUER:
            raise ValueError(
                f"WARDFN_JWT_ISSUER is still the development issuer {DEV_ISSUER!r}: "
                "set it to your identity provider's issuer"
            )
        return self


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags, tests) on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
