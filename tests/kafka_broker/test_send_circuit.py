"""When the send circuit opens: at once when no broker answered at all, and,
when one send was only not acknowledged (a broker failing over, as on a
cluster), only once the probe finds Kafka can't take sends. (On the real
three-node Kafka, with too few replicas in sync: test_localkafka_cluster.py.)"""

from __future__ import annotations

import threading

import pytest
from support import wait_until

from broker.circuit import CircuitOpen, NotEnoughReplicas, SendCircuit, Unwritable

#: How often the circuits of these tests probe, in seconds.
PROBE_INTERVAL_S = 0.2

#: Bound on waiting for a probe on the circuit's thread, in seconds.
PROBED_WITHIN_S = 10.0


class FakeProbe:
    """Answers what the test says, and counts the topics it was asked about."""

    def __init__(self, answer: Unwritable | None) -> None:
        self.answer = answer
        self.asked: list[str | None] = []
        self.called = threading.Event()

    def __call__(self, topic: str | None) -> Unwritable | None:
        self.asked.append(topic)
        self.called.set()
        return self.answer


def test_a_send_with_no_broker_answering_opens_the_circuit_at_once() -> None:
    probe = FakeProbe(None)
    circuit = SendCircuit(probe, probe_interval_s=60, where="k:9092")
    circuit.failed(TimeoutError("Unable to bootstrap"))
    with pytest.raises(CircuitOpen, match=r"Kafka at k:9092 has been unreachable for "
                                          r"\d+\.\ds \(TimeoutError: Unable to bootstrap\)"):
        circuit.check()
    assert probe.asked == []


def test_a_send_not_acknowledged_while_kafka_takes_sends_leaves_the_circuit_closed() -> None:
    # Given a probe that finds Kafka able to take sends (one broker failing over)
    probe = FakeProbe(None)
    circuit = SendCircuit(probe, probe_interval_s=PROBE_INTERVAL_S, where="k:9092")
    # When a send to a topic is not acknowledged in time
    circuit.suspect(TimeoutError("not acknowledged"), "orders")
    # Then the probe is asked about that topic, and sends go on
    assert probe.called.wait(PROBED_WITHIN_S)
    assert wait_until(lambda: not circuit._suspecting, PROBED_WITHIN_S)
    assert probe.asked == ["orders"] and not circuit.is_open
    circuit.check()


def test_a_send_not_acknowledged_opens_the_circuit_when_the_probe_finds_too_few_replicas(
) -> None:
    # Given a probe that finds a partition short of in-sync replicas
    probe = FakeProbe(Unwritable(NotEnoughReplicas, "orders partition 0 has 1 in sync"))
    circuit = SendCircuit(probe, probe_interval_s=PROBE_INTERVAL_S, where="k:9092")
    # When a send is not acknowledged, the circuit opens and says why
    circuit.suspect(TimeoutError("not acknowledged"), "orders")
    assert wait_until(lambda: circuit.is_open, PROBED_WITHIN_S)
    with pytest.raises(NotEnoughReplicas, match="too few in-sync replicas.*orders partition 0"):
        circuit.check()
    # And closes once the probe finds the replicas back
    probe.answer = None
    assert circuit.wait_closed(PROBED_WITHIN_S)
    circuit.check()
