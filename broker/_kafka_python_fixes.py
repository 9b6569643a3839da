"""Workarounds for kafka-python behaviours that hurt a Dramatiq worker, each
with the upstream behaviour it works around.

Two kinds:

- Per client (:func:`apply_fixes`, :data:`FIXES` for consumers;
  :func:`apply_producer_fixes`, :data:`PRODUCER_FIXES` for producers;
  :func:`apply_admin_fixes`, :data:`ADMIN_FIXES` for admin clients): each
  touches one client only, and does nothing when kafka-python's internals no longer look
  as expected, so an upgrade turns it off rather than breaking the client.
  ``tests/kafka_broker/test_kafka_python_fixes.py`` fails when one of them
  stops applying (the internals moved).
- Per process (:func:`install`, :data:`PROCESS_FIXES`): the connection code
  every client shares, patched in its classes when :mod:`broker.kafka` is
  imported (a client's constructor already connects, too early for a
  per-client patch); :func:`removed` takes them out for a test of upstream
  behaviour. Each checks that the code it changes still looks as expected
  and does nothing otherwise. ``tests/test_kafka_python_sasl_fixes.py``
  fails when one stops applying, or when the upstream behaviour it works
  around is gone (time to delete it).

Seen with kafka-python 3.0.12 (``kafka/net/transport.py``,
``kafka/net/connection.py``, ``kafka/net/manager.py`` for the second kind).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import kafka.errors as errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import UnknownBrokerIdError
from kafka.net.connection import KafkaConnection
from kafka.net.manager import KafkaConnectionManager
from kafka.net.transport import KafkaSSLTransport, KafkaTCPTransport

from broker.compiled_records import parse_records_in_c

__all__ = ["ADMIN_FIXES", "FIXES", "PROCESS_FIXES", "PRODUCER_FIXES", "SASL_REFUSALS", "applied",
           "apply_admin_fixes", "apply_fixes", "apply_producer_fixes", "install", "removed"]

logger = logging.getLogger(__name__)


# -- per consumer ----------------------------------------------------------


def apply_fixes(consumer: KafkaConsumer) -> list[str]:
    """Apply every workaround to a subscribed ``consumer`` (``subscribe()``
    resets what metadata it keeps); return the names of those applied."""
    return [name for name, fix in FIXES.items() if fix(consumer)]


def finish_every_join(consumer: KafkaConsumer) -> bool:
    """Make kafka-python finish every group join it starts.

    Upstream: ``join_group_async`` waits for the JoinGroup/SyncGroup task only
    as long as the current ``poll()`` allows, leaving the task running when the
    poll times out. Two bugs follow; both leave a member in REBALANCING with no
    partitions until the group expels it, and both bite a group like a
    Dramatiq worker's, whose consumers subscribe to different topics and poll
    with short timeouts:

    1. If the task finished while no poll was waiting for it, the next poll
       sees ``is_done`` and sends a *new* JoinGroup, throwing the finished
       join's assignment away (and restarting the rebalance for everyone).
    2. When the leader joins because its metadata changed, its own
       assignment records the new metadata, so ``need_rejoin()`` turns false
       while the join is still in flight: no later poll collects its result.

    The fix hands a finished join's result to the next poll instead of
    dropping it, and keeps ``need_rejoin()`` true until a started join has
    been collected.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    needed = ("_join_task", "rejoining", "join_group_async", "need_rejoin", "_manager")
    if coordinator is None or not all(hasattr(coordinator, name) for name in needed):
        return False
    join_group_async = coordinator.join_group_async
    need_rejoin = coordinator.need_rejoin

    async def collect_finished_join(timeout_ms: int | None = None) -> Any:
        task = coordinator._join_task
        if task is not None and task.is_done and task.succeeded():
            assignment = task.value
            # A pending task that yields the finished join's result: not
            # is_done yet, so join_group_async awaits it instead of rejoining.
            coordinator._join_task = coordinator._manager.call_soon(lambda: assignment)
        return await join_group_async(timeout_ms=timeout_ms)

    def need_rejoin_or_unfinished() -> bool:
        return bool(coordinator.rejoining) or bool(need_rejoin())

    coordinator.join_group_async = collect_finished_join
    coordinator.need_rejoin = need_rejoin_or_unfinished
    return True


