"""What a push provider is, and the registry that finds one by platform.

A provider is two things:

* a :class:`ProviderSpec`: its name (``"apns"``), the platform its devices
  register as (``"ios"``), how a device token of that platform is checked and
  spelled, how big a push is against the provider's limit, and how to build a
  client from the settings. A spec is cheap to import: no HTTP library comes
  with it, so importing the application stays light;
* a :class:`PushProvider`: the client the spec builds, on first use in each
  worker process.

Dispatch looks providers up by a device's platform and never names one;
adding a provider (Huawei, Web Push) is one module with its spec, its settings
and its fake, registered with :func:`register_provider`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from willowe_tasks.providers.push import Push

if TYPE_CHECKING:
    from willowe_tasks.settings import Settings

__all__ = ["ProviderSpec", "PushProvider", "PushSize", "RateLimit", "provider_for", "providers",
           "register_provider", "unregister_provider"]


class PushProvider(Protocol):
    """A client that delivers pushes. Thread-safe; one per worker process."""

    def send(self, push: Push) -> None:
        """Deliver ``push`` or raise a ``DeliveryError`` saying what to do about it."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PushSize:
    provider: str
    size_bytes: int
    limit_bytes: int

    @property
    def fits(self) -> bool:
        return self.size_bytes <= self.limit_bytes


@dataclass(frozen=True)
class RateLimit:
    """A provider's quota for one credential, shared by every sender using it."""

    per_minute: int
    #: What may go out beyond ``per_minute`` in any 60 seconds.
    burst: int


@dataclass(frozen=True)
class ProviderSpec:
    #: Short name in logs, errors, metrics and the registry's reasons.
    name: str
    #: What devices served by this provider register as.
    platform: str
    #: A client from the settings, or None when they configure none.
    build: Callable[[Settings], PushProvider | None]
    #: How big ``push`` is for this provider, against its limit.
    measure: Callable[[Push], PushSize]
    #: The canonical spelling of a device token; ValueError says what is wrong
    #: (never echoing the token).
    canonical_token: Callable[[str], str]
    #: Which credential the settings push with, by a name that is no secret
    #: ("fcm:<project>"): what a circuit breaker and a quota are kept per.
    #: None: the provider's name.
    credential: Callable[[Settings], str] | None = None
    #: The quota the settings give this provider's credential, if any.
    rate_limit: Callable[[Settings], RateLimit | None] | None = None

    def credential_of(self, settings: Settings | None) -> str:
        if settings is None or self.credential is None:
            return self.name
        return self.credential(settings)

    def rate_limit_of(self, settings: Settings | None) -> RateLimit | None:
        if settings is None or self.rate_limit is None:
            return None
        return self.rate_limit(settings)


_lock = threading.Lock()
_by_platform: dict[str, ProviderSpec] = {}


def register_provider(spec: ProviderSpec) -> None:
    """Serve devices of ``spec.platform`` with ``spec`` (replacing any before it)."""
    with _lock:
        _by_platform[spec.platform] = spec


def unregister_provider(platform: str) -> None:
    """Serve ``platform`` no more (tests that registered one of their own)."""
    with _lock:
        _by_platform.pop(platform, None)


def provider_for(platform: str) -> ProviderSpec:
    """The provider of a platform; ValueError naming the known ones otherwise."""
    with _lock:
        spec = _by_platform.get(platform)
        known = ", ".join(_by_platform)
    if spec is None:
        raise ValueError(f"no push provider for platform {platform!r}; known: {known}")
    return spec


def providers() -> list[ProviderSpec]:
    """Every registered provider."""
    with _lock:
        return list(_by_platform.values())
