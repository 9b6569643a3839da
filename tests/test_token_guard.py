"""The removal guard: tokens go when a few are rejected, not when most are."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from support import FakeClock

from willowe_tasks.token_guard import GuardVerdict, TokenRemovalGuard, Trip


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(10_000.0)


def guard(clock: FakeClock, trips: list[Trip] | None = None) -> TokenRemovalGuard:
    return TokenRemovalGuard(max_share=0.5, window_s=60, min_pushes=10, clock=clock,
                             on_trip=trips.append if trips is not None else None)


def test_a_rare_rejection_among_many_pushes_removes_the_token(clock: FakeClock) -> None:
    g = guard(clock)
    for _ in range(20):
        g.pushed("apns")
    assert g.rejected("apns", "Unregistered") is GuardVerdict.REMOVE


def test_before_a_window_has_enough_pushes_a_removal_is_rechecked(clock: FakeClock) -> None:
    g = guard(clock)
    g.pushed("apns")
    assert g.rejected("apns", "Unregistered") is GuardVerdict.REMOVE_AND_RECHECK


def test_mass_rejection_for_one_reason_trips_once_and_holds(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    trips: list[Trip] = []
    g = guard(clock, trips)
    verdicts = []
    with caplog.at_level(logging.ERROR, logger="willowe_tasks.token_guard"):
        for _ in range(15):
            clock.now += 1
            verdicts.append(g.rejected("apns", "BadDeviceToken"))
    # The first nine are too few to judge; from the tenth on the guard holds
    assert verdicts[:9] == [GuardVerdict.REMOVE_AND_RECHECK] * 9
    assert verdicts[9:] == [GuardVerdict.HOLD] * 6
    # It tripped once, asking to restore what was marked during the window
    assert trips == [Trip("apns", "BadDeviceToken", clock.now - 5 - 60)]
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "APNS_ENDPOINT" in error.getMessage()
    # Another provider is judged on its own pushes
    for _ in range(20):
        g.pushed("fcm")
    assert g.rejected("fcm", "UNREGISTERED") is GuardVerdict.REMOVE


def test_a_held_reason_is_released_once_its_share_falls(clock: FakeClock) -> None:
    g = guard(clock)
    for _ in range(10):
        g.rejected("fcm", "SENDER_ID_MISMATCH")
    assert g.rejected("fcm", "SENDER_ID_MISMATCH") is GuardVerdict.HOLD
    # The setting is fixed: pushes succeed, and the old rejections age out
    clock.now += 61
    for _ in range(30):
        g.pushed("fcm")
    assert g.rejected("fcm", "SENDER_ID_MISMATCH") is GuardVerdict.REMOVE


def test_mixed_reasons_below_the_share_do_not_trip(clock: FakeClock) -> None:
    g = guard(clock)
    for n in range(30):
        if n % 3 == 0:
            g.rejected("apns", "Unregistered")
        elif n % 3 == 1:
            g.rejected("apns", "BadDeviceToken")
        else:
            g.pushed("apns")
    assert g.rejected("apns", "Unregistered") is GuardVerdict.REMOVE


@pytest.mark.parametrize("options", [{"max_share": 0}, {"max_share": 1.5}, {"window_s": 0},
                                     {"min_pushes": 0}])
def test_nonsense_thresholds_are_refused(options: dict[str, float]) -> None:
    settings: dict[str, Any] = {"max_share": 0.5, "window_s": 60, "min_pushes": 10, **options}
    with pytest.raises(ValueError):
        TokenRemovalGuard(**settings)
