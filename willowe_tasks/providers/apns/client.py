"""Deliver pushes to Apple Push Notification service over HTTP/2.

Why libcurl (``pycurl``) and not a dedicated APNs package:

* ``apns2`` (PyAPNs2) cannot even be imported on Python 3.10 and later: its HTTP/2
  dependency ``hyper`` is unmaintained and uses the ``collections`` aliases that
  Python 3.10 removed.
* ``aioapns`` works (h2 on asyncio; django-push-notifications moved to it), but
  it is asyncio-only, brings its own connection pool, JWT handling, retries and
  result types that we would wrap and translate, and frames HTTP/2 in pure
  Python (``h2``), as httpx does.
* HTTP/2 framing in Python was the largest CPU cost of a push in a worker:
  about 2.4 ms of CPU per push through httpx, 0.6 ms through libcurl, which
  does the framing, TLS and header compression in C (see
  :mod:`willowe_tasks.providers._curl`). The APNs request itself is a few
  lines whose headers, timeouts and error mapping we control.

Why a loop thread: Dramatiq runs actors on plain worker threads, and libcurl's
handles are not thread-safe. So each client drives one multi handle on a
private asyncio loop in a background thread (every request a stream of one
multiplexed connection, as Apple wants providers to connect), and
:meth:`APNsClient.send` hands it the request and blocks until the answer:
synchronous and thread-safe for the caller, one loop per process rather than
per worker thread.

One :class:`APNsClient` per worker process, shared by all of its threads. It may
be built before Dramatiq forks its workers: the loop thread and the connection
are made on first use in each process, and made anew in a forked child.

The device token is part of the request path. libcurl logs nothing unless
asked to (``VERBOSE`` stays off), so no token reaches a log line through it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import TracebackType
from typing import Final

import certifi

from willowe_tasks.providers._curl import CurlClient, CurlResponse, TlsFiles
from willowe_tasks.providers.apns.auth import CertificateAuth, TokenAuth
from willowe_tasks.providers.apns.payload import MAX_PAYLOAD_BYTES, apns_headers, apns_payload
from willowe_tasks.providers.errors import (
    THROTTLED_DEVICE,
    PermanentDeliveryError,
    TokenRejected,
    TransientDeliveryError,
)
from willowe_tasks.providers.push import Push
from willowe_tasks.providers.retry_after import parse_retry_after

logger = logging.getLogger(__name__)

#: Named endpoints accepted by :class:`APNsClient`; anything else must be a URL.
ENDPOINTS: Final = {
    "production": "https://api.push.apple.com",
    "sandbox": "https://api.development.push.apple.com",
}

#: Apple reasons that mean the device token is dead or belongs to another app.
TOKEN_REJECTED_REASONS: Final = frozenset(
    {"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"}
)

#: Apple's 429 reason for "too many requests for the same device token": the
#: throttle is per device, so only that device should wait.
DEVICE_THROTTLED_REASON: Final = "TooManyRequests"

#: Device tokens are hex strings; anything else can never be delivered and must
#: not reach the request path.
_HEX_TOKEN = re.compile(r"[0-9a-fA-F]+")

PROVIDER: Final = "apns"


class APNsClient:
    """A thread-safe APNs sender over one multiplexed HTTP/2 connection.

    ``endpoint`` is ``"production"``, ``"sandbox"`` or a base URL (a local fake).
    ``ca_file`` replaces the public CA bundle, for a fake's throwaway CA.
    ``timeout_s`` bounds connecting, each read and each write of one request.
    """

    def __init__(
        self,
        *,
        endpoint: str,
        default_topic: str,
        auth: TokenAuth | CertificateAuth,
        ca_file: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not default_topic:
            raise ValueError("APNsClient needs a default_topic (the app's bundle id)")
        self.base_url = ENDPOINTS.get(endpoint, endpoint).rstrip("/")
        if not self.base_url.startswith("https://"):
            raise ValueError("APNs endpoint must be 'production', 'sandbox' or an https:// URL")
        if ca_file is not None and not Path(ca_file).is_file():
            raise ValueError(f"ca_file {ca_file!r} is not a file")
        self.default_topic = default_topic
        self._auth = auth
        if isinstance(auth, CertificateAuth):
            auth.check()  # a wrong path or password fails here, not at the first push
            tls = TlsFiles(ca_file or certifi.where(), auth.cert_file, auth.key_file,
                           auth.password)
        else:
            tls = TlsFiles(ca_file or certifi.where())
        self._http = CurlClient("apns-io", tls, provider=PROVIDER, timeout_s=timeout_s)

    def __repr__(self) -> str:
        return f"APNsClient(base_url={self.base_url!r}, default_topic={self.default_topic!r})"

    def __enter__(self) -> APNsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and its thread; the client cannot send afterwards."""
        self._http.close()

    def send(self, push: Push) -> None:
        """Deliver ``push`` or raise a :class:`~willowe_tasks.providers.errors.DeliveryError`.

        Safe to call from many threads at once. Never retries or sleeps by itself:
        retries belong to the caller (Dramatiq's Retries middleware).
        """
        if not _HEX_TOKEN.fullmatch(push.token):
            raise TokenRejected(
                "BadDeviceToken", provider=PROVIDER, detail="device token is not hexadecimal"
            )
        payload = apns_payload(push)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise PermanentDeliveryError(
                "PayloadTooLarge",
                provider=PROVIDER,
                detail=f"{len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}",
            )
        headers = apns_headers(push, default_topic=self.default_topic)
        jwt_used = None
        if isinstance(self._auth, TokenAuth):
            jwt_used = self._auth.token()
            headers["authorization"] = f"bearer {jwt_used}"
        response = self._http.post(f"{self.base_url}/3/device/{push.token}", headers, payload)
        if response.status_code == 200:
            logger.debug(
                "APNs accepted push %s for device %s",
                response.headers.get("apns-id"),
                push.token_hash,
            )
            return
        self._raise_for(response, push, jwt_used)

    def _raise_for(self, response: CurlResponse, push: Push, jwt_used: str | None) -> None:
        status = response.status_code
        reason = _reason(response)
        apns_id = response.headers.get("apns-id")
        if status == 410 or reason in TOKEN_REJECTED_REASONS:
            logger.info("APNs rejected device %s: %s (%s)", push.token_hash, reason, status)
            raise TokenRejected(reason, provider=PROVIDER, status_code=status,
                                invalid_since=_invalid_since(response))
        if reason == "ExpiredProviderToken" and jwt_used is not None:
            # Our JWT outlived Apple's hour (clock skew, a paused process): make a
            # new one for the next attempt and let the caller retry this push.
            assert isinstance(self._auth, TokenAuth)
            self._auth.token_rejected(jwt_used)
            raise TransientDeliveryError(reason, provider=PROVIDER, status_code=status)
        if status == 429 or status >= 500:
            retry_after_s = parse_retry_after(response.headers.get("retry-after"))
            logger.warning("APNs deferred push %s: %s (%s)", apns_id, reason, status)
            throttled = (THROTTLED_DEVICE if status == 429 and reason == DEVICE_THROTTLED_REASON
                         else None)
            raise TransientDeliveryError(
                reason, provider=PROVIDER, status_code=status, retry_after_s=retry_after_s,
                throttled=throttled,
            )
        logger.warning("APNs refused push %s: %s (%s)", apns_id, reason, status)
        raise PermanentDeliveryError(reason, provider=PROVIDER, status_code=status)



def _invalid_since(response: CurlResponse) -> float | None:
    """The ``timestamp`` of a 410: "the last time at which APNs confirmed that the
    device token was no longer valid for the topic", in milliseconds."""
    try:
        body = response.json()
    except ValueError:
        return None
    stamp = body.get("timestamp") if isinstance(body, dict) else None
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or stamp <= 0:
        return None
    return stamp / 1000


def _reason(response: CurlResponse) -> str:
    """Apple's ``reason`` from the JSON body, or a stand-in naming the status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("reason"), str) and body["reason"]:
        return body["reason"]
    return f"HTTP{response.status_code}"
