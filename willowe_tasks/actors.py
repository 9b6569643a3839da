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

:func:`declare_actors` declares them on a broker, for one application
(:class:`willowe_tasks.app.App`); the package's own ``send_match`` & co. are
those of the default application.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import dramatiq
from dramatiq.errors import ConnectionFailed
from dramatiq.middleware import CurrentMessage
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from willowe_tasks import logs
from willowe_tasks.deferral import DeliveryDeferred, defer
from willowe_tasks.dispatch import Notification, NotificationFailed, deliver
from willowe_tasks.kinds import KINDS, NotificationKind
from willowe_tasks.lenient import known_fields_only
from willowe_tasks.payloads import AnalyticsEvent, CustomNotification, UserId
from willowe_tasks.priorities import BANDS, PriorityName, band
from willowe_tasks.push_fit import check_fits
from willowe_tasks.registration import RegistrationActor, declare_registration_actors
from willowe_tasks.services import Services

__all__ = ["Actors", "InvalidPayload", "SendNotification", "ValidatingActor", "declare_actors"]


logger = logging.getLogger(__name__)

#: The message an actor delivers in the sending process (SEND_FALLBACK=direct),
#: which _current_message() reads as a worker reads Dramatiq's current message.
_INLINE: ContextVar[dramatiq.Message | None] = ContextVar("inline_message", default=None)


class InvalidPayload(ValueError):
    """A record's arguments don't match the actor's payload model (worker side)."""


#: Builds, from checked arguments, the notification the worker will push and
#: the texts a caller could shorten (by field location).
Preview = Callable[[BaseModel], tuple[Notification, dict[tuple[str, ...], str]]]


