"""``dlq list``: dead letters of every cause, filtered, with no device token shown."""

from __future__ import annotations

import json
import time

import pytest
from ops_support import (
    HIGH,
    HIGH_XQ,
    OpsRig,
    audit_lines,
    dead_letter_count,
    dead_letters_carrying_a_token,
    ios_token,
    json_lines,
    run,
)

from willowe_tasks.registration import REGISTER_ACTOR


def make_four_causes(rig: OpsRig) -> dict[str, str]:
    """One dead letter of each cause the app produces; their message ids by cause."""
    rig.register_ios("exhausted", ios_token("exhausted"))
    rig.register_ios("refused", ios_token("refused"))
    rig.worker()
    # retries exhausted: APNs answers 500 to every attempt
    rig.apns.fail(500, "InternalServerError", times=3, token=ios_token("exhausted"))
    [exhausted] = rig.send_matches(["exhausted"])
    # refused for good: 400 BadPriority is not about the token, so no retry
    rig.apns.fail(400, "BadPriority", token=ios_token("refused"))
    [refused] = rig.send_matches(["refused"])
    # invalid payload: a record another producer wrote by hand
    bad = rig.app.actors.send_match.message("invalid", {"name": "Анна", "age": 25})
    bad = bad.copy(args=("invalid", {"name": "Анна", "age": "old"}))
    rig.raw(HIGH, bad.encode())
    # undecodable bytes
    rig.raw(HIGH, b"\xff not json at all")
    rig.join()
    assert dead_letter_count(rig) == 4
    return {"Retry": exhausted, "NotificationFailed": refused, "InvalidPayload": bad.message_id}


def test_dead_letters_of_every_cause_are_listed_with_why_and_where(
    rig: OpsRig, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = make_four_causes(rig)
    status, out, _ = run(capsys, "dlq", "list", "--json")
    assert status == 0
    rows = json_lines(out)
    by_exception = {r["exception"]: r for r in rows}
    assert set(by_exception) == {"Retry", "NotificationFailed", "InvalidPayload", "DecodeError"}
    exhausted = by_exception["Retry"]
    assert exhausted["message_id"] == ids["Retry"]
    assert exhausted["reason"] == "failed"
    assert exhausted["retries"] == 3  # the first attempt and both retries failed
    assert exhausted["source"].startswith(HIGH + ":")
    assert exhausted["where"].startswith(HIGH_XQ + ":")
    assert exhausted["actor"] == "send_match"
    assert 0 <= exhausted["age_s"] < 300
    assert "InternalServerError" in exhausted["error"]
    assert by_exception["NotificationFailed"]["retries"] == 0
    assert "BadPriority" in by_exception["NotificationFailed"]["error"]
    assert by_exception["DecodeError"]["reason"] == "undecodable"
    assert by_exception["DecodeError"]["message_id"] is None
    # No payload unless asked for
    assert all("payload" not in r for r in rows)
    # The table says the same
    status, table, _ = run(capsys, "dlq", "list")
    assert status == 0
    for word in ("failed: Retry", "failed: NotificationFailed", "failed: InvalidPayload",
                 "undecodable: DecodeError", f"send_match[{ids['Retry']}]", "3 tries"):
        assert word in table
    assert "4 dead letter(s)" in table


def test_filters_pick_by_reason_actor_topic_time_and_count(
    rig: OpsRig, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = make_four_causes(rig)

    def listed(*args: str) -> list[str | None]:
        status, out, err = run(capsys, "dlq", "list", "--json", *args)
        assert status == 0, err
        return [r["message_id"] for r in json_lines(out)]

    assert listed("--reason", "NotificationFailed") == [ids["NotificationFailed"]]
    assert listed("--reason", "failed: retry") == [ids["Retry"]]  # the cause, any case
    assert len(listed("--reason", "failed")) == 3
    assert listed("--reason", "undecodable") == [None]
    assert sorted(map(str, listed("--actor", "send_match"))) == sorted(ids.values())
    assert listed("--actor", "send_like") == []
    assert listed("--topic", "medium") == []
    assert len(listed("--topic", "high", "--topic", HIGH_XQ)) == 4
    assert len(listed("--since", "1h")) == 4
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    assert listed("--since", future) == []
    assert len(listed("--limit", "2")) == 2
    # Oldest first, by when each was dead-lettered (which of the four was
    # last is a race: the exhausted one's retries against the raw records'
    # sends), and --limit keeps the oldest
    status, out, err = run(capsys, "dlq", "list", "--json")
    assert status == 0, err
    rows = json_lines(out)
    ages = [r["age_s"] for r in rows]
    assert ages == sorted(ages, reverse=True)
    assert listed("--limit", "1") == [rows[0]["message_id"]]


def test_no_device_token_is_shown_even_with_the_payload(
    rig: OpsRig, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a registration the worker refuses (an unknown platform) carrying a token,
    # and a refused push whose provider error quotes its token
    token = ios_token("secret-phone")
    dead_letters_carrying_a_token(rig, token)
    # When they are listed, payloads included, as a table and as JSON
    outputs = [run(capsys, "dlq", "list", "--show-payload", *fmt)[1]
               for fmt in ((), ("--json",))]
    # Then the token shows only as its hash
    for out in outputs:
        assert token not in out
        assert token[:32] not in out
    rows = json_lines(outputs[1])
    [reg] = [r for r in rows if r["actor"] == REGISTER_ACTOR]
    assert reg["payload"]["args"][0] == "user-r"
    assert reg["payload"]["args"][2].startswith("sha256:")
    [push] = [r for r in rows if r["actor"] == "send_match"]
    assert push["payload"]["args"][1] == {"name": "Анна", "age": 25}
    assert "sha256:" in push["error"]


def test_listing_is_audited_with_its_filters_and_count(
    rig: OpsRig, capsys: pytest.CaptureFixture[str]
) -> None:
    rig.raw(HIGH, b"\x00 junk")
    rig.worker()
    rig.join()
    run(capsys, "dlq", "list", "--reason", "undecodable", "--show-payload")
    [line] = audit_lines(rig)
    assert line["action"] == "dlq list"
    assert line["filters"]["reason"] == "undecodable"
    assert line["filters"]["show_payload"] is True
    assert line["counts"]["listed"] == 1
    assert line["result"] == "ok"
    assert line["operator"]
    json.dumps(line)  # one JSON object per line


@pytest.mark.parametrize(("args", "complaint"), [
    (("--topic", "notifications"), "unknown topic 'notifications'"),
    (("--since", "last tuesday"), "neither a duration ago"),
    (("--limit", "0"), "not a whole number above 0"),
])
def test_bad_filters_are_refused_naming_the_argument(
    rig: OpsRig, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], complaint: str
) -> None:
    status, _, err = run(capsys, "dlq", "list", *args)
    assert status == 2
    assert args[0] in err and complaint in err
    assert audit_lines(rig) == []  # nothing was done
