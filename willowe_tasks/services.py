"""What a worker delivers with: device registry, delivery ledger, analytics
sink, the removal guard, the push providers' clients and the gates in front
of them (circuit breakers, quotas, device backoff), built from settings.

The registry, the ledger and the quota buckets are on PostgreSQL when
``DATABASE_URL`` is set (every host shares them), else on SQLite files (one
host).

An application (:class:`willowe_tasks.app.App`) makes one :class:`Services`
per process, on first use: Dramatiq forks its worker processes after importing
the app, and neither HTTP/2 connections nor SQLite handles may cross a fork.
Each provider's client is built on its first push, so a worker that never
pushes to Android never imports the FCM client; so are its gates
(:class:`~willowe_tasks.provider_gates.ProviderGates`): one circuit breaker
and quota share per provider credential, in each process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from willowe_tasks.analytics import AnalyticsSink, JsonlAnalyticsSink
from willowe_tasks.breakers import BreakerState, CircuitBreaker
from willowe_tasks.deferral import DeferralPolicy
from willowe_tasks.device_backoff import DeviceBackoff
from willowe_tasks.events import BreakerChanged, EventBus
from willowe_tasks.housekeeping import Housekeeping
from willowe_tasks.ledger import DeliveryLedger, SQLiteLedger
from willowe_tasks.provider_gates import ProviderGates
from willowe_tasks.providers import PermanentDeliveryError, PushProvider, provider_for
from willowe_tasks.quota import (
    Bucket,
    Grant,
    QuotaGate,
    QuotaStore,
    SQLiteQuotaStore,
    fleet_bucket,
)
from willowe_tasks.registry import DeviceRegistry, SQLiteDeviceRegistry, invalid_reason
from willowe_tasks.settings import Settings
from willowe_tasks.token_guard import TokenRemovalGuard, Trip

if TYPE_CHECKING:
    from willowe_tasks.database import PostgresDatabase

__all__ = ["Services", "build_housekeeping", "build_ledger", "build_registry", "build_services",
           "build_stores", "build_token_guard", "open_database"]


class Services:
    """The stores and clients one worker process delivers with.

    ``providers`` are clients to use as they are (tests); any other platform's
    client is built from ``settings`` on first use. ``push_timeout_s`` bounds
    one push (the ledger's claims outlast it). ``events`` hears how each push
    ended (a bus of its own when not given). ``quota_store`` keeps the quota
    buckets of providers the settings give a rate limit (none without it).
    """

    def __init__(
        self,
        *,
        registry: DeviceRegistry,
        ledger: DeliveryLedger,
        analytics: AnalyticsSink,
        token_guard: TokenRemovalGuard,
        settings: Settings | None = None,
        providers: Mapping[str, PushProvider] | None = None,
        push_timeout_s: float | None = None,
        events: EventBus | None = None,
        quota_store: QuotaStore | None = None,
    ) -> None:
        self.registry = registry
        self.ledger = ledger
        self.analytics = analytics
        self.token_guard = token_guard
        self.settings = settings
        if push_timeout_s is None:
            push_timeout_s = settings.push_timeout_s if settings is not None else 10.0
        self.push_timeout_s = push_timeout_s
        self.events = events if events is not None else EventBus()
        self.quota_store = quota_store
        self.deferral = (DeferralPolicy(settings.defer_initial_s, settings.defer_max_s)
                         if settings is not None else DeferralPolicy())
        self._providers: dict[str, PushProvider | None] = dict(providers or {})
        self._gates: dict[str, ProviderGates] = {}
        self._lock = threading.Lock()

    def provider(self, platform: str) -> PushProvider:
        """The client for ``platform``'s devices, built on first use.

        Raises :class:`PermanentDeliveryError` ``NotConfigured`` when the
        settings give that provider no credentials.
        """
        with self._lock:
            if platform not in self._providers:
                spec = provider_for(platform)
                self._providers[platform] = (spec.build(self.settings)
                                             if self.settings is not None else None)
            client = self._providers[platform]
        if client is None:
            raise PermanentDeliveryError(
                "NotConfigured", provider=provider_for(platform).name,
                detail=f"no credentials configured for {platform} devices")
        return client

    def gates(self, platform: str) -> ProviderGates:
        """The breaker, quota and device backoff of ``platform``'s provider
        credential, made on first use."""
        with self._lock:
            gates = self._gates.get(platform)
            if gates is None:
                gates = self._gates[platform] = self._make_gates(platform)
        return gates

    def _make_gates(self, platform: str) -> ProviderGates:
        spec = provider_for(platform)
        credential = spec.credential_of(self.settings)
        defaults = Settings.model_fields

        def setting(name: str) -> Any:
            return getattr(self.settings, name) if self.settings is not None \
                else defaults[name].default

        def changed(old: BreakerState, new: BreakerState) -> None:
            self.events.emit(BreakerChanged(spec.name, credential, old.value, new.value))

        breaker = CircuitBreaker(credential, failures=setting("provider_breaker_failures"),
                                 probe_interval_s=setting("provider_probe_interval_s"),
                                 on_change=changed)
        backoff = DeviceBackoff(initial_s=setting("device_backoff_initial_s"),
                                max_s=setting("device_backoff_max_s"))
        limit = spec.rate_limit_of(self.settings)
        quota = None
        if limit is not None and self.quota_store is not None:
            quota = QuotaGate(self.quota_store, fleet_bucket(
                credential, per_minute=limit.per_minute, burst=limit.burst))
        return ProviderGates(spec.name, credential, breaker=breaker, backoff=backoff,
                             quota=quota, quota_wait_s=setting("push_quota_wait_ms") / 1000,
                             throttle_wait_s=setting("defer_initial_s"))

    def close(self) -> None:
        with self._lock:
            clients, self._providers = list(self._providers.values()), {}
        for client in clients:
            if client is not None:
                client.close()
        self.registry.close()
        self.ledger.close()
        if self.quota_store is not None:
            self.quota_store.close()
        close = getattr(self.analytics, "close", None)
        if close is not None:
            close()


def build_stores(settings: Settings) -> tuple[DeviceRegistry, DeliveryLedger]:
    """The registry and the ledger the settings pick; on PostgreSQL they share
    one pool."""
    registry, ledger, _ = _stores(settings, with_quota=False)
    return registry, ledger


def _stores(settings: Settings, *, with_quota: bool
            ) -> tuple[DeviceRegistry, DeliveryLedger, QuotaStore | None]:
    """The registry, the ledger and (``with_quota``) the quota store the
    settings pick, on one pool on PostgreSQL."""
    database = open_database(settings)
    if database is None:
        # The quota file is opened on first use: a host that never pushes to
        # a provider with a quota never makes it.
        return (SQLiteDeviceRegistry(settings.device_registry_path),
                SQLiteLedger(settings.delivery_log_path),
                _LazySQLiteQuotaStore(settings.push_quota_path) if with_quota else None)
    from willowe_tasks.ledger.postgres import PostgresLedger
    from willowe_tasks.quota.postgres import PostgresQuotaStore
    from willowe_tasks.registry.postgres import PostgresDeviceRegistry

    return (PostgresDeviceRegistry(database), PostgresLedger(database),
            PostgresQuotaStore(database) if with_quota else None)


def build_registry(settings: Settings) -> DeviceRegistry:
    """The registry alone (operator commands, tools), on the backend the settings pick."""
    database = open_database(settings)
    if database is None:
        return SQLiteDeviceRegistry(settings.device_registry_path)
    from willowe_tasks.registry.postgres import PostgresDeviceRegistry

    return PostgresDeviceRegistry(database)


def build_ledger(settings: Settings) -> DeliveryLedger:
    """The ledger alone (tools that watch deliveries), on the backend the settings pick."""
    database = open_database(settings)
    if database is None:
        return SQLiteLedger(settings.delivery_log_path)
    from willowe_tasks.ledger.postgres import PostgresLedger

    return PostgresLedger(database)


def open_database(settings: Settings) -> PostgresDatabase | None:
    """The PostgreSQL database of ``DATABASE_URL`` (None when unset: SQLite),
    connected and its schema checked before this returns: a wrong URL or
    password, or an unmigrated database, fails here rather than at the first
    push (:class:`~willowe_tasks.database.DatabaseUnavailable`,
    :class:`~willowe_tasks.migrations.SchemaOutdated`)."""
    url = settings.database
    if url is None:
        return None
    # Imported here: a process on SQLite never loads the PostgreSQL driver.
    from willowe_tasks.database import PostgresDatabase
    from willowe_tasks.migrations import require_current

    database = PostgresDatabase(url, pool_size=settings.database_pool_size,
                                connect_timeout_s=settings.database_connect_timeout_s)
    try:
        database.open()
        require_current(database)
    except BaseException:
        database.close()
        raise
    return database


def build_services(settings: Settings, events: EventBus | None = None) -> Services:
    registry, ledger, quota_store = _stores(settings, with_quota=True)
    return Services(
        registry=registry,
        ledger=ledger,
        analytics=JsonlAnalyticsSink(
            settings.analytics_path, max_bytes=settings.analytics_max_bytes,
            keep_files=settings.analytics_keep_files,
            fsync_interval_ms=settings.analytics_fsync_interval_ms,
        ),
        token_guard=build_token_guard(settings, registry),
        settings=settings,
        events=events,
        quota_store=quota_store,
    )


class _LazySQLiteQuotaStore:
    """A :class:`SQLiteQuotaStore` opened on its first take."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._store: SQLiteQuotaStore | None = None

    def take(self, bucket: Bucket, want: int) -> Grant:
        with self._lock:
            if self._store is None:
                self._store = SQLiteQuotaStore(self._path)
            store = self._store
        return store.take(bucket, want)

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()


def build_token_guard(settings: Settings, registry: DeviceRegistry) -> TokenRemovalGuard:
    """The removal guard; when it trips, the marks it made meanwhile are undone."""

    def restore(trip: Trip) -> None:
        registry.restore(since=trip.since, reason=invalid_reason(trip.provider, trip.reason))

    return TokenRemovalGuard(max_share=settings.token_guard_max_share,
                             window_s=settings.token_guard_window_s,
                             min_pushes=settings.token_guard_min_pushes, on_trip=restore)


def build_housekeeping(services: Callable[[], Services], settings: Settings) -> Housekeeping:
    """The schedule that trims this process's ledger and registry."""

    def jobs() -> list[tuple[str, Callable[[], int]]]:
        current = services()
        return [
            ("ledger prune",
             lambda: current.ledger.prune(settings.ledger_retention_days * 86_400)),
            ("invalid device purge",
             lambda: current.registry.purge_invalid(
                 settings.invalid_device_retention_days * 86_400)),
        ]

    return Housekeeping(jobs, interval_s=settings.housekeeping_interval_s)