def know_every_topic(consumer: KafkaConsumer) -> bool:
    """Keep metadata for every topic, not only the ones this consumer reads.

    Upstream: the group's leader assigns every member's topics, but asks for
    metadata of the topics other members subscribe to only while assigning,
    where it "cannot block on metadata updates" (ConsumerCoordinator.
    _perform_assignment). The first assignment therefore leaves those topics
    out, logs "No partition metadata for topic …" for each (a worker's
    consumers subscribe to one topic each), and a second rebalance follows
    once the metadata arrives: a noisy and slower start. Worse, a consumer's
    first join usually completes before its first metadata answer, so even
    its own topic is unknown to it then.

    The fix keeps metadata for all topics, and fetches it once before the
    first join (``KafkaConsumer.topics()``, a blocking call), so whichever
    consumer leads already knows every topic.

    It fetches it at once: upstream holds any refresh back until
    ``retry_backoff_ms`` (100 ms) after the previous one, successful ones
    included (``ClusterMetadata.ttl``), so the refresh the consumer's
    bootstrap had just made kept every worker's start waiting 100 ms here,
    half of its time to the first message. Java's consumer refreshes at once
    when it is newly interested in metadata: ``Metadata.
    requestUpdateForNewTopics()`` ("Override the timestamp of last refresh to
    let immediate update") sets ``lastRefreshMs = 0``; so does this. Failed
    refreshes still back off (kafka-python's exponential connection delay,
    KIP-580, is kept apart from this timestamp).
    """
    cluster = getattr(consumer, "_cluster", None)
    if cluster is None or not hasattr(cluster, "need_all_topic_metadata") \
            or not hasattr(cluster, _LAST_REFRESH):
        return False
    cluster.need_all_topic_metadata = True
    _refresh_at_once(cluster)
    consumer.topics()
    return True


#: Where kafka-python's ClusterMetadata keeps the time of its last refresh
#: attempt, from which it counts retry_backoff_ms.
_LAST_REFRESH = "_last_refresh_ms"


def _refresh_at_once(cluster: Any) -> None:
    """Let ``cluster``'s next metadata refresh go at once: what Java's
    ``Metadata.requestUpdateForNewTopics()`` does (see :func:`know_every_topic`)."""
    setattr(cluster, _LAST_REFRESH, 0)


