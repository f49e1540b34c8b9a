"""Settings: development defaults, `WARDFN_*` overrides, and production refusing unsafe values."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from host.config import DEV_ISSUER, PROJECT_ROOT, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `WARDFN_*` variable from the shell running the tests leaks into them."""
    for name in list(os.environ):
        if name.upper().startswith("WARDFN_"):
            monkeypatch.delenv(name)


@pytest.fixture
def public_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "idp.pem"
    path.write_text("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")
    return path


def test_defaults_give_development_under_home() -> None:
    settings = load_settings()

    assert settings.env == "development"
    assert not settings.production
    assert settings.home == Path(".wardfn")
    assert settings.database_path == settings.home / "wardfn.db"
    assert settings.artifact_dir == settings.home / "cache"
    assert settings.key_dir == settings.home / "keys"
    assert settings.functions_dirs == [PROJECT_ROOT / "functions"]
    assert settings.jwt_issuer == DEV_ISSUER


def test_paths_follow_wardfn_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARDFN_HOME", str(tmp_path))

    settings = load_settings()

    assert settings.database_path == tmp_path / "wardfn.db"
    assert settings.artifact_dir == tmp_path / "cache"
    assert settings.key_dir == tmp_path / "keys"


def test_database_and_cache_dir_override_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARDFN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WARDFN_DATABASE", str(tmp_path / "elsewhere.db"))
    monkeypatch.setenv("WARDFN_CACHE_DIR", str(tmp_path / "artifacts"))

    settings = load_settings()

    assert settings.database_path == tmp_path / "elsewhere.db"
    assert settings.artifact_dir == tmp_path / "artifacts"
    assert settings.key_dir == tmp_path / "home" / "keys"


def test_functions_dirs_accepts_a_json_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARDFN_FUNCTIONS_DIRS", f'["{tmp_path / "a"}", "{tmp_path / "b"}"]')

    assert load_settings().functions_dirs == [tmp_path / "a", tmp_path / "b"]


def test_explicit_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARDFN_DATABASE", str(tmp_path / "from-env.db"))

    assert load_settings(database=tmp_path / "explicit.db").database_path == tmp_path / "explicit.db"


def test_production_without_a_key_source_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDFN_ENV", "production")
    monkeypatch.setenv("WARDFN_JWT_ISSUER", "https://idp.example.org")

    with pytest.raises(ValidationError) as refused:
        load_settings()

    assert "WARDFN_JWT_PUBLIC_KEY_FILE" in str(refused.value)
    assert "WARDFN_JWKS_URL" in str(refused.value)


def test_production_with_the_development_issuer_is_refused(
    monkeypatch: pytest.MonkeyPatch, public_key_file: Path
) -> None:
    monkeypatch.setenv("WARDFN_ENV", "production")
    monkeypatch.setenv("WARDFN_JWT_PUBLIC_KEY_FILE", str(public_key_file))

    with pytest.raises(ValidationError) as refused:
        load_settings()

    assert "WARDFN_JWT_ISSUER" in str(refused.value)
    assert DEV_ISSUER in str(refused.value)


