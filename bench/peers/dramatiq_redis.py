"""Dramatiq's own RedisBroker, against a redis-server the harness started."""

from __future__ import annotations

from _common import Params
from _dramatiq_peer import System, run
from dramatiq.brokers.redis import RedisBroker


class DramatiqRedis(System):
    def make_broker(self, params: Params) -> RedisBroker:
        # A namespace per run: nothing left by an earlier run is drained.
        return RedisBroker(url=params["redis_url"], namespace=params["group"])


if __name__ == "__main__":
    run(DramatiqRedis())
