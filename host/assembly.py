"""Builds the host's long-lived parts from settings, in dependency order, and tears them down."""

from __future__ import annotations

from dataclasses import dataclass

from wasmtime import Engine

from host.artifacts import ArtifactCache
from host.audit import AuditLog
from host.auth import TokenVerifier
from host.config import Settings
from host.decisions import CachingPolicyEngine
from host.policy import PolicyEngine, RegoPolicyEngine
from host.registry import Registry
from host.runtime import EpochTicker, InstancePool, Sandbox, create_engine
from host.service import InvocationService
from host.store import ResourceStore


@dataclass
class Host:
    settings: Settings
    engine: Engine
    ticker: EpochTicker
    sandbox: Sandbox
    pool: InstancePool
    registry: Registry
    store: ResourceStore
    audit: AuditLog
    policy: PolicyEngine
    verifier: TokenVerifier
    service: InvocationService

    def close(self) -> None:
        self.pool.stop()
        self.ticker.stop()
        self.audit.close()
        self.store.close()


def open_host(settings: Settings) -> Host:
    """Everything expensive, built once per process. Fails with a ConfigurationError naming what to fix."""
    verifier = TokenVerifier.from_settings(settings)
    policy = RegoPolicyEngine.from_directory(settings.policy_dir, settings.policy_timeout_ms / 1000)
    store = ResourceStore(settings.database_path)
    audit = AuditLog(settings.database_path)
    engine = create_engine()
    ticker = EpochTicker(engine, settings.epoch_tick_ms)
    sandbox = Sandbox(engine, store.search, settings.epoch_tick_ms)
    pool = InstancePool(sandbox, settings.prepared_instances, settings.reusable_instances)
    registry = Registry(settings, sandbox, pool)
    try:
        registry.load_all(ArtifactCache(settings.artifact_dir, settings.key_dir))
    except Exception:
        audit.close()
        store.close()
        raise
    ticker.start()
    pool.start()
    decisions = CachingPolicyEngine(policy, settings.decision_cache_ttl_ms / 1000, settings.decision_cache_size)
    service = InvocationService(registry, sandbox, pool, store, decisions, audit)
    return Host(settings, engine, ticker, sandbox, pool, registry, store, audit, policy, verifier, service)
