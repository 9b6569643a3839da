"""The audit trail: one JSON line per action (who, what, when, outcome), from
the operator commands, the web app's device registrations, the workers and
the dead-letter tools, into a file and the audit topic."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import ACLOperation, ConfigResource, ConfigResourceType, ResourceType
from kafka.errors import TopicAuthorizationFailedError
from security_support import IOS_TOKEN, SecureRig, read_records
from support import wait_until

from broker.acls import AclSpec
from willowe_tasks.__main__ import main
from willowe_tasks.audit import AuditTrail, read_trail
from willowe_tasks.testing import FakeAPNs, FakeFCM
from willowe_tasks.tokens import token_hash

AUDIT_TOPIC = "audit-log"


def trail(rig: SecureRig) -> list[dict[str, object]]:
    return read_trail(rig.env["AUDIT_LOG_PATH"])


def test_entries_say_who_did_what_when_and_how_it_went(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    who = {"principal": "User:operator", "os_user": "ops", "host": "h", "pid": 1}
    audit = AuditTrail(path, who=who)
    audit.dead_letters_replayed(topic="high-priority-notifications.XQ", count=3)
    audit.dead_letters_purged(topic="high-priority-notifications.XQ", count=2, outcome="failed",
                              error="TopicAuthorizationFailedError")
    audit.close()
    first, second = read_trail(path)
    assert set(first) == {"when", "who", "what", "outcome", "details"}
    assert first["who"] == who and first["what"] == "dead_letters.replay"
    assert first["outcome"] == "ok"
    assert first["details"] == {"topic": "high-priority-notifications.XQ", "count": 3}
    assert str(first["when"]).endswith("Z") and str(first["when"]) <= str(second["when"])
    assert second["what"] == "dead_letters.purge" and second["outcome"] == "failed"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    with pytest.raises(ValueError, match="outcome: expected one of ok, failed, denied"):
        AuditTrail(path, who=who).record("dead_letters.purge", outcome="maybe")


def test_writers_in_many_threads_and_trails_append_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trails = [AuditTrail(path, who={"principal": f"User:w{n}"}) for n in range(2)]

    def write(audit: AuditTrail, n: int) -> None:
        for i in range(50):
            audit.record("worker.start", n=n, i=i, pad="x" * 500)

    threads = [threading.Thread(target=write, args=(trails[n % 2], n)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    entries = read_trail(path)  # each line parses: none was split or interleaved
    assert sorted((e["details"]["n"], e["details"]["i"]) for e in entries) == \
        [(n, i) for n in range(4) for i in range(50)]


def test_device_registrations_and_removals_are_recorded_with_token_hashes_only(
    rig: SecureRig, fakes: tuple[FakeAPNs, FakeFCM],
) -> None:
    apns, _ = fakes
    web = rig.app("web")
    registry = web.services().registry
    registry.register("user123", "ios", IOS_TOKEN, apns.bundle_id)
    assert registry.unregister(IOS_TOKEN) is True
    assert registry.unregister(IOS_TOKEN) is False

    entries = trail(rig)
    assert [(e["what"], e["outcome"]) for e in entries] == [
        ("device.register", "ok"), ("device.unregister", "ok"), ("device.unregister", "ok")]
    assert entries[0]["who"]["principal"] == "User:web"  # type: ignore[index]
    assert entries[0]["details"] == {"user_id": "user123", "platform": "ios",
                                     "token_hash": token_hash(IOS_TOKEN),
                                     "app_id": apns.bundle_id}
    assert [e["details"]["removed"] for e in entries[1:]] == [True, False]  # type: ignore[index]
    assert IOS_TOKEN not in Path(rig.env["AUDIT_LOG_PATH"]).read_text()


def test_worker_starts_and_stops_are_recorded_with_their_principal(rig: SecureRig) -> None:
    worker_app = rig.app("worker")
    worker = rig.worker(worker_app)
    worker.stop()
    rig.workers.remove(worker)
    entries = [e for e in trail(rig) if str(e["what"]).startswith("worker.")]
    assert [e["what"] for e in entries] == ["worker.start", "worker.stop"]
    assert all(e["who"]["principal"] == "User:worker" for e in entries)  # type: ignore[index]
    assert entries[0]["details"]["group"] == rig.group_id  # type: ignore[index]


def test_entries_reach_the_audit_topic_which_the_app_may_write_and_not_read(
    rig: SecureRig,
) -> None:
    web = rig.app("web")
    entry = web.audit().record("dead_letters.replay", topic="x.XQ", count=1)
    web.broker.producer.flush(timeout=30)
    assert wait_until(lambda: any(json.loads(r.value) == entry for r in
                                  read_records(rig.admin_options(), AUDIT_TOPIC)), 30)
    reader = KafkaConsumer(AUDIT_TOPIC, group_id=None, consumer_timeout_ms=10_000,
                           auto_offset_reset="earliest",
                           bootstrap_servers=rig.kafka.bootstrap_servers,
                           **rig.kafka.client_options("web"))
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            list(reader)
    finally:
        reader.close()


def _run_as_admin(rig: SecureRig, monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    for name, value in {**rig.kafka.client_env("admin"), **rig.env}.items():
        monkeypatch.setenv(name, value)
    return main(list(argv))


def test_acl_changes_by_the_operator_command_are_recorded(
    rig: SecureRig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # Someone took the web app's write on the high topic away by hand.
    removed = AclSpec("User:web", ACLOperation.WRITE, ResourceType.TOPIC,
                      "high-priority-notifications")
    admin = KafkaAdminClient(**rig.admin_options())
    admin.delete_acls([removed.to_acl()])
    admin.close()

    assert _run_as_admin(rig, monkeypatch, "acls", "--check") == 1
    assert "would grant User:web WRITE on topic high-priority-notifications" in \
        capsys.readouterr().out
    assert _run_as_admin(rig, monkeypatch, "acls") == 0
    assert _run_as_admin(rig, monkeypatch, "acls", "--check") == 0
    entries = [e for e in trail(rig) if str(e["what"]).startswith("acl.")]
    assert [(e["what"], e["details"]) for e in entries] == [
        ("acl.grant", {"acl": "User:web WRITE on topic high-priority-notifications"})]
    assert entries[0]["who"]["principal"] == "User:admin"  # type: ignore[index]


def test_topic_changes_by_the_operator_command_are_recorded(
    rig: SecureRig, monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = KafkaAdminClient(**rig.admin_options())
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "low-priority-notifications",
                                        {"retention.ms": "60000"})], incremental=True)
    admin.close()
    assert _run_as_admin(rig, monkeypatch, "topics") == 0
    entries = [e for e in trail(rig) if str(e["what"]).startswith("topic.")]
    assert [(e["what"], e["details"]) for e in entries] == [
        ("topic.set_config", {"topic": "low-priority-notifications",
                              "change": "low-priority-notifications: retention.ms 60000 → "
                                        "2592000000"})]


def test_key_rotations_are_recorded_and_keep_the_file_private(
    rig: SecureRig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = tmp_path / "payload.keys"
    for argv in (["add", "k1"], ["add", "k2"], ["promote", "k2"], ["retire", "k1"]):
        assert _run_as_admin(rig, monkeypatch, "keys", *argv, "--file", str(keys)) == 0
    assert _run_as_admin(rig, monkeypatch, "keys", "retire", "k2", "--file", str(keys)) == 2
    assert "'k2' encrypts: promote another key before retiring it" in capsys.readouterr().err
    assert [line.split(":")[0] for line in keys.read_text().splitlines()] == ["k2"]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    entries = [e for e in trail(rig) if str(e["what"]).startswith("keys.")]
    assert [(e["what"], e["details"]["key_id"], e["details"]["key_ids"])  # type: ignore[index]
            for e in entries] == [("keys.add", "k1", ["k1"]), ("keys.add", "k2", ["k1", "k2"]),
                                  ("keys.promote", "k2", ["k2", "k1"]),
                                  ("keys.retire", "k1", ["k2"])]
    key = keys.read_text().split(":")[1].strip()
    assert key not in Path(rig.env["AUDIT_LOG_PATH"]).read_text()
