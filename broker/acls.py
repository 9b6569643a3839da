"""ACLs as code: specs and their reconciliation with a live cluster, the way
:mod:`broker.topics` does it for topics.

An :class:`AclSpec` is one permission a principal should have (always an
ALLOW; the table lists what a principal may do, and the authorizer denies
everything else when ``allow.everyone.if.no.acl.found=false``).
:func:`reconcile_acls` compares the cluster's ACLs of the *managed*
principals with the specs and returns an :class:`AclReport`:

- an ACL the specs ask for and the cluster lacks is created;
- an ACL a managed principal has and the specs don't list (granted by hand
  during an incident, or left from an older table) is deleted.

ACLs of other principals (the admin, other applications) are never read or
touched. ``check=True`` computes the same report and changes nothing.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)
from kafka.errors import AuthorizationError, SecurityDisabledError

__all__ = ["AclAction", "AclDrift", "AclReconcileError", "AclReport", "AclSpec",
           "reconcile_acls", "user_principal"]

logger = logging.getLogger(__name__)


def user_principal(user_name: str) -> str:
    """The principal a SASL user authenticates as (``User:web``)."""
    return f"User:{user_name}"


@dataclass(frozen=True, order=True)
class AclSpec:
    """``principal`` may do ``operation`` on the resource ``resource_type``
    ``resource_name`` (a literal name unless ``pattern`` says PREFIXED), from
    ``host`` (``*``: anywhere)."""

    principal: str
    operation: ACLOperation
    resource_type: ResourceType
    resource_name: str
    pattern: ACLResourcePatternType = ACLResourcePatternType.LITERAL
    host: str = "*"
    permission: ACLPermissionType = ACLPermissionType.ALLOW

    def __post_init__(self) -> None:
        if not self.principal.startswith("User:") or self.principal == "User:":
            raise ValueError(f"principal must be User:<name>, got {self.principal!r}")
        if not self.resource_name:
            raise ValueError(f"{self.principal}: resource name must not be empty")

    def to_acl(self) -> ACL:
        return ACL(self.principal, self.host, self.operation, self.permission,
                   ResourcePattern(self.resource_type, self.resource_name, self.pattern))

    @classmethod
    def from_acl(cls, acl: ACL) -> AclSpec:
        pattern = acl.resource_pattern
        return cls(acl.principal, acl.operation, pattern.resource_type, pattern.resource_name,
                   pattern.pattern_type, acl.host, acl.permission_type)

    def __str__(self) -> str:
        pattern = "" if self.pattern is ACLResourcePatternType.LITERAL else \
            f" ({self.pattern.name.lower()})"
        host = "" if self.host == "*" else f" from {self.host}"
        verb = "" if self.permission is ACLPermissionType.ALLOW else f"{self.permission.name} "
        return (f"{self.principal} {verb}{self.operation.name} on "
                f"{self.resource_type.name.lower()} {self.resource_name}{pattern}{host}")


class AclAction(enum.Enum):
    CREATE = "create"
    DELETE = "delete"


_VERBS = {
    # action: (verb when checking, verb when applied)
    AclAction.CREATE: ("would grant", "granted"),
    AclAction.DELETE: ("would revoke", "revoked"),
}


@dataclass(frozen=True)
class AclDrift:
    """One ACL the cluster lacks (CREATE) or has and shouldn't (DELETE)."""

    action: AclAction
    acl: AclSpec

    def __str__(self) -> str:
        return str(self.acl)


@dataclass(frozen=True)
class AclReport:
    """What :func:`reconcile_acls` found and what it did (``applied`` is
    False for a check: ``changes`` are then what a plain run would do)."""

    drifts: tuple[AclDrift, ...]
    applied: bool

    @property
    def changes(self) -> list[AclDrift]:
        return list(self.drifts)

    @property
    def in_sync(self) -> bool:
        return not self.drifts

    def lines(self) -> list[str]:
        tense = 1 if self.applied else 0
        return [f"{_VERBS[d.action][tense]} {d}" for d in self.drifts]


class AclReconcileError(Exception):
    """Kafka could not read or change ACLs; the message says which and why."""


#: Longest wait for the broker to show the ACLs a run changed, in seconds.
SETTLE_TIMEOUT_S = 10.0

