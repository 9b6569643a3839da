"""Fixtures of the metrics tests: an application whose in-process worker
counts into prometheus-client's multiprocess files and serves them as the
dramatiq CLI's fork would, and a real Prometheus server for the session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from kafka import KafkaAdminClient
from metrics_support import MeteredRig, PrometheusServer
from prometheus_client import values

from broker.topics import reconcile
from willowe_tasks import dispatch
from willowe_tasks.app import App
from willowe_tasks.settings import settings_from
from willowe_tasks.testing import FakeAPNs, FakeFCM, fake_provider_env
from willowe_tasks.topics import ALL_TOPIC_SPECS
from willowe_tasks.worker_metrics import WorkerMetrics, serve

#: How long Prometheus may take to start on two busy cores, in seconds.
PROMETHEUS_START_S = 90.0


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeAPNs, FakeFCM]]:
    with FakeAPNs() as apns, FakeFCM() as fcm:
        yield apns, fcm


def metered_settings(kafka_bootstrap: str, apns: FakeAPNs, fcm: FakeFCM, home: Path,
                     **extra: str) -> dict[str, str]:
    return {"KAFKA_BROKER": kafka_bootstrap,
            "KAFKA_GROUP_ID": f"test-metrics-{uuid.uuid4().hex[:8]}",
            "METRICS_DIR": str(home / "metrics"), "METRICS_HOST": "127.0.0.1",
            **fake_provider_env(apns, fcm, home), **extra}


@pytest.fixture
def metered(kafka_bootstrap: str, fakes: tuple[FakeAPNs, FakeFCM], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[MeteredRig]:
    apns, fcm = fakes
    apns.clear()
    fcm.clear()
    # The worker's process boot sets both; the test leaves them as it found them.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    value_class = values.ValueClass
    app = App(settings_from(metered_settings(kafka_bootstrap, apns, fcm, tmp_path)))
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    reconcile(admin, ALL_TOPIC_SPECS)
    admin.close()
    app.broker.flush_all()
    dispatch.stats.clear()
    [metrics] = [m for m in app.broker.middleware if isinstance(m, WorkerMetrics)]
    # What the dramatiq CLI's process boot does for this middleware, and its fork.
    metrics.after_process_boot(app.broker)
    assert metrics.directory is not None
    server = serve(metrics.directory, "127.0.0.1", 0)
    worker = dramatiq.Worker(app.broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        yield MeteredRig(app, apns, fcm, server, metrics)
    finally:
        worker.stop()
        server.close()
        app.close()
        values.ValueClass = value_class


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Debian's Prometheus on a private port, data in a temp folder: no
    system service's configuration, port or data is used."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (apt-get install prometheus; .ci/run does)")
    home = tmp_path_factory.mktemp("prometheus")
    targets = home / "targets.json"
    targets.write_text("[]")
    config = home / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: willowe\n    file_sd_configs:\n"
        f"      - files: ['{targets}']\n        refresh_interval: 1s\n")
    port = _free_port()
    log = (home / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=home)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, home / "prometheus.log")
        yield PrometheusServer(url, targets)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + PROMETHEUS_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"prometheus not ready within {PROMETHEUS_START_S:.0f}s: "
                       f"{log.read_text()[-2000:]}")
