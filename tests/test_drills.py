"""The fault drills' machinery: their counts on real ids files, and the
undecodable-records drill end to end at a tiny size on the test Kafka."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

# bench/ is a top-level folder run with ``python -m bench``, not an installed
# package: make it importable from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.drills._cli import table  # noqa: E402
from bench.drills._cluster_rig import send_verdict  # noqa: E402
from bench.drills._common import Context, message_verdict, read_ids, spread, tally  # noqa: E402
from bench.drills._push_rig import PushRig  # noqa: E402
from bench.drills._undecodable import BAD_VALUES, undecodable  # noqa: E402
from willowe_tasks.settings import Settings  # noqa: E402


def test_a_verdict_counts_lost_duplicated_and_unexpected_numbers(tmp_path: Path) -> None:
    # Two workers' ids files: 3 was processed twice (a redelivery), 4 never,
    # and 9 is not a number that was sent.
    (tmp_path / "a.ids").write_text("0\n1\n3\n")
    (tmp_path / "b.ids").write_text("2\n3\n9\n")
    seen = read_ids(tmp_path / "a.ids") + read_ids(tmp_path / "b.ids")
    verdict = message_verdict(seen, 5)
    assert verdict == {"sent": 5, "processed": 5, "lost": 1, "duplicated": 1,
                       "unexpected": 1, "ok": False}
    # Nothing lost or foreign: duplicates alone don't fail a message-level drill.
    complete = seen + collections.Counter({"4": 1})
    del complete["9"]
    assert message_verdict(complete, 5)["ok"] is True
    assert read_ids(tmp_path / "missing.ids") == collections.Counter()


def test_pairs_pushed_twice_count_as_duplicated() -> None:
    expected = {("n1", "k1"), ("n1", "k2"), ("n2", "k1")}
    pushes = collections.Counter({("n1", "k1"): 3, ("n2", "k1"): 1})
    assert tally(expected, pushes) == {"sent": 3, "processed": 4, "lost": 1,
                                       "duplicated": 2, "unexpected": 0}


def test_a_send_verdict_allows_failed_sends_that_reached_kafka_and_nothing_else() -> None:
    # 0-2 sent; 3's send failed after the producer had it (maybe sent), 4's
    # before; the worker saw 0, 1 twice, 3 and 4
    seen = collections.Counter({"0": 1, "1": 2, "3": 1, "4": 1})
    verdict = send_verdict({"0", "1", "2"}, {"3"}, seen)
    assert verdict == {"sent": 3, "processed": 3, "lost": 1, "duplicated": 1, "unexpected": 2,
                       "failed_but_stored": 1, "strays": 1, "ok": False}
    # Nothing lost and nothing from nowhere: a pass, the stored failure counted
    seen["2"] = 1
    del seen["4"]
    assert send_verdict({"0", "1", "2"}, {"3"}, seen)["ok"] is True


def test_kill_points_are_spread_inside_the_drain() -> None:
    assert spread(6000, 10) == [545, 1090, 1636, 2181, 2727, 3272, 3818, 4363, 4909, 5454]
    assert spread(10, 4) == [2, 4, 6, 8]


def test_the_table_shows_counts_and_failures() -> None:
    text = table({
        "scale": {"sent": 6000, "processed": 6010, "lost": 0, "duplicated": 10, "ok": True,
                  "seconds": 20.5, "notes": "1→3→1"},
        "push-kill": {"ok": False, "error": "RuntimeError: stuck", "seconds": 90.0},
    })
    assert "| scale | pass | 6,000 | 6,010 | 0 | 10 | 20.5 | 1→3→1 |" in text
    assert "| push-kill | FAIL | – | – | – | – | 90.0 | RuntimeError: stuck |" in text


def test_undecodable_records_go_to_the_dead_letters_and_the_worker_lives_on(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    bad = 5 * len(BAD_VALUES)  # every kind of bad record, several times
    result = undecodable(Context(kafka_bootstrap, tmp_path), good=200, bad=bad)
    assert result["lost"] == 0, result
    assert result["processed"] >= 200
    assert result["bad_dead_lettered"] == bad and result["bad_missing"] == 0, result
    assert result["without_reason"] == result["good_dead_lettered"] == 0, result
    assert result["worker_alive"] is True
    assert result["ok"] is True


def test_the_two_hosts_drills_hosts_share_the_kafka_group_but_no_file(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    with PushRig(Context(kafka_bootstrap, tmp_path), "hosts", latency_s=0,
                 settings={"PUSH_TIMEOUT_S": "2"}) as rig:
        a, b = rig.host("host-a"), rig.host("host-b")
    shared = {name for name in a.env if a.env[name] == b.env.get(name)}
    assert {"KAFKA_BROKER", "KAFKA_GROUP_ID", "PUSH_TIMEOUT_S"} <= shared
    assert a.env["KAFKA_CLIENT_ID"] != b.env["KAFKA_CLIENT_ID"]
    for host in (a, b):
        files = {name: Path(value) for name, value in host.env.items()
                 if name.lower() in Settings.model_fields and name.endswith(("_FILE", "_PATH"))}
        assert {"ANALYTICS_PATH", "APNS_CA_FILE", "APNS_KEY_FILE", "FCM_CA_FILE",
                "FCM_SERVICE_ACCOUNT_FILE", "DELIVERY_LOG_PATH"} <= set(files)
        assert all(path.is_relative_to(host.folder) for path in files.values()), files
        assert all(path.is_file() for name, path in files.items() if name.endswith("_FILE"))
