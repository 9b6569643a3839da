"""Deliver pushes to Firebase Cloud Messaging (HTTP v1) through ``pyfcm``.

``pyfcm`` 2.x handles service-account credentials and the request; the message
itself is built by :func:`~willowe_tasks.providers.fcm.message.fcm_message`, the
same function ``send()`` measures a notification with. Three of pyfcm's habits
do not fit a Dramatiq worker, so :class:`_PyFCM` overrides them on an instance
of a private subclass (never on ``pyfcm``'s classes themselves):

* it sleeps on ``Retry-After`` inside the calling thread and then retries, and its
  ``urllib3`` adapter retries 502/503 with backoff. A worker thread stuck in
  ``time.sleep`` holds a message and blocks nothing useful; Dramatiq's Retries
  middleware already schedules retries through the broker's delay queue. Here a
  429 or 5xx raises :class:`TransientDeliveryError` with ``retry_after_s`` at once.
* its endpoint base is a class attribute (``FCM_END_POINT_BASE``); it is set on the
  instance so a test can point one client at a local fake without affecting others.
* every thread fetches its own OAuth access token; here one token, refreshed under
  a lock, serves all threads, and the token endpoint is reached with the same TLS
  trust (``ca_file``) as FCM itself.
* it posts through ``requests`` (HTTP/1.1, a connection per concurrent request,
  and about 1.7 ms of CPU per push in a worker). Here messages go through
  libcurl over HTTP/2, each a stream of one multiplexed connection, driven on a
  loop thread as the APNs client's are (:mod:`willowe_tasks.providers._curl`);
  FCM v1 speaks HTTP/2. ``requests`` remains for the OAuth token endpoint
  (google-auth's transport), about once an hour.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import certifi
import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import service_account
from pyfcm import FCMNotification
from requests.adapters import HTTPAdapter

from willowe_tasks.providers._curl import CurlClient, CurlResponse, TlsFiles
from willowe_tasks.providers.errors import (
    THROTTLED_SENDER,
    DeliveryError,
    PermanentDeliveryError,
    TokenRejected,
    TransientDeliveryError,
)
from willowe_tasks.providers.fcm.message import (
    MAX_MESSAGE_BYTES,
    encode_request_sized,
    fcm_message,
)
from willowe_tasks.providers.push import Push
from willowe_tasks.providers.retry_after import parse_retry_after

logger = logging.getLogger(__name__)

#: OAuth scope that allows sending FCM messages.
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

#: Where the real FCM lives; ``endpoint`` replaces the origin for tests.
DEFAULT_ENDPOINT = "https://fcm.googleapis.com"

#: FCM errorCodes that mean the registration token must be dropped.
TOKEN_REJECTED_CODES: Final = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})

#: FCM errorCodes worth retrying later.
TRANSIENT_CODES: Final = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})

#: The errorCode of a 429 over the project's per-minute quota: "the system
#: serves HTTP status code 429 RESOURCE_EXHAUSTED ("QUOTA_EXCEEDED") until the
#: quota is refilled" (FCM's "Throttling and quotas"). The whole sender waits.
QUOTA_EXCEEDED: Final = "QUOTA_EXCEEDED"

#: Field that an INVALID_ARGUMENT names when the registration token is malformed.
TOKEN_FIELD = "message.token"

_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
_PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")

PROVIDER: Final = "fcm"


class FCMClient:
    """A thread-safe FCM HTTP v1 sender authenticated by a service account.

    Give the service account as a JSON file (``service_account_file``) or as its
    parsed dict (``service_account_info``). ``endpoint`` is the origin to send to
    (default: Google's); ``ca_file`` replaces the public CA bundle for both FCM and
    the service account's ``token_uri``, for a local fake's throwaway CA.
    """

    def __init__(
        self,
        *,
        project_id: str,
        service_account_file: str | Path | None = None,
        service_account_info: dict[str, Any] | None = None,
        endpoint: str | None = None,
        ca_file: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not _PROJECT_ID.fullmatch(project_id):
            raise ValueError("project_id is not a valid Firebase project id")
        if (service_account_file is None) == (service_account_info is None):
            raise ValueError("give exactly one of service_account_file or service_account_info")
        if service_account_file is not None:
            credentials = service_account.Credentials.from_service_account_file(
                str(service_account_file), scopes=[FCM_SCOPE]
            )
        else:
            assert service_account_info is not None
            credentials = service_account.Credentials.from_service_account_info(
                service_account_info, scopes=[FCM_SCOPE]
            )
        if ca_file is not None and not Path(ca_file).is_file():
            raise ValueError(f"ca_file {ca_file!r} is not a file")
        self.project_id = project_id
        self._timeout_s = timeout_s
        self._fcm = _PyFCM(
            credentials=credentials,
            project_id=project_id,
            endpoint_base=_endpoint_base(endpoint or DEFAULT_ENDPOINT),
            verify=ca_file or True,
            timeout_s=timeout_s,
        )

    def __repr__(self) -> str:
        return f"FCMClient(project_id={self.project_id!r})"

    def __enter__(self) -> FCMClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection the client opened."""
        self._fcm.close()

    def send(self, push: Push) -> None:
        """Deliver ``push`` or raise a :class:`~willowe_tasks.providers.errors.DeliveryError`.

        Safe to call from many threads at once. Never sleeps or retries a
        delivery by itself: retries belong to the caller.
        """
        body, size = encode_request_sized(fcm_message(push))
        if size > MAX_MESSAGE_BYTES:
            raise PermanentDeliveryError(
                "MessageTooBig", provider=PROVIDER,
                detail=f"{size} bytes, limit {MAX_MESSAGE_BYTES}",
            )
        try:
            response = self._fcm.send_request(payload=body, timeout=self._timeout_s)
            result = self._fcm.parse_response(response)
        except DeliveryError as exc:
            if isinstance(exc, TokenRejected):
                logger.info("FCM rejected device %s: %s", push.token_hash, exc.reason)
            else:
                logger.warning("FCM did not deliver to %s: %s", push.token_hash, exc)
            raise
        logger.debug("FCM accepted %s for device %s", result.get("name"), push.token_hash)


def _endpoint_base(endpoint: str) -> str:
    """``https://host[:port]`` (or a full ``.../v1/projects`` base) to pyfcm's base."""
    base = endpoint.rstrip("/")
    if not base.startswith("https://"):
        raise ValueError("FCM endpoint must be an https:// URL")
    return base if base.endswith("/v1/projects") else f"{base}/v1/projects"


class _PyFCM(FCMNotification):
    """``pyfcm`` with a transport that neither sleeps nor retries (see module doc)."""

    def __init__(
        self,
        *,
        credentials: service_account.Credentials,
        project_id: str,
        endpoint_base: str,
        verify: str | bool,
        timeout_s: float,
    ) -> None:
        super().__init__(project_id=project_id, credentials=credentials)
        # An instance attribute shadows pyfcm's class constant for this client only.
        self.FCM_END_POINT_BASE = endpoint_base
        # pyfcm prefers the project id inside the credentials; ours is explicit.
        self._fcm_end_point = f"{endpoint_base}/{project_id}/messages:send"
        self._verify = verify
        self._timeout_s = timeout_s
        self._token_lock = threading.Lock()
        self._sessions_lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        self._auth_request = _AuthRequest(self._new_session(), verify=verify, timeout_s=timeout_s)
        self._http = CurlClient(
            "fcm-io", TlsFiles(verify if isinstance(verify, str) else certifi.where()),
            provider=PROVIDER, timeout_s=timeout_s)

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.verify = self._verify
        # A plain adapter retries nothing; pyfcm's mounts urllib3 Retry for 502/503,
        # which backs off with sleeps in this thread.
        adapter = HTTPAdapter()
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        with self._sessions_lock:
            self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._http.close()

    def _access_token(self) -> str:
        with self._token_lock:
            if not self.credentials.valid:
                try:
                    self.credentials.refresh(self._auth_request)
                except google.auth.exceptions.TransportError as exc:
                    raise TransientDeliveryError(
                        "AuthUnavailable", provider=PROVIDER, detail=type(exc).__name__
                    ) from exc
                except google.auth.exceptions.RefreshError as exc:
                    cls = TransientDeliveryError if exc.retryable else PermanentDeliveryError
                    raise cls("AuthFailed", provider=PROVIDER, detail=str(exc)[:200]) from exc
                logger.info("fetched an FCM access token")
            return str(self.credentials.token)

    def _forget_token(self, token: str) -> None:
        with self._token_lock:
            if self.credentials.token == token:
                self.credentials.token = None

    def request_headers(self) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self._access_token()}",
        }

    def send_request(self, payload: Any = None, timeout: Any = None) -> CurlResponse:
        token = self._access_token()
        response = self._post(payload, token, timeout)
        if response.status_code == 401 and _error_code(_json(response)) is None:
            # The access token was revoked or expired early; that is our state,
            # not the message's, so fetch a new one and try once more right away.
            self._forget_token(token)
            response = self._post(payload, self._access_token(), timeout)
        return response

    def _post(self, payload: Any, token: str, timeout: Any) -> CurlResponse:
        headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
        body = payload if isinstance(payload, bytes) else str(payload).encode("utf-8")
        return self._http.post(self.fcm_end_point, headers, body)

    def parse_response(self, response: CurlResponse) -> dict[str, Any]:
        if response.status_code == 200:
            body = _json(response)
            return body if isinstance(body, dict) else {}
        raise _error_for(response)


