"""A Dramatiq broker on Apache Kafka.

Each Dramatiq queue is a topic, with ``<queue>.DQ`` for delayed messages
(retries) and ``<queue>.XQ`` for dead letters. Actor priorities can pick the
topic through *priority bands*, so urgent work never waits behind a backlog
of less urgent work in the same partition; each topic gets its own consumer
and prefetch budget in the worker.

Delivery is at least once: a message is committed only after the actor has
finished with it (or it has been written to the dead-letter topic), and
only the contiguous prefix of finished offsets is ever committed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import dramatiq
from dramatiq.common import current_millis, dq_name, q_name
from dramatiq.errors import ConnectionClosed, ConnectionFailed, QueueNotFound
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from broker import _kafka_python_fixes
from broker._kafka_python_fixes import apply_admin_fixes, apply_producer_fixes
from broker.access import ClientPrincipal, hide_secrets
from broker.admin import QueueAdmin
from broker.after_processing import DEFAULT_PATIENCE_S, emit_after_processing
from broker.circuit import CircuitOpen, SendCircuit, Unwritable
from broker.consumer import _KafkaConsumer
from broker.credentials_check import CredentialsCheck
from broker.dead_letters import DeadLetterWriter
from broker.instrumentation import EventListener, RecordSent
from broker.membership import ProcessSlot
from broker.payload_codec import PayloadCodec
from broker.per_process import PerProcess
from broker.poller import GroupPoller
from broker.poller_pool import PollerPool
from broker.record_headers import ACTOR_HEADER, MESSAGE_ID_HEADER
from broker.spool import SqliteSpool
from broker.trace_context import TRACEPARENT
from broker.writable import probe_writable

__all__ = ["BatchSendError", "KafkaBroker"]

# Every client this module makes needs them (see the module).
_kafka_python_fixes.install()

#: Message option naming the Kafka partition key (default: none, load spreads).
PARTITION_KEY_OPTION = "partition_key"

#: How long one send() may take in all, in milliseconds: waiting for Kafka's
#: metadata and for its acknowledgement. A web request that sends must not
#: wait out a dead Kafka: after this the send fails, and the circuit opens.
DEFAULT_SEND_TIMEOUT_MS = 2_000

#: How long a ``batch()`` block may wait for Kafka at its end, in milliseconds.
DEFAULT_BATCH_TIMEOUT_MS = 30_000

#: Records a ``batch()`` block gathers before it seals them and hands them to
#: the producer, all in one go. Each step then runs over many records in a
#: row, with its code and tables still in the CPU's caches: zstd and AES-GCM
#: took 10-20 µs a record interleaved with Dramatiq's work and 2-5 µs in a
#: loop, and a loop of kafka-python sends costs a fifth less CPU. (Dramatiq
#: still encodes each message when it is sent: an argument changed after
#: send() must not change what was sent.)
BATCH_CHUNK = 128

#: Where worker processes take their membership slots unless told otherwise:
#: one folder per user, since a folder another user made first (the shared
#: temporary directory's habit) is one this user can't create locks in.
DEFAULT_MEMBERSHIP_DIR = Path(tempfile.gettempdir()) / f"dramatiq-kafka-slots-{os.getuid()}"

#: How often an open circuit asks whether Kafka answers again, in milliseconds.
DEFAULT_PROBE_INTERVAL_MS = 3_000

#: Topics declare_queue creates get this many partitions unless told otherwise.
DEFAULT_PARTITIONS = 3

#: Retention of topics declare_queue creates: 7 days.
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000

#: Every client's defaults. kafka-python backs off reconnecting up to 30 s
#: (Java clients: 1 s), so after a Kafka restart a worker would sit idle for
#: up to half a minute more; one second keeps recovery prompt.
_CLIENT_DEFAULTS: dict[str, Any] = {"reconnect_backoff_max_ms": 1_000}

PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",  # with idempotence: no loss, no duplicates from producer retries
    "enable_idempotence": True,
    # No linger: a lone send() would wait it out every time, capping a thread
    # that sends one by one; concurrent sends still share batches.
    "linger_ms": 0,
    # max_block_ms, request_timeout_ms and delivery_timeout_ms follow the
    # broker's send_timeout_ms (see KafkaBroker): a record given up on is not
    # sent later behind the caller's back.
    # Room for a few thousand of our ~230-byte records per partition request:
    # with 16 KiB (kafka-python's default) a busy process sends many small
    # requests, and each costs the IO thread more than the records in it.
    "batch_size": 256 * 1024,
}

#: What ``batch()`` sends through instead (on top of the producer's
#: options): records wait up to linger_ms for company, so a loop of sends
#: fills whole requests instead of racing the IO thread one record at a time
#: (README, Performance). A loop of Dramatiq sends runs at about 10k/s here,
#: so 100 ms fills a 256 KiB batch (some 900 records) where 20 ms sent one a
#: fifth full: the IO thread then spent 12-14 µs of CPU (and the GIL) per
#: record instead of 7. The block's end flushes, so no batch waits out the
#: linger; single sends keep the no-linger producer.
BATCH_PRODUCER_DEFAULTS: dict[str, Any] = {"linger_ms": 100, "request_timeout_ms": 10_000,
                                           "delivery_timeout_ms": 25_000}


class BatchSendError(ConnectionFailed):
    """Some messages of a ``broker.batch()`` were not accepted by Kafka.

    ``failed`` lists ``(message, exception)`` pairs; every other message sent
    in the block was stored. A record that can't even be handed to the
    producer (Kafka unreachable for ``max_block_ms``) ends the block there:
    its later sends never ran. That message comes last in ``failed``, but for
    those the block gathered after it (records reach the producer
    :data:`BATCH_CHUNK` at a time), which follow it and share its exception.
    """

    def __init__(self, failed: list[tuple[dramatiq.Message, BaseException]],
                 bootstrap_servers: Sequence[str] = ()) -> None:
        self.failed = failed
        first = failed[0][1]
        where = f" to Kafka at {','.join(bootstrap_servers)}" if bootstrap_servers else ""
        super().__init__(
            f"{len(failed)} message(s) of the batch were not sent{where}; first: {first}"
        )


class _Staged(NamedTuple):
    """A message of a ``batch()`` block, encoded when it was sent (so later
    changes to its arguments don't count) and not yet sealed or produced."""

    message: dramatiq.Message
    topic: str
    key: Any
    body: bytes
    headers: list[tuple[str, bytes]]


class _Batch:
    """One thread's ``batch()`` block: what it gathered, what it handed to
    the producer, and the send that could not even do that (which ends the
    block)."""

    __slots__ = ("lost", "pending", "producers", "refused", "staged")

    def __init__(self) -> None:
        self.staged: list[_Staged] = []
        self.pending: list[tuple[dramatiq.Message, FutureRecordMetadata]] = []
        #: The batch producer by topic, once the topic's topics are known to
        #: exist: a block pays for those checks once per topic, not per message.
        self.producers: dict[str, KafkaProducer] = {}
        self.refused: tuple[dramatiq.Message, ConnectionFailed] | None = None
        #: Gathered messages a hand-over could not give the producer: the
        #: block reports them even if its caller caught the error (which a
        #: later send() raised, not theirs).
        self.lost: list[tuple[dramatiq.Message, ConnectionFailed]] = []


class KafkaBroker(dramatiq.Broker):
    """A Dramatiq broker backed by Kafka.

    Parameters:
      bootstrap_servers: "host:port" or a list of them.
      group_id: consumer group of the workers.
      client_id: Kafka client id.
      middleware: as for any Dramatiq broker (None: Dramatiq's defaults).
      priority_queues: ``[(max_priority, queue_name), …]`` most urgent first;
        an actor left on the "default" queue goes to the first band whose
        ``max_priority`` is ≥ its priority (the last band takes the rest).
      create_topics: create missing topics (with .DQ/.XQ) on first use.
      topic_partitions, topic_retention_ms: shape of topics it creates.
      send_timeout_ms: how long one send() may take, waiting for metadata and
        for Kafka's acknowledgement (ConnectionFailed after it).
      batch_timeout_ms: how long a batch() block waits for Kafka at its end.
      probe_interval_ms: how often an open circuit asks Kafka again (after a
        send found Kafka unreachable, sends fail at once until it answers).
      spool: where sends go while Kafka is unreachable instead of failing
        (see :mod:`broker.spool`); None: they fail.
      static_membership: give each worker process (one group member, see
        :mod:`broker.poller`) a stable identity (see :mod:`broker.membership`),
        so a restarted worker takes its partitions straight back; a clean stop
        removes it from the group.
      membership_dir: where processes of this host take their slots
        (default: a folder in the system's temporary directory).
      producer_options, consumer_options: passed to kafka-python as is.
      batch_producer_options: on top of producer_options, for the producer
        ``batch()`` sends through (default: linger_ms 20, flushed at the end).
      events: called with each :class:`~broker.instrumentation.RecordSent`
        and :class:`~broker.instrumentation.RecordDeadLettered` (metrics);
        see :mod:`broker.instrumentation` for the rules a listener follows.
      payload_codec: what message bytes become on Kafka and back (see
        :mod:`broker.payload_codec`; default: as they are).
      hook_patience_s: how long a middleware's ``after_process_message``
        that can't reach Kafka (Retries enqueuing the next attempt) is tried
        again before its message is dead-lettered (see :mod:`broker.after_processing`).
      **client_options: passed to producer, consumer and admin client alike
        (security_protocol, sasl_*, ssl_*, …). With SASL, a worker whose
        credentials Kafka rejects does not boot (:mod:`broker.credentials_check`),
        and refusals raise :class:`~broker.access.KafkaAccessDenied`.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        group_id: str = "dramatiq",
        client_id: str = "dramatiq",
        middleware: list[dramatiq.Middleware] | None = None,
        priority_queues: Sequence[tuple[int, str]] = (),
        create_topics: bool = True,
        topic_partitions: int = DEFAULT_PARTITIONS,
        topic_retention_ms: int = DEFAULT_RETENTION_MS,
        send_timeout_ms: int = DEFAULT_SEND_TIMEOUT_MS,
        batch_timeout_ms: int = DEFAULT_BATCH_TIMEOUT_MS,
        probe_interval_ms: int = DEFAULT_PROBE_INTERVAL_MS,
        spool: SqliteSpool | None = None,
        static_membership: bool = False,
        membership_dir: str | os.PathLike[str] | None = None,
        producer_options: dict[str, Any] | None = None,
        consumer_options: dict[str, Any] | None = None,
        batch_producer_options: dict[str, Any] | None = None,
        events: EventListener | None = None,
        payload_codec: PayloadCodec | None = None,
        hook_patience_s: float = DEFAULT_PATIENCE_S,
        **client_options: Any,
    ) -> None:
        super().__init__(middleware=middleware)
        if isinstance(bootstrap_servers, str):
            bootstrap_servers = [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
        if not bootstrap_servers:
            raise ValueError("bootstrap_servers must name at least one host:port")
        for name, value in (("send_timeout_ms", send_timeout_ms),
                            ("batch_timeout_ms", batch_timeout_ms),
                            ("probe_interval_ms", probe_interval_ms),
                            ("hook_patience_s", hook_patience_s)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.logger = logging.getLogger(f"{__name__}.KafkaBroker")
        self.bootstrap_servers = list(bootstrap_servers)
        self.group_id = group_id
        self.client_id = client_id
        self.priority_queues = list(priority_queues)
        self.send_timeout_ms = send_timeout_ms
        self.batch_timeout_ms = batch_timeout_ms
        self.events = events
        self.payload_codec = payload_codec or PayloadCodec()
        self.hook_patience_s = hook_patience_s
        #: Who the clients are to Kafka: named in errors when Kafka refuses them.
        self.principal = ClientPrincipal.of(self.bootstrap_servers, client_options)
        client_options = hide_secrets(client_options)
        self._client_options = client_options
        # One dict, not two ** expansions in the call: an option given both for
        # all clients and in the defaults (request_timeout_ms, say) would be a
        # TypeError ("got multiple values for keyword argument").
        self._producer_options = {**_CLIENT_DEFAULTS, **PRODUCER_DEFAULTS,
                                  "max_block_ms": send_timeout_ms,
                                  "request_timeout_ms": send_timeout_ms,
                                  **client_options, **(producer_options or {})}
        # The producer gives up on a record when the send does (kafka-python
        # wants at least linger + one request's time).
        self._producer_options.setdefault("delivery_timeout_ms", max(
            send_timeout_ms, self._producer_options["linger_ms"]
            + self._producer_options["request_timeout_ms"]))
        # kafka-python first waits bootstrap_timeout_ms (30 s) for any broker to
        # answer, and only then applies max_block_ms: without this a send to an
        # unreachable Kafka would block 30 s, not the max_block_ms asked for.
        self._producer_options.setdefault("bootstrap_timeout_ms",
                                          self._producer_options["max_block_ms"])
        self._admin_options = {**_CLIENT_DEFAULTS,
                               "bootstrap_timeout_ms": self._producer_options["max_block_ms"],
                               **client_options}
        self._consumer_options = consumer_options or {}
        self.queues: set[str] = set()
        self.actor_options.add(PARTITION_KEY_OPTION)
        client = {"bootstrap_servers": self.bootstrap_servers, "client_id": self.client_id}
        bulk_options = {**self._producer_options, **BATCH_PRODUCER_DEFAULTS,
                        **(batch_producer_options or {})}
        bulk_options["delivery_timeout_ms"] = max(
            bulk_options["delivery_timeout_ms"],
            bulk_options["linger_ms"] + bulk_options["request_timeout_ms"])
        # (Single dicts again: options may name bootstrap_servers or client_id too.)
        self._producer = PerProcess(lambda: _producer({**client, **self._producer_options}))
        self._bulk_producer = PerProcess(lambda: _producer({**client, **bulk_options}))
        self._admin = PerProcess(lambda: _admin({**client, **self._admin_options}))
        # Reads records for their timestamps (time lag) and nothing else: no
        # group, no commits.
        self._reader = PerProcess(lambda: KafkaConsumer(
            **{**client, **self._admin_options, "group_id": None, "enable_auto_commit": False}))
        self.queue_admin = QueueAdmin(
            self._admin.get, group_id=group_id, bootstrap_servers=self.bootstrap_servers,
            create_topics=create_topics, topic_partitions=topic_partitions,
            topic_retention_ms=topic_retention_ms, reader=self._reader.get,
            denied=self.principal.denied)
        self._dead_letters = DeadLetterWriter(self._produce_and_wait)
        self._circuit = SendCircuit(self._kafka_writable,
                                    probe_interval_s=probe_interval_ms / 1000,
                                    where=",".join(self.bootstrap_servers))
        self.spool = spool
        slots = Path(membership_dir) if membership_dir else DEFAULT_MEMBERSHIP_DIR
        self._slot: PerProcess[ProcessSlot] | None = (
            PerProcess(lambda: ProcessSlot(slots, group_id)) if static_membership else None)
        self._slot_warned = False
        self._pollers = PollerPool(self._make_poller)
        self._flusher: threading.Thread | None = None
        self._flusher_lock = threading.Lock()
        self._batch = threading.local()
        if self.principal.sasl:
            self.add_middleware(CredentialsCheck())

    # -- declaring -------------------------------------------------------

    def declare_actor(self, actor: dramatiq.Actor) -> None:
        if self.priority_queues and actor.queue_name == "default":
            actor.queue_name = self.queue_for_priority(actor.priority)
        super().declare_actor(actor)

    def queue_for_priority(self, priority: int) -> str:
        """The queue (topic) of the band an actor priority falls in."""
        for ceiling, queue_name in self.priority_queues:
            if priority <= ceiling:
                return queue_name
        return self.priority_queues[-1][1]

    def declare_queue(self, queue_name: str) -> None:
        if queue_name in self.queues:
            return
        self.emit_before("declare_queue", queue_name)
        self.queues.add(queue_name)
        self.emit_after("declare_queue", queue_name)
        delayed = dq_name(queue_name)
        self.delay_queues.add(delayed)
        # Without this the worker never starts a consumer for the delay topic.
        self.emit_after("declare_delay_queue", delayed)

    def get_declared_queues(self) -> set[str]:
        return self.queues.copy()

    # -- sending ----------------------------------------------------------

    def enqueue(self, message: dramatiq.Message, *, delay: int | None = None) -> dramatiq.Message:
        queue_name = message.queue_name
        if q_name(queue_name) not in self.queues:
            raise QueueNotFound(queue_name)
        if delay is not None:
            queue_name = dq_name(queue_name)
            message = message.copy(
                queue_name=queue_name,
                options={**message.options, "eta": current_millis() + delay},
            )
        self.emit_before("enqueue", message, delay)
        options = message.options
        key = options.get(PARTITION_KEY_OPTION)
        if key is None:
            # partition_key is declared as an actor option, so an actor may set
            # one for all its messages; a message's own key still wins.
            actor = self.actors.get(message.actor_name)
            key = actor.options.get(PARTITION_KEY_OPTION) if actor is not None else None
        headers = [
            (MESSAGE_ID_HEADER, message.message_id.encode()),
            (ACTOR_HEADER, message.actor_name.encode()),
        ]
        traceparent = options.get(TRACEPARENT)
        if traceparent:
            headers.append((TRACEPARENT, traceparent.encode()))
        batch: _Batch | None = getattr(self._batch, "current", None)
        if batch is not None:
            self._send_in_batch(batch, _Staged(message, queue_name, key, message.encode(),
                                               headers))
            self.emit_after("enqueue", message, delay)
            return message
        value, codec_headers = self.payload_codec.encode(queue_name, message.encode())
        if codec_headers:
            headers += codec_headers
        if self._spooling():
            # Kafka is away, or records wait for it: join them, in order
            # (sealed as Kafka would hold them, when there are keys).
            self._spool_record(queue_name, key, value, headers)
        else:
            self._send_one(queue_name, key, value, headers)
        self.emit_after("enqueue", message, delay)
        return message

    def _send_one(self, queue_name: str, key: Any, value: bytes,
                  headers: list[tuple[str, bytes]]) -> None:
        """Send one record and wait for Kafka's acknowledgement; spool it if
        Kafka can't be reached and there is a spool."""
        try:
            self._circuit.check()
            # Once per topic and process, and not part of the send's time: on a
            # Kafka just started, making the topic alone can take the 2 s.
            self.queue_admin.ensure_topics(queue_name)
            deadline = time.monotonic() + self.send_timeout_ms / 1000
            future = self._produce(self._made(self._producer, queue_name), queue_name, value,
                                   key, headers)
            self._wait(future, queue_name, timeout_s=max(0.0, deadline - time.monotonic()))
        except ConnectionFailed as e:
            self._note_failure(e, queue_name)
            if self.spool is None or not _unreachable(e):
                raise
            self._spool_record(queue_name, key, value, headers)

    def _send_in_batch(self, batch: _Batch, staged: _Staged) -> None:
        """Gather one message of a ``batch()``; hand what is gathered to the
        producer once there are :data:`BATCH_CHUNK`. Their outcome is waited
        for when the block ends."""
        topic = staged.topic
        try:
            # The circuit may open mid-block (another thread's send found Kafka
            # away): later sends of the block fail at once, as single ones do.
            self._circuit.check()
            if topic not in batch.producers:
                # Once per topic and block, at the send itself: a Kafka that
                # can't be reached fails the first send, not the block's end.
                self.queue_admin.ensure_topics(topic)
                batch.producers[topic] = self._made(self._bulk_producer, topic)
        except ConnectionFailed as e:
            self._refuse(batch, staged.message, topic, e)
            raise
        batch.staged.append(staged)
        if len(batch.staged) >= BATCH_CHUNK:
            self._hand_over(batch)

    def _hand_over(self, batch: _Batch) -> None:
        """Seal what the block gathered and give it to the producer, each
        step over all of it in turn (see :data:`BATCH_CHUNK`)."""
        staged, batch.staged = batch.staged, []
        encode = self.payload_codec.encode
        sealed = [encode(s.topic, s.body) for s in staged]
        for number, (s, (value, codec_headers)) in enumerate(zip(staged, sealed, strict=True)):
            try:
                future = self._produce(batch.producers[s.topic], s.topic, value, s.key,
                                       s.headers + codec_headers if codec_headers
                                       else s.headers)
            except ConnectionFailed as e:
                batch.lost += [(later.message, e) for later in staged[number:]]
                self._refuse(batch, s.message, s.topic, e)
                raise
            batch.pending.append((s.message, future))

    def _hand_over_after_error(self, batch: _Batch) -> None:
        """The block raised an error of its own: what it sent before that is
        sent all the same, as lone sends before the error would have been,
        and the block's error is what the caller sees."""
        try:
            self._hand_over(batch)
        except ConnectionFailed as e:
            self.logger.warning("%d message(s) sent in a batch before it failed could not be "
                                "sent either: %s", len(batch.lost), e)

    def _refuse(self, batch: _Batch, message: dramatiq.Message, topic: str,
                error: ConnectionFailed) -> None:
        """Note a send of the block that could not reach the producer: batch()
        turns it into BatchSendError naming this message."""
        self._note_failure(error, topic)
        batch.refused = (message, error)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Send many messages and wait for Kafka once, at the end of the block.

        Raises :class:`BatchSendError` naming the messages Kafka didn't take.
        Batches are per thread; nested batches join the outer one.
        """
        if getattr(self._batch, "current", None) is not None:
            yield
            return
        batch = self._batch.current = _Batch()
        aborted: ConnectionFailed | None = None
        try:
            yield
            self._hand_over(batch)  # what is left
        except ConnectionFailed as e:
            refused = batch.refused
            if refused is None or refused[1] is not e:
                self._hand_over_after_error(batch)
                raise
            # A send of this batch could not even reach the producer (Kafka
            # unreachable): report it, and what else failed, as the batch's error.
            aborted = e
        except BaseException:
            self._hand_over_after_error(batch)
            raise
        finally:
            self._batch.current = None
        failed: list[tuple[dramatiq.Message, BaseException]] = []
        # One deadline for the whole block, not a send's timeout per message.
        deadline = time.monotonic() + self.batch_timeout_ms / 1000
        bulk = self._bulk_producer.made_here()
        if batch.pending and bulk is not None:
            # Don't wait out the linger. What did not make it in time is
            # reported message by message below.
            with contextlib.suppress(KafkaError):
                bulk.flush(timeout=max(0.0, deadline - time.monotonic()))
        for message, future in batch.pending:
            try:
                # (After the flush most are done: then no time is left to compute.)
                self._wait(future, message.queue_name, timeout_s=0.0 if future.is_done
                           else max(0.0, deadline - time.monotonic()))
            except ConnectionFailed as e:
                failed.append((message, e.__cause__ or e))
        refused = batch.refused
        if aborted is not None and refused is not None and all(
                message is not refused[0] for message, _ in batch.lost):
            # A send() of the block that failed itself (circuit, topics).
            failed.append((refused[0], aborted.__cause__ or aborted))
        failed += [(message, e.__cause__ or e) for message, e in batch.lost]
        if failed:
            raise BatchSendError(failed, self.bootstrap_servers) from aborted

    # -- when Kafka is away (see broker.circuit and broker.spool) -----------------

    def _note_failure(self, error: ConnectionFailed, topic: str | None = None) -> None:
        """Tell the circuit when a send found Kafka unable to take it (not when
        Kafka refused the record for itself, or the circuit was open already)."""
        if not _unreachable(error) or isinstance(error, CircuitOpen):
            return
        if getattr(error, "maybe_sent", False):
            # The record reached the producer, so a broker gave it metadata a
            # moment ago: on a cluster one broker may be failing over while the
            # others take sends. The circuit asks before it opens.
            self._circuit.suspect(error.__cause__ or error, topic)
        else:
            self._circuit.failed(error.__cause__ or error)

    def _kafka_writable(self, topic: str | None) -> Unwritable | None:
        """Why a send to ``topic`` can't succeed now, or None (the circuit's probe)."""
        options = {"bootstrap_servers": self.bootstrap_servers, "client_id": self.client_id,
                   **self._admin_options,
                   "bootstrap_timeout_ms": min(self.send_timeout_ms, 5_000)}
        return probe_writable(lambda: KafkaAdminClient(**options), topic,
                              acks_all=self._producer_options.get("acks") in ("all", -1))

    def _spooling(self) -> bool:
        return self.spool is not None and (self._circuit.is_open or self._flusher is not None
                                           or self._spool_has_records())

    def _spool_has_records(self) -> bool:
        # Records a process that died left behind: read once per process.
        assert self.spool is not None
        if getattr(self, "_spool_checked_pid", None) != os.getpid():
            self._spool_checked_pid = os.getpid()
            if self.spool.depth():
                self._start_flusher()
                return True
        return False

    def _spool_record(self, topic: str, key: Any, value: bytes,
                      headers: list[tuple[str, bytes]]) -> None:
        assert self.spool is not None
        if key is not None and not isinstance(key, bytes):
            key = str(key).encode()
        self.spool.append(topic, key, value, headers)
        self._start_flusher()

    def _start_flusher(self) -> None:
        with self._flusher_lock:
            if self._flusher is None or not self._flusher.is_alive():
                self._flusher = threading.Thread(target=self._flush_spool_forever,
                                                 name="kafka-spool-flusher", daemon=True)
                self._flusher.start()

    def _flush_spool_forever(self) -> None:
        try:
            while self.flush_spool(timeout_s=self.send_timeout_ms / 1000 * 10) > 0:
                self._circuit.wait_closed(self.send_timeout_ms / 1000)
        except Exception:
            self.logger.exception("The send spool's flusher failed; it starts again with"
                                  " the next send.")
        finally:
            with self._flusher_lock:
                self._flusher = None

    def flush_spool(self, *, timeout_s: float, batch: int = 500) -> int:
        """Send what the spool holds, oldest first, deleting each record once
        Kafka acknowledged it; return how many still wait (Kafka away, or out
        of time)."""
        if self.spool is None:
            return 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._circuit.is_open:
                return self.spool.depth()
            records = self.spool.oldest(batch)
            if not records:
                return 0
            sent: list[int] = []
            try:
                futures = [(r.id, self._send(r.topic, r.value, key=r.key, headers=r.headers))
                           for r in records]
                for record_id, future in futures:
                    self._wait(future, "the spool's topics",
                               timeout_s=max(self.send_timeout_ms / 1000,
                                             deadline - time.monotonic()))
                    sent.append(record_id)
            except ConnectionFailed as e:
                self._note_failure(e)
                return self.spool.depth() - len(sent)
            finally:
                self.spool.delete(sent)
        return self.spool.depth()

    def _send(self, topic: str, value: bytes, *, key: Any = None,
              headers: list[tuple[str, bytes]] | None = None) -> FutureRecordMetadata:
        self.queue_admin.ensure_topics(topic)
        return self._produce(self._made(self._producer, topic), topic, value, key, headers)

    def _made(self, holder: PerProcess[KafkaProducer], topic: str) -> KafkaProducer:
        """This process's producer from ``holder``; making it can fail too
        (Kafka unreachable at bootstrap)."""
        try:
            return holder.get()
        except KafkaError as e:
            raise self._not_handed_over(topic, e) from e

    def _produce(self, producer: KafkaProducer, topic: str, value: bytes, key: Any,
                 headers: list[tuple[str, bytes]] | None) -> FutureRecordMetadata:
        if key is not None and not isinstance(key, bytes):
            key = str(key).encode()
        try:
            return producer.send(topic, value=value, key=key, headers=headers)
        except KafkaError as e:
            raise self._not_handed_over(topic, e) from e

    def _not_handed_over(self, topic: str, error: KafkaError) -> ConnectionFailed:
        """What a send raises when the record never reached the producer."""
        if self.events is not None:
            self.events(RecordSent(topic, False))
        return self.principal.denied(error, f"sending to {topic!r}") or _send_failed(
            f"can't send to {topic!r} on {','.join(self.bootstrap_servers)}: {error}",
            maybe_sent=False)

    def _wait(self, future: FutureRecordMetadata, topic: str,
              timeout_s: float | None = None) -> None:
        try:
            future.get(timeout=self.send_timeout_ms / 1000 if timeout_s is None else timeout_s)
        except KafkaError as e:
            if self.events is not None:
                self.events(RecordSent(topic, False))
            # The record was handed to the producer: Kafka may have it, though
            # its answer did not come in time.
            raise self.principal.denied(e, f"sending to {topic!r}") or _send_failed(
                f"Kafka at {','.join(self.bootstrap_servers)} did not take a message "
                f"for {topic!r}: {e}", maybe_sent=True) from e
        if self.events is not None:
            self.events(RecordSent(topic, True))

    def _produce_and_wait(self, topic: str, value: bytes, key: bytes | None,
                          headers: list[tuple[str, bytes]]) -> None:
        """Used for dead letters: return only once Kafka has the record."""
        self._wait(self._send(topic, value, key=key, headers=headers), topic)

    @property
    def producer(self) -> KafkaProducer:
        """This process's producer for single sends (see :mod:`broker.per_process`)."""
        return self._producer.get()

    def check_credentials(self) -> None:
        """Connect this process's admin client; raise
        :class:`~broker.access.AuthenticationFailed` if Kafka rejects the
        credentials. A Kafka that doesn't answer is only logged: consumers
        and senders wait for it as they always do."""
        try:
            self._admin.get()
        except KafkaError as e:
            denied = self.principal.denied(e, "connecting")
            if denied is not None:
                raise denied from e
            self.logger.warning("Kafka at %s did not answer (%s); going on.",
                                ",".join(self.bootstrap_servers), e)

    @property
    def admin(self) -> KafkaAdminClient:
        """This process's admin client (see :mod:`broker.per_process`)."""
        return self._admin.get()

    # -- consuming ----------------------------------------------------------

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> _KafkaConsumer:
        if q_name(queue_name) not in self.queues:
            raise QueueNotFound(queue_name)
        # Every queue's topics, not only this one's: the worker's consumers
        # share one group, and whichever leads it assigns all their topics, so
        # they must all exist before the first consumer joins.
        for declared in sorted(self.queues):
            self.queue_admin.ensure_topics(declared)
        try:
            poller, feed = self._pollers.attach(queue_name)
        except KafkaError as e:
            raise self.principal.denied(e, f"consuming {queue_name!r}") or ConnectionClosed(
                f"can't consume {queue_name!r} from {','.join(self.bootstrap_servers)}: {e}"
            ) from None
        return _KafkaConsumer(queue_name, prefetch, timeout, poller=poller, feed=feed,
                              principal=self.principal, dead_letters=self._dead_letters,
                              events=self.events, payload_codec=self.payload_codec)

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        if signal == "worker_boot":
            # The worker starts a consumer for each of these right after: the
            # process's group member subscribes to them all at once.
            worker = args[0]
            wanted = getattr(worker, "consumer_whitelist", None)
            self._pollers.expect(
                queue for queue in self.queues | self.delay_queues
                if not wanted or q_name(queue) in wanted)
        super().emit_before(signal, *args, **kwargs)

    def _make_poller(self, topics: list[str], index: int) -> GroupPoller:
        options = {"bootstrap_servers": self.bootstrap_servers, **_CLIENT_DEFAULTS,
                   "group_id": self.group_id, "client_id": self.client_id,
                   # As for the producer: give up on an unreachable Kafka within
                   # max_block_ms (Dramatiq retries the consumer), not after 30 s
                   # during which the worker can't even stop this thread.
                   "bootstrap_timeout_ms": self._producer_options["max_block_ms"],
                   **self._client_options, **self._consumer_options}
        leave = None
        slot = self._membership_slot()
        if slot is not None:
            instance_id = slot.instance_id(index)
            options["group_instance_id"] = instance_id

            def leave() -> None:
                self.queue_admin.remove_static_member(instance_id)

        return GroupPoller(options, topics, leave=leave,
                           precedence=[name for _, name in self.priority_queues])

    def _membership_slot(self) -> ProcessSlot | None:
        """This process's slot, or None for dynamic membership: also when no
        slot can be taken (a folder this user can't write), since a consumer
        that joins the usual way beats one Dramatiq restarts every 3 s forever."""
        if self._slot is None:
            return None
        try:
            return self._slot.get()
        except OSError as e:
            if not self._slot_warned:
                self._slot_warned = True
                self.logger.warning(
                    "Cannot take a static membership slot (%s: %s); consumers join the group"
                    " without one, so a restarted worker waits out its old session. Give"
                    " membership_dir a folder this user can write.", type(e).__name__, e)
            return None

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        # A retry Kafka didn't take must not end in an ack (see
        # broker.after_processing); every other signal as Dramatiq does it.
        if signal == "process_message":
            emit_after_processing(self, *args, patience_s=self.hook_patience_s, **kwargs)
        else:
            super().emit_after(signal, *args, **kwargs)

    # -- admin (see broker.admin) ---------------------------------------------

    def join(self, queue_name: str, *, timeout: int | None = None) -> None:
        """Wait until the group has processed and committed every message of
        the queue and its delay queue (raises QueueJoinTimeout)."""
        if q_name(queue_name) not in self.queues:
            raise QueueNotFound(queue_name)
        self.queue_admin.join(queue_name, timeout_ms=timeout)

    def backlog(self, topic: str) -> int:
        """Messages on ``topic`` not yet committed by the group."""
        return self.queue_admin.backlog(topic)

    def flush(self, queue_name: str) -> None:
        """Discard every message waiting on the queue, its delay and dead-letter topics."""
        self.queue_admin.flush(queue_name)

    def flush_all(self) -> None:
        for queue_name in self.queues:
            self.flush(queue_name)

    def close(self) -> None:
        for producer in (self._producer, self._bulk_producer):
            producer.close(lambda p: p.close(timeout=self.send_timeout_ms / 1000))
        self._admin.close(lambda a: a.close())
        self._reader.close(lambda r: r.close())


def _producer(options: dict[str, Any]) -> KafkaProducer:
    producer = KafkaProducer(**options)
    # Without it, one send that times out during a broker's failover can
    # stop the producer for good (see the fix).
    apply_producer_fixes(producer)
    return producer


def _admin(options: dict[str, Any]) -> KafkaAdminClient:
    admin = KafkaAdminClient(**options)
    # Shared by the process's threads: consumers starting, senders, scrapes
    # (see the fix).
    apply_admin_fixes(admin)
    return admin


def _unreachable(error: ConnectionFailed) -> bool:
    """Whether a failed send means Kafka could not be reached (retriable
    kafka-python errors: timeouts, lost connections), not that it refused the
    record for itself (too large, not authorised): only the first opens the
    circuit, and only it is worth spooling."""
    if isinstance(error, CircuitOpen):
        return True
    cause = error.__cause__
    return isinstance(cause, KafkaError) and bool(cause.retriable)


def _send_failed(text: str, *, maybe_sent: bool) -> ConnectionFailed:
    """A ConnectionFailed that says whether the record may have reached Kafka."""
    error = ConnectionFailed(text)
    error.maybe_sent = maybe_sent  # type: ignore[attr-defined]
    return error
