"""The systems measured: ours and the peers, each a script under
``bench/peers/`` run by its own interpreter."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bench import envs
from bench.envs import Env

PEERS = Path(__file__).resolve().parent / "peers"


@dataclass(frozen=True)
class System:
    key: str
    label: str
    script: str
    #: Its own venv, or None for the project's (``sys.executable``).
    env: Env | None
    scenarios: frozenset[str]
    #: Sizes (``Sizes`` field names) this system is measured with fewer of,
    #: where it waits on Kafka per message and the full count would take minutes.
    scale: tuple[tuple[str, float], ...] = ()
    needs_redis: bool = False
    #: Shown under the table: what differs from ours in how it is measured.
    note: str = ""

    def scaled(self, name: str) -> float:
        return dict(self.scale).get(name, 1.0)

    def python(self) -> Path:
        return Path(sys.executable) if self.env is None else self.env.python

    @property
    def script_path(self) -> Path:
        return PEERS / self.script


_BASIC = frozenset({"enqueue", "drain", "latency"})

# push: the application's own worker into fake APNs/FCM; peers have no push path.
OURS = System("ours", "ours (KafkaBroker)", "ours.py", None,
              _BASIC | {"priority", "memory", "push", "push-wide", "startup",
                        "compression"})
# The same broker with the workers' metrics on: only drain, the per-message path.
OURS_METRICS = System("ours-metrics", "ours, metrics on", "ours_metrics.py", None,
                      frozenset({"drain"}),
                      note="ours plus what a worker counts: the MessageEvents middleware and "
                           "broker events through the event bus into prometheus-client's "
                           "multiprocess files")
RAW = System("raw", "raw kafka-python", "raw_kafka.py", None, _BASIC,
             note="plain producer/consumer loops, no Dramatiq: the ceiling")
DRAMATIQ_KAFKA = System(
    "dramatiq-kafka", "dramatiq-kafka 0.1.9 (acks=1)", "dramatiq_kafka_peer.py",
    envs.DRAMATIQ_KAFKA, _BASIC, scale=(("enqueue_batch", 0.1), ("drain", 0.1)),
    note="kafka-python 2.0.2 defaults (acks=1, not idempotent); no batch form, so its "
         "'batch' is the plain send loop; the harness commits offset 0 for its new "
         "groups, else it skips a backlog queued before it joined",
)
REDIS = System("redis", "Dramatiq + Redis (no Kafka)", "dramatiq_redis.py", envs.DRAMATIQ_REDIS,
               _BASIC, needs_redis=True, scale=(("enqueue_batch", 0.4),),
               note="redis-server without persistence; no batch form ('batch' = send loop)")
CELERY = System("celery", "Celery + Kafka (kombu)", "celery_kafka.py", envs.CELERY_KAFKA,
                _BASIC, scale=(("enqueue_batch", 0.1), ("drain", 0.02)),
                note="kombu confluentkafka transport, threads pool, late acks; "
                     "no batch form ('batch' = send loop)")

STUB = System("stub", "Dramatiq alone (StubBroker)", "dramatiq_stub.py", None,
              frozenset({"enqueue", "drain", "startup"}),
              note="in-memory StubBroker: Dramatiq's own cost per message with no broker "
                   "behind it, the most any Dramatiq broker can reach here")

ALL = (OURS, OURS_METRICS, RAW, DRAMATIQ_KAFKA, REDIS, CELERY, STUB)
BY_KEY = {s.key: s for s in ALL}
