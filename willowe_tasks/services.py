"""The per-process things a worker delivers with: device registry, delivery
ledger, analytics sink and the APNs/FCM clients, built from settings.

Made lazily and once per process: Dramatiq forks its worker processes after
importing the app, and neither HTTP/2 connections nor SQLite handles may
cross a fork.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from willowe_tasks.analytics import AnalyticsSink, JsonlAnalyticsSink
from willowe_tasks.delivery import APNsClient, CertificateAuth, FCMClient, TokenAuth
from willowe_tasks.delivery_log import DeliveryLog, SQLiteDeliveryLog
from willowe_tasks.devices import DeviceRegistry, SQLiteDeviceRegistry
from willowe_tasks.settings import Settings, get_settings

__all__ = ["Services", "get_services", "reset_services"]


@dataclass
class Services:
    registry: DeviceRegistry
    ledger: DeliveryLog
    analytics: AnalyticsSink
    apns: APNsClient | None
    fcm: FCMClient | None

    def close(self) -> None:
        for client in (self.apns, self.fcm):
            if client is not None:
                client.close()
        self.registry.close()
        self.ledger.close()
        close = getattr(self.analytics, "close", None)
        if close is not None:
            close()


def build_services(settings: Settings) -> Services:
    return Services(
        registry=SQLiteDeviceRegistry(settings.device_registry_path),
        ledger=SQLiteDeliveryLog(settings.delivery_log_path),
        analytics=JsonlAnalyticsSink(
            settings.analytics_path, max_bytes=settings.analytics_max_bytes,
            keep_files=settings.analytics_keep_files,
            fsync_interval_ms=settings.analytics_fsync_interval_ms,
        ),
        apns=_apns_client(settings),
        fcm=_fcm_client(settings),
    )


def _apns_client(settings: Settings) -> APNsClient | None:
    auth: TokenAuth | CertificateAuth
    if settings.apns_key_file and settings.apns_key_id and settings.apns_team_id:
        auth = TokenAuth(key_path=settings.apns_key_file, key_id=settings.apns_key_id,
                         team_id=settings.apns_team_id)
    elif settings.apns_cert_file and settings.apns_cert_key_file:
        auth = CertificateAuth(cert_file=str(settings.apns_cert_file),
                               key_file=str(settings.apns_cert_key_file))
    else:
        return None
    return APNsClient(
        endpoint=settings.apns_endpoint, default_topic=settings.apns_topic, auth=auth,
        ca_file=str(settings.apns_ca_file) if settings.apns_ca_file else None,
        timeout_s=settings.push_timeout_s,
    )


def _fcm_client(settings: Settings) -> FCMClient | None:
    if not (settings.fcm_project_id and settings.fcm_service_account_file):
        return None
    return FCMClient(
        project_id=settings.fcm_project_id,
        service_account_file=settings.fcm_service_account_file,
        endpoint=settings.fcm_endpoint,
        ca_file=str(settings.fcm_ca_file) if settings.fcm_ca_file else None,
        timeout_s=settings.push_timeout_s,
    )


_lock = threading.Lock()
_services: Services | None = None
_services_pid = 0


def get_services() -> Services:
    """This process's services, built on first use."""
    global _services, _services_pid
    with _lock:
        if _services is None or _services_pid != os.getpid():
            _services = build_services(get_settings())
            _services_pid = os.getpid()
        return _services


def reset_services(services: Services | None = None) -> None:
    """Close this process's services (tests: or install ``services`` instead)."""
    global _services, _services_pid
    with _lock:
        if _services is not None and _services_pid == os.getpid():
            _services.close()
        _services = services
        _services_pid = os.getpid() if services is not None else 0