@pytest.mark.parametrize("key_source", ["file", "jwks"])
def test_production_with_a_key_source_and_a_real_issuer_loads(
    monkeypatch: pytest.MonkeyPatch, public_key_file: Path, key_source: str
) -> None:
    monkeypatch.setenv("WARDFN_ENV", "production")
    monkeypatch.setenv("WARDFN_JWT_ISSUER", "https://idp.example.org")
    monkeypatch.setenv("WARDFN_KEK", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("WARDFN_AUDIT_CHECKPOINT_KEY_FILE", "/run/secrets/audit-checkpoint.pem")
    if key_source == "file":
        monkeypatch.setenv("WARDFN_JWT_PUBLIC_KEY_FILE", str(public_key_file))
    else:
        monkeypatch.setenv("WARDFN_JWKS_URL", "https://idp.example.org/.well-known/jwks.json")

    settings = load_settings()

    assert settings.production
    assert settings.jwt_issuer == "https://idp.example.org"
    if key_source == "file":
        assert settings.jwt_public_key_file == public_key_file
    else:
        assert settings.jwks_url == "https://idp.example.org/.well-known/jwks.json"


def test_production_without_a_key_encryption_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, public_key_file: Path
) -> None:
    monkeypatch.setenv("WARDFN_ENV", "production")
    monkeypatch.setenv("WARDFN_JWT_ISSUER", "https://idp.example.org")
    monkeypatch.setenv("WARDFN_JWT_PUBLIC_KEY_FILE", str(public_key_file))

    with pytest.raises(ValidationError) as refused:
        load_settings()

    assert "WARDFN_KEK" in str(refused.value) and "WARDFN_KEK_FILE" in str(refused.value)
    monkeypatch.setenv("WARDFN_KEK_FILE", str(public_key_file))
    monkeypatch.setenv("WARDFN_AUDIT_CHECKPOINT_KEY_FILE", "/run/secrets/audit-checkpoint.pem")
    assert load_settings().kek_file == public_key_file


@pytest.mark.parametrize("value", [None, ""])
def test_production_without_an_audit_checkpoint_key_is_refused_saying_how_to_make_one(
    monkeypatch: pytest.MonkeyPatch, public_key_file: Path, value: str | None
) -> None:
    monkeypatch.setenv("WARDFN_ENV", "production")
    monkeypatch.setenv("WARDFN_JWT_ISSUER", "https://idp.example.org")
    monkeypatch.setenv("WARDFN_JWT_PUBLIC_KEY_FILE", str(public_key_file))
    monkeypatch.setenv("WARDFN_KEK", base64.b64encode(os.urandom(32)).decode())
    if value is not None:
        monkeypatch.setenv("WARDFN_AUDIT_CHECKPOINT_KEY_FILE", value)

    with pytest.raises(ValidationError) as refused:
        load_settings()

    assert "WARDFN_AUDIT_CHECKPOINT_KEY_FILE" in str(refused.value)
    assert "openssl genpkey -algorithm ed25519" in str(refused.value)


def test_checkpoints_default_to_one_file_per_trail_under_home(tmp_path: Path) -> None:
    one = load_settings(home=tmp_path, database=tmp_path / "a.db")
    other = load_settings(home=tmp_path, database=tmp_path / "b.db")
    assert one.audit_checkpoint_path.parent == tmp_path
    assert one.audit_checkpoint_path != other.audit_checkpoint_path
    assert one.audit_checkpoint_key_path == tmp_path / "keys" / "audit-checkpoint.pem"
    chosen = load_settings(home=tmp_path, audit_checkpoint_file=tmp_path / "c.jsonl")
    assert chosen.audit_checkpoint_path == tmp_path / "c.jsonl"


@pytest.mark.parametrize("value", ["not base64 at all!", base64.b64encode(b"sixteen byte key").decode()])
def test_a_key_encryption_key_that_is_not_32_bytes_of_base64_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WARDFN_KEK", value)

    with pytest.raises(ValidationError) as refused:
        load_settings()

    message = "; ".join(str(e["msg"]) for e in refused.value.errors())
    assert "WARDFN_KEK must be 32 random bytes in base64" in message
    assert value not in message


@pytest.mark.parametrize("value", ["-1", "0"])
def test_a_deadline_that_is_not_positive_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("WARDFN_MAX_DEADLINE_MS", value)

    with pytest.raises(ValidationError, match="deadline_ms"):
        load_settings()


def test_an_unknown_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDFN_ENV", "staging")

    with pytest.raises(ValidationError, match="env"):
        load_settings()


def test_production_with_an_empty_jwks_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDFN_ENV", "production")
    monkeypatch.setenv("WARDFN_JWT_ISSUER", "https://idp.example.org")
    monkeypatch.setenv("WARDFN_JWKS_URL", "")

    with pytest.raises(ValidationError, match="WARDFN_JWKS_URL"):
        load_settings()


