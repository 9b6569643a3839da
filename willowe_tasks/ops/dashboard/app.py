"""The dashboard's web application (Starlette; pages rendered with Jinja).

Routes:

- ``GET /``: the page; it reloads itself every scrape interval.
- ``GET /replay?topic=…&cause=…``: the dry run of replaying one group of
  dead letters, with the form that starts it; ``POST /replay`` starts it.
- ``GET /purge?topic=…&before=…``: how many a purge would delete;
  ``POST /purge`` deletes them.
- ``GET /status.json``: the status as ``status --json`` prints it.
- ``GET /healthz``: ``ok`` (for a container's health check).

POSTs need the operator token (DASHBOARD_OPERATOR_TOKEN) in the form; with
none configured the dashboard is read-only. Each POST writes an audit line.
"""

from __future__ import annotations

import hmac
import threading
import time
import urllib.error
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from dramatiq.errors import BrokerConnectionError
from kafka.errors import KafkaError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from willowe_tasks.ops.cli_support import AuditTrail, format_age
from willowe_tasks.ops.clients import OpsKafka
from willowe_tasks.ops.dashboard.jobs import ReplayJob, ReplayJobs
from willowe_tasks.ops.dashboard.kafka_view import KafkaWatcher
from willowe_tasks.ops.dashboard.metrics import MetricsWindow, scrape
from willowe_tasks.ops.dead_letters import DeadLetterReadTimeout, Selection
from willowe_tasks.ops.names import UnknownTopic, resolve_topic
from willowe_tasks.ops.purge import plan_purge, purge
from willowe_tasks.ops.replay import Replayer, plan_replay
from willowe_tasks.ops.replay_log import ReplayLog
from willowe_tasks.settings import Settings
from willowe_tasks.when import parse_since

__all__ = ["create_app"]

TEMPLATES = Path(__file__).parent / "templates"

#: Longest a form body may be, in bytes (a topic, a cause and a token).
MAX_FORM_BYTES = 16 * 1024

#: How long shutdown waits for a running replay to finish its batch, in seconds.
SHUTDOWN_WAIT_S = 30.0

#: Errors that mean Kafka could not be read: the page says so and keeps serving.
KAFKA_TROUBLE = (KafkaError, BrokerConnectionError, DeadLetterReadTimeout)


class _Dashboard:
    """What the routes share: the settings, Kafka, the replay log, the
    metrics window and the replay jobs."""

    def __init__(self, settings: Settings, kafka: OpsKafka) -> None:
        self.settings = settings
        self.kafka = kafka
        self.log = ReplayLog(settings.dlq_replay_log_path)
        self.watcher = KafkaWatcher(kafka, self.log)
        self.window = MetricsWindow(settings.dashboard_window_s)
        self.jobs = ReplayJobs(self._replay)
        self._stop = threading.Event()
        self._scraper: threading.Thread | None = None

    @property
    def read_only(self) -> bool:
        return self.settings.dashboard_operator_token is None

    def token_ok(self, given: str) -> bool:
        expected = self.settings.dashboard_operator_token
        return expected is not None and hmac.compare_digest(
            given.encode(), expected.get_secret_value().encode())

    # -- the metrics scraper ------------------------------------------------

    def start(self) -> None:
        if self.settings.dashboard_metrics_url is None:
            return
        self._scraper = threading.Thread(target=self._scrape_loop, name="dashboard-scraper",
                                         daemon=True)
        self._scraper.start()

    def stop(self) -> None:
        self._stop.set()
        if self._scraper is not None:
            self._scraper.join(timeout=10)
        self.jobs.wait(SHUTDOWN_WAIT_S)
        self.log.close()
        self.kafka.close()

    def _scrape_loop(self) -> None:
        url = self.settings.dashboard_metrics_url
        assert url is not None
        while not self._stop.is_set():
            try:
                self.window.add(scrape(url))
            except (urllib.error.URLError, OSError, ValueError) as e:
                self.window.failed(f"{type(e).__name__}: {e}")
            self._stop.wait(self.settings.dashboard_scrape_interval_s)

    # -- replay -------------------------------------------------------------

    def _replay(self, job: ReplayJob) -> str:
        selection = Selection((job.topic,), reason=job.cause)
        filters = {**selection.describe(), "from": "dashboard"}
        with AuditTrail(self.settings, "dlq replay", filters, via="dashboard",
                        operator="dashboard") as audit:
            letters = selection.pick(self.kafka.dead_letters.read(selection.topics))
            plan = plan_replay(letters, self.log, max_replays=self.settings.dlq_max_replays)
            audit.counts.update(plan.counts())
            job.total = len(plan.send)

            def advance(n: int) -> None:
                job.done += n

            replayed = Replayer(self.kafka.broker.producer, self.log,
                                codec=self.kafka.broker.payload_codec).run(plan, progress=advance)
            audit.counts["replayed"] = replayed
        self.watcher.view(fresh=True)
        return (f"replayed {replayed}; dropped {len(plan.expired)} past their deadline;"
                f" skipped {len(plan.already)} replayed before; refused {len(plan.looping)}"
                f" (loop guard); {len(plan.unreplayable)} undecodable")


