"""PartitionTracker: which offset of a partition is safe to commit.

Kafka commits one offset per partition, meaning "everything below is done".
Worker threads finish in any order, so only the contiguous finished prefix
may be committed, or a crash would skip work that never ran.
"""

from __future__ import annotations

import threading

import pytest
from kafka import TopicPartition

from broker.offsets import PartitionTracker

TP = TopicPartition("orders", 0)


def handed_out(*offsets: int) -> PartitionTracker:
    tracker = PartitionTracker(TP, generation=1)
    for offset in offsets:
        tracker.started(offset)
    return tracker


def test_nothing_is_committable_before_anything_finishes() -> None:
    # Given a tracker that handed out three records
    tracker = handed_out(10, 11, 12)

    # Then nothing may be committed and all three are in progress
    assert tracker.committable() is None
    assert tracker.in_progress == 3


def test_out_of_order_finishes_commit_only_the_contiguous_prefix() -> None:
    # Given records 0..4 handed out
    tracker = handed_out(0, 1, 2, 3, 4)

    # When the later ones finish first
    tracker.finish(3)
    tracker.finish(1)
    tracker.finish(4)

    # Then nothing is committable: offset 0 is still running
    assert tracker.committable() is None
    assert tracker.in_progress == 2

    # When 0 finishes, the commit moves up to the next gap (2)
    tracker.finish(0)
    assert tracker.committable() == 2
    assert tracker.in_progress == 1

    # When 2 finishes, everything is done: commit the offset after the last
    tracker.finish(2)
    assert tracker.committable() == 5
    assert tracker.in_progress == 0


def test_gaps_in_offsets_are_fine() -> None:
    # Given offsets with holes (compacted topics, transaction markers, dead letters)
    tracker = handed_out(5, 9, 20)

    # When they all finish
    for offset in (20, 5, 9):
        tracker.finish(offset)

    # Then the commit points just past the last one
    assert tracker.committable() == 21


def test_duplicate_acks_count_once() -> None:
    # Given three records, the first of which finished twice
    tracker = handed_out(0, 1, 2)
    assert tracker.finish(0) is True
    assert tracker.finish(0) is True

    # And a later one finished twice before the gap closes
    tracker.finish(2)
    tracker.finish(2)

    # Then counting is unaffected: one still in progress, commit stops at it
    assert tracker.in_progress == 1
    assert tracker.committable() == 1

    # And once it finishes, a stray duplicate of any of them changes nothing
    tracker.finish(1)
    tracker.finish(1)
    tracker.finish(0)
    assert tracker.committable() == 3
    assert tracker.in_progress == 0


def test_a_retired_tracker_ignores_late_acks() -> None:
    # Given a partition whose assignment ended while 1 and 2 were running
    tracker = handed_out(0, 1, 2)
    tracker.finish(0)
    final = tracker.retire()

    # Then the final commit covers only what was done before
    assert final == 1
    assert tracker.retired

    # When the late acks arrive, they are refused (the new owner redelivers)
    assert tracker.in_progress == 2
    assert tracker.finish(2) is False
    assert tracker.finish(1) is False
    assert tracker.committable() == 1
    # But the records no longer count as in progress: the worker is done with them
    assert tracker.in_progress == 0


def test_offsets_must_be_handed_out_in_order() -> None:
    # Given a tracker that handed out offset 7
    tracker = handed_out(7)

    # Then handing out 7 again or an earlier offset is a bug in the caller
    with pytest.raises(ValueError, match="offset 6 handed out after 7"):
        tracker.started(6)
    with pytest.raises(ValueError):
        tracker.started(7)


def test_concurrent_finishes_from_many_threads_commit_everything() -> None:
    # Given 2000 records handed out, finished by 8 threads in interleaved order
    count = 2000
    tracker = handed_out(*range(count))
    barrier = threading.Barrier(8)

    def finish_every_eighth(start: int) -> None:
        barrier.wait()
        for offset in range(count - 1 - start, -1, -8):
            tracker.finish(offset)

    threads = [threading.Thread(target=finish_every_eighth, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # Then no finish was lost to a race: everything is committable
    assert tracker.in_progress == 0
    assert tracker.committable() == count
