"""Run an ASGI app with hypercorn over TLS on 127.0.0.1, in a background thread.

Hypercorn does the HTTP/1.1 and HTTP/2 protocol work (streams, flow control,
settings, GOAWAY); a well-kept server beats hand-written h2 code, and its asyncio
loop serves many concurrent streams from one thread. The port is chosen by the
kernel: the socket is bound and listening before the thread starts, so the URL
works (connections queue in the backlog) as soon as :meth:`start` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import trustme
from hypercorn.asyncio import serve
from hypercorn.config import Config

from willowe_tasks.testing._asgi import ASGIApp

logger = logging.getLogger(__name__)

#: Loopback only: the fakes must never be reachable from another machine.
HOST = "127.0.0.1"

#: How long start() and stop() wait for the server thread.
THREAD_WAIT_S = 10.0

#: Idle connections are kept this long. Long, because a client racing a server
#: that closes idle connections sees spurious connection errors, and APNs itself
#: keeps connections open for hours.
KEEP_ALIVE_TIMEOUT_S = 600.0

#: Concurrent HTTP/2 streams per connection the server allows (APNs allows ~1000).
MAX_CONCURRENT_STREAMS = 1000

#: Requests per connection before hypercorn would recycle it; effectively never,
#: because a benchmark counting connections must not see artificial ones.
KEEP_ALIVE_MAX_REQUESTS = 10**9

#: How long a closing TLS connection waits for the client's close_notify.
SSL_SHUTDOWN_TIMEOUT_S = 0.2

#: How long stop() lets in-flight requests and open connections finish.
GRACEFUL_TIMEOUT_S = 1.0


class TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1, written to ``directory``."""

    def __init__(self, directory: Path) -> None:
        self._ca = trustme.CA()
        self.directory = directory
        self.ca_file = str(directory / "ca.pem")
        self.cert_file = str(directory / "server.pem")
        self.key_file = str(directory / "server.key")
        server = self._ca.issue_cert(HOST, "localhost")
        self._ca.cert_pem.write_to_path(self.ca_file)
        server.private_key_pem.write_to_path(self.key_file)
        for index, blob in enumerate(server.cert_chain_pems):
            blob.write_to_path(self.cert_file, append=index > 0)

    def issue_client_cert(self, name: str) -> tuple[str, str]:
        """A client certificate signed by the CA: ``(cert_file, key_file)`` paths."""
        leaf = self._ca.issue_cert(name, common_name=name)
        stem = "".join(c if c.isalnum() else "_" for c in name)
        cert_file = str(self.directory / f"client-{stem}.pem")
        key_file = str(self.directory / f"client-{stem}.key")
        for index, blob in enumerate(leaf.cert_chain_pems):
            blob.write_to_path(cert_file, append=index > 0)
        leaf.private_key_pem.write_to_path(key_file)
        return cert_file, key_file


class _ServerLoop(asyncio.SelectorEventLoop):
    """An event loop whose TLS servers give up on a silent peer's close_notify
    fast, and that tells connections from the same client address apart.

    asyncio waits up to 30 s for the peer to answer a TLS shutdown, and an idle
    client connection never answers; hypercorn waits for every connection to
    close, so without this stop() would hang on any client left open.

    ASGI only gives a request its client's ``(host, port)``, and a client that
    died (a killed worker) frees its port for the next connection, which may
    well get it: per-connection state (APNs provider tokens) keyed by the
    address alone would carry over to a connection that has nothing to do
    with it. :meth:`connection_label` names the connection instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self.set_exception_handler(_quiet_disconnects)
        #: Connections accepted so far from each client address.
        self._opened: dict[tuple[str, int], int] = {}

    async def create_server(  # type: ignore[override]
        self, protocol_factory: Any, *args: Any, **kwargs: Any
    ) -> asyncio.Server:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_shutdown_timeout", SSL_SHUTDOWN_TIMEOUT_S)
        return await super().create_server(self._counted(protocol_factory), *args, **kwargs)

    def _counted(self, protocol_factory: Any) -> Any:
        def factory() -> Any:
            protocol = protocol_factory()
            connection_made = protocol.connection_made

            def counted(transport: asyncio.BaseTransport) -> None:
                peer = transport.get_extra_info("peername")
                if peer:
                    address = (str(peer[0]), int(peer[1]))
                    self._opened[address] = self._opened.get(address, 0) + 1
                connection_made(transport)

            protocol.connection_made = counted
            return protocol

        return factory

    def connection_label(self, host: str, port: int) -> str:
        """``host:port`` of the client's end of a live connection, plus ``#n``
        for the n-th connection that came from that address."""
        opened = self._opened.get((host, port), 1)
        return f"{host}:{port}" if opened <= 1 else f"{host}:{port}#{opened}"


def _quiet_disconnects(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Log a client vanishing mid-connection at DEBUG; a fake expects that."""
    if isinstance(context.get("exception"), (TimeoutError, ConnectionError, ssl.SSLError)):
        logger.debug("fake server connection ended: %s", context.get("exception"))
        return
    loop.default_exception_handler(context)


