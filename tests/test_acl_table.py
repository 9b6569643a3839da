"""The application's ACL table (willowe_tasks/acls.py) says exactly what the
security issue's table says, for the users the settings name."""

from __future__ import annotations

from collections import defaultdict

from willowe_tasks.acls import acl_specs, managed_principals
from willowe_tasks.settings import load_settings
from willowe_tasks.topics import PRIORITY_TOPIC_NAMES

TOPICS = set(PRIORITY_TOPIC_NAMES)
DQ = {f"{t}.DQ" for t in TOPICS}
XQ = {f"{t}.XQ" for t in TOPICS}


def table(**settings: str) -> dict[tuple[str, str, str], set[str]]:
    """(principal, operation, resource type) → resource names."""
    rows: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for spec in acl_specs(load_settings(**settings)):
        assert spec.permission.name == "ALLOW" and spec.host == "*"
        assert spec.pattern.name == "LITERAL"
        rows[(spec.principal, spec.operation.name, spec.resource_type.name)].add(
            spec.resource_name)
    return dict(rows)


def test_each_principal_may_do_what_the_issue_lists_and_nothing_else() -> None:
    assert table(kafka_group_id="notifications-group") == {
        # web app: write and describe on the three topics only
        ("User:web", "WRITE", "TOPIC"): TOPICS,
        ("User:web", "DESCRIBE", "TOPIC"): TOPICS,
        # workers: read the topics and their .DQ; write the topics (a due retry
        # goes back onto its topic), their .DQ and .XQ; use their group
        ("User:worker", "READ", "TOPIC"): TOPICS | DQ,
        ("User:worker", "WRITE", "TOPIC"): TOPICS | DQ | XQ,
        ("User:worker", "READ", "GROUP"): {"notifications-group"},
        # operator: read .XQ, write the topics (replay), delete on .XQ
        # (purge), describe groups
        ("User:operator", "READ", "TOPIC"): XQ,
        ("User:operator", "WRITE", "TOPIC"): TOPICS,
        ("User:operator", "DELETE", "TOPIC"): XQ,
        ("User:operator", "DESCRIBE", "GROUP"): {"notifications-group"},
    }


def test_the_audit_topic_may_only_be_written_by_the_application() -> None:
    with_audit = table(audit_topic="audit-log")
    without = table()
    added = {key: names for key, names in with_audit.items() if names != without.get(key)}
    assert {key: names - without.get(key, set()) for key, names in added.items()} == {
        ("User:web", "WRITE", "TOPIC"): {"audit-log"},
        ("User:worker", "WRITE", "TOPIC"): {"audit-log"},
        ("User:operator", "WRITE", "TOPIC"): {"audit-log"},
    }


def test_user_names_and_the_group_come_from_the_settings() -> None:
    settings = {"kafka_web_user": "site", "kafka_worker_user": "pushers",
                "kafka_operator_user": "oncall", "kafka_group_id": "pushers-eu"}
    rows = table(**settings)
    assert {principal for principal, _, _ in rows} == {"User:site", "User:pushers",
                                                      "User:oncall"}
    assert rows[("User:pushers", "READ", "GROUP")] == {"pushers-eu"}
    assert managed_principals(load_settings(**settings)) == ["User:site", "User:pushers",
                                                             "User:oncall"]
