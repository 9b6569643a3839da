"""Serving the dashboard from a test, a metrics endpoint that speaks the
metrics contract, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from starlette.applications import Starlette
from support import wait_until

#: Debian's Chromium (apt-get install chromium chromium-driver; .ci/run does).
CHROMIUM = Path("/usr/bin/chromium")

#: Chromium's flags for a headless run on a machine with no network but the
#: loopback: without the background-networking ones it keeps calling Google's
#: services, and those calls are refused in bursts here.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

#: How long the server may take to start or stop, seconds.
SERVER_TIMEOUT_S = 30.0


@contextmanager
def serve(app: Starlette, port: int) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1:``port`` from a thread; yields its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="dashboard-under-test", daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, SERVER_TIMEOUT_S), "the dashboard did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(SERVER_TIMEOUT_S)


class ContractMetrics:
    """A metrics endpoint with the contract's names (docs: metrics-contract),
    whose values the test sets: what the workers' exposition will carry."""

    def __init__(self, port: int) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter("willowe_messages", "messages by outcome",
                                ["topic", "actor", "outcome"], registry=self.registry)
        self.latency = Histogram("willowe_send_to_accepted_seconds", "send() to accepted",
                                 ["priority"], registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.server, self.thread = start_http_server(port, addr="127.0.0.1",
                                                     registry=self.registry)
        self.url = f"http://127.0.0.1:{port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(SERVER_TIMEOUT_S)