def test_the_policy_engine_defaults_to_embedded_with_a_cache_and_budgets() -> None:
    settings = load_settings()
    assert (settings.policy, settings.opa_url) == ("embedded", None)
    assert settings.decision_cache_size > 0
    assert settings.break_glass_budget > 0 and settings.search_budget > 0


@pytest.mark.parametrize("url", [None, "", "127.0.0.1:8181", "opa:8181"])
def test_opa_without_an_http_url_is_refused(monkeypatch: pytest.MonkeyPatch, url: str | None) -> None:
    monkeypatch.setenv("WARDFN_POLICY", "opa")
    if url is not None:
        monkeypatch.setenv("WARDFN_OPA_URL", url)
    with pytest.raises(ValidationError, match="WARDFN_OPA_URL"):
        load_settings()


def test_opa_with_a_url_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDFN_POLICY", "opa")
    monkeypatch.setenv("WARDFN_OPA_URL", "http://127.0.0.1:8181")
    settings = load_settings()
    assert (settings.policy, settings.opa_url) == ("opa", "http://127.0.0.1:8181")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WARDFN_POLICY", "sidecar"),
        ("WARDFN_DECISION_CACHE_SIZE", "-1"),
        ("WARDFN_BREAK_GLASS_BUDGET", "-1"),
        ("WARDFN_BREAK_GLASS_WINDOW_S", "0"),
        ("WARDFN_SEARCH_WINDOW_S", "0"),
        ("WARDFN_OPA_HEALTH_INTERVAL_MS", "0"),
        ("WARDFN_POLICY_WORKERS", "0"),
    ],
)
def test_nonsense_policy_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        load_settings()


def test_no_amqp_url_means_no_relay() -> None:
    settings = load_settings()

    assert settings.amqp is None
    assert settings.amqp_exchange == "wardfn.audit"


@pytest.mark.parametrize(
    ("env", "url", "accepted"),
    [
        ("development", "amqp://relay:s3cret@broker:5672/%2F", True),
        ("development", "amqps://relay:s3cret@broker:5671/%2F", True),
        ("development", "http://relay:s3cret@broker/", False),
        ("production", "amqp://relay:s3cret@broker:5672/%2F", False),
        ("production", "amqps://relay:s3cret@broker:5671/%2F", True),
    ],
)
def test_the_broker_url_must_be_amqp_and_tls_in_production(
    monkeypatch: pytest.MonkeyPatch, public_key_file: Path, env: str, url: str, accepted: bool
) -> None:
    monkeypatch.setenv("WARDFN_ENV", env)
    monkeypatch.setenv("WARDFN_JWT_ISSUER", "https://idp.example.org")
    monkeypatch.setenv("WARDFN_JWT_PUBLIC_KEY_FILE", str(public_key_file))
    monkeypatch.setenv("WARDFN_KEK", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("WARDFN_AUDIT_CHECKPOINT_KEY_FILE", str(public_key_file))  # only its presence is checked
    monkeypatch.setenv("WARDFN_AMQP_URL", url)

    if accepted:
        assert load_settings().amqp == url
        return
    with pytest.raises(ValidationError) as refused:
        load_settings()
    message = "; ".join(str(e["msg"]) for e in refused.value.errors())
    assert "amqps://" in message
    assert "s3cret" not in str(refused.value)  # the password is never echoed


@pytest.mark.parametrize(
    ("slots", "keep_mib", "pooling", "refused"),
    [(24, 12, True, False), (64, 12, True, True), (24, 16, True, True), (64, 12, False, False)],
)
def test_pool_slots_keep_resident_within_the_pool_budget(
    slots: int, keep_mib: int, pooling: bool, refused: bool
) -> None:
    overrides = {"pool_instance_slots": slots, "pool_keep_resident_bytes": keep_mib * 1024 * 1024, "pooling": pooling}
    if refused:
        with pytest.raises(ValidationError, match="WARDFN_POOL_INSTANCE_SLOTS"):
            load_settings(**overrides)
    else:
        assert load_settings(**overrides).pool_instance_slots == slots