def hand_back_resumed_records(consumer: KafkaConsumer) -> bool:
    """Give a resumed partition's parked records back, so it is read again.

    Upstream (``Fetcher.fetched_records``, its port of KAFKA-7548): the rest
    of a fetch for a partition paused while it was being handed out is
    parked, and is given back once the partition is resumed only when
    ``_next_partition_records is None``. But a drained one stays in that slot
    (falsy, not None) until a later fetch's records replace it, and every
    fetch of another partition leaves one there; meanwhile a partition with
    parked records is never fetched again (``_fetchable_partitions`` skips
    it). A worker whose queue was paused while its delay queue kept being
    fetched stopped reading that partition for good.

    The fix empties the slot when what it holds is drained, before each call.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    needed = ("_next_partition_records", "_paused_partition_records", "fetched_records")
    if fetcher is None or not all(hasattr(fetcher, name) for name in needed):
        return False
    fetched_records = fetcher.fetched_records

    def fetched_records_after_clearing_a_drained_slot(*args: Any, **kwargs: Any) -> Any:
        current = fetcher._next_partition_records
        if current is not None and not current:
            fetcher._next_partition_records = None
        return fetched_records(*args, **kwargs)

    fetcher.fetched_records = fetched_records_after_clearing_a_drained_slot
    return True


def fetch_new_topics_at_once(producer: KafkaProducer) -> bool:
    """Fetch a topic's metadata at once when the producer first sends to it.

    Upstream: the producer asks for the metadata of a topic it has not sent
    to yet and blocks the send until it comes, but the refresh is held back
    until ``retry_backoff_ms`` (100 ms) after the previous one, so a
    process's first send, made right after the producer's bootstrap
    refreshed, waited 100 ms of its 130 (and so did the first send to each
    topic soon after another's). Java's producer refreshes at once
    (``ProducerMetadata.add`` calls ``requestUpdateForNewTopics()``); so
    does this, as :func:`know_every_topic` does for consumers.
    """
    cluster: Any = getattr(producer, "_metadata", None)
    add_topic = getattr(cluster, "add_topic", None)
    if add_topic is None or not hasattr(cluster, _LAST_REFRESH) \
            or not isinstance(getattr(cluster, "_topics", None), set):
        return False

    def add_topic_at_once(topic: str) -> Any:
        if topic not in cluster._topics:
            _refresh_at_once(cluster)
        return add_topic(topic)

    cluster.add_topic = add_topic_at_once
    return True


def renew_a_dropped_producer_id(producer: KafkaProducer) -> bool:
    """Let an idempotent producer get a new producer id after dropping its own.

    Upstream: when a batch that was already sent expires (a send that timed
    out while a broker failed over: the in-sync replicas still counted a
    crashed broker), the sender calls ``TransactionManager.reset_producer_id``,
    which clears the producer id but leaves the state READY. From then on the
    sender sends nothing until it has a producer id, and asks for one only in
    state UNINITIALIZED (``init_producer_id``): it never asks, and every later
    send times out until the process restarts. Seen on the three-node local
    Kafka when a node was SIGKILLed (``make drills``' cluster drills).

    The fix puts the state back to UNINITIALIZED when the id is dropped, so
    the sender's next loop asks for a new one, as it did for the first.
    """
    manager = getattr(producer, "_transaction_manager", None)
    needed = ("reset_producer_id", "is_transactional", "init_producer_id", "_lock",
              "_current_state")
    if manager is None or not all(hasattr(manager, name) for name in needed):
        return False
    if manager.is_transactional():
        return False  # a transactional producer must not reset (kafka-python raises)
    reset_producer_id = manager.reset_producer_id
    uninitialized = type(manager._current_state).UNINITIALIZED

    def reset_and_ask_again() -> None:
        reset_producer_id()
        with manager._lock:
            manager._current_state = uninitialized

    manager.reset_producer_id = reset_and_ask_again
    return True


def refresh_a_leader_that_is_no_broker(producer: KafkaProducer) -> bool:
    """Treat a partition leader the metadata lists no broker for as not
    ready, and fetch fresh metadata, instead of failing every sender loop.

    Upstream: when the controller fences a crashed broker, a metadata answer
    can list the brokers without it while a partition it led still names it
    as leader. The sender then calls ``maybe_connect`` on that leader, which
    raises ``UnknownBrokerIdError`` ("Uncaught error in kafka producer I/O
    thread") on every loop, before the loop sends or asks for metadata: the
    stale leader stays (the next refresh is ``metadata_max_age_ms``, 5 min,
    away) and the producer sends nothing until the broker is back. Seen when
    the node of the active controller was SIGKILLed on the three-node local
    Kafka.
    """
    sender = getattr(producer, "_sender", None)
    client: Any = getattr(sender, "_client", None)
    metadata: Any = getattr(producer, "_metadata", None)
    if not hasattr(client, "maybe_connect") or not hasattr(metadata, "request_update"):
        return False
    maybe_connect = client.maybe_connect

    def maybe_connect_to_a_known_broker(node_id: int, **kwargs: Any) -> Any:
        try:
            return maybe_connect(node_id, **kwargs)
        except UnknownBrokerIdError:
            metadata.request_update()
            return None

    client.maybe_connect = maybe_connect_to_a_known_broker
    return True


def fail_only_the_batch_kafka_refused(producer: KafkaProducer) -> bool:
    """Fail just the batch when Kafka refuses its records for good (too
    large for the topic, invalid, not authorized), and keep the producer.

    Upstream: ``TransactionManager.classify_batch_error`` ends with "non-
    transactional idempotent producers just fail the batch without any state
    reset", then returns ``ERROR_CLASS_FATAL`` for them: the sender moves the
    producer to its fatal state, and every later send of the process fails
    ("Aborting producer batches due to fatal error"). One record over a
    topic's ``max.message.bytes`` (``MESSAGE_TOO_LARGE``) was enough: a
    worker could then neither retry, dead-letter nor send anything.

    The fix classifies those errors as needing a new producer id instead
    (what kafka-python does before KIP-360 brokers): the batch fails, the
    sequence numbers start again under a new id (the refused batch had taken
    some), and the producer goes on. Errors upstream names fatal for every
    producer (cluster authorization, fencing) stay fatal.
    """
    manager = getattr(producer, "_transaction_manager", None)
    needed = ("classify_batch_error", "is_transactional", "ERROR_CLASS_FATAL",
              "ERROR_CLASS_NEEDS_PRODUCER_ID_RESET", "_FATAL_ERRORS")
    if manager is None or not all(hasattr(manager, name) for name in needed):
        return False
    if manager.is_transactional():
        return False  # a transactional producer aborts instead (upstream's ABORTABLE)
    classify = manager.classify_batch_error
    always_fatal = manager._FATAL_ERRORS

    def classify_keeping_the_producer(error: Any, batch: Any, log_start_offset: int = -1) -> str:
        verdict: str = classify(error, batch, log_start_offset=log_start_offset)
        error_type = error if isinstance(error, type) else type(error)
        if verdict == manager.ERROR_CLASS_FATAL and error_type not in always_fatal:
            return str(manager.ERROR_CLASS_NEEDS_PRODUCER_ID_RESET)
        return verdict

    manager.classify_batch_error = classify_keeping_the_producer
    return True


def apply_producer_fixes(producer: KafkaProducer) -> list[str]:
    """Apply every producer workaround; return the names of those applied."""
    return [name for name, fix in PRODUCER_FIXES.items() if fix(producer)]


# -- per admin client ------------------------------------------------------


def one_caller_at_a_time(admin: KafkaAdminClient) -> bool:
    """Let the threads of a process use one admin client in turn.

    Upstream: an admin call runs on the client's IO thread and may be made
    from several threads at once (``KafkaConnectionManager.run``), but each
    request goes to ``least_loaded_node()``, which finds no node once the
    one connection has ``max_in_flight_requests_per_connection`` (5)
    requests in flight, and the request then fails at once with
    ``NodeNotReadyError('No node_id provided')`` instead of waiting for the
    connection (Java's ``AdminClient`` keeps a call queued until a node can
    take it). A worker starting its consumers (a topic check each) while
    threads of the same process sent to new queues made six or more at
    once, and the sends failed. Taking turns, a call waits for the calls
    ahead of it instead: they are few and short (topic checks, lag).
    """
    manager: Any = getattr(admin, "_manager", None)
    run = getattr(manager, "run", None)
    if not callable(run):
        return False
    turn = threading.Lock()

    def run_in_turn(coro: Any, *args: Any) -> Any:
        with turn:
            return run(coro, *args)

    manager.run = run_in_turn
    return True


def apply_admin_fixes(admin: KafkaAdminClient) -> list[str]:
    """Apply every admin client workaround; return the names of those applied."""
    return [name for name, fix in ADMIN_FIXES.items() if fix(admin)]


#: Every workaround, by name, in the order applied. (The last is for speed,
#: not a bug: kafka-python parses records in pure Python.)
FIXES = {
    "finish_every_join": finish_every_join,
    "know_every_topic": know_every_topic,
    "hand_back_resumed_records": hand_back_resumed_records,
    "parse_records_in_c": parse_records_in_c,
}

#: Every producer workaround, by name.
PRODUCER_FIXES = {
    "fetch_new_topics_at_once": fetch_new_topics_at_once,
    "renew_a_dropped_producer_id": renew_a_dropped_producer_id,
    "refresh_a_leader_that_is_no_broker": refresh_a_leader_that_is_no_broker,
    "fail_only_the_batch_kafka_refused": fail_only_the_batch_kafka_refused,
}

#: Every admin client workaround, by name.
ADMIN_FIXES = {"one_caller_at_a_time": one_caller_at_a_time}


# -- per process -----------------------------------------------------------

#: Errors of a SASL exchange the broker turned down: retrying with the same
#: settings gets the same answer. (Java clients make these fatal as well:
#: ``NetworkClient`` hands an ``AuthenticationException`` to the caller.)
SASL_REFUSALS: tuple[type[errors.KafkaError], ...] = (
    errors.SaslAuthenticationFailedError,
    errors.UnsupportedSaslMechanismError,
)

#: Where a manager keeps the SASL refusals met during its bootstrap.
_REFUSALS = "_willowe_bootstrap_sasl_refusals"

#: Names of the workarounds in force, and how to take each out again.
_applied: dict[str, Callable[[], None]] = {}
_lock = threading.Lock()


def install() -> None:
    """Put every process-wide workaround that still applies in place (idempotent)."""
    with _lock:
        for name, fix in PROCESS_FIXES.items():
            if name in _applied:
                continue
            undo = fix()
            if undo is None:
                logger.warning("kafka-python workaround %r no longer applies to this version; "
                               "its code has changed. Left out.", name)
            else:
                _applied[name] = undo


def applied() -> frozenset[str]:
    """The names of the process-wide workarounds in force."""
    with _lock:
        return frozenset(_applied)


@contextlib.contextmanager
def removed() -> Iterator[None]:
    """Take every process-wide workaround out for the block (tests of
    upstream behaviour)."""
    with _lock:
        undo = list(_applied.items())
        _applied.clear()
        for _, take_out in undo:
            take_out()
    try:
        yield
    finally:
        install()


def _patch(owner: type, name: str, replacement: Callable[..., Any]) -> Callable[[], None]:
    original = owner.__dict__[name]
    setattr(owner, name, replacement)
    return lambda: setattr(owner, name, original)


# -- 1. Data that arrives with a disconnect is dropped ------------------------


def _deliver_data_read_before_a_disconnect() -> Callable[[], None] | None:
    """Hand the protocol what was read before the peer closed the connection.

    Upstream: ``_read_from_sock`` reads everything available with
    ``_sock_recv()``; when that read also meets the end of the stream it
    returns ``(data, error)``, and ``_read_from_sock`` aborts the transport
    with the error and drops ``data``. A broker that answers and then closes
    loses its answer whenever both reach us in one read. It bites a rejected
    SASL exchange: Kafka holds back both its SaslAuthenticate error and the
    disconnect that follows by ``connection.failed.authentication.delay.ms``
    (KIP-306; 100 ms by default), so the two often arrive together, the
    reason ("invalid credentials") is lost and only "socket disconnected"
    is left.

    The fix: when a read returns data and an error together, return the data
    alone; the socket is still at its end, so the next read (the selector
    reports an ended socket readable at once) returns the error.
    """
    read_loop = KafkaTCPTransport.__dict__.get("_read_from_sock")
    owners = (KafkaTCPTransport, KafkaSSLTransport)
    if read_loop is None or "_sock_recv" not in read_loop.__code__.co_names \
            or "abort" not in read_loop.__code__.co_names \
            or not all("_sock_recv" in owner.__dict__ for owner in owners):
        return None
    undo = []
    for owner in owners:
        upstream = owner.__dict__["_sock_recv"]

        def sock_recv(self: KafkaTCPTransport, _upstream: Any = upstream) -> tuple[bytes, Any]:
            data, error = _upstream(self)
            if data and error is not None:
                return data, None
            return data, error

        undo.append(_patch(owner, "_sock_recv", sock_recv))

    def take_all_out() -> None:
        for take_out in undo:
            take_out()

    return take_all_out


# -- 2. A rejected SASL exchange is retried until the bootstrap times out -----


def _fail_bootstrap_on_sasl_refusal() -> Callable[[], None] | None:
    """End a client's bootstrap with the broker's SASL refusal.

    Upstream: ``KafkaConnection.initialize`` catches every error of the
    ApiVersions and SASL steps and closes the connection with it, so the
    manager's ``_connect`` (whose ``except`` would cache a
    ``SaslAuthenticationFailedError`` in ``_auth_failures``, which
    ``get_connection`` then raises) never sees it. ``_do_bootstrap`` takes
    the failed connection like any other and tries again until
    ``bootstrap_timeout_ms``: a wrong password becomes ``KafkaTimeoutError:
    Unable to bootstrap`` after 30 s (every client's constructor blocks on
    it), and the reason is only in a log line.

    The cache itself does not help: ``_connect`` takes the swallowed error
    for a success and clears the node's entry right after the connection
    failed. So the fix keeps its own record, on the manager: while a manager
    has not finished a bootstrap, a connection that fails with a SASL
    refusal records it, and ``_do_bootstrap``'s next ``get_connection``
    raises it, and the client's constructor with it, after one round trip.
    Later connections (a broker restarting, say) are retried as before.
    """
    get_connection = KafkaConnectionManager.__dict__.get("get_connection")
    initialize = KafkaConnection.__dict__.get("initialize")
    if get_connection is None or initialize is None \
            or "bootstrapped" not in KafkaConnectionManager.__dict__ \
            or "close" not in initialize.__code__.co_names:
        return None

    def get_connection_raising_sasl_refusals(
        self: KafkaConnectionManager, node_id: Any, *args: Any, **kwargs: Any
    ) -> KafkaConnection:
        if self.bootstrapped:
            return get_connection(self, node_id, *args, **kwargs)
        refusals: dict[Any, BaseException] = self.__dict__.setdefault(_REFUSALS, {})
        if node_id in refusals:
            raise refusals[node_id]
        new = node_id not in self._conns
        conn = get_connection(self, node_id, *args, **kwargs)
        if new:
            def remember(error: BaseException) -> None:
                if isinstance(error, SASL_REFUSALS):
                    refusals[node_id] = error

            conn.init_future.add_errback(remember)
        return conn

    return _patch(KafkaConnectionManager, "get_connection",
                  get_connection_raising_sasl_refusals)


#: Every process-wide workaround by name; each returns how to take it out,
#: or None when the code it changes is no longer what it expects.
PROCESS_FIXES: dict[str, Callable[[], Callable[[], None] | None]] = {
    "deliver data read before a disconnect": _deliver_data_read_before_a_disconnect,
    "fail bootstrap on a SASL refusal": _fail_bootstrap_on_sasl_refusal,
}

