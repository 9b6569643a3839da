"""Dramatiq's in-memory StubBroker: what Dramatiq itself costs per message,
with no broker behind it. Not a peer a user would pick; the most any
Dramatiq broker (ours included) could reach on this machine."""

from __future__ import annotations

import dramatiq
from _common import Params, payload
from _dramatiq_peer import System, run
from dramatiq.brokers.stub import StubBroker


class DramatiqStub(System):
    def make_broker(self, params: Params) -> StubBroker:
        broker = StubBroker()
        if "n" in params:
            # A memory queue can't be filled by the harness's separate fill
            # process, so a drain's backlog is queued here, before the clock.
            broker.declare_queue(params["queue"])
            body = payload(params["payload_bytes"])
            for _ in range(params["n"]):
                broker.enqueue(dramatiq.Message(queue_name=params["queue"],
                                                actor_name="bench_noop", args=(0.0, body),
                                                kwargs={}, options={}))
        return broker


if __name__ == "__main__":
    run(DramatiqStub())
