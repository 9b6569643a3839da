"""A client that dies frees its port, and the next connection may get it: the
fake APNs must treat that as a new connection, as APNs does, not as the old
one rotating its provider token (429 TooManyProviderTokenUpdates)."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import time
from urllib.parse import urlsplit

import h2.connection
import h2.events
from delivery_support import APNS_TOKEN

from willowe_tasks.providers.apns.auth import TokenAuth
from willowe_tasks.testing import FakeAPNs

#: Bound on every socket wait, in seconds.
WAIT_S = 10.0


def push_from(port: int, fake: FakeAPNs, auth: TokenAuth) -> int:
    """One push over a fresh HTTP/2 connection from client port ``port``;
    the connection is then reset, as a killed process's would be. Returns
    the HTTP status."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Close with a reset: no TIME_WAIT, so the port can be taken again at once.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.settimeout(WAIT_S)
    sock.bind(("127.0.0.1", port))
    server = urlsplit(fake.url)
    sock.connect((server.hostname, server.port))
    context = ssl.create_default_context(cafile=fake.ca_file)
    context.set_alpn_protocols(["h2"])
    with context.wrap_socket(sock, server_hostname=server.hostname) as tls:
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        body = json.dumps({"aps": {"alert": {"title": "t", "body": "b"}}}).encode()
        conn.send_headers(1, [
            (":method", "POST"), (":scheme", "https"), (":authority", server.netloc),
            (":path", f"/3/device/{APNS_TOKEN}"), ("authorization", auth.authorization()),
            ("apns-topic", fake.bundle_id), ("apns-push-type", "alert"),
            ("content-type", "application/json"),
        ])
        conn.send_data(1, body, end_stream=True)
        tls.sendall(conn.data_to_send())
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            data = tls.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return int(dict(event.headers)[b":status"])
            tls.sendall(conn.data_to_send())
    raise AssertionError("no response from the fake")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_new_connection_on_a_dead_connections_port_starts_afresh() -> None:
    with FakeAPNs() as fake:

        def new_worker() -> TokenAuth:  # a process of its own: its own provider token
            return TokenAuth(key_path=fake.signing_key_path, key_id=fake.key_id,
                             team_id=fake.team_id)

        port = free_port()
        first, second = new_worker(), new_worker()
        assert first.token() != second.token()
        assert push_from(port, fake, first) == 200
        # The next worker's connection gets the same client port
        assert push_from(port, fake, second) == 200
        assert [r.status for r in fake.received] == [200, 200]
        assert len(fake.connections()) == 2
