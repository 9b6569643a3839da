"""What every fake provider shares: lifecycle, files, recording, faults, latency,
and the phones its pushes reach."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from willowe_tasks.testing._asgi import ASGIApp, HTTPRequest, HTTPResponse
from willowe_tasks.testing._phones import Phone, PhoneBook, PhoneMessage, StoragePolicy
from willowe_tasks.testing._records import (
    FaultPlan,
    ReceivedRequest,
    RequestLog,
    freeze_headers,
)
from willowe_tasks.testing._server import BackgroundServer, TLSFiles

#: Default bound for :meth:`FakeProvider.wait_for`.
DEFAULT_WAIT_S = 5.0


@dataclass(slots=True)
class Outcome:
    """A fake's answer to one request and what to record about it."""

    response: HTTPResponse
    token: str | None = None
    json: Any = None
    reason: str | None = None
    #: False for side requests (an OAuth token fetch) that are not pushes.
    record: bool = True


class FakeProvider:
    """Base of :class:`FakeAPNs` and :class:`FakeFCM`.

    A context manager (or :meth:`start`/:meth:`stop`). Everything a client in
    another process needs is a string or a file path: :attr:`url`, :attr:`ca_file`.
    Files live in a private temporary directory removed by :meth:`stop`.
    """

    #: Short name for threads and log lines.
    name = "fake"

    def __init__(
        self,
        *,
        alpn_protocols: list[str],
        storage: StoragePolicy,
        require_client_cert: bool = False,
        latency_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        listeners: int = 1,
    ) -> None:
        #: Seconds every push request waits before it is answered. Requests wait
        #: concurrently (an asyncio sleep per stream), like a distant server.
        self.latency_s = latency_s
        self._clock = clock
        self._directory = Path(tempfile.mkdtemp(prefix=f"willowe-{self.name}-"))
        self._tls = TLSFiles(self._directory)
        self._log = RequestLog()
        self._faults = FaultPlan()
        self._phones = PhoneBook(storage)
        self._server = BackgroundServer(
            ASGIApp(self._dispatch),
            self._tls,
            name=self.name,
            alpn_protocols=alpn_protocols,
            require_client_cert=require_client_cert,
            listeners=listeners,
        )

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what clients need ---------------------------------------------------

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>``; available once started."""
        return self._server.url

    @property
    def ca_file(self) -> str:
        """Path of the PEM CA certificate that signed the server's certificate."""
        return self._tls.ca_file

    @property
    def directory(self) -> Path:
        """The fake's private directory (certificates, keys)."""
        return self._directory

    # -- what tests look at --------------------------------------------------

    @property
    def received(self) -> list[ReceivedRequest]:
        """Every push request answered so far, rejected ones included (a copy)."""
        return self._log.snapshot()

    @property
    def delivered(self) -> list[ReceivedRequest]:
        """The requests answered with 200."""
        return [item for item in self._log.snapshot() if item.ok]

    def wait_for(self, count: int, timeout_s: float = DEFAULT_WAIT_S) -> list[ReceivedRequest]:
        """Wait until ``count`` requests were received; :class:`TimeoutError` if not
        within ``timeout_s``."""
        return self._log.wait_for(count, timeout_s)

    def connections(self) -> set[str]:
        """Distinct client connections that pushes arrived on."""
        return {item.connection for item in self._log.snapshot()}

    def clear(self) -> None:
        """Forget received requests, pending faults and what phones received (every
        phone is online again); registered and unregistered tokens stay."""
        self._log.clear()
        self._faults.clear()
        self._phones.clear()

    # -- phones ----------------------------------------------------------------

    def set_offline(self, token: str) -> None:
        """Take the device with ``token`` offline: pushes to it are still accepted
        (as the provider accepts them) but wait, under the provider's storage
        rules, until :meth:`set_online`."""
        self._phones.set_offline(self._device_key(token))

    def set_online(self, token: str) -> list[ReceivedRequest]:
        """Bring the device back; returns the pushes the provider hands it now, in
        the order they were sent (those whose lifetime ran out on the fake's clock
        while it was away are gone)."""
        return self._phones.set_online(self._device_key(token), self._clock())

    def phone(self, token: str) -> Phone:
        """What the device with ``token`` received and shows now (a snapshot):
        ``len(fake.phone(token).shown)`` is the notifications a user sees."""
        return self._phones.snapshot(self._device_key(token))

    def fail(
        self,
        status: int,
        reason: str,
        *,
        times: int = 1,
        retry_after: float | str | None = None,
        token: str | None = None,
    ) -> None:
        """Answer the next ``times`` valid pushes (for ``token`` only, if given)
        with ``status`` and the provider's ``reason``, plus ``Retry-After`` if set.

        Malformed requests are still rejected as malformed and do not use up a
        fault.
        """
        self._faults.add(status, reason, times=times, retry_after=retry_after, token=token)

    def heal(self) -> None:
        """Forget the faults still pending: the provider answers as usual again
        (the end of an outage begun with ``fail(503, …, times=<many>)``)."""
        self._faults.clear()

    # -- serving -------------------------------------------------------------

    async def _dispatch(self, request: HTTPRequest) -> HTTPResponse:
        received_at = time.time()
        if self.latency_s > 0 and self._is_push(request):
            await asyncio.sleep(self.latency_s)
        outcome = await self._handle(request)
        if outcome.record:
            record = ReceivedRequest(
                token=outcome.token,
                method=request.method,
                path=request.path,
                headers=freeze_headers(request.headers),
                json=outcome.json,
                received_at=received_at,
                connection=request.connection,
                http_version=request.http_version,
                status=outcome.response.status,
                reason=outcome.reason,
            )
            # The phone gets it before the test can see the answer, so a test
            # that waited for the request can look at the phone at once.
            message = self._phone_message(record) if record.ok and record.token else None
            if message is not None and record.token is not None:
                self._phones.deliver(self._device_key(record.token), message, self._clock())
            self._log.append(record)
        return outcome.response

    def _is_push(self, request: HTTPRequest) -> bool:
        return True

    async def _handle(self, request: HTTPRequest) -> Outcome:
        raise NotImplementedError

    def _device_key(self, token: str) -> str:
        """The token as the provider tells devices apart (APNs ignores hex case)."""
        return token

    def _phone_message(self, record: ReceivedRequest) -> PhoneMessage | None:
        """How the phone gets (and the provider stores) an accepted push; ``None``
        if nothing reaches a phone."""
        raise NotImplementedError
