"""The phones behind a fake provider: online or not, what reached them, what they show.

A provider that accepts a push for a device that is offline keeps it and hands
it over when the device comes back, under rules of its own (how many it keeps,
which one replaces which, how long). A phone then shows a notification, unless
a later one with the same tag or collapse id replaces it on screen. Tests use
this to count what a user would see: ``fake.set_offline(token)``, send,
``fake.set_online(token)``, then ``fake.phone(token).shown``.

Touched by the server's event-loop thread and by test threads, so guarded by a
lock. Every phone is online until a test says otherwise.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from willowe_tasks.testing._records import ReceivedRequest


@dataclass(frozen=True, slots=True)
class PhoneMessage:
    """One accepted push as the phone gets it, with how the provider stores it."""

    request: ReceivedRequest
    #: Fake-clock time (unix seconds) after which the provider drops it. A message
    #: whose time is already up when sent is delivered now or never (FCM ttl 0,
    #: apns-expiration 0).
    expires_at: float
    #: While the phone is offline a newer message with the same key replaces
    #: the stored one (FCM's collapse key, APNs' app). ``None``: stored side by
    #: side (FCM's non-collapsible messages).
    collapse_key: str | None
    #: Whether the phone shows a notification for it (not for data-only or
    #: background pushes).
    visible: bool
    #: A notification on screen with the same key is replaced rather than joined
    #: (FCM ``android.notification.tag``, APNs ``apns-collapse-id``).
    screen_key: str | None


@dataclass(frozen=True, slots=True)
class StoragePolicy:
    """What a provider keeps for an offline device."""

    #: Distinct collapse keys kept at once; beyond it the key whose latest
    #: message is oldest is dropped. ``None``: no limit.
    max_collapse_keys: int | None
    #: Messages without a collapse key kept side by side. One more than this and
    #: all of them are discarded, and the phone is told so when it comes back.
    max_plain_messages: int


@dataclass(frozen=True, slots=True)
class Phone:
    """What one device has received and shows (a snapshot)."""

    token: str
    online: bool
    #: Every push that reached the phone, in the order it arrived.
    received: tuple[ReceivedRequest, ...]
    #: Notifications on screen now, oldest first: a later notification with the
    #: same tag / collapse id took the place of the earlier one.
    shown: tuple[ReceivedRequest, ...]
    #: Pushes the provider holds for the phone while it is offline.
    waiting: int
    #: Times the phone was told that stored messages were deleted (FCM's
    #: ``onDeletedMessages`` after more than 100 non-collapsible messages).
    deleted_notices: int


@dataclass(slots=True)
class _Store:
    policy: StoragePolicy
    #: Latest message per collapse key, least recently updated first.
    collapsible: OrderedDict[str, tuple[int, PhoneMessage]] = field(default_factory=OrderedDict)
    plain: list[tuple[int, PhoneMessage]] = field(default_factory=list)
    overflowed: bool = False
    sequence: int = 0

    def add(self, message: PhoneMessage) -> None:
        self.sequence += 1
        entry = (self.sequence, message)
        key = message.collapse_key
        if key is not None:
            self.collapsible.pop(key, None)
            self.collapsible[key] = entry
            limit = self.policy.max_collapse_keys
            while limit is not None and len(self.collapsible) > limit:
                self.collapsible.popitem(last=False)
        elif len(self.plain) >= self.policy.max_plain_messages:
            self.plain.clear()
            self.overflowed = True
        else:
            self.plain.append(entry)

    def drain(self, now: float) -> tuple[list[PhoneMessage], bool]:
        entries = sorted([*self.collapsible.values(), *self.plain], key=lambda e: e[0])
        overflowed = self.overflowed
        self.collapsible.clear()
        self.plain.clear()
        self.overflowed = False
        return [message for _, message in entries if message.expires_at > now], overflowed

    def __len__(self) -> int:
        return len(self.collapsible) + len(self.plain)


@dataclass(slots=True)
class _PhoneState:
    online: bool = True
    arrived: list[PhoneMessage] = field(default_factory=list)
    store: _Store | None = None
    deleted_notices: int = 0


class PhoneBook:
    """The devices a fake delivers to, by token."""

    def __init__(self, policy: StoragePolicy) -> None:
        self._policy = policy
        self._phones: dict[str, _PhoneState] = {}
        self._lock = threading.Lock()

    def deliver(self, token: str, message: PhoneMessage, now: float) -> None:
        """A push to ``token`` was accepted at ``now``: it arrives, or waits."""
        with self._lock:
            phone = self._phones.get(token)
            if phone is None:
                phone = self._phones[token] = _PhoneState()
            if phone.online:
                phone.arrived.append(message)
            elif message.expires_at > now:
                if phone.store is None:
                    phone.store = _Store(self._policy)
                phone.store.add(message)

    def set_offline(self, token: str) -> None:
        with self._lock:
            self._phones.setdefault(token, _PhoneState()).online = False

    def set_online(self, token: str, now: float) -> list[ReceivedRequest]:
        """Bring the phone back; returns what the provider then delivers to it."""
        with self._lock:
            phone = self._phones.setdefault(token, _PhoneState())
            phone.online = True
            if phone.store is None:
                return []
            messages, overflowed = phone.store.drain(now)
            phone.deleted_notices += overflowed
            phone.arrived.extend(messages)
            return [message.request for message in messages]

    def snapshot(self, token: str) -> Phone:
        with self._lock:
            phone = self._phones.get(token) or _PhoneState()
            arrived = list(phone.arrived)
            online, deleted = phone.online, phone.deleted_notices
            waiting = len(phone.store) if phone.store is not None else 0
        return Phone(
            token=token,
            online=online,
            received=tuple(message.request for message in arrived),
            shown=tuple(_on_screen(arrived)),
            waiting=waiting,
            deleted_notices=deleted,
        )

    def clear(self) -> None:
        with self._lock:
            self._phones.clear()


def _on_screen(arrived: list[PhoneMessage]) -> list[ReceivedRequest]:
    screen: dict[object, ReceivedRequest] = {}
    for index, message in enumerate(arrived):
        if not message.visible:
            continue
        key: object = message.screen_key if message.screen_key is not None else index
        screen.pop(key, None)
        screen[key] = message.request
    return list(screen.values())