#: How often the broker's ACLs are asked for meanwhile, in seconds.
SETTLE_INTERVAL_S = 0.1


def reconcile_acls(admin: KafkaAdminClient, specs: Iterable[AclSpec], *,
                   principals: Iterable[str] = (), check: bool = False) -> AclReport:
    """Make the ACLs of the managed principals (those of ``specs``, plus
    ``principals``: one whose rows were all removed from the table still has
    its ACLs revoked) match ``specs``; report what differed.

    Raises :class:`AclReconcileError` when Kafka has no authorizer or
    refuses a change, and kafka-python's ``KafkaError`` when it can't be reached.
    """
    wanted = set(specs)
    managed = sorted({spec.principal for spec in wanted} | set(principals))
    found = _acls_of_all(admin, managed)
    drifts = [AclDrift(AclAction.CREATE, acl) for acl in sorted(wanted - found)]
    drifts += [AclDrift(AclAction.DELETE, acl) for acl in sorted(found - wanted)]
    report = AclReport(tuple(drifts), applied=not check)
    if check:
        return report
    _create(admin, [d.acl for d in drifts if d.action is AclAction.CREATE])
    _delete(admin, [d.acl for d in drifts if d.action is AclAction.DELETE])
    for line in report.lines():
        logger.info("ACL %s", line)
    if drifts:
        _wait_until_shown(admin, managed, wanted)
    return report


def _wait_until_shown(admin: KafkaAdminClient, managed: list[str], wanted: set[AclSpec]) -> None:
    """Return once the broker describes the ACLs as changed (the controller
    takes a change before the brokers apply it from the metadata log), so a
    check right after a run finds nothing to do; warn after SETTLE_TIMEOUT_S."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        if _acls_of_all(admin, managed) == wanted:
            return
        time.sleep(SETTLE_INTERVAL_S)
    logger.warning("The ACL changes are made, but the broker did not show them all within"
                   " %.0f s; a check run now may report them again.", SETTLE_TIMEOUT_S)


def _acls_of_all(admin: KafkaAdminClient, principals: list[str]) -> set[AclSpec]:
    return {acl for principal in principals for acl in _acls_of(admin, principal)}


def _acls_of(admin: KafkaAdminClient, principal: str) -> set[AclSpec]:
    every_resource = ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)
    acl_filter = ACLFilter(principal, None, ACLOperation.ANY, ACLPermissionType.ANY,
                           every_resource)
    try:
        acls, _ = admin.describe_acls(acl_filter)
    except SecurityDisabledError:
        raise AclReconcileError(
            "Kafka has no authorizer (authorizer.class.name is not set), so it keeps "
            "no ACLs: nothing to reconcile") from None
    except AuthorizationError as e:
        raise AclReconcileError(
            f"not allowed to read the ACLs of {principal} ({type(e).__name__}): ACLs are "
            "managed by a super user (or one with ALTER and DESCRIBE on the cluster)") from None
    return {AclSpec.from_acl(acl) for acl in acls}


def _create(admin: KafkaAdminClient, acls: list[AclSpec]) -> None:
    if not acls:
        return
    result = admin.create_acls([acl.to_acl() for acl in acls])
    # kafka-python lists the failures' error types without saying which ACL
    # each belongs to: name the ACLs that did not make it.
    created = {AclSpec.from_acl(acl) for acl in result["succeeded"]}
    refused = [acl for acl in acls if acl not in created]
    if refused:
        errors = sorted({getattr(e, "__name__", str(e)) for e in result["failed"]})
        raise AclReconcileError(f"Kafka refused to grant {len(refused)} ACL(s) "
                                f"({', '.join(errors)}): " + "; ".join(map(str, refused)))


def _delete(admin: KafkaAdminClient, acls: list[AclSpec]) -> None:
    if not acls:
        return
    # Each filter names one exact ACL, so it deletes that one and no other.
    results = admin.delete_acls([acl.to_acl() for acl in acls])
    refused = [f"{AclSpec.from_acl(acl_filter)} ({error.__name__})"
               for acl_filter, _, error in results if error.errno]
    if refused:
        raise AclReconcileError("Kafka refused to revoke: " + "; ".join(refused))
