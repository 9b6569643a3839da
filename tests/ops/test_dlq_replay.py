"""``dlq replay``: dead letters back to their topics, at most one push per
device, a fresh retry budget, deadlines, the loop guard and the memory of
what was replayed. End to end on the real Kafka with a worker in this process."""

from __future__ import annotations

import time

import pytest
from ops_support import (
    HIGH,
    HIGH_XQ,
    OpsRig,
    audit_lines,
    dead_letter_count,
    end_offsets,
    forge_dead_letter,
    ios_token,
    json_lines,
    pushes_by_notification,
    run,
    wait_for_pushes,
)

from willowe_tasks.ops.dead_letters import REPLAY_COUNT_HEADER

RETRIES = 2  # conftest's KAFKA_RETRY_RETRIES


def test_100_exhausted_notifications_replayed_to_a_healthy_provider_give_100_pushes(
    rig: OpsRig, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 100 matches that ran out of retries while APNs was failing
    rig.worker()
    ids, _ = rig.retry_exhausted(100)
    failed_attempts = len(rig.apns.received)
    assert failed_attempts == 100 * (1 + RETRIES)
    # When APNs is healthy again and the dead letters are replayed
    rig.apns.clear()
    status, out, err = run(capsys, "dlq", "replay")
    assert status == 0, err
    assert "Replayed 100 of 100" in out
    rig.join()
    # Then each phone got its match exactly once
    wait_for_pushes(rig.apns, 100)
    time.sleep(0.5)  # a 101st push would have arrived by now
    assert pushes_by_notification(rig.apns) == dict.fromkeys(ids, 1)
    assert all(r.ok for r in rig.apns.received)
    # And a second run replays nothing: it remembers
    status, out, _ = run(capsys, "dlq", "replay")
    assert status == 0
    assert "replayed before, skipped (--again to include): 100" in out
    assert "Replaying: 0" in out


def test_replayed_to_a_failing_provider_each_gets_its_full_retry_budget_again(
    rig: OpsRig, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 30 matches that ran out of retries
    rig.worker()
    ids, _ = rig.retry_exhausted(30)
    first = pushes_by_notification(rig.apns)
    assert first == dict.fromkeys(ids, 1 + RETRIES)
    # When they are replayed while APNs still fails
    status, _, err = run(capsys, "dlq", "replay")
    assert status == 0, err
    rig.join()
    # Then each was tried 1 + RETRIES times again before it went back to .XQ
    assert pushes_by_notification(rig.apns) == dict.fromkeys(ids, 2 * (1 + RETRIES))
    assert dead_letter_count(rig) == 60
    status, out, _ = run(capsys, "dlq", "list", "--json", "--limit", "1000")
    rows = json_lines(out)
    again = [r for r in rows if r["replays"] == 1]
    assert sorted(r["message_id"] for r in again) == sorted(ids)
    assert all(r["retries"] == 1 + RETRIES for r in again)


def test_no_second_push_to_a_device_that_already_had_the_notification(
    rig: OpsRig, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a user with an iPhone and an Android phone, where FCM failed until
    # the retries ran out but the iPhone got the match
    rig.register_ios("both", ios_token("both"))
    rig.register_android("both", "android-token-both")
    rig.fcm.fail(500, "INTERNAL", times=1 + RETRIES)
    rig.worker()
    [nid] = rig.send_matches(["both"])
    rig.join()
    assert dead_letter_count(rig) == 1
    assert pushes_by_notification(rig.apns) == {nid: 1}
    # When the dead letter is replayed with FCM healthy
    status, _, err = run(capsys, "dlq", "replay")
    assert status == 0, err
    rig.join()
    # Then Android gets it, and the iPhone is not pushed a second time
    wait_for_pushes(rig.fcm, 1 + RETRIES + 1)
    assert [r.ok for r in rig.fcm.received][-1]
    assert pushes_by_notification(rig.apns) == {nid: 1}
    # Nor by a replay forced with --again: the ledger keeps each push at most once
    status, out, _ = run(capsys, "dlq", "replay", "--again")
    assert "Replayed 1 of 1" in out
    rig.join()
    assert pushes_by_notification(rig.apns) == {nid: 1}
    assert pushes_by_notification(rig.fcm) == {nid: 1 + RETRIES + 1}


def test_a_dry_run_counts_and_changes_nothing(
    rig: OpsRig, capsys: pytest.CaptureFixture[str]
) -> None:
    rig.worker()
    rig.retry_exhausted(5)
    before = end_offsets(rig, HIGH)
    status, out, _ = run(capsys, "dlq", "replay", "--dry-run")
    assert status == 0
    assert "Would replay: 5" in out
    time.sleep(0.3)
    assert end_offsets(rig, HIGH) == before
    [line] = audit_lines(rig)
    assert line["action"] == "dlq replay --dry-run"
    assert line["counts"]["to_replay"] == 5
    assert line["result"] == "dry run"
    # and a real run afterwards still has all five to do
    status, out, _ = run(capsys, "dlq", "replay")
    assert "Replayed 5 of 5" in out


def test_the_loop_guard_refuses_a_message_replayed_too_often(
    rig: OpsRig, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a limit of 1 replay and a match that keeps failing
    monkeypatch.setenv("DLQ_MAX_REPLAYS", "1")
    rig.worker()
    [nid], _ = rig.retry_exhausted(1)
    # When it is replayed once and dies again
    assert "Replayed 1 of 1" in run(capsys, "dlq", "replay")[1]
    rig.join()
    assert dead_letter_count(rig) == 2
    # Then the dry run, and a replay even with --again, refuse the new dead letter
    status, out, _ = run(capsys, "dlq", "replay", "--dry-run", "--again")
    assert "refused (loop guard): 1" in out
    assert "Would replay: 1" in out  # the first dead letter, which --again includes
    before = pushes_by_notification(rig.apns)[nid]
    status, out, _ = run(capsys, "dlq", "replay")
    assert status == 0
    assert "refused (loop guard): 1" in out
    assert "Replaying: 0" in out
    rig.join()
    assert pushes_by_notification(rig.apns)[nid] == before


def test_notifications_past_their_deadline_are_counted_apart_and_not_sent(
    rig: OpsRig, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a fast match (15 minutes' lifetime) sent 20 minutes ago, and a match
    # (24 hours) sent as long ago, both dead letters
    stale = rig.app.actors.send_fast_match.message("late", {"name": "Анна", "age": 25})
    stale = stale.copy(message_timestamp=int((time.time() - 20 * 60) * 1000))
    fresh = rig.app.actors.send_match.message("late", {"name": "Анна", "age": 25})
    fresh = fresh.copy(message_timestamp=int((time.time() - 20 * 60) * 1000))
    forge_dead_letter(rig, stale)
    forge_dead_letter(rig, fresh)
    rig.register_ios("late", ios_token("late"))
    # When the dry run looks, and then a replay runs
    status, out, _ = run(capsys, "dlq", "replay", "--dry-run")
    assert "Would replay: 1" in out
    assert "past their deadline, would be dropped: 1" in out
    before = sum(end_offsets(rig, HIGH).values())
    status, out, _ = run(capsys, "dlq", "replay")
    assert status == 0
    assert "Replayed 1 of 1; dropped 1 past their deadline" in out
    # Then only the match went back to its topic
    assert sum(end_offsets(rig, HIGH).values()) == before + 1
    rig.worker()
    rig.join()
    assert pushes_by_notification(rig.apns) == {fresh.message_id: 1}
    # and the dropped one is remembered too
    assert "replayed before, skipped (--again to include): 2" in run(
        capsys, "dlq", "replay", "--dry-run")[1]


def test_a_copy_keeps_its_id_and_send_time_and_carries_a_fresh_budget(
    rig: OpsRig, capsys: pytest.CaptureFixture[str]
) -> None:
    from kafka import KafkaConsumer

    rig.worker()
    [nid], _ = rig.retry_exhausted(1)
    rig.stop_worker()
    run(capsys, "dlq", "replay")
    consumer = KafkaConsumer(HIGH, bootstrap_servers=rig.broker.bootstrap_servers,
                             auto_offset_reset="earliest", group_id=None,
                             consumer_timeout_ms=5000)
    copies = [r for r in consumer if REPLAY_COUNT_HEADER in dict(r.headers or [])]
    consumer.close()
    [copy] = copies
    import dramatiq

    message = dramatiq.Message.decode(copy.value)
    assert message.message_id == nid
    assert "retries" not in message.options and "traceback" not in message.options
    assert message.options["replays"] == 1
    headers = dict(copy.headers)
    assert headers[REPLAY_COUNT_HEADER] == b"1"
    assert headers["x-replayed-from"].decode().startswith(HIGH_XQ + ":")
    assert not any(k.startswith("x-dead-letter-") for k in headers)


@pytest.mark.parametrize(("args", "complaint"), [
    (("--rate", "0"), "the rate must be above 0"),
    (("--rate", "fast"), "is not a rate"),
    (("--topic", "urgent"), "unknown topic 'urgent'"),
    (("--since", "2026-13-45"), "neither a duration ago"),
])
def test_bad_input_is_refused_and_nothing_is_sent(
    rig: OpsRig, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], complaint: str
) -> None:
    rig.worker()
    rig.retry_exhausted(2)
    before = end_offsets(rig, HIGH)
    status, _, err = run(capsys, "dlq", "replay", *args)
    assert status == 2
    assert complaint in err and args[0] in err
    assert end_offsets(rig, HIGH) == before
    assert audit_lines(rig) == []
