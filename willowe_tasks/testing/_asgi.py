"""A minimal ASGI adapter: one whole request in, one whole response out.

The fakes are small request/response handlers; this module turns such a handler
into an ASGI application that hypercorn can serve, including the lifespan
protocol that tells the starting thread the server is up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

#: Bodies beyond this are cut off: the fakes only need to know they were too big.
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """One request as the fake saw it. Header names are lower case."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    http_version: str
    #: ``host:port`` of the client's end of the TCP connection (``#n`` added for
    #: the n-th connection from that address); one per connection.
    connection: str
    body_truncated: bool = False
    #: The port of the fake's socket the request came in on (a fake may listen
    #: on several, one per provider host).
    server_port: int = 0

    def header(self, name: str) -> str | None:
        """The last value of header ``name``, or ``None``."""
        values = self.header_values(name)
        return values[-1] if values else None

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @classmethod
    def json(
        cls, status: int, payload: Any, headers: list[tuple[str, str]] | None = None
    ) -> HTTPResponse:
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        return cls(status, [("content-type", "application/json"), *(headers or [])], body)


Handler = Callable[[HTTPRequest], Awaitable[HTTPResponse]]


class ASGIApp:
    """Serve ``handler``; set ``started`` once the server has started up."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.started = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                self.started.set()
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        chunks: list[bytes] = []
        size = 0
        truncated = False
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            if size + len(chunk) > MAX_BODY_BYTES:
                truncated = True
            else:
                chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                break
        client = scope.get("client") or ("?", 0)
        server = scope.get("server") or ("?", 0)
        # The server's loop tells apart connections that came from the same
        # client address one after the other (see _server._ServerLoop).
        label = getattr(asyncio.get_running_loop(), "connection_label", None)
        connection = (label(str(client[0]), int(client[1])) if label is not None
                      else f"{client[0]}:{client[1]}")
        request = HTTPRequest(
            method=scope["method"],
            path=scope["path"],
            headers=tuple(
                (name.decode("latin-1").lower(), value.decode("latin-1"))
                for name, value in scope["headers"]
            ),
            body=b"".join(chunks),
            http_version=scope.get("http_version", ""),
            connection=connection,
            body_truncated=truncated,
            server_port=int(server[1] or 0),
        )
        try:
            response = await self._handler(request)
        except Exception:
            logger.exception("fake server handler failed")
            response = HTTPResponse.json(500, {"reason": "InternalServerError"})
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (name.encode("latin-1"), value.encode("latin-1"))
                    for name, value in response.headers
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})
