"""Static membership's identities: stable across a restart, never shared by
two live processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from broker_support import ROOT, BrokerFactory
from kafka import KafkaAdminClient
from test_broker_commits import send_numbered, take

from broker.membership import ProcessSlot

_HOLD = """
import sys
from pathlib import Path
from broker.membership import ProcessSlot
slot = ProcessSlot(Path(sys.argv[1]), "group-a")
print(slot.number, flush=True)
sys.stdin.read()  # hold the slot until the test closes stdin
"""


def hold(folder: Path) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], cwd=ROOT,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def test_live_processes_hold_different_slots_and_a_dead_ones_slot_is_taken_again(
    tmp_path: Path,
) -> None:
    first, a = hold(tmp_path)
    second, b = hold(tmp_path)
    third, c = hold(tmp_path)
    try:
        assert sorted((a, b, c)) == [0, 1, 2]
        # When the second dies (a SIGKILL: no clean-up ran), its slot is free again
        second.kill()
        second.wait(timeout=10)
        restarted, again = hold(tmp_path)
        assert again == b
    finally:
        for process in (first, third, restarted):
            process.kill()
            process.wait(timeout=10)


def test_another_group_counts_its_own_slots(tmp_path: Path) -> None:
    mine = ProcessSlot(tmp_path, "group-a")
    theirs = ProcessSlot(tmp_path, "group-b")
    assert (mine.number, theirs.number) == (0, 0)
    # (one identity per process; a second poller of the process, rare, its own)
    assert mine.instance_id().endswith("-0")
    assert mine.instance_id(1) == mine.instance_id() + "-p1"


def test_a_folder_that_cannot_hold_slots_leaves_consumers_dynamic_members(
    make_broker: BrokerFactory, queue_name: str, group_id: str, admin: KafkaAdminClient,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a broker told to take its slots where no folder can be made
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    broker = make_broker(static_membership=True, membership_dir=not_a_folder)
    send_numbered(broker, queue_name, 3)
    # when it consumes,
    consumer = broker.consume(queue_name, prefetch=10, timeout=100)
    try:
        # then it still gets its messages (Dramatiq is not left restarting it),
        assert [m.args for m in take(consumer, 3)] == [(0,), (1,), (2,)]
        # as a dynamic member, and says why and what to change.
        group = admin.describe_groups([group_id])[group_id]
        assert group["members"] and all(m.get("group_instance_id") is None
                                        for m in group["members"])
    finally:
        consumer.close()
    warnings = [r.getMessage() for r in caplog.records if "membership slot" in r.getMessage()]
    assert len(warnings) == 1 and "membership_dir" in warnings[0], warnings
