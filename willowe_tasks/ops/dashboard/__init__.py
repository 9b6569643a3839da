"""The operator dashboard: one server-rendered page (Starlette and Jinja, no
front-end build) of lag, throughput, error rate, latency, group members and
dead letters, with a replay per dead-letter cause.

``python -m willowe_tasks dashboard --port 8080``. Read-only unless
DASHBOARD_OPERATOR_TOKEN is set; replay and purge ask for that token.
"""

from willowe_tasks.ops.dashboard.app import create_app

__all__ = ["create_app"]
