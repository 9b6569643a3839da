"""The notification actors: the integration guide's kafkaService calls.

::

    send_match.send("user123", {"name": "Анна", "age": 25,
                                "photo_url": "https://example.com/photo.jpg"})
    send_like.send("user456", {"name": "Мария", "age": 28})
    track_event.send("user_login", {"userId": "user123", "timestamp": 1732450000000})
    send_notification.send({"type": "custom-notification", "target_user_id": "user123",
                            "title": "Новое сообщение", "body": "У вас новое сообщение"},
                           priority="high")

``send()`` validates the arguments with the payload models before anything
reaches Kafka (a ``pydantic.ValidationError`` names the field), and returns
once Kafka has the message. The worker validates again: a record that fails
goes to the dead-letter topic with the reason, never to a phone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from pydantic import BaseModel, ValidationError, create_model

from willowe_tasks import logs
from willowe_tasks.app import broker
from willowe_tasks.dispatch import Notification, NotificationFailed, deliver
from willowe_tasks.kinds import KINDS, PRIORITIES, NotificationKind, retention_s
from willowe_tasks.payloads import AnalyticsEvent, CustomNotification, PriorityName, UserId
from willowe_tasks.services import get_services
from willowe_tasks.settings import get_settings

__all__ = [
    "InvalidPayload",
    "send_fast_match",
    "send_like",
    "send_match",
    "send_notification",
    "send_one_night",
    "track_event",
]


class InvalidPayload(ValueError):
    """A record's arguments don't match the actor's payload model (worker side)."""


