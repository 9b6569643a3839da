"""Registering devices from any web server: two actors over Kafka.

::

    from willowe_tasks import register_device, unregister_device
    register_device.send("user123", "ios", apns_token, "com.willowe.app")
    unregister_device.send(apns_token)          # the app signed out

A web server registers a phone the way it sends a notification: it puts a
message on Kafka, and a worker applies it to the registry (PostgreSQL or
SQLite, whichever the workers use) with the registry's own rules (a token
that moves to another user leaves the old one; iOS tokens are stored
lower-case; registering a token marked invalid makes it live). So a web
tier needs Kafka and nothing else: no database credentials, no provider
credentials, and no copy of the rules in another language.

``send()`` checks the arguments with those same rules before anything
reaches Kafka and raises :class:`~willowe_tasks.registry.DeviceValidationError`
naming the field; the message carries the token as the registry will store
it. The worker checks again: a record that fails (one a non-Python producer
built by hand) goes to the dead letters with the field named.

Ordering: the actors are on the high-priority topic, beside matches, so a
registration is applied about as fast as a match is pushed. Each message is
keyed by :func:`~willowe_tasks.tokens.token_key` of its token, so the
changes of one token (log out on one account, log in on another) sit in one
partition in the order they were sent, and a worker that dies replays them
in that order. Worker threads still run neighbouring messages side by side,
and a change retried after a database outage can land after a later one;
the app registers its token at every launch, which settles either case.

A producer in another language sends the same record as Dramatiq does (see
the README's "Registering devices"): ``actor_name`` ``register_device`` with
``args`` ``[user_id, platform, token, app_id]``, or ``unregister_device``
with ``[token]``, on ``high-priority-notifications``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq

from broker.kafka import PARTITION_KEY_OPTION
from willowe_tasks import logs
from willowe_tasks.priorities import HIGH
from willowe_tasks.registry.base import DeviceValidationError, stored_spellings, validate_device
from willowe_tasks.services import Services
from willowe_tasks.tokens import token_key

__all__ = ["REGISTER_ACTOR", "REGISTRATION_PRIORITY", "UNREGISTER_ACTOR", "RegistrationActor",
           "declare_registration_actors"]

#: Actor names: what a producer in another language puts in ``actor_name``.
REGISTER_ACTOR = "register_device"
UNREGISTER_ACTOR = "unregister_device"

#: Dramatiq priority of both actors: the high band, as matches, so a
#: registration waits behind no backlog of likes or analytics.
REGISTRATION_PRIORITY = HIGH

#: Longest token ``unregister_device`` takes, in characters: the longest any
#: provider accepts (FCM's 4096).
TOKEN_MAX_CHARS = 4096

#: Checks an actor's call and returns its arguments as the registry stores
#: them and the partition key of the message.
Check = Callable[[tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], str]]


class RegistrationActor(dramatiq.Actor):
    """An actor whose arguments are checked by the registry's rules when a
    message is built, so ``send()`` refuses a bad registration before it
    reaches Kafka, and whose messages are keyed by their token."""

    check: Check

    def message_with_options(
        self, *, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> dramatiq.Message:
        canonical, key = self.check(args, kwargs or {})
        options.setdefault(PARTITION_KEY_OPTION, key)
        return super().message_with_options(args=canonical, kwargs={}, **options)


def declare_registration_actors(
    broker: dramatiq.Broker, services: Callable[[], Services],
) -> tuple[RegistrationActor, RegistrationActor]:
    """Declare ``register_device`` and ``unregister_device`` on ``broker``;
    ``services`` gives the worker process's registry."""

    def declare(name: str, fn: Callable[..., None], check: Check) -> RegistrationActor:
        actor = dramatiq.actor(
            actor_class=RegistrationActor, actor_name=name, priority=REGISTRATION_PRIORITY,
            broker=broker,
            # A registration the rules refuse stays refused: to the dead letters.
            throws=(DeviceValidationError,),
        )(fn)
        assert isinstance(actor, RegistrationActor)
        actor.check = check
        # Its arguments are a device token: never in a log line.
        actor.logger.addFilter(logs.RedactActorArguments())
        return actor

    def register_device(user_id: str, platform: str, token: str, app_id: str) -> None:
        services().registry.register(user_id, platform, token, app_id)

    def unregister_device(token: str) -> None:
        _check_token(token)
        services().registry.unregister(token)

    return (declare(REGISTER_ACTOR, register_device, _check_register),
            declare(UNREGISTER_ACTOR, unregister_device, _check_unregister))


def _check_register(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    values = _bind(("user_id", "platform", "token", "app_id"), args, kwargs)
    device = validate_device(*values)
    return (device.user_id, device.platform, device.token, device.app_id), token_key(device.token)


def _check_unregister(args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    (token,) = _bind(("token",), args, kwargs)
    _check_token(token)
    # Keyed like the token's registration: its spelling as the first provider
    # that accepts it stores it (an iOS token in lower case).
    spellings = stored_spellings(token)
    return (token,), token_key(spellings[0][0] if spellings else token)


def _check_token(token: object) -> None:
    if not isinstance(token, str):
        raise DeviceValidationError("token", f"must be a string, got {type(token).__name__}")
    if not token.strip():
        raise DeviceValidationError("token", "must not be empty")
    if len(token) > TOKEN_MAX_CHARS:
        raise DeviceValidationError("token", f"must be at most {TOKEN_MAX_CHARS} characters")
    if not token.isprintable():
        # (A lone surrogate, say: it could not even be hashed into the key.)
        raise DeviceValidationError("token", "must be printable text")


def _bind(names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """The call's arguments in ``names`` order; TypeError for a wrong call."""
    if len(args) > len(names):
        raise TypeError(f"expected at most {len(names)} arguments ({', '.join(names)}), "
                        f"got {len(args)}")
    given = dict(zip(names, args, strict=False))
    for name, value in kwargs.items():
        if name not in names or name in given:
            raise TypeError(f"unexpected or repeated argument {name!r}")
        given[name] = value
    missing = [name for name in names if name not in given]
    if missing:
        raise TypeError(f"missing argument(s): {', '.join(missing)}")
    return [given[name] for name in names]
