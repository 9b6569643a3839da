"""One scrape for every process of ``dramatiq willowe_tasks --processes N``.

Each worker process counts into prometheus-client's multiprocess files
(``METRICS_DIR/run-<pid of the dramatiq main process>``); one process
serves them all, summed, on ``METRICS_HOST:METRICS_PORT``. That process is
a Dramatiq *fork* (the CLI starts it beside the workers, as it does for
Dramatiq's own Prometheus middleware), so the endpoint is up as long as
the run is.

A folder per run keeps one run's counts out of the next without wiping
anything while a worker may be writing: all processes of a run share the
main process as their parent. The server removes the folders of runs that
are over when it starts.

Outside the CLI (a worker in a test or a tool), emit ``process_boot`` as the
CLI does and serve the folder yourself with :func:`serve`.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dramatiq

from willowe_tasks.events import EventBus
from willowe_tasks.settings import Settings, get_settings

if TYPE_CHECKING:
    from willowe_tasks.metrics import Metrics

__all__ = ["WorkerMetrics", "run_directory", "serve", "serve_worker_metrics"]

logger = logging.getLogger(__name__)

#: The folders of runs inside METRICS_DIR.
RUN_PREFIX = "run-"


def run_directory(base: Path, main_pid: int | None = None) -> Path:
    """The folder the processes of one run share: named for their parent."""
    return Path(base) / f"{RUN_PREFIX}{os.getppid() if main_pid is None else main_pid}"


def use_multiprocess_directory(directory: Path) -> None:
    """Make prometheus-client keep this process's values in ``directory``.

    prometheus-client picks where values live from PROMETHEUS_MULTIPROC_DIR,
    read when it is imported and again for each new value; it is set here
    (the one variable this project writes, for that library) and the value
    class chosen again, since the library may have been imported already.
    """
    from prometheus_client import values

    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue()


class WorkerMetrics(dramatiq.Middleware):
    """Counts the application's events in each worker process, and has the
    Dramatiq CLI start the process that serves them."""

    def __init__(self, bus: EventBus, settings: Settings) -> None:
        self.bus = bus
        self.settings = settings
        self.metrics: Metrics | None = None
        self.directory: Path | None = None
        self._unsubscribe: Any = None

    @property
    def forks(self) -> list[Any]:
        return [serve_worker_metrics]

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        # Imported here: a web app that sends never loads prometheus-client.
        from prometheus_client import CollectorRegistry

        from willowe_tasks.metrics import Metrics

        self.directory = run_directory(self.settings.metrics_dir)
        use_multiprocess_directory(self.directory)
        self.metrics = Metrics(CollectorRegistry())
        self._unsubscribe = self.metrics.subscribe(self.bus)
        self.metrics.flush_every()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.directory is None:
            return
        from prometheus_client import multiprocess

        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.metrics is not None:
            self.metrics.stop()
        # Drops this process's "live" gauges; its counters stay in the sum.
        multiprocess.mark_process_dead(os.getpid(), str(self.directory))


class MetricsServer:
    """A running exposition server; :meth:`close` stops it."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self.thread = thread
        self.port: int = server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.thread.join(timeout=5)


def serve(directory: Path, host: str, port: int) -> MetricsServer:
    """Serve the sum of every process's values in ``directory`` on ``host:port``
    (port 0: any free one), from a thread of this process."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    directory.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)


def remove_finished_runs(base: Path, keep: Path) -> None:
    """Delete the folders of earlier runs whose main process is gone."""
    for folder in Path(base).glob(f"{RUN_PREFIX}*"):
        pid = folder.name.removeprefix(RUN_PREFIX)
        if folder == keep or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve_worker_metrics() -> int:
    """The Dramatiq fork that serves the run's metrics until it is stopped."""
    settings = get_settings()
    directory = run_directory(settings.metrics_dir)
    remove_finished_runs(settings.metrics_dir, keep=directory)
    try:
        server = serve(directory, settings.metrics_host, settings.metrics_port)
    except OSError as e:
        logger.error("Can't serve the workers' metrics on METRICS_HOST:METRICS_PORT = %s:%d: %s",
                     settings.metrics_host, settings.metrics_port, e)
        return 1
    logger.info("Serving the workers' metrics on %s:%d.", settings.metrics_host, server.port)
    server.thread.join()
    return 0
