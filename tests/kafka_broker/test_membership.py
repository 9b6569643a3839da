"""Static membership's identities: stable across a restart, never shared by
two live processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from broker_support import ROOT

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
    assert mine.instance_id("high") != mine.instance_id("high.DQ")
    assert mine.instance_id("high").endswith("-0-high")
