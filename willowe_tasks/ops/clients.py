"""The Kafka clients the operator tools use, made from the settings once.

The admin client and producer are the workers' own broker's (the same
options, acks=all and idempotence); the reader is a consumer without a
group that commits nothing, so reading dead letters never moves the
workers' offsets.
"""

from __future__ import annotations

from kafka import KafkaConsumer

from broker import KafkaBroker
from broker.admin import QueueAdmin
from broker.per_process import PerProcess
from willowe_tasks.app import App
from willowe_tasks.kafka_clients import client_options
from willowe_tasks.ops.dead_letters import DeadLetterReader
from willowe_tasks.ops.redact import token_argument_positions
from willowe_tasks.settings import Settings

__all__ = ["OpsKafka"]

#: How long a client waits for an unreachable Kafka before failing, in ms:
#: an operator waiting on a command wants a clear error, not a 30 s hang.
BOOTSTRAP_TIMEOUT_MS = 10_000


class OpsKafka:
    """Kafka as the operator tools read and change it, for one application."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app = App(settings)
        self._reader = PerProcess(lambda: KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=f"{settings.kafka_client_id}-ops", group_id=None,
            enable_auto_commit=False, bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            reconnect_backoff_max_ms=1_000, **client_options(settings)))
        # Encrypted dead letters are opened for display and replay, with the keys.
        self.dead_letters = DeadLetterReader(self._reader.get,
                                             codec=self._app.broker.payload_codec)
        #: Actor name → positions of its device-token arguments (never shown).
        self.token_positions = token_argument_positions(self._app.broker)

    @property
    def broker(self) -> KafkaBroker:
        return self._app.broker

    @property
    def queue_admin(self) -> QueueAdmin:
        return self._app.broker.queue_admin

    @property
    def group_id(self) -> str:
        return self.settings.kafka_group_id

    def close(self) -> None:
        self._reader.close(lambda r: r.close())
        self._app.close()