class ValidatingActor(dramatiq.Actor):
    """An actor whose arguments are checked by a pydantic model when a message
    is built, so ``send()`` refuses bad input before it reaches Kafka.

    ``preview`` builds the notification the worker will push from checked
    arguments, so ``send()`` also refuses one too big for APNs or FCM.
    """

    arguments: type[BaseModel]
    preview: Preview | None = None
    #: Deliver in the sending process when Kafka can't take the message
    #: (SEND_FALLBACK=direct).
    deliver_inline: bool = False

    def send_with_options(self, *, args: tuple[Any, ...] = (),
                          kwargs: dict[str, Any] | None = None,
                          delay: timedelta | int | None = None,
                          **options: Any) -> dramatiq.Message:
        if isinstance(delay, timedelta):
            delay = int(delay.total_seconds() * 1000)
        message = self.message_with_options(args=args, kwargs=kwargs, **options)
        try:
            return self.broker.enqueue(message, delay=delay)
        except ConnectionFailed:
            if not self.deliver_inline:
                raise
        # The guide's synchronous fallback, through the same dispatch, ledger
        # and providers: the ledger keys on the message id, so if Kafka has
        # the record after all, the worker finds it delivered and skips it.
        logger.warning("Kafka can't take %s[%s]; delivering it in this process.",
                       self.actor_name, message.message_id)
        token = _INLINE.set(message)
        try:
            self.fn(*message.args, **message.kwargs)
        finally:
            _INLINE.reset(token)
        return message

    def message_with_options(
        self, *, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> dramatiq.Message:
        checked = _check(self.arguments, args, kwargs or {})
        if self.preview is not None:
            notification, texts = self.preview(checked)
            check_fits(notification, texts, title=self.arguments.__name__)
        dumped = checked.model_dump(mode="json", exclude_none=True)
        normalised = tuple(dumped.get(name) for name in self.arguments.model_fields)
        # What is written must pass the worker's check too: a value pydantic
        # normalises (a URL's spaces escaped) can grow past a limit it passed.
        _check(self.arguments, normalised, {})
        return super().message_with_options(args=normalised, kwargs={}, **options)


class SendNotification:
    """The guide's ``sendMessage(topic, message, priority)``: a custom notification
    whose priority word picks its topic (one actor per band)."""

    def __init__(self, actors: dict[str, ValidatingActor]) -> None:
        self._actors = actors

    def send(self, notification: dict[str, Any], priority: PriorityName = "high",
             **options: Any) -> dramatiq.Message:
        return self.send_with_options(args=(notification,), priority=priority, **options)

    def send_with_options(self, *, args: tuple[Any, ...], priority: PriorityName = "high",
                          **options: Any) -> dramatiq.Message:
        return self.actor(priority).send_with_options(args=args, **options)

    def actor(self, priority: PriorityName) -> ValidatingActor:
        return self._actors[band(priority).word]


@dataclass(frozen=True)
class Actors:
    """An application's actors."""

    #: A match (high priority).
    send_match: ValidatingActor
    #: A fast match (high priority, short-lived).
    send_fast_match: ValidatingActor
    #: A like (medium priority).
    send_like: ValidatingActor
    #: A one-night request (medium priority).
    send_one_night: ValidatingActor
    #: An analytics event (low priority): to the analytics sink, never to a phone.
    track_event: ValidatingActor
    send_notification: SendNotification
    #: A web server registers a phone (see willowe_tasks/registration.py).
    register_device: RegistrationActor
    #: A web server forgets a phone (the app signed out).
    unregister_device: RegistrationActor


def declare_actors(broker: dramatiq.Broker, services: Callable[[], Services], *,
                   deliver_inline: bool = False) -> Actors:
    """Declare the notification actors on ``broker``. ``services`` gives the
    worker process's services (registry, ledger, providers) when one runs."""

    def deliver_or_defer(notification: Notification) -> None:
        current = services()
        try:
            deliver(notification, current)
        except DeliveryDeferred as deferred:
            message = CurrentMessage.get_current_message()
            if message is None or _INLINE.get() is not None:
                raise  # no worker to hand it back to Kafka: a plain retry
            # Back on Kafka with a delay, and this run ends normally: the
            # Retries middleware never sees it, so no retry is spent.
            defer(broker, message, deferred, current.deferral, current.events)

    def declare(model: type[BaseModel], name: str, priority: int, fn: Callable[..., None],
                preview: Preview | None = None) -> ValidatingActor:
        actor = dramatiq.actor(
            actor_class=ValidatingActor, actor_name=name, priority=priority, broker=broker,
            # Bad payloads and refused pushes can't get better by retrying.
            throws=(InvalidPayload, NotificationFailed),
        )(fn)
        assert isinstance(actor, ValidatingActor)
        actor.arguments = model
        actor.preview = preview
        actor.deliver_inline = deliver_inline
        actor.logger.addFilter(logs.RedactActorArguments())
        return actor

    def kind_actor(kind: NotificationKind) -> ValidatingActor:
        model = _KIND_ARGS[kind.name]

        def deliver_kind(user_id: str, payload: dict[str, Any]) -> None:
            args = _worker_side(model, (user_id, payload))
            deliver_or_defer(_kind_notification(kind, args, *_current_message()))

        return declare(model, f"send_{kind.name}", kind.band.actor_priority, deliver_kind,
                       _kind_preview(kind))

    def custom_actor(word: PriorityName) -> ValidatingActor:
        def send_custom(notification: dict[str, Any]) -> None:
            checked = _worker_side(_CUSTOM_ARGS, (notification,)).notification  # type: ignore[attr-defined]
            deliver_or_defer(_custom_notification(checked, word, *_current_message()))

        return declare(_CUSTOM_ARGS, f"send_notification_{word}", band(word).actor_priority,
                       send_custom, _custom_preview(word))

    def track_event(event: str, properties: dict[str, Any] | None = None) -> None:
        checked = _worker_side(AnalyticsEvent, (event, properties or {}))
        assert isinstance(checked, AnalyticsEvent)
        event_id, occurred_at = _current_message()
        services().analytics.record(
            checked.event, checked.properties, event_id=event_id, occurred_at=occurred_at,
        )

    kinds = {name: kind_actor(kind) for name, kind in KINDS.items()}
    register_device, unregister_device = declare_registration_actors(broker, services)
    return Actors(
        send_match=kinds["match"],
        send_fast_match=kinds["fast_match"],
        send_like=kinds["like"],
        send_one_night=kinds["one_night"],
        track_event=declare(AnalyticsEvent, "track_event", band("low").actor_priority,
                            track_event),
        send_notification=SendNotification({b.word: custom_actor(b.word) for b in BANDS}),
        register_device=register_device,
        unregister_device=unregister_device,
    )


def _check(model: type[BaseModel], args: tuple[Any, ...], kwargs: dict[str, Any]) -> BaseModel:
    """Validate positional/keyword arguments against ``model`` (strictly: an
    unknown field is an error here, where the caller can still fix it)."""
    names = list(model.model_fields)
    if len(args) > len(names):
        raise TypeError(f"expected at most {len(names)} arguments ({', '.join(names)}), "
                        f"got {len(args)}")
    return model.model_validate(dict(zip(names, args, strict=False)) | kwargs)


def _worker_side(model: type[BaseModel], args: tuple[Any, ...]) -> BaseModel:
    """Validate a record's arguments. Fields this version does not know are
    dropped (and logged once each): a producer one version ahead must not send
    everything to the dead letters during a rolling deploy. Anything else that
    is wrong fails as :class:`InvalidPayload`."""
    values = known_fields_only(model, dict(zip(model.model_fields, args, strict=False)))
    try:
        return model.model_validate(values)
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
    message = _INLINE.get() or CurrentMessage.get_current_message()
    if message is None:
        return f"local-{time.time_ns()}", time.time()
    return message.message_id, message.message_timestamp / 1000


def _fresh_id() -> tuple[str, float]:
    """An id and send time for a notification being measured at ``send()``: a
    stand-in of the same length as the message id Dramatiq will give it."""
    return str(uuid.uuid4()), time.time()


def _kind_notification(kind: NotificationKind, args: Any, notification_id: str,
                       sent_at: float) -> Notification:
    payload = args.payload
    data = {name: str(value) for name in kind.data_fields
            if (value := getattr(payload, name, None)) is not None}
    image = getattr(payload, kind.image_field, None) if kind.image_field else None
    return Notification(
        id=notification_id, kind=kind.name, user_id=args.user_id, title=kind.title(payload),
        body=kind.body(payload), priority=kind.band.word, expires_at=sent_at + kind.ttl_s,
        data=data, image_url=_https_only(image), sent_at=sent_at,
    )


def _custom_notification(checked: CustomNotification, word: PriorityName,
                         notification_id: str, sent_at: float) -> Notification:
    return Notification(
        id=notification_id, kind=checked.type, user_id=checked.target_user_id,
        title=checked.title, body=checked.body, priority=word,
        expires_at=sent_at + (checked.ttl_s or band(word).topic.retention_ms // 1000),
        data=dict(checked.data or {}), sent_at=sent_at,
    )


def _https_only(url: object) -> str | None:
    # Phones fetch pictures over HTTPS only; an http:// photo is kept out of
    # the push rather than failing it.
    text = str(url) if url is not None else None
    return text if text is not None and text.startswith("https://") else None


def _kind_preview(kind: NotificationKind) -> Preview:
    def preview(args: BaseModel) -> tuple[Notification, dict[tuple[str, ...], str]]:
        payload: Any = args.payload  # type: ignore[attr-defined]
        texts: dict[tuple[str, ...], str] = {
            ("payload", name): str(value) for name, value in payload if value is not None}
        return _kind_notification(kind, args, *_fresh_id()), texts
    return preview


def _custom_preview(word: PriorityName) -> Preview:
    def preview(args: BaseModel) -> tuple[Notification, dict[tuple[str, ...], str]]:
        checked: CustomNotification = args.notification  # type: ignore[attr-defined]
        texts: dict[tuple[str, ...], str] = {
            ("notification", "title"): checked.title, ("notification", "body"): checked.body}
        if checked.data:
            texts[("notification", "data")] = "".join(f"{k}{v}" for k, v in checked.data.items())
        return _custom_notification(checked, word, *_fresh_id()), texts
    return preview


#: Validation errors name fields, never echo values: a user's name or message
#: text must not end up in a log line through an exception.
_ARGUMENTS_CONFIG = ConfigDict(hide_input_in_errors=True)


def _arguments_model(payload: type[BaseModel]) -> type[BaseModel]:
    return create_model(f"{payload.__name__}Arguments", __config__=_ARGUMENTS_CONFIG,
                        user_id=(UserId, ...), payload=(payload, ...))


#: Each kind's actor arguments: (user_id, payload), validated together so an
#: error names the field as ``payload.age``.
_KIND_ARGS = {name: _arguments_model(kind.payload) for name, kind in KINDS.items()}

_CUSTOM_ARGS = create_model("CustomNotificationArguments", __config__=_ARGUMENTS_CONFIG,
                            notification=(CustomNotification, ...))
