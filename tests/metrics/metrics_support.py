"""Reading metrics the way Prometheus does: scrape an endpoint, parse the
exposition, lint it with promtool, and ask a Prometheus server."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from willowe_tasks.app import App
from willowe_tasks.testing import FakeAPNs, FakeFCM
from willowe_tasks.worker_metrics import MetricsServer, WorkerMetrics

#: How long one scrape may take: the exporter asks Kafka on each.
SCRAPE_TIMEOUT_S = 30.0


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
        return response.read().decode()


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def samples(text: str) -> list[Sample]:
    return [Sample(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]


def total(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(s.value for s in samples(text)
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def series(text: str, name: str) -> list[Sample]:
    return [s for s in samples(text) if s.name == name]


def wait_for_scrape(url: str, ready: Callable[[str], bool], timeout_s: float = 60.0,
                    interval_s: float = 0.5) -> str:
    """Scrape until ``ready(text)``; the last scrape if it never was (the
    test's assertion then says what was missing)."""
    deadline = time.monotonic() + timeout_s
    text = scrape(url)
    while not ready(text) and time.monotonic() < deadline:
        time.sleep(interval_s)
        text = scrape(url)
    return text


def scrape_until(url: str, check: Callable[[str], None], timeout_s: float = 60.0) -> str:
    """Scrape until ``check(text)`` passes its assertions (workers add their
    counts every second, and a thread's may come a flush after another's);
    the last scrape's AssertionError if it never does."""
    def passes(text: str) -> bool:
        try:
            check(text)
        except AssertionError:
            return False
        return True

    text = wait_for_scrape(url, passes, timeout_s)
    check(text)
    return text


def promtool() -> str:
    """Path of Prometheus' promtool (Debian's `prometheus` package); skips without it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (apt-get install prometheus; .ci/run does)")
    return path


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)


def prometheus_query(base_url: str, expression: str) -> list[dict[str, object]]:
    """The instant vector ``expression`` evaluates to now (Prometheus' HTTP API)."""
    url = f"{base_url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


@dataclass
class MeteredRig:
    """An application of the test's own, delivering to the fakes, with a
    worker in this process whose metrics are served at :attr:`url`."""

    app: App
    apns: FakeAPNs
    fcm: FakeFCM
    server: MetricsServer
    metrics: WorkerMetrics

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/metrics"

    def join(self, *queues: str) -> None:
        for queue in queues:
            self.app.broker.join(queue, timeout=60_000)



@dataclass
class PrometheusServer:
    """A Prometheus of the test session's own, scraping every second whatever
    :meth:`scrape` names (file-based service discovery)."""

    url: str
    targets_file: Path

    def scrape(self, *addresses: str) -> None:
        """Scrape these host:port targets (and stop scraping any others)."""
        staged = self.targets_file.with_suffix(".tmp")
        staged.write_text(json.dumps([{"targets": list(addresses)}]))
        staged.replace(self.targets_file)  # Prometheus never reads half a file
