"""Trace context: a W3C ``traceparent`` on every record, trace ids in log
lines, and OpenTelemetry spans when OpenTelemetry is there.

* ``send()`` gives each message a ``traceparent`` (the option
  :data:`broker.trace_context.TRACEPARENT`, which the broker also writes as
  the record's header): a child of the span or message being handled on
  that thread, or a new trace. It rides along through retries (``.DQ``),
  into the dead letters (``.XQ`` keeps the bytes and headers) and through a
  replay of them (:func:`replay_headers`).
* While a worker runs a message, :func:`current_trace_id` is its trace id;
  :class:`TraceIdFilter` puts it on log records (``%(trace_id)s``), and in
  worker processes started by the dramatiq CLI every line gets
  ``[trace <id>]`` at its end.
* With ``opentelemetry-api`` installed and a tracer provider configured
  (``pip install 'willowe-tasks[otel]'`` plus the SDK and an exporter of your
  choice), send, process and each push become spans: the process span is a
  child of the send span (through the traceparent), each push a child of
  the process span. Without a configured provider nothing is recorded and
  the cost is the traceparent alone.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from typing import Any

import dramatiq

from broker.trace_context import TRACEPARENT, header_value
from willowe_tasks.events import EventBus, PushFinished

__all__ = [
    "TraceContext",
    "TraceIdFilter",
    "current_trace_id",
    "install_worker_log_format",
    "new_traceparent",
    "replay_headers",
    "trace_id_of",
]

#: version 00, trace id, parent span id, flags (https://www.w3.org/TR/trace-context/#traceparent-header).
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

#: Flags of a traceparent we make: "sampled", so a worker that records spans
#: records this trace even when the sender recorded nothing.
SAMPLED_FLAGS = "01"

#: Headers a dead letter gains on ``.XQ``; they don't go back with a replay.
DEAD_LETTER_HEADER_PREFIX = "x-dead-letter-"

_local = threading.local()


def new_traceparent(parent: str | None = None) -> str:
    """A traceparent for a new span: in ``parent``'s trace if it is valid,
    else in a new trace."""
    trace_id = trace_id_of(parent) if parent else None
    span_id = os.urandom(8).hex()
    if trace_id is None:
        trace_id = os.urandom(16).hex()
    return f"00-{trace_id}-{span_id}-{SAMPLED_FLAGS}"


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a valid traceparent, else None."""
    match = _TRACEPARENT.fullmatch(traceparent or "")
    if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1)


def current_trace_id() -> str | None:
    """The trace id of the message this thread is running, if any."""
    return trace_id_of(getattr(_local, "traceparent", None))


def replay_headers(headers: Sequence[tuple[str, bytes]] | None,
                   traceparent: str | None = None) -> list[tuple[str, bytes]]:
    """The headers to send a dead letter back to its source topic with: its
    own minus the ``x-dead-letter-*`` ones, with its ``traceparent`` kept
    (the replay continues the trace its message started in). Pass the
    re-encoded message's option as ``traceparent`` when it has one: the
    header then agrees with it.
    """
    kept = [(k, v) for k, v in (headers or ())
            if not k.startswith(DEAD_LETTER_HEADER_PREFIX) and k != TRACEPARENT]
    traceparent = traceparent or header_value(headers, TRACEPARENT)
    if trace_id_of(traceparent) is not None:
        kept.append((TRACEPARENT, str(traceparent).encode()))
    return kept


class TraceIdFilter(logging.Filter):
    """Sets ``record.trace_id`` (the running message's, or "-") for formats
    that want ``%(trace_id)s``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = current_trace_id() or "-"
        return True


class _TraceIdFormatter(logging.Formatter):
    """Another formatter's line, plus ``[trace <id>]`` while a message runs."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        line = self.inner.format(record)
        trace_id = getattr(record, "trace_id", None)
        return f"{line} [trace {trace_id}]" if trace_id and trace_id != "-" else line


