"""The delivery ledger: which devices got which notification, so Kafka's
at-least-once delivery never reaches a phone twice."""

from willowe_tasks.ledger.base import DeliveryLedger
from willowe_tasks.ledger.sqlite import SQLiteLedger

__all__ = ["DeliveryLedger", "SQLiteLedger"]
