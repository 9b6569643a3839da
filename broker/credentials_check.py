"""A worker whose Kafka credentials are rejected does not start.

Without this, Dramatiq boots the worker anyway: each consumer thread fails
to make its consumer, logs a connection error and tries again every second,
for ever, and the process looks alive. :class:`CredentialsCheck` connects
once before the worker boots and raises :class:`WorkerBootRefused` (an
:class:`~broker.access.AuthenticationFailed`), which Dramatiq's CLI reports
("Broker connection failed") before exiting with status 3. A Kafka that
doesn't answer is not a reason to refuse to start: the consumers wait for it
as before.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import MiddlewareError

from broker.access import AuthenticationFailed

__all__ = ["CredentialsCheck", "WorkerBootRefused"]


class WorkerBootRefused(AuthenticationFailed, MiddlewareError):
    """Kafka rejected the worker's credentials at boot. (Also a
    MiddlewareError: Dramatiq logs and swallows any other error a middleware
    raises, and the worker would start.)"""


class CredentialsCheck(dramatiq.Middleware):
    """Check the broker's credentials before a worker boots."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        check = getattr(broker, "check_credentials", None)
        if check is None:
            return
        try:
            check()
        except AuthenticationFailed as e:
            raise WorkerBootRefused(str(e)) from e.__cause__
