"""The process-wide kafka-python workarounds (broker/_kafka_python_fixes.py,
for SASL refusals): each still applies, the upstream behaviour it works
around is still there (when it goes, these tests fail: delete the
workaround), and with it in place a refused client hears why at once."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, SaslAuthenticationFailedError
from kafka.net.transport import KafkaTCPTransport

from broker import _kafka_python_fixes
from broker.localkafka.secure import SecureLocalKafka

#: A bootstrap that times out (upstream) should not make the test wait long, in ms.
SHORT_BOOTSTRAP_MS = 1_500

#: What a refused bootstrap may take with the workaround: one TLS handshake
#: and one SCRAM exchange, far below any bootstrap timeout, in seconds.
REFUSAL_BOUND_S = 10.0


def test_every_workaround_applies_to_the_installed_kafka_python() -> None:
    assert _kafka_python_fixes.applied() == set(_kafka_python_fixes.PROCESS_FIXES)


@pytest.fixture
def closed_after_data() -> Iterator[KafkaTCPTransport]:
    """A transport whose peer sent an answer and closed the connection."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.sendall(b"the broker's answer")
    peer.close()
    transport = KafkaTCPTransport(net=None, sock=ours)
    yield transport
    ours.close()


def test_data_read_together_with_a_disconnect_is_handed_over_first(
    closed_after_data: KafkaTCPTransport,
) -> None:
    assert closed_after_data._sock_recv() == (b"the broker's answer", None)
    data, error = closed_after_data._sock_recv()
    assert data == b"" and isinstance(error, KafkaConnectionError)


def test_upstream_still_drops_data_read_together_with_a_disconnect(
    closed_after_data: KafkaTCPTransport,
) -> None:
    with _kafka_python_fixes.removed():
        data, error = closed_after_data._sock_recv()
    # _read_from_sock aborts on the error and never hands `data` on.
    assert data == b"the broker's answer" and isinstance(error, KafkaConnectionError)


def _producer(**options: Any) -> object:
    return KafkaProducer(**options)


def _consumer(**options: Any) -> object:
    return KafkaConsumer(group_id="wrong-password", **options)


def _admin(**options: Any) -> object:
    return KafkaAdminClient(**options)


CLIENTS = pytest.mark.parametrize("make_client", [_producer, _consumer, _admin],
                                  ids=["producer", "consumer", "admin"])


@CLIENTS
def test_a_rejected_password_ends_the_bootstrap_with_the_brokers_reason(
    secure_kafka: SecureLocalKafka, make_client: Callable[..., object],
) -> None:
    options = {**secure_kafka.client_options("web"), "sasl_plain_password": "not-the-password"}
    started = time.monotonic()
    with pytest.raises(SaslAuthenticationFailedError, match="invalid credentials"):
        # (The default bootstrap timeout: 30 s.)
        make_client(bootstrap_servers=secure_kafka.bootstrap_servers, **options)
    assert time.monotonic() - started < REFUSAL_BOUND_S


@CLIENTS
def test_upstream_still_retries_a_rejected_password_until_the_bootstrap_times_out(
    secure_kafka: SecureLocalKafka, make_client: Callable[..., object],
) -> None:
    options = {**secure_kafka.client_options("web"), "sasl_plain_password": "not-the-password"}
    with _kafka_python_fixes.removed(), pytest.raises(KafkaTimeoutError,
                                                      match="Unable to bootstrap"):
        make_client(bootstrap_servers=secure_kafka.bootstrap_servers,
                    bootstrap_timeout_ms=SHORT_BOOTSTRAP_MS, **options)


def test_the_right_password_still_gets_in_and_a_later_client_is_not_poisoned(
    secure_kafka: SecureLocalKafka,
) -> None:
    wrong = {**secure_kafka.client_options("web"), "sasl_plain_password": "not-the-password"}
    with pytest.raises(SaslAuthenticationFailedError):
        KafkaAdminClient(bootstrap_servers=secure_kafka.bootstrap_servers, **wrong)
    # A refusal is recorded on the refused client's own connection manager.
    admin = KafkaAdminClient(bootstrap_servers=secure_kafka.bootstrap_servers,
                             **secure_kafka.client_options("web"))
    try:
        assert isinstance(admin.list_topics(), list)
    finally:
        admin.close()
