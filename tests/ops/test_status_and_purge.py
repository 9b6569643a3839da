"""``status`` (lag in messages and seconds, members, dead letters, the
--max-lag probe) and ``dlq purge``, on the real Kafka."""

from __future__ import annotations

import io
import json
import time

import pytest
from ops_support import HIGH, HIGH_XQ, OpsRig, audit_lines, dead_letter_count, run


def test_status_shows_lag_in_messages_and_seconds_while_no_worker_runs(
    rig: OpsRig, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given five matches sent and no worker running
    rig.send_matches([f"lagging-{n}" for n in range(5)])
    time.sleep(1.2)
    # When status reads Kafka
    status, out, _ = run(capsys, "status", "--json")
    assert status == 0
    report = json.loads(out)
    [high] = [t for t in report["topics"] if t["topic"] == HIGH]
    # Then the high topic is five messages and over a second behind
    assert high["lag_messages"] == 5
    assert high["lag_seconds"] >= 1.0
    assert sum(p["lag_messages"] for p in high["partitions"]) == 5
    assert all(p["committed"] is None for p in high["partitions"])
    assert [p["partition"] for p in high["partitions"]] == [0, 1, 2]
    assert report["members"] is None  # the group never formed
    # And the table says the same
    status, table, _ = run(capsys, "status")
    assert status == 0
    assert "Lag per partition" in table and HIGH in table


def test_max_lag_makes_status_exit_1_naming_the_priority(
    rig: OpsRig, capsys: pytest.CaptureFixture[str]
) -> None:
    rig.send_matches(["late-1"])
    time.sleep(1.2)
    status, _, err = run(capsys, "status", "--max-lag", "high=1,medium=300")
    assert status == 1
    assert "high:" in err and "max 1 s" in err
    status, _, err = run(capsys, "status", "--max-lag", "high=1h")
    assert status == 0, err


def test_status_counts_members_and_dead_letters_and_lag_falls_to_zero(
    rig: OpsRig, capsys: pytest.CaptureFixture[str]
) -> None:
    rig.raw(HIGH, b"not a message")
    rig.worker()
    rig.join()
    report = json.loads(run(capsys, "status", "--json")[1])
    # the worker process: one member for every priority topic and its .DQ
    assert len(report["members"]) == 1
    assert report["dead_letters"][HIGH_XQ] == 1
    assert all(t["lag_messages"] == 0 for t in report["topics"])


def test_purge_asks_first_and_deletes_only_when_told(
    rig: OpsRig, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        rig.raw(HIGH, f"junk {n}".encode())
    rig.worker()
    rig.join()
    assert dead_letter_count(rig) == 3
    # Nothing is older than an hour
    status, out, _ = run(capsys, "dlq", "purge", "--topic", "high", "--before", "1h")
    assert status == 0 and "No dead letter" in out
    # Answering no (or nothing) deletes nothing
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    status, out, _ = run(capsys, "dlq", "purge", "--topic", "high", "--before", future)
    assert status == 1
    assert "Delete 3 dead letter(s)" in out and "Nothing was deleted" in out
    assert dead_letter_count(rig) == 3
    # --yes deletes them
    status, out, _ = run(capsys, "dlq", "purge", "--topic", HIGH, "--before", future, "--yes")
    assert status == 0 and "Deleted 3" in out
    assert dead_letter_count(rig) == 0
    assert [(a["result"], a["counts"].get("deleted")) for a in audit_lines(rig)] == [
        ("nothing to purge", None), ("declined", None), ("ok", 3)]


def test_purge_refuses_an_unknown_topic_or_time(
    rig: OpsRig, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "dlq", "purge", "--topic", "everything", "--before", "1d",
                         "--yes")
    assert status == 2 and "unknown topic 'everything'" in err
    status, _, err = run(capsys, "dlq", "purge", "--topic", "high", "--before", "soon", "--yes")
    assert status == 2 and "--before" in err
    assert audit_lines(rig) == []
