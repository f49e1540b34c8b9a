"""Builds the host's long-lived parts from settings, in dependency order, and tears them down."""

from __future__ import annotations

from contextlib import ExitStack, closing
from dataclasses import dataclass, field

from wasmtime import Engine

from host.audit.broker import AmqpCheckpointSink
from host.audit.checkpoints import Checkpointer, load_verification_key, verify_checkpoints
from host.audit.relay import AuditRelay, open_checkpoint_sink, open_relay
from host.audit.trail import AuditLog, open_audit
from host.auth import TokenVerifier
from host.catalogue.artifacts import ArtifactCache
from host.catalogue.registry import Registry, ReloadReport
from host.config import Settings
from host.keys import load_or_create_key
from host.metrics import Metrics
from host.policy.cache import CachingPolicyEngine
from host.policy.engine import PolicyEngine, RegoPolicyEngine
from host.privacy.office import PrivacyOffice
from host.ratelimit import Budget
from host.runtime.engine import EpochTicker, Pooling, create_engine
from host.runtime.pool import InstancePool
from host.runtime.runner import CallRunner
from host.runtime.sandbox import Sandbox
from host.service import InvocationService
from host.store.pseudonyms import Pseudonymizer
from host.store.resources import ResourceStore, open_store

# The key of the pseudonyms a review shows until an officer reveals the patient (not the research key).
REVIEW_PSEUDONYM_KEY = "review-pseudonym-hmac.key"


@dataclass
class Host:
    """The host's long-lived parts, and the one exit stack that closes them."""

    settings: Settings
    engine: Engine
    ticker: EpochTicker
    sandbox: Sandbox
    pool: InstancePool
    registry: Registry
    store: ResourceStore
    audit: AuditLog
    policy: CachingPolicyEngine
    verifier: TokenVerifier
    service: InvocationService
    metrics: Metrics
    checkpointer: Checkpointer
    relay: AuditRelay | None
    checkpoint_sink: AmqpCheckpointSink | None
    privacy: PrivacyOffice
    exit_stack: ExitStack = field(repr=False)

    def reload_functions(self) -> ReloadReport:
        """Swap in rebuilt functions (on SIGHUP): see Registry.reload."""
        return self.registry.reload(ArtifactCache(self.settings.artifact_dir, self.settings.key_dir))

    def close(self) -> None:
        """Stop and close every part, the last opened first; a second call does nothing."""
        self.exit_stack.close()


def open_policy_engine(settings: Settings) -> PolicyEngine:
    """The engine the settings name: the embedded regopy engine or the OPA sidecar."""
    if settings.policy == "opa":
        from host.policy.opa import OpaPolicyEngine

        assert settings.opa_url is not None  # Settings validation guarantees it
        return OpaPolicyEngine(
            settings.opa_url, settings.policy_timeout_ms / 1000, settings.opa_health_interval_ms / 1000
        )
    return RegoPolicyEngine.from_directory(
        settings.policy_dir, settings.policy_timeout_ms / 1000, settings.policy_workers
    )


def open_host(settings: Settings, policy: PolicyEngine | None = None) -> Host:
    """Everything expensive, built once per process. Fails with a ConfigurationError naming what to fix,
    having closed again whatever it had opened. `policy` replaces the engine the settings name (tests
    give one that fails); the host closes it with the rest."""
    with ExitStack() as parts:
        # Each part is entered as soon as it is open, so the stack closes them in reverse order: on a
        # failure further down, and in Host.close.
        policy_engine = policy if policy is not None else open_policy_engine(settings)
        cached = parts.enter_context(closing(CachingPolicyEngine(policy_engine, settings.decision_cache_size)))
        verifier = TokenVerifier.from_settings(settings)
        store = parts.enter_context(closing(open_store(settings)))
        audit = parts.enter_context(closing(open_audit(settings)))
        metrics = Metrics()
        checkpointer = Checkpointer.from_settings(audit, settings)
        # Built (not connected) here, so that a malformed WARDFN_AMQP_URL fails before anything starts.
        relay = open_relay(settings, metrics.relay_progress)
        checkpoint_sink = open_checkpoint_sink(settings)
        if checkpoint_sink is not None:
            parts.enter_context(closing(checkpoint_sink))
            # The stream: a copy of the checkpoints that the database's users cannot reach.
            checkpointer.sinks.append(checkpoint_sink)
        metrics.watch_policy(cached.healthy)
        engine = create_engine(Pooling.from_settings(settings))
        ticker = EpochTicker(engine, settings.epoch_tick_ms)
        pseudonyms = Pseudonymizer.from_key_dir(settings.key_dir)
        runner = CallRunner(
            settings.deadline_margin_ms / 1000, settings.stranded_calls_per_function, settings.stranded_calls_max
        )
        parts.callback(runner.close)  # idle guest workers; a stranded one ends when its host call returns
        metrics.watch_stranded(runner.stranded)
        sandbox = Sandbox(
            engine,
            store.search,
            settings.epoch_tick_ms,
            pseudonyms.pseudonym,
            store.directory_search,
            runner,
            query_session=store.query_session,
        )
        pool = InstancePool(
            sandbox,
            settings.prepared_instances,
            settings.reusable_instances,
            metrics,
            memory_budget_bytes=settings.pool_memory_budget_bytes,
            instance_memory_bytes=settings.pool_instance_memory_bytes,
            backoff_max_s=settings.warmup_backoff_max_s,
            warm=not settings.pooling,
            slots=settings.pool_instance_slots if settings.pooling else None,
        )
        registry = Registry(settings, sandbox, pool, metrics)
        cache = ArtifactCache(settings.artifact_dir, settings.key_dir)
        registry.load_all(cache)
        registry.load_packages(cache)
        checkpointer.start()
        parts.callback(checkpointer.stop)  # signs the final head, so it stops while the audit log is open
        ticker.start()
        parts.callback(ticker.stop)
        pool.start()
        parts.callback(pool.stop)
        service = InvocationService(
            registry,
            sandbox,
            pool,
            store,
            cached,
            audit,
            metrics=metrics,
            break_glass_budget=Budget(settings.break_glass_budget, settings.break_glass_window_s),
            search_budget=Budget(settings.search_budget, settings.search_window_s),
        )
        privacy = PrivacyOffice(
            service,
            audit,
            store,
            show_subjects=settings.access_report_names_subjects,
            pseudonym=Pseudonymizer(load_or_create_key(settings.key_dir / REVIEW_PSEUDONYM_KEY)).pseudonym,
            checkpoints=lambda: verify_checkpoints(
                audit, settings.audit_checkpoint_path, load_verification_key(settings), settings.production
            ),
        )
        metrics.watch_reviews(privacy.queue, settings.review_max_age_h * 3600)
        if relay is not None:
            relay.start()  # in the background: invocations never wait on the broker
            parts.callback(relay.stop)  # the first to stop: it drains what the broker takes in a short deadline
        return Host(
            settings,
            engine,
            ticker,
            sandbox,
            pool,
            registry,
            store,
            audit,
            cached,
            verifier,
            service,
            metrics,
            checkpointer,
            relay,
            checkpoint_sink,
            privacy,
            parts.pop_all(),
        )
