"""Deliver one notification to each of its user's devices, at most once each.

Kafka delivers a message at least once, and a retry re-runs the whole
notification; the delivery ledger is what keeps either from reaching a
phone twice: a device is pushed only after this worker *claims* the
(notification, device) pair, and is marked delivered as soon as the provider
accepts it. Devices that already got the notification are skipped on a
retry. See the README's "Delivery guarantees" for where this stops.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import dramatiq

from willowe_tasks import events
from willowe_tasks.deferral import Deferral, DeliveryDeferred
from willowe_tasks.events import NotificationExpired, PushFinished, TokenGuardVerdict
from willowe_tasks.priorities import PriorityName
from willowe_tasks.providers import (
    DeliveryError,
    PermanentDeliveryError,
    Push,
    TokenRejected,
    TransientDeliveryError,
    provider_for,
)
from willowe_tasks.registry import Device, invalid_reason
from willowe_tasks.services import Services
from willowe_tasks.token_guard import GuardVerdict
from willowe_tasks.tokens import token_key

__all__ = ["Notification", "NotificationFailed", "deliver", "push_for", "stats"]

logger = logging.getLogger(__name__)

#: How long a claim on a (notification, device) pair lasts, as a multiple of the
#: push timeout: long enough to cover a slow provider, short enough to recover.
CLAIM_LEASE_FACTOR = 3

#: The sound of every alert unless a notification says otherwise.
DEFAULT_SOUND = "default"

#: Counters for this process (expired, pushed, skipped, maybe_delivered, …).
stats: Counter[str] = Counter()


class NotificationFailed(PermanentDeliveryError):
    """A provider refused the notification for good: it goes to the dead letters."""


@dataclass(frozen=True)
class Notification:
    id: str
    kind: str
    user_id: str
    title: str
    body: str
    priority: PriorityName
    expires_at: float
    #: What the app needs to open the right screen (see kinds.py), as strings.
    data: dict[str, str] = field(default_factory=dict)
    #: A picture for a rich notification (https only).
    image_url: str | None = None
    #: Played with the alert; "default" is the system's notification sound.
    sound: str | None = DEFAULT_SOUND
    #: When it was sent (unix seconds): where its send-to-phone latency starts.
    sent_at: float | None = None

    @property
    def collapse_id(self) -> str:
        # Same id on every redelivery: a rare duplicate replaces the first alert.
        return self.id[:64]


def deliver(notification: Notification, services: Services) -> None:
    """Push ``notification`` to every device of its user.

    Returns when each device has it (or was skipped); raises
    ``dramatiq.Retry`` when some device failed transiently,
    :class:`NotificationFailed` when one refused it for good, and
    :class:`~willowe_tasks.deferral.DeliveryDeferred` when the others are
    served and some must wait for their provider (down, throttling, out of
    quota): the actor then defers the message without spending a retry.
    """
    if time.time() >= notification.expires_at:
        stats["expired"] += 1
        services.events.emit(NotificationExpired(notification.kind, notification.priority))
        logger.info("Dropping expired %s notification %s.", notification.kind, notification.id)
        return
    transient: list[TransientDeliveryError] = []
    permanent: list[PermanentDeliveryError] = []
    deferred: list[Deferral] = []
    lease_s = services.push_timeout_s * CLAIM_LEASE_FACTOR
    for device in services.registry.devices_for(notification.user_id):
        key = token_key(device.token)
        gates = services.gates(device.platform)
        waits = gates.before_claim(key)
        if waits is not None:
            # A device served before is skipped rather than kept waiting for a
            # provider it no longer needs (the ledger is read only here).
            if _settled(services, notification.id, key):
                stats["skipped"] += 1
            else:
                deferred.append(waits)
            continue
        if not services.ledger.claim(notification.id, key, lease_s=lease_s):
            if _settled(services, notification.id, key):
                stats["skipped"] += 1  # pushed before (or maybe, by a worker that died)
                continue
            # Another worker holds a live claim. It may die before pushing: look
            # again once its lease is over, rather than dropping the device.
            transient.append(TransientDeliveryError(
                "ClaimedElsewhere", provider=_provider(device), retry_after_s=lease_s))
            continue
        waits = gates.admit()
        if waits is not None:
            services.ledger.release(notification.id, key)
            deferred.append(waits)
            continue
        provider = _provider(device)
        started_at, started = time.time(), time.perf_counter()
        try:
            services.provider(device.platform).send(push_for(notification, device))
        except TokenRejected as e:
            answered = time.perf_counter()  # the round trip, not the registry's work after it
            gates.answered(key, accepted=False)
            services.ledger.release(notification.id, key)
            outcome, held = _token_rejected(notification, device, e, services)
            _report(services, notification, provider, outcome, e.reason, started_at, started,
                    answered)
            if held is not None:
                transient.append(held)
        except TransientDeliveryError as e:
            waits = gates.failed(e, key)
            services.token_guard.pushed(provider)
            _report(services, notification, provider,
                    events.MAYBE_DELIVERED if e.maybe_sent else events.RETRY_LATER,
                    e.reason, started_at, started)
            if e.maybe_sent:
                # The request went out and no answer came back: the provider may
                # have accepted it. Released, a retry would push it again (once
                # per timeout, for as long as the provider stays slow); kept, the
                # claim expires into "maybe delivered" and the pair is skipped.
                stats["maybe_delivered"] += 1
                logger.warning("Push of notification %s to %s device %s timed out (%s); it"
                               " may have been delivered, so it is not pushed again.",
                               notification.id, device.platform, device.token_hash,
                               e.detail or e.reason)
                continue
            services.ledger.release(notification.id, key)
            if waits is not None:
                deferred.append(waits)
            else:
                transient.append(e)
        except DeliveryError as e:
            gates.answered(key, accepted=False)
            services.token_guard.pushed(provider)
            _report(services, notification, provider, events.REFUSED, e.reason, started_at,
                    started)
            services.ledger.release(notification.id, key)
            permanent.append(e if isinstance(e, PermanentDeliveryError)
                             else PermanentDeliveryError(e.reason, provider=e.provider))
        else:
            gates.answered(key, accepted=True)
            _report(services, notification, provider, events.ACCEPTED, "", started_at, started)
            services.token_guard.pushed(provider)
            services.ledger.mark_delivered(notification.id, key)
            stats["pushed"] += 1
    if permanent:
        first = permanent[0]
        raise NotificationFailed(first.reason, provider=first.provider,
                                 status_code=first.status_code, detail=first.detail)
    if transient:
        # A retry re-runs every device, the deferred ones included (their
        # gates are asked again then).
        raise _retry(transient)
    if deferred:
        stats["deferred"] += 1
        raise DeliveryDeferred(deferred, expires_at=notification.expires_at,
                               kind=notification.kind, priority=notification.priority)


def _report(services: Services, notification: Notification, provider: str, outcome: str,
            reason: str, started_at: float, started: float, answered: float | None = None
            ) -> None:
    """Tell the event bus how a push ended (metrics, traces); ``started`` and
    ``answered`` are perf_counter() readings (default for the answer: now)."""
    if services.events.wants(PushFinished):
        ended = time.perf_counter() if answered is None else answered
        services.events.emit(PushFinished(
            provider, outcome, reason, notification.priority,
            notification.sent_at if notification.sent_at is not None else started_at,
            started_at, ended - started))


def _token_rejected(notification: Notification, device: Device, error: TokenRejected,
                    services: Services) -> tuple[str, TransientDeliveryError | None]:
    """Mark a rejected token invalid, unless the removal guard holds removals
    back; return what came of the push, and the error to retry the
    notification with, if it must be."""
    verdict = services.token_guard.rejected(error.provider, error.reason)
    services.events.emit(TokenGuardVerdict(error.provider, error.reason, verdict.value))
    if verdict is GuardVerdict.HOLD:
        stats["token_removal_held"] += 1
        return events.RETRY_LATER, TransientDeliveryError(
            "TokenRemovalHeld", provider=error.provider, status_code=error.status_code,
            detail=error.reason)
    marked = services.registry.mark_invalid(
        device.token, invalid_reason(error.provider, error.reason),
        invalid_since=error.invalid_since)
    if not marked:
        # Registered again after the provider's verdict (or already marked):
        # the token stays as it is; this notification is not pushed to it.
        stats["token_kept"] += 1
        return events.TOKEN_KEPT, None
    stats["token_removed"] += 1
    logger.info("Marked %s device %s invalid: %s.", device.platform, device.token_hash,
                error.reason)
    if verdict is GuardVerdict.REMOVE_AND_RECHECK:
        # Too early to tell a dead token from a wrong setting: look again once
        # the guard has seen more (it restores the mark if it trips).
        return events.TOKEN_REMOVED, TransientDeliveryError(
            "TokenRejectionUnconfirmed", provider=error.provider, status_code=error.status_code,
            detail=error.reason)
    return events.TOKEN_REMOVED, None


def _settled(services: Services, notification_id: str, key: str) -> bool:
    return (key in services.ledger.delivered(notification_id)
            or key in services.ledger.maybe_delivered(notification_id))


def _provider(device: Device) -> str:
    return provider_for(device.platform).name


def push_for(notification: Notification, device: Device) -> Push:
    """What ``device`` is sent for ``notification``."""
    return Push(
        token=device.token,
        title=notification.title,
        body=notification.body,
        data={"kind": notification.kind, "notification_id": notification.id,
              **notification.data},
        priority=notification.priority,
        expires_at=notification.expires_at,
        collapse_id=notification.collapse_id,
        topic=device.app_id if device.platform == "ios" else None,
        image_url=notification.image_url,
        sound=notification.sound,
    )


def _retry(errors: list[TransientDeliveryError]) -> dramatiq.Retry:
    """A Retry that honours the longest Retry-After any provider asked for."""
    waits = [e.retry_after_s for e in errors if e.retry_after_s is not None]
    reasons = ", ".join(sorted({f"{e.provider} {e.reason}" for e in errors}))
    if waits:
        return dramatiq.Retry(f"provider asked to wait: {reasons}", delay=int(max(waits) * 1000))
    return dramatiq.Retry(f"transient delivery failure: {reasons}")
