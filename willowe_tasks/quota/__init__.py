"""Quotas that hold across the fleet: a token bucket per provider credential
(FCM's 600,000 messages a minute per project) shared by every worker process
on every host (see :mod:`willowe_tasks.quota.base` and :mod:`.gate`)."""

from willowe_tasks.quota.base import Bucket, Grant, QuotaStore
from willowe_tasks.quota.gate import QuotaGate, fleet_bucket, min_burst
from willowe_tasks.quota.sqlite import SQLiteQuotaStore

__all__ = ["Bucket", "Grant", "QuotaGate", "QuotaStore", "SQLiteQuotaStore", "fleet_bucket",
           "min_burst"]