class BackgroundServer:
    """Serve ``app`` over HTTPS from a daemon thread until :meth:`stop`.

    With ``listeners`` above one the same app answers on that many ports (APNs'
    sandbox and production hosts); a request's ``server_port`` tells them apart.
    """

    def __init__(
        self,
        app: ASGIApp,
        tls: TLSFiles,
        *,
        name: str,
        alpn_protocols: list[str],
        require_client_cert: bool = False,
        listeners: int = 1,
    ) -> None:
        if listeners < 1:
            raise ValueError("listeners must be at least 1")
        self._app = app
        self._tls = tls
        self._name = name
        self._alpn_protocols = alpn_protocols
        self._require_client_cert = require_client_cert
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._listeners = listeners
        #: The listening ports, in the order they were asked for; empty until started.
        self.ports: list[int] = []

    @property
    def port(self) -> int | None:
        """The first listening port (``None`` until started)."""
        return self.ports[0] if self.ports else None

    @property
    def url(self) -> str:
        return self.url_of(0)

    def url_of(self, listener: int) -> str:
        """``https://127.0.0.1:<port>`` of the ``listener``-th listening socket."""
        if not self.ports:
            raise RuntimeError(f"{self._name} is not started")
        return f"https://{HOST}:{self.ports[listener]}"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self._name} was already started")
        sockets: list[socket.socket] = []
        try:
            for _ in range(self._listeners):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind((HOST, 0))
                sock.listen(socket.SOMAXCONN)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        self.ports = [sock.getsockname()[1] for sock in sockets]
        # Hypercorn adopts the descriptors ("fd://") and closes them on shutdown.
        config = self._config([sock.detach() for sock in sockets])
        self._thread = threading.Thread(
            target=self._run, args=(config,), name=f"{self._name}-server", daemon=True
        )
        self._thread.start()
        if not self._app.started.wait(THREAD_WAIT_S) or self._error is not None:
            self.stop()
            raise RuntimeError(f"{self._name} did not start") from self._error
        logger.info("%s serving on %s", self._name, self.url)

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, shutdown = self._loop, self._shutdown
        if loop is not None and shutdown is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(shutdown.set)
        thread.join(THREAD_WAIT_S + GRACEFUL_TIMEOUT_S)
        if thread.is_alive():
            logger.warning("%s server thread did not stop in time", self._name)

    def _config(self, fds: list[int]) -> Config:
        config = Config()
        config.bind = [f"fd://{fd}" for fd in fds]
        config.certfile = self._tls.cert_file
        config.keyfile = self._tls.key_file
        config.alpn_protocols = self._alpn_protocols
        if self._require_client_cert:
            config.ca_certs = self._tls.ca_file
            config.verify_mode = ssl.CERT_REQUIRED
        config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT_S
        config.keep_alive_max_requests = KEEP_ALIVE_MAX_REQUESTS
        config.h2_max_concurrent_streams = MAX_CONCURRENT_STREAMS
        config.graceful_timeout = GRACEFUL_TIMEOUT_S
        config.accesslog = None
        config.errorlog = logging.getLogger(f"{__name__}.{self._name}")
        return config

    def _run(self, config: Config) -> None:
        try:
            with asyncio.Runner(loop_factory=_ServerLoop) as runner:
                runner.run(self._serve(config))
        except BaseException as exc:  # reported to start(); a daemon thread has no caller
            self._error = exc
            logger.exception("%s server failed", self._name)
        finally:
            self._app.started.set()

    async def _serve(self, config: Config) -> None:
        self._loop = asyncio.get_running_loop()
        self._shutdown = asyncio.Event()
        server = asyncio.ensure_future(
            serve(self._app, config, shutdown_trigger=self._shutdown.wait)  # type: ignore[arg-type]
        )
        stopping = asyncio.ensure_future(self._shutdown.wait())
        await asyncio.wait({server, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        # Hypercorn waits for every open connection to close, and a client that
        # keeps its idle connection would hold stop() forever; cut it short.
        done, _ = await asyncio.wait({server}, timeout=GRACEFUL_TIMEOUT_S)
        if not done:
            server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
