"""Why a push was not delivered, sorted by what the caller must do about it.

::

    DeliveryError                  base: provider ("apns"/"fcm"), reason, status_code
    ├── TransientDeliveryError     retry later: timeout, connection error, 5xx, 429
    │                              (retry_after_s from the provider's Retry-After;
    │                              throttled: whom a 429 slows down, a device or us)
    ├── TokenRejected              drop the token from the device registry: APNs 410
    │                              Unregistered, 400 BadDeviceToken/DeviceTokenNotForTopic;
    │                              FCM UNREGISTERED, SENDER_ID_MISMATCH, INVALID_ARGUMENT
    │                              about the token
    └── PermanentDeliveryError     do not retry this push: payload too large, bad topic,
                                   bad credentials and every other rejection

``reason`` is the provider's own reason string (APNs ``reason``, FCM ``errorCode``)
or, for failures that never reached the provider, a short name such as
``"Timeout"``. Messages never contain a device token or message text: both are
secrets here, and exception messages end up in logs and dead-letter headers.
"""

from __future__ import annotations

from typing import Any, Final, Literal

#: A provider's name, as its spec gives it ("apns", "fcm", …).
Provider = str

Throttled = Literal["device", "sender"]

#: A 429 about one device: the provider throttles pushes to that device
#: (APNs ``TooManyRequests``); other devices are served as usual.
THROTTLED_DEVICE: Final[Throttled] = "device"
#: A 429 about the sender: a quota of the project or credential (FCM
#: ``QUOTA_EXCEEDED``), which every push of ours counts against.
THROTTLED_SENDER: Final[Throttled] = "sender"


class DeliveryError(Exception):
    """A push could not be delivered. Catch a subclass to decide what to do."""

    def __init__(
        self,
        reason: str,
        *,
        provider: Provider,
        status_code: int | None = None,
        detail: str = "",
    ) -> None:
        self.reason = reason
        self.provider: Provider = provider
        self.status_code = status_code
        self.detail = detail
        super().__init__(self._message())

    def _message(self) -> str:
        status = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.provider} {self.reason}{status}{detail}"

    def _kwargs(self) -> dict[str, Any]:
        return {"provider": self.provider, "status_code": self.status_code, "detail": self.detail}

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments defeat Exception's default pickling, and results
        # backends and multiprocessing pickle exceptions.
        return (_rebuild, (type(self), self.reason, self._kwargs()))


def _rebuild(cls: type[DeliveryError], reason: str, kwargs: dict[str, Any]) -> DeliveryError:
    return cls(reason, **kwargs)


class TransientDeliveryError(DeliveryError):
    """The provider may accept the same push later; retry it.

    ``retry_after_s`` is the delay the provider asked for (Retry-After), or
    ``None`` when it did not say; the caller's backoff decides then.

    ``maybe_sent`` says whether the request may have reached the provider
    before it failed (a read timeout, a connection dropped while waiting for
    the answer): then the provider may have accepted the push, and an
    at-most-once caller must not send it again. The client sets it where it
    catches the failure, which is the only place that knows; an answer from
    the provider (a 5xx, a 429) means it was not accepted.

    ``throttled`` says whom a 429 is about (:data:`THROTTLED_DEVICE` or
    :data:`THROTTLED_SENDER`), ``None`` for every other failure: only the
    client can tell a per-device throttle from a quota of the whole sender.
    """

    def __init__(
        self,
        reason: str,
        *,
        provider: Provider,
        retry_after_s: float | None = None,
        status_code: int | None = None,
        detail: str = "",
        maybe_sent: bool = False,
        throttled: Throttled | None = None,
    ) -> None:
        self.retry_after_s = retry_after_s
        self.maybe_sent = maybe_sent
        self.throttled = throttled
        super().__init__(reason, provider=provider, status_code=status_code, detail=detail)

    def _message(self) -> str:
        message = super()._message()
        if self.retry_after_s is not None:
            message += f"; retry after {self.retry_after_s:g}s"
        return message

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "retry_after_s": self.retry_after_s,
                "maybe_sent": self.maybe_sent, "throttled": self.throttled}


class TokenRejected(DeliveryError):
    """The device token is dead or not ours: remove it from the registry.

    ``invalid_since`` is when the provider last found the token invalid (APNs
    answers 410 with a ``timestamp``), in unix seconds, or ``None`` when it did
    not say. A token registered again after that moment is live again.
    """

    def __init__(
        self,
        reason: str,
        *,
        provider: Provider,
        status_code: int | None = None,
        detail: str = "",
        invalid_since: float | None = None,
    ) -> None:
        self.invalid_since = invalid_since
        super().__init__(reason, provider=provider, status_code=status_code, detail=detail)

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "invalid_since": self.invalid_since}


class PermanentDeliveryError(DeliveryError):
    """The provider will never accept this push as it is; do not retry it."""