class _AuthRequest(google.auth.transport.requests.Request):
    """google-auth's transport, with our CA and timeout for the token endpoint."""

    def __init__(self, session: requests.Session, *, verify: str | bool, timeout_s: float) -> None:
        super().__init__(session=session)
        self._verify = verify
        self._timeout_s = timeout_s

    def __call__(  # type: ignore[override]
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        # See _PyFCM._post for why verify is passed per request.
        kwargs.setdefault("verify", self._verify)
        return super().__call__(
            url,
            method=method,
            body=body,
            headers=headers,
            timeout=timeout or self._timeout_s,
            **kwargs,
        )


def _json(response: CurlResponse) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_details(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return []
    details = body["error"].get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _error_code(body: Any) -> str | None:
    """``details[].errorCode`` of the FcmError detail: what FCM says to act on."""
    for detail in _error_details(body):
        code = detail.get("errorCode")
        if detail.get("@type") == _FCM_ERROR_TYPE and isinstance(code, str):
            return code
    return None


def _names_token(body: Any) -> bool:
    """Whether an INVALID_ARGUMENT blames the registration token."""
    for detail in _error_details(body):
        if detail.get("@type") != _BAD_REQUEST_TYPE:
            continue
        for violation in detail.get("fieldViolations") or []:
            if isinstance(violation, dict) and violation.get("field") == TOKEN_FIELD:
                return True
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return isinstance(message, str) and "registration token" in message.lower()


def _error_for(response: CurlResponse) -> DeliveryError:
    status = response.status_code
    body = _json(response)
    error = body.get("error") if isinstance(body, dict) else None
    google_status = error.get("status") if isinstance(error, dict) else None
    reason = _error_code(body) or (google_status if isinstance(google_status, str) else None)
    reason = reason or f"HTTP{status}"
    if reason in TOKEN_REJECTED_CODES:
        return TokenRejected(reason, provider=PROVIDER, status_code=status)
    if reason == "INVALID_ARGUMENT" and _names_token(body):
        return TokenRejected(reason, provider=PROVIDER, status_code=status, detail="token")
    if reason in TRANSIENT_CODES or status == 429 or status >= 500:
        return TransientDeliveryError(
            reason,
            provider=PROVIDER,
            status_code=status,
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
            throttled=THROTTLED_SENDER if status == 429 or reason == QUOTA_EXCEEDED else None,
        )
    return PermanentDeliveryError(reason, provider=PROVIDER, status_code=status)

