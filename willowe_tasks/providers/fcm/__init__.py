"""Firebase Cloud Messaging (HTTP v1), for Android devices.

This module is the provider's spec: cheap to import. The client
(:mod:`.client`: pyfcm, requests, google-auth) is imported only when a worker
builds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from willowe_tasks.providers.base import ProviderSpec, PushProvider, PushSize, RateLimit
from willowe_tasks.providers.fcm.message import MAX_MESSAGE_BYTES, fcm_message, fcm_payload_bytes
from willowe_tasks.providers.push import Push

if TYPE_CHECKING:
    from willowe_tasks.settings import Settings

__all__ = ["ANDROID_TOKEN_MAX_CHARS", "FCM"]

#: Longest accepted FCM registration token, in characters. Real tokens are
#: about 160-200 characters; the limit only stops garbage from being stored.
ANDROID_TOKEN_MAX_CHARS = 4096


def canonical_token(token: str) -> str:
    """As given: FCM tokens are case-sensitive."""
    if not token:
        raise ValueError("must not be empty")
    if len(token) > ANDROID_TOKEN_MAX_CHARS:
        raise ValueError(f"Android token must be at most {ANDROID_TOKEN_MAX_CHARS} characters")
    if not token.isprintable() or any(ch.isspace() for ch in token):
        raise ValueError("Android token must be printable and contain no whitespace")
    return token


def measure(push: Push) -> PushSize:
    return PushSize("fcm", fcm_payload_bytes(fcm_message(push)), MAX_MESSAGE_BYTES)


def build(settings: Settings) -> PushProvider | None:
    """A client for the configured service account, or None."""
    if not (settings.fcm_project_id and settings.fcm_service_account_file):
        return None
    from willowe_tasks.providers.fcm.client import FCMClient

    return FCMClient(
        project_id=settings.fcm_project_id,
        service_account_file=settings.fcm_service_account_file,
        endpoint=settings.fcm_endpoint,
        ca_file=str(settings.fcm_ca_file) if settings.fcm_ca_file else None,
        timeout_s=settings.push_timeout_s,
    )


def credential(settings: Settings) -> str:
    """The Firebase project: FCM's quota and its outages are the project's."""
    return f"fcm:{settings.fcm_project_id}" if settings.fcm_project_id else "fcm"


def rate_limit(settings: Settings) -> RateLimit | None:
    """FCM's per-project quota, as the settings give it (0 a minute: none)."""
    if settings.fcm_quota_per_minute == 0:
        return None
    return RateLimit(settings.fcm_quota_per_minute, settings.fcm_quota_burst)


#: The FCM provider's spec.
FCM = ProviderSpec(name="fcm", platform="android", build=build, measure=measure,
                   canonical_token=canonical_token, credential=credential,
                   rate_limit=rate_limit)
