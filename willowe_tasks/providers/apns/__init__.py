"""Apple Push Notification service, for iOS devices.

This module is the provider's spec: cheap to import. The HTTP/2 client
(:mod:`.client`, libcurl) is imported only when a worker builds it.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

from willowe_tasks.providers.apns.payload import MAX_PAYLOAD_BYTES, apns_payload
from willowe_tasks.providers.base import ProviderSpec, PushProvider, PushSize
from willowe_tasks.providers.push import Push

if TYPE_CHECKING:
    from willowe_tasks.settings import Settings

__all__ = ["APNS", "IOS_TOKEN_MAX_HEX_CHARS", "IOS_TOKEN_MIN_HEX_CHARS"]

#: Shortest accepted iOS token, in hex characters (16 bytes). APNs tokens are
#: 32 bytes (64 hex) today, but Apple documents them as variable length.
IOS_TOKEN_MIN_HEX_CHARS = 32
#: Longest accepted iOS token, in hex characters (100 bytes).
IOS_TOKEN_MAX_HEX_CHARS = 200

_HEX_DIGITS = frozenset(string.hexdigits)


def canonical_token(token: str) -> str:
    """Lower case: APNs treats tokens case-insensitively, and one spelling
    keeps registration idempotent."""
    if not token:
        raise ValueError("must not be empty")
    if not all(ch in _HEX_DIGITS for ch in token):
        raise ValueError("iOS token must contain only hex digits 0-9a-f")
    if len(token) % 2:
        raise ValueError(f"iOS token must have an even number of hex digits, got {len(token)}")
    if not IOS_TOKEN_MIN_HEX_CHARS <= len(token) <= IOS_TOKEN_MAX_HEX_CHARS:
        raise ValueError(f"iOS token must be {IOS_TOKEN_MIN_HEX_CHARS}-{IOS_TOKEN_MAX_HEX_CHARS}"
                         f" hex digits, got {len(token)}")
    return token.lower()


def measure(push: Push) -> PushSize:
    return PushSize("apns", len(apns_payload(push)), MAX_PAYLOAD_BYTES)


def build(settings: Settings) -> PushProvider | None:
    """A client for the configured credentials (token or certificate), or None."""
    from willowe_tasks.providers.apns.auth import CertificateAuth, TokenAuth
    from willowe_tasks.providers.apns.client import APNsClient

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


def credential(settings: Settings) -> str:
    """The team and key of token auth, or the certificate's file name."""
    if settings.apns_key_id and settings.apns_team_id:
        return f"apns:{settings.apns_team_id}/{settings.apns_key_id}"
    if settings.apns_cert_file:
        return f"apns:cert:{settings.apns_cert_file.name}"
    return "apns"


#: The APNs provider's spec.
APNS = ProviderSpec(name="apns", platform="ios", build=build, measure=measure,
                    canonical_token=canonical_token, credential=credential)
