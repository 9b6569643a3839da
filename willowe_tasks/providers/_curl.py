"""HTTP/2 requests through libcurl's multi interface, driven by an asyncio loop.

Why libcurl: ``h2`` (under httpx) frames HTTP/2 in pure Python, and in a
worker it was the largest CPU cost of a push (about 2.4 ms of CPU per APNs
push through httpx against 0.6 ms through libcurl, measured on the same
machine against the fake APNs). The ``pycurl`` wheel bundles libcurl with
nghttp2, so the framing, TLS and header compression run in C, outside the
GIL. ``CurlMulti`` multiplexes every request of a process as a stream of one
connection per origin, as Apple asks of providers.

How it runs: :class:`CurlDriver` lives on the private loop of a
:class:`~willowe_tasks.providers._loop.LoopThread`. libcurl tells it which
sockets to watch and when its next timeout is due (``M_SOCKETFUNCTION``,
``M_TIMERFUNCTION``); the loop watches them and calls ``socket_action`` back.
A caller's coroutine adds an easy handle and awaits a future that the driver
settles once libcurl reports the transfer done. Everything that touches the
multi handle runs on the loop thread: libcurl handles are not thread-safe.

libcurl opens another connection to the origin when the streams of the
first are all busy (its default for ``CURLMOPT_MAX_CONCURRENT_STREAMS`` is
100, and the server's SETTINGS may lower it), so more pushes than that can be
in flight at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pycurl

from willowe_tasks.providers._loop import LoopThread
from willowe_tasks.providers.errors import TransientDeliveryError

__all__ = ["CurlClient", "CurlDriver", "CurlFailed", "CurlResponse", "TlsFiles"]

#: A request may take this many times a client's ``timeout_s`` in all
#: (connecting, waiting for a stream, sending, waiting for the answer).
OVERALL_TIMEOUT_FACTOR = 3

#: Seconds a caller waits beyond libcurl's own overall bound, so that
#: libcurl's error (which knows whether the request left) is the one seen.
CALL_MARGIN_S = 1.0

#: Easy handles kept for reuse once their transfer is done: making one costs
#: more than setting its options again.
SPARE_HANDLES = 256

#: libcurl errors that can only come before the request was sent: no
#: connection, no TLS session, a request that could not be formed.
_NOT_SENT_CODES = frozenset({
    pycurl.E_UNSUPPORTED_PROTOCOL, pycurl.E_URL_MALFORMAT, pycurl.E_COULDNT_RESOLVE_HOST,
    pycurl.E_COULDNT_CONNECT, pycurl.E_SSL_CONNECT_ERROR, pycurl.E_PEER_FAILED_VERIFICATION,
    pycurl.E_SSL_CACERT_BADFILE, pycurl.E_SSL_CERTPROBLEM,
})


class CurlFailed(Exception):
    """A transfer that got no HTTP answer. ``timed_out``: it ran out of time;
    ``maybe_sent``: the request may have reached the server (it had started
    sending), so the server may have acted on it."""

    def __init__(self, code: int, message: str, *, maybe_sent: bool) -> None:
        super().__init__(f"libcurl error {code}: {message}")
        self.code = code
        self.timed_out = code == pycurl.E_OPERATION_TIMEDOUT
        self.maybe_sent = maybe_sent


@dataclass(frozen=True)
class CurlResponse:
    """An HTTP answer: status, headers (names in lower case) and body."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)


@dataclass(frozen=True)
class TlsFiles:
    """Where libcurl finds the CA bundle and, for certificate auth, the
    client's certificate and key (files: libcurl reads them itself)."""

    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = field(default=None, repr=False)


@dataclass
class _Transfer:
    #: Settled on the loop thread; a caller on another thread waits on a
    #: concurrent future (thread-safe), one on the loop awaits an asyncio one.
    future: asyncio.Future[CurlResponse] | concurrent.futures.Future[CurlResponse]
    body: io.BytesIO = field(default_factory=io.BytesIO)
    headers: dict[str, str] = field(default_factory=dict)

    def header_line(self, line: bytes) -> None:
        name, colon, value = line.decode("latin-1").partition(":")
        if colon:
            self.headers[name.strip().lower()] = value.strip()


