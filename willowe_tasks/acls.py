"""The application's ACLs: what each of its three principals may do, and
nothing else (the secured Kafka denies whatever no ACL allows).

- web app (``KAFKA_WEB_USER``): write and describe the three topics;
- workers (``KAFKA_WORKER_USER``): read the three topics and their ``.DQ``;
  write the three topics, their ``.DQ`` and ``.XQ``; read their group
  (``KAFKA_GROUP_ID``);
- operator (``KAFKA_OPERATOR_USER``): read ``.XQ``; write the three topics
  (replay); delete records of ``.XQ`` (purge); describe the workers' group.

Workers write the three topics because Dramatiq's worker moves each due
message from ``.DQ`` back onto its topic: a table without that breaks every
retry. With ``AUDIT_TOPIC`` set, all three may also write (never read) it.

``python -m willowe_tasks acls`` applies the table (``--check`` only reports).
"""

from __future__ import annotations

from kafka.admin import ACLOperation, ResourceType

from broker.acls import AclSpec, user_principal
from broker.topics import dead_letter_name, delay_name
from willowe_tasks.settings import Settings
from willowe_tasks.topics import PRIORITY_TOPIC_NAMES

__all__ = ["acl_specs", "managed_principals"]

READ, WRITE, DESCRIBE, DELETE = (ACLOperation.READ, ACLOperation.WRITE, ACLOperation.DESCRIBE,
                                 ACLOperation.DELETE)
TOPIC, GROUP = ResourceType.TOPIC, ResourceType.GROUP


def managed_principals(settings: Settings) -> list[str]:
    """The principals whose ACLs the table owns (web, workers, operator)."""
    return [user_principal(name) for name in
            (settings.kafka_web_user, settings.kafka_worker_user, settings.kafka_operator_user)]


def acl_specs(settings: Settings) -> list[AclSpec]:
    """Every ACL of the table, for the principals and group the settings name."""
    web, worker, operator = managed_principals(settings)
    topics = PRIORITY_TOPIC_NAMES
    delays = [delay_name(t) for t in topics]
    dead_letters = [dead_letter_name(t) for t in topics]
    group = settings.kafka_group_id
    table: list[tuple[str, ACLOperation, ResourceType, list[str]]] = [
        (web, WRITE, TOPIC, [*topics]),
        (web, DESCRIBE, TOPIC, [*topics]),
        (worker, READ, TOPIC, [*topics, *delays]),
        (worker, WRITE, TOPIC, [*topics, *delays, *dead_letters]),
        (worker, READ, GROUP, [group]),
        (operator, READ, TOPIC, dead_letters),
        (operator, WRITE, TOPIC, [*topics]),
        (operator, DELETE, TOPIC, dead_letters),
        (operator, DESCRIBE, GROUP, [group]),
    ]
    if settings.audit_topic:
        table += [(principal, WRITE, TOPIC, [settings.audit_topic])
                  for principal in (web, worker, operator)]
    return [AclSpec(principal, operation, resource_type, name)
            for principal, operation, resource_type, names in table for name in names]
