"""The priority bands: one table, read by the broker, the kinds and the providers."""

from __future__ import annotations

from typing import get_args

import pytest

import willowe_tasks
from willowe_tasks.kinds import KINDS
from willowe_tasks.priorities import BANDS, PriorityName, band, band_for_actor_priority
from willowe_tasks.providers.apns.payload import apns_headers
from willowe_tasks.providers.fcm.message import fcm_message
from willowe_tasks.providers.push import Push


def test_the_bands_are_the_guides_words_most_urgent_first() -> None:
    assert tuple(b.word for b in BANDS) == get_args(PriorityName) == ("high", "medium", "low")
    assert [b.topic.name for b in BANDS] == [
        "high-priority-notifications", "medium-priority-notifications",
        "low-priority-notifications"]


def test_actor_priorities_pick_their_band() -> None:
    high, medium, low = BANDS
    assert band_for_actor_priority(high.actor_priority) is high
    assert band_for_actor_priority(high.actor_priority + 1) is medium
    assert band_for_actor_priority(medium.actor_priority) is medium
    assert band_for_actor_priority(medium.actor_priority + 1) is low
    assert band_for_actor_priority(10**6) is low


def test_an_unknown_word_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="high, medium, low, got 'urgent'"):
        band("urgent")


def test_the_broker_kinds_and_providers_read_the_same_bands() -> None:
    broker = willowe_tasks.broker
    for b in BANDS:
        assert broker.queue_for_priority(b.actor_priority) == b.topic.name
        push = Push(token="ab" * 32, title="t", body="b", data={}, priority=b.word,
                    expires_at=2e9, collapse_id="n")
        assert apns_headers(push, default_topic="app")["apns-priority"] == b.apns_priority
        assert fcm_message(push)["android"]["priority"] == b.fcm_priority
    for kind in KINDS.values():
        actor = getattr(willowe_tasks, f"send_{kind.name}")
        assert actor.queue_name == kind.band.topic.name