def install_worker_log_format(logger: logging.Logger | None = None) -> None:
    """Make every handler of ``logger`` (the root logger) end its lines with
    the trace id of the message being run. Idempotent."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, TraceIdFilter) for f in handler.filters):
            handler.addFilter(TraceIdFilter())
        formatter = handler.formatter or logging.Formatter()
        if not isinstance(formatter, _TraceIdFormatter):
            handler.setFormatter(_TraceIdFormatter(formatter))


class TraceContext(dramatiq.Middleware):
    """Gives messages their traceparent, keeps the running message's trace
    current on its thread, and records OpenTelemetry spans when configured.

    ``tracer_provider``: an OpenTelemetry tracer provider (default: the
    global one, used once it is configured).
    """

    def __init__(self, bus: EventBus | None = None, tracer_provider: Any = None) -> None:
        self._bus = bus
        self._provider = tracer_provider
        self._loaded = False
        self._load_lock = threading.Lock()
        self._otel_half: _Otel | None = None

    @property
    def _otel(self) -> _Otel | None:
        # Loaded on first use: importing the application stays light.
        if not self._loaded:
            with self._load_lock:
                if not self._loaded:
                    self._otel_half = _Otel.load(self._provider, self._bus)
                    self._loaded = True
        return self._otel_half

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        install_worker_log_format()

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message,
                       delay: int | None) -> None:
        if TRACEPARENT in message.options:
            return  # a retry, a delayed message moving on, a replay: same trace
        otel = self._otel.active() if self._otel is not None else None
        if otel is not None:
            message.options[TRACEPARENT] = otel.start_send(message)
        else:
            message.options[TRACEPARENT] = new_traceparent(getattr(_local, "traceparent", None))

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message,
                      delay: int | None) -> None:
        if self._otel is not None:
            self._otel.end_send()

    def before_process_message(self, broker: dramatiq.Broker,
                               message: dramatiq.MessageProxy) -> None:
        traceparent: str | None = message.options.get(TRACEPARENT)
        if traceparent is None or trace_id_of(traceparent) is None:
            # A record from a producer that set none: its retries and dead
            # letter carry the one it gets here.
            traceparent = message.options[TRACEPARENT] = new_traceparent()
        _local.traceparent = traceparent
        otel = self._otel.active() if self._otel is not None else None
        if otel is not None:
            otel.start_process(message, traceparent)

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy,
                              *, result: Any = None, exception: BaseException | None = None
                              ) -> None:
        _local.traceparent = None
        if self._otel is not None:
            self._otel.end_process(exception)

    def after_skip_message(self, broker: dramatiq.Broker,
                           message: dramatiq.MessageProxy) -> None:
        self.after_process_message(broker, message)


class _Otel:
    """The OpenTelemetry half, used only when ``opentelemetry`` imports."""

    def __init__(self, trace: Any, propagator: Any, context: Any, provider: Any,
                 bus: EventBus | None) -> None:
        self.trace = trace
        self.propagator = propagator
        self.context = context
        self._provider = provider
        self._bus = bus
        self._tracer: Any = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, provider: Any, bus: EventBus | None) -> _Otel | None:
        try:
            from opentelemetry import context, trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:
            return None
        return cls(trace, TraceContextTextMapPropagator(), context, provider, bus)

    def active(self) -> _Otel | None:
        """Self once a tracer provider is configured, else None."""
        if self._tracer is None:
            provider = self._provider or self.trace.get_tracer_provider()
            if isinstance(provider, self.trace.ProxyTracerProvider | self.trace.NoOpTracerProvider):
                return None
            with self._lock:
                if self._tracer is None:
                    if self._bus is not None:
                        self._bus.subscribe(PushFinished, self.push_span)
                    self._tracer = provider.get_tracer("willowe_tasks")
        return self

    def start_send(self, message: dramatiq.Message) -> str:
        self.end_send()  # one left by a send that raised
        span = self._tracer.start_span(f"send {message.actor_name}",
                                       kind=self.trace.SpanKind.PRODUCER,
                                       attributes=_attributes(message))
        _local.send_span = span
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=self.trace.set_span_in_context(span))
        return carrier[TRACEPARENT]

    def end_send(self) -> None:
        span = getattr(_local, "send_span", None)
        if span is not None:
            _local.send_span = None
            span.end()

    def start_process(self, message: dramatiq.MessageProxy, traceparent: str) -> None:
        parent = self.propagator.extract({TRACEPARENT: traceparent})
        span = self._tracer.start_span(f"process {message.actor_name}", context=parent,
                                       kind=self.trace.SpanKind.CONSUMER,
                                       attributes=_attributes(message))
        _local.process_span = span
        _local.process_token = self.context.attach(self.trace.set_span_in_context(span))

    def end_process(self, exception: BaseException | None) -> None:
        span = getattr(_local, "process_span", None)
        if span is None:
            return
        if exception is not None:
            span.record_exception(exception)
            span.set_status(self.trace.Status(self.trace.StatusCode.ERROR,
                                              type(exception).__name__))
        span.end()
        self.context.detach(_local.process_token)
        _local.process_span = _local.process_token = None

    def push_span(self, event: PushFinished) -> None:
        if self.active() is None:
            return
        start_ns = int(event.started_at * 1e9)
        span = self._tracer.start_span(
            f"push {event.provider}", kind=self.trace.SpanKind.CLIENT, start_time=start_ns,
            attributes={"push.provider": event.provider, "push.outcome": event.outcome,
                        "push.reason": event.reason, "push.priority": event.priority})
        span.end(end_time=start_ns + int(event.round_trip_s * 1e9))


def _attributes(message: dramatiq.Message | dramatiq.MessageProxy) -> dict[str, str]:
    # Ids and names only: never the message's arguments.
    return {"messaging.system": "kafka", "messaging.destination.name": message.queue_name,
            "messaging.message.id": message.message_id, "dramatiq.actor": message.actor_name}