class CurlDriver:
    """libcurl's multi handle on the running asyncio loop (make it there).

    ``connect_timeout_s`` bounds connecting; a transfer that moves no byte for
    ``stall_timeout_s`` or takes longer than ``total_timeout_s`` in all fails
    with :class:`CurlFailed` (``timed_out``).
    """

    def __init__(self, tls: TlsFiles, *, connect_timeout_s: float, stall_timeout_s: float,
                 total_timeout_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._tls = tls
        self._connect_ms = max(1, int(connect_timeout_s * 1000))
        self._stall_s = max(1, round(stall_timeout_s))
        self._total_ms = max(1, int(total_timeout_s * 1000))
        # LOW_SPEED_TIME counts whole seconds; a shorter stall bound is left to
        # the total one.
        self._stall_bound = stall_timeout_s >= 1
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._watch)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._set_timer)
        self._timer: asyncio.TimerHandle | None = None
        self._transfers: dict[pycurl.Curl, _Transfer] = {}
        self._spare: list[pycurl.Curl] = []

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> CurlResponse:
        """POST ``body`` to ``url`` over HTTP/2 and return the answer."""
        future: asyncio.Future[CurlResponse] = self._loop.create_future()
        handle = self._start(url, headers, body, future)
        try:
            return await future
        finally:
            self._let_go(handle, future)

    def start(self, url: str, headers: Mapping[str, str], body: bytes,
              done: concurrent.futures.Future[CurlResponse]) -> None:
        """POST as :meth:`post` does, settling ``done`` (waited on by another
        thread) with the answer or a :class:`CurlFailed`. Call on the loop."""
        if done.set_running_or_notify_cancel():
            self._start(url, headers, body, done)

    def abandon(self, done: concurrent.futures.Future[CurlResponse]) -> None:
        """Stop the transfer that :meth:`start` began for ``done``, if it is
        still running (its caller stopped waiting). Call on the loop."""
        for handle, transfer in list(self._transfers.items()):
            if transfer.future is done:
                self._let_go(handle, done)

    def _start(self, url: str, headers: Mapping[str, str], body: bytes,
               future: asyncio.Future[CurlResponse] | concurrent.futures.Future[CurlResponse]
               ) -> pycurl.Curl:
        handle = self._spare.pop() if self._spare else self._new_handle()
        transfer = _Transfer(future)
        handle.setopt(pycurl.URL, url)
        handle.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in headers.items()])
        handle.setopt(pycurl.POSTFIELDS, body)
        handle.setopt(pycurl.WRITEFUNCTION, transfer.body.write)
        handle.setopt(pycurl.HEADERFUNCTION, transfer.header_line)
        self._transfers[handle] = transfer
        self._multi.add_handle(handle)
        return handle

    def _let_go(self, handle: pycurl.Curl,
                future: asyncio.Future[CurlResponse] | concurrent.futures.Future[CurlResponse]
                ) -> None:
        # Still ours only when given up on in flight (a finished handle may
        # already carry another caller's transfer): libcurl must let go.
        transfer = self._transfers.get(handle)
        if transfer is not None and transfer.future is future:
            del self._transfers[handle]
            self._multi.remove_handle(handle)
            handle.close()

    def close(self) -> None:
        """Abort what is in flight and close every connection."""
        if self._timer is not None:
            self._timer.cancel()
        for handle, transfer in list(self._transfers.items()):
            self._multi.remove_handle(handle)
            handle.close()
            if not transfer.future.done():
                # A running concurrent future cannot be cancelled: its waiter
                # is told instead. The request may have left.
                transfer.future.set_exception(CurlFailed(
                    pycurl.E_ABORTED_BY_CALLBACK, "client closed", maybe_sent=True))
        self._transfers.clear()
        for handle in self._spare:
            handle.close()
        self._spare.clear()
        self._multi.close()

    def _new_handle(self) -> pycurl.Curl:
        handle = pycurl.Curl()
        # HTTP/2 over TLS: ALPN offers h2 first (APNs and FCM v1 take it);
        # only a server that picks HTTP/1.1 gets a connection per request.
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)
        handle.setopt(pycurl.SSL_ENABLE_ALPN, 1)
        # Wait for the first connection to say whether it multiplexes, rather
        # than opening one connection per concurrent request.
        handle.setopt(pycurl.PIPEWAIT, 1)
        handle.setopt(pycurl.CAINFO, self._tls.ca_file)
        if self._tls.cert_file is not None:
            handle.setopt(pycurl.SSLCERT, self._tls.cert_file)
            handle.setopt(pycurl.SSLKEY, self._tls.key_file or self._tls.cert_file)
            if self._tls.key_password is not None:
                handle.setopt(pycurl.KEYPASSWD, self._tls.key_password)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, self._connect_ms)
        handle.setopt(pycurl.TIMEOUT_MS, self._total_ms)
        if self._stall_bound:
            handle.setopt(pycurl.LOW_SPEED_LIMIT, 1)
            handle.setopt(pycurl.LOW_SPEED_TIME, self._stall_s)
        handle.setopt(pycurl.NOSIGNAL, 1)  # never SIGALRM in a threaded process
        # libcurl follows *_proxy variables by default; pushes go to the
        # providers directly (an empty PROXY turns the variables off).
        handle.setopt(pycurl.PROXY, "")
        return handle

    def _watch(self, what: int, fd: int, multi: Any, data: Any) -> None:
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)
        if what in (pycurl.POLL_IN, pycurl.POLL_INOUT):
            self._loop.add_reader(fd, self._act, fd, pycurl.CSELECT_IN)
        if what in (pycurl.POLL_OUT, pycurl.POLL_INOUT):
            self._loop.add_writer(fd, self._act, fd, pycurl.CSELECT_OUT)

    def _set_timer(self, timeout_ms: int) -> None:
        # Called from inside libcurl: acting here would re-enter it, so the
        # work is scheduled instead.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if timeout_ms >= 0:
            self._timer = self._loop.call_later(timeout_ms / 1000, self._act,
                                                pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, events: int) -> None:
        while self._multi.socket_action(fd, events)[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        self._settle()

    def _settle(self) -> None:
        while True:
            queued, done, failed = self._multi.info_read()
            for handle in done:
                self._finish(handle, None)
            for handle, code, message in failed:
                self._finish(handle, CurlFailed(
                    code, message, maybe_sent=code not in _NOT_SENT_CODES
                    and handle.getinfo(pycurl.PRETRANSFER_TIME) > 0))
            if not queued:
                return

    def _finish(self, handle: pycurl.Curl, error: CurlFailed | None) -> None:
        self._multi.remove_handle(handle)
        transfer = self._transfers.pop(handle, None)
        if transfer is None:
            return
        if error is None:
            status = handle.getinfo(pycurl.RESPONSE_CODE)
            if not transfer.future.done():
                transfer.future.set_result(CurlResponse(status, transfer.headers,
                                                        transfer.body.getvalue()))
            self._recycle(handle)
            return
        if not transfer.future.done():
            transfer.future.set_exception(error)
        handle.close()  # a failed handle may hold a broken connection's state

    def _recycle(self, handle: pycurl.Curl) -> None:
        if len(self._spare) < SPARE_HANDLES:
            # Drop the body and callbacks of the last transfer; options stay.
            handle.setopt(pycurl.POSTFIELDS, b"")
            handle.setopt(pycurl.WRITEFUNCTION, _discard)
            handle.setopt(pycurl.HEADERFUNCTION, _discard)
            self._spare.append(handle)
        else:
            handle.close()


def _discard(data: bytes) -> None:
    return None


class CurlClient:
    """A :class:`CurlDriver` on a loop thread of its own, for plain threads:
    :meth:`post` blocks until the answer and turns a failure into the
    provider's :class:`TransientDeliveryError`. Safe to share between threads;
    the loop and its connections are made on first use in each process.

    Connecting and each stall are bounded by ``timeout_s``, the whole request
    by :data:`OVERALL_TIMEOUT_FACTOR` times it.
    """

    def __init__(self, name: str, tls: TlsFiles, *, provider: str, timeout_s: float) -> None:
        self._tls = tls
        self._provider = provider
        self._timeout_s = timeout_s
        self._io: LoopThread[CurlDriver] = LoopThread(name, self._make_driver, _close_driver)

    def _make_driver(self) -> CurlDriver:
        return CurlDriver(self._tls, connect_timeout_s=self._timeout_s,
                          stall_timeout_s=self._timeout_s,
                          total_timeout_s=OVERALL_TIMEOUT_FACTOR * self._timeout_s)

    def post(self, url: str, headers: Mapping[str, str], body: bytes) -> CurlResponse:
        done: concurrent.futures.Future[CurlResponse] = concurrent.futures.Future()
        self._io.call_soon(lambda driver: driver.start(url, headers, body, done))
        try:
            # libcurl bounds the request itself; the outer bound only guards
            # against a loop that stopped answering.
            return done.result(OVERALL_TIMEOUT_FACTOR * self._timeout_s + CALL_MARGIN_S)
        except TimeoutError as exc:
            self._io.call_soon(lambda driver: driver.abandon(done))
            raise TransientDeliveryError(
                "Timeout", provider=self._provider, detail=type(exc).__name__, maybe_sent=True,
            ) from exc
        except CurlFailed as exc:
            # The detail names libcurl's error, never the URL (APNs's holds the token).
            raise TransientDeliveryError(
                "Timeout" if exc.timed_out else "ConnectionError", provider=self._provider,
                detail=str(exc), maybe_sent=exc.maybe_sent,
            ) from exc

    def close(self) -> None:
        """Close the connections and the loop thread; no post afterwards."""
        self._io.close()


async def _close_driver(driver: CurlDriver) -> None:
    driver.close()
