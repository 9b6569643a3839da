"""ACLs as code (broker/acls.py) on the secured Kafka: missing ACLs are
granted, extra ones revoked and reported, a check changes nothing, and
principals the specs don't manage are left alone."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ACLOperation, ResourceType

from broker.acls import AclAction, AclReconcileError, AclSpec, reconcile_acls
from broker.localkafka.secure import SecureLocalKafka


@pytest.fixture
def principal() -> str:
    """A principal of the test's own (ACLs may name users Kafka doesn't know)."""
    return f"User:acl-test-{uuid.uuid4().hex[:8]}"


def specs_for(principal: str, topic: str = "orders") -> list[AclSpec]:
    return [AclSpec(principal, ACLOperation.WRITE, ResourceType.TOPIC, topic),
            AclSpec(principal, ACLOperation.READ, ResourceType.GROUP, "workers")]


def test_missing_acls_are_granted_and_a_second_run_changes_nothing(
    secure_admin: KafkaAdminClient, principal: str,
) -> None:
    report = reconcile_acls(secure_admin, specs_for(principal))
    assert report.applied and [d.action for d in report.changes] == [AclAction.CREATE] * 2
    # Sorted by principal, operation, resource.
    assert report.lines() == [f"granted {principal} READ on group workers",
                              f"granted {principal} WRITE on topic orders"]
    again = reconcile_acls(secure_admin, specs_for(principal))
    assert again.in_sync and again.lines() == []


def test_an_acl_granted_by_hand_is_revoked_and_a_removed_one_put_back(
    secure_admin: KafkaAdminClient, principal: str,
) -> None:
    reconcile_acls(secure_admin, specs_for(principal))
    by_hand = AclSpec(principal, ACLOperation.READ, ResourceType.TOPIC, "orders.XQ")
    secure_admin.create_acls([by_hand.to_acl()])
    secure_admin.delete_acls([specs_for(principal)[0].to_acl()])

    checked = reconcile_acls(secure_admin, specs_for(principal), check=True)
    assert checked.lines() == [f"would grant {principal} WRITE on topic orders",
                               f"would revoke {principal} READ on topic orders.XQ"]
    # A check changes nothing.
    assert reconcile_acls(secure_admin, specs_for(principal), check=True).lines() == checked.lines()

    repaired = reconcile_acls(secure_admin, specs_for(principal))
    assert repaired.lines() == [f"granted {principal} WRITE on topic orders",
                                f"revoked {principal} READ on topic orders.XQ"]
    assert reconcile_acls(secure_admin, specs_for(principal), check=True).in_sync


def test_other_principals_are_left_alone_and_a_dropped_principal_loses_its_acls(
    secure_admin: KafkaAdminClient, principal: str,
) -> None:
    other = f"{principal}-other"
    reconcile_acls(secure_admin, specs_for(other))
    reconcile_acls(secure_admin, specs_for(principal))
    # `other` is not managed by this run: its ACLs stay.
    assert reconcile_acls(secure_admin, [], principals=[principal], check=False).lines() == [
        f"revoked {principal} READ on group workers",
        f"revoked {principal} WRITE on topic orders"]
    assert reconcile_acls(secure_admin, specs_for(other), check=True).in_sync
    reconcile_acls(secure_admin, [], principals=[other])


def test_a_principal_that_may_not_manage_acls_gets_a_clear_error(
    secure_kafka: SecureLocalKafka, principal: str,
) -> None:
    web = KafkaAdminClient(bootstrap_servers=secure_kafka.bootstrap_servers,
                           **secure_kafka.client_options("web"))
    try:
        with pytest.raises(AclReconcileError, match="not allowed to read the ACLs of"):
            reconcile_acls(web, specs_for(principal))
    finally:
        web.close()


def test_a_kafka_without_an_authorizer_is_named_as_such(kafka_bootstrap: str) -> None:
    plain = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        with pytest.raises(AclReconcileError, match="Kafka has no authorizer"):
            reconcile_acls(plain, specs_for("User:anyone"))
    finally:
        plain.close()


def test_specs_name_a_user_principal() -> None:
    with pytest.raises(ValueError, match="principal must be User:<name>"):
        AclSpec("web", ACLOperation.READ, ResourceType.TOPIC, "orders")