def create_app(settings: Settings, *, kafka: OpsKafka | None = None) -> Starlette:
    """The dashboard for ``settings`` (its Kafka, group, token and metrics URL)."""
    board = _Dashboard(settings, kafka or OpsKafka(settings))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["age"] = lambda s: "-" if s is None else format_age(s)
    env.filters["ms"] = lambda s: "-" if s is None else f"{s * 1000:.0f} ms"
    env.filters["clock"] = lambda t: time.strftime("%H:%M:%S UTC", time.gmtime(t))
    env.filters["percent"] = lambda r: "-" if r is None else f"{r * 100:.1f} %"
    templates = Jinja2Templates(env=env)

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(
            request, name, {"read_only": board.read_only, "settings": settings, **context},
            status_code=status_code)

    def index(request: Request) -> Response:
        try:
            view, trouble = board.watcher.view(), None
        except KAFKA_TROUBLE as e:
            view, trouble = None, f"{type(e).__name__}: {e}"
        return page(request, "index.html", 200 if view else 503, view=view, trouble=trouble,
                    stats=board.window.stats(), window=board.window, jobs=board.jobs.recent(),
                    sparkline=_sparkline, now=time.time())

    def replay_preview(request: Request) -> Response:
        topic, cause = _topic(request.query_params.get("topic", "")), \
            request.query_params.get("cause", "").strip()
        if topic is None or not cause:
            return page(request, "message.html", 400, title="Bad request",
                        text="A replay needs a known topic and a cause.")
        try:
            letters = Selection((topic,), reason=cause).pick(
                board.kafka.dead_letters.read([topic]))
        except KAFKA_TROUBLE as e:
            return _unreadable(request, e)
        plan = plan_replay(letters, board.log, max_replays=settings.dlq_max_replays)
        return page(request, "replay.html", topic=topic, cause=cause, counts=plan.counts())

    async def replay_start(request: Request) -> Response:
        form = await _form(request)
        topic, cause = _topic(form.get("topic", "")), form.get("cause", "").strip()
        if topic is None or not cause:
            return page(request, "message.html", 400, title="Bad request",
                        text="A replay needs a known topic and a cause.")
        refused = _refusal(request, form, "dlq replay", {"topics": [topic], "reason": cause})
        if refused is not None:
            return refused
        if board.jobs.start(topic, cause) is None:
            return page(request, "message.html", 409, title="A replay is running",
                        text="Wait for it to finish, then try again.")
        return RedirectResponse("/", status_code=303)

    def purge_preview(request: Request) -> Response:
        topic = _topic(request.query_params.get("topic", ""))
        before_text = request.query_params.get("before", "7d")
        before = _moment(before_text)
        if topic is None or before is None:
            return page(request, "message.html", 400, title="Bad request",
                        text="A purge needs a known topic and a time (7d, or an ISO time).")
        try:
            plan = plan_purge(board.kafka.broker.admin, topic, before)
        except KAFKA_TROUBLE as e:
            return _unreadable(request, e)
        return page(request, "purge.html", topic=topic, before_text=before_text,
                    before=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(before)),
                    count=plan.count, xq=plan.topic)

    async def purge_run(request: Request) -> Response:
        form = await _form(request)
        topic, before = _topic(form.get("topic", "")), _moment(form.get("before", ""))
        if topic is None or before is None:
            return page(request, "message.html", 400, title="Bad request",
                        text="A purge needs a known topic and a time (7d, or an ISO time).")
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(before))
        filters = {"topic": topic, "before": when}
        refused = _refusal(request, form, "dlq purge", filters)
        if refused is not None:
            return refused

        def run() -> int:
            with AuditTrail(settings, "dlq purge", filters, via="dashboard",
                            operator="dashboard") as audit:
                plan = plan_purge(board.kafka.broker.admin, topic, before)
                audit.counts["deleted"] = purge(board.kafka.broker.admin, plan)
                return audit.counts["deleted"]

        deleted = await run_in_threadpool(run)
        board.watcher.view(fresh=True)
        return page(request, "message.html", title="Purged",
                    text=f"Deleted {deleted} dead letter(s) of {topic} written before {when}.")

    def _unreadable(request: Request, error: Exception) -> Response:
        return page(request, "message.html", 503, title="Kafka could not be read",
                    text=f"{type(error).__name__}: {error}")

    def _refusal(request: Request, form: dict[str, str], action: str,
                 filters: dict[str, Any]) -> Response | None:
        if board.read_only:
            return page(request, "message.html", 403, title="Read-only",
                        text="This dashboard is read-only: set DASHBOARD_OPERATOR_TOKEN to"
                             " allow replay and purge.")
        if board.token_ok(form.get("token", "")):
            return None
        with AuditTrail(settings, action, filters, via="dashboard",
                        operator="dashboard") as audit:
            audit.result = "refused: wrong operator token"
        return page(request, "message.html", 403, title="Wrong operator token",
                    text="The operator token was wrong; nothing was done.")

    def status_json(request: Request) -> Response:
        return JSONResponse(board.watcher.view().status.to_json())

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        board.start()
        try:
            yield
        finally:
            await run_in_threadpool(board.stop)

    return Starlette(routes=[
        Route("/", index),
        Route("/replay", replay_preview, methods=["GET"]),
        Route("/replay", replay_start, methods=["POST"]),
        Route("/purge", purge_preview, methods=["GET"]),
        Route("/purge", purge_run, methods=["POST"]),
        Route("/status.json", status_json),
        Route("/healthz", healthz),
    ], lifespan=lifespan)


async def _form(request: Request) -> dict[str, str]:
    # A urlencoded form of three fields: the standard library reads it.
    body = (await request.body())[:MAX_FORM_BYTES].decode("utf-8", "replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _topic(text: str) -> str | None:
    try:
        return resolve_topic(text)
    except UnknownTopic:
        return None


def _moment(text: str) -> float | None:
    try:
        return parse_since(text)
    except ValueError:
        return None


def _sparkline(points: list[tuple[float, float]], width: int = 240, height: int = 36) -> str:
    """SVG polyline points for a throughput series (oldest left)."""
    if len(points) < 2:
        return ""
    first, last = points[0][0], points[-1][0]
    top = max(v for _, v in points) or 1.0
    span = (last - first) or 1.0
    return " ".join(f"{(t - first) / span * width:.1f},{height - v / top * (height - 2):.1f}"
                    for t, v in points)