class ValidatingActor(dramatiq.Actor):
    """An actor whose arguments are checked by a pydantic model when a message
    is built, so ``send()`` refuses bad input before it reaches Kafka."""

    arguments: type[BaseModel]

    def message_with_options(
        self, *, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> dramatiq.Message:
        normalised = _normalise(self.arguments, args, kwargs or {})
        return super().message_with_options(args=normalised, kwargs={}, **options)


def _normalise(
    model: type[BaseModel], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Validate positional/keyword arguments against ``model``; return them as
    JSON-ready positional arguments in field order."""
    names = list(model.model_fields)
    if len(args) > len(names):
        raise TypeError(f"expected at most {len(names)} arguments ({', '.join(names)}), "
                        f"got {len(args)}")
    values = dict(zip(names, args, strict=False)) | kwargs
    checked = model.model_validate(values)
    dumped = checked.model_dump(mode="json", exclude_none=True)
    return tuple(dumped.get(name) for name in names)


def _actor(model: type[BaseModel], *, actor_name: str, priority: int,
           **options: Any) -> Callable[[Callable[..., None]], ValidatingActor]:
    def decorate(fn: Callable[..., None]) -> ValidatingActor:
        actor = dramatiq.actor(
            actor_class=ValidatingActor, actor_name=actor_name, priority=priority,
            broker=broker,
            # Bad payloads and refused pushes can't get better by retrying.
            throws=(InvalidPayload, NotificationFailed), **options,
        )(fn)
        assert isinstance(actor, ValidatingActor)
        actor.arguments = model
        actor.logger.addFilter(logs.RedactActorArguments())
        return actor
    return decorate


def _worker_side(model: type[BaseModel], args: tuple[Any, ...]) -> BaseModel:
    try:
        return model.model_validate(dict(zip(model.model_fields, args, strict=False)))
    except ValidationError as e:
        raise InvalidPayload(_describe(e)) from None


def _describe(error: ValidationError) -> str:
    # Field names and what was wrong, never the values (message bodies stay out of logs).
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
    )


def _current_message() -> tuple[str, float]:
    """The running message's id (the notification id: the same on every retry
    and redelivery) and its send time in unix seconds. Outside a worker (an
    actor called directly) a fresh local id and now."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return f"local-{time.time_ns()}", time.time()
    return message.message_id, message.message_timestamp / 1000


def _deliver(notification: Notification) -> None:
    deliver(notification, get_services(), push_timeout_s=get_settings().push_timeout_s)


def _deliver_kind(kind: NotificationKind, user_id: str, payload: Any) -> None:
    args = _worker_side(_KIND_ARGS[kind.name], (user_id, payload))
    checked: Any = args.payload  # type: ignore[attr-defined]
    notification_id, sent_at = _current_message()
    _deliver(Notification(
        id=notification_id, kind=kind.name, user_id=user_id, title=kind.title(checked),
        body=kind.body(checked), priority=kind.priority_name, expires_at=sent_at + kind.ttl_s,
    ))


def _arguments_model(payload: type[BaseModel]) -> type[BaseModel]:
    return create_model(f"{payload.__name__}Arguments", user_id=(UserId, ...),
                        payload=(payload, ...))


#: Each kind's actor arguments: (user_id, payload), validated together so an
#: error names the field as ``payload.age``.
_KIND_ARGS = {name: _arguments_model(kind.payload) for name, kind in KINDS.items()}


def _kind_actor(name: str) -> ValidatingActor:
    kind = KINDS[name]

    def deliver_kind(user_id: str, payload: dict[str, Any]) -> None:
        _deliver_kind(kind, user_id, payload)

    return _actor(_KIND_ARGS[name], actor_name=f"send_{name}", priority=kind.priority)(
        deliver_kind
    )


#: A match (high priority).
send_match = _kind_actor("match")
#: A fast match (high priority, short-lived).
send_fast_match = _kind_actor("fast_match")
#: A like (medium priority).
send_like = _kind_actor("like")
#: A one-night request (medium priority).
send_one_night = _kind_actor("one_night")


@_actor(AnalyticsEvent, actor_name="track_event", priority=PRIORITIES["low"])
def track_event(event: str, properties: dict[str, Any] | None = None) -> None:
    """An analytics event (low priority): to the analytics sink, never to a phone."""
    checked = _worker_side(AnalyticsEvent, (event, properties or {}))
    assert isinstance(checked, AnalyticsEvent)
    event_id, occurred_at = _current_message()
    get_services().analytics.record(
        checked.event, checked.properties, event_id=event_id, occurred_at=occurred_at,
    )


def _custom_actor(priority_name: PriorityName) -> ValidatingActor:
    priority = PRIORITIES[priority_name]

    def send_custom(notification: dict[str, Any]) -> None:
        checked = _worker_side(_CUSTOM_ARGS, (notification,)).notification  # type: ignore[attr-defined]
        notification_id, sent_at = _current_message()
        _deliver(Notification(
            id=notification_id, kind=checked.type, user_id=checked.target_user_id,
            title=checked.title, body=checked.body, priority=priority_name,
            expires_at=sent_at + (checked.ttl_s or retention_s(priority)),
        ))

    return _actor(_CUSTOM_ARGS, actor_name=f"send_notification_{priority_name}",
                  priority=priority)(send_custom)


_CUSTOM_ARGS = create_model("CustomNotificationArguments",
                            notification=(CustomNotification, ...))
_CUSTOM_ACTORS = {name: _custom_actor(name) for name in PRIORITIES}


class _SendNotification:
    """The guide's ``sendMessage(topic, message, priority)``: a custom notification
    whose priority word picks its topic."""

    def send(self, notification: dict[str, Any], priority: PriorityName = "high",
             **options: Any) -> dramatiq.Message:
        return self.send_with_options(args=(notification,), priority=priority, **options)

    def send_with_options(self, *, args: tuple[Any, ...], priority: PriorityName = "high",
                          **options: Any) -> dramatiq.Message:
        if priority not in _CUSTOM_ACTORS:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
        return _CUSTOM_ACTORS[priority].send_with_options(args=args, **options)

    def actor(self, priority: PriorityName) -> ValidatingActor:
        return _CUSTOM_ACTORS[priority]


send_notification = _SendNotification()
