"""A local FCM HTTP v1 endpoint with its own OAuth token endpoint.

:meth:`FakeFCM.service_account_info` hands out a service account whose
``token_uri`` points at the fake, so google-auth runs its real JWT-bearer grant
(:mod:`._google_oauth`) and ``messages:send`` requires the access token it got.
Messages are checked as Google checks them (:mod:`._fcm_messages`: string-only
data, reserved keys, ``ttl`` format and its 28-day limit, the 4096-byte size,
field types), and errors come in Google's format with an ``FcmError`` detail.

Projects and tokens: the fake serves one Firebase project, and more on request
(:meth:`FakeFCM.add_project`, each with its own service account). A token
registered for one project (:meth:`FakeFCM.register_token`) is refused to any
other with ``403 SENDER_ID_MISMATCH``, as for a worker configured with the
wrong project; tokens nobody registered are accepted by every project.

Offline phones follow FCM's storage rules ("Non-collapsible and collapsible
messages"): see :data:`STORAGE`.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from willowe_tasks.testing._asgi import HTTPRequest, HTTPResponse
from willowe_tasks.testing._fake import FakeProvider, Outcome
from willowe_tasks.testing._fcm_messages import InvalidMessage, ttl_s, validate
from willowe_tasks.testing._google_oauth import (
    ACCESS_TOKEN_LIFETIME_S,
    FCM_SCOPE,
    GOOGLE_TOKEN_AUDIENCE,
    JWT_BEARER_GRANT,
    TokenIssuer,
    new_service_account_key_pem,
    write_service_account_file,
)
from willowe_tasks.testing._phones import PhoneMessage, StoragePolicy
from willowe_tasks.testing._records import ReceivedRequest

__all__ = [
    "ACCESS_TOKEN_LIFETIME_S",
    "DEFAULT_PROJECT_ID",
    "FCM_SCOPE",
    "GOOGLE_TOKEN_AUDIENCE",
    "JWT_BEARER_GRANT",
    "FakeFCM",
    "new_service_account_key_pem",
]

#: The project the fake serves unless told otherwise.
DEFAULT_PROJECT_ID = "willowe-test"

#: Path of the OAuth token endpoint on the fake.
TOKEN_PATH = "/token"

#: What FCM keeps for an offline Android device. "The FCM server can
#: simultaneously store four different collapsible messages per device, each
#: with a different collapse key. If you exceed this number, FCM only keeps four
#: collapse keys, with no determining factor on which keys are kept" (the fake
#: keeps the four most recently used). "For Android, there is a limit of 100
#: messages that can be stored without collapsing. If the limit is reached, all
#: stored messages are discarded" (the fake discards the 100 and the one that
#: did not fit, and the phone gets a deleted-messages notice).
#: https://firebase.google.com/docs/cloud-messaging/customize-messages/collapsible-message-types
STORAGE = StoragePolicy(max_collapse_keys=4, max_plain_messages=100)

#: Only a message that names a collapse key collapses: "To mark a message as
#: collapsible on Android, include the collapse_key parameter in the message
#: payload" (the page above). Without one, notification messages are
#: non-collapsible like data messages, and an offline phone gets up to 100.
#: (An older page of the FCM docs called notification messages "always
#: collapsible"; the current one, cited here, is what the fake follows.)

_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
_SEND_PATH = re.compile(r"/v1/projects/([^/]+)/messages:send")

#: Google's canonical status name per HTTP status.
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class FakeFCM(FakeProvider):
    """Fake FCM (and OAuth token endpoint) on ``https://127.0.0.1:<port>``.

    Point ``FCMClient(endpoint=fake.url, ca_file=fake.ca_file, ...)`` at it with
    the service account from :meth:`service_account_info` or
    :meth:`write_service_account`. ``fail(status, reason)`` takes an FCM
    ``errorCode`` such as ``"UNREGISTERED"`` or ``"QUOTA_EXCEEDED"`` as ``reason``.
    ``clock`` (unix seconds) judges how long an offline phone's messages live.
    """

    name = "fake-fcm"

    def __init__(
        self,
        *,
        project_id: str = DEFAULT_PROJECT_ID,
        latency_s: float = 0.0,
        service_account_key_pem: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            alpn_protocols=["h2", "http/1.1"], storage=STORAGE, latency_s=latency_s, clock=clock
        )
        self.project_id = project_id
        # A fresh 2048-bit RSA key takes ~0.1 s; a test suite may pass one in
        # to share it between many short-lived fakes.
        self._issuer = TokenIssuer(service_account_key_pem or new_service_account_key_pem())
        self.client_email = self._issuer.add_account(project_id).client_email
        self._state_lock = threading.Lock()
        self._unregistered: set[str] = set()
        #: registration token -> the project that issued it
        self._token_projects: dict[str, str] = {}
        self._message_ids = 0
        #: (messages, seconds) of the quota mode; None: no quota.
        self._quota: tuple[int, float] | None = None
        #: When each message inside the quota's window was taken in.
        self._quota_window: deque[float] = deque()

    # -- what clients need ---------------------------------------------------

    @property
    def token_uri(self) -> str:
        return f"{self.url}{TOKEN_PATH}"

    def add_project(self, project_id: str) -> None:
        """Serve another Firebase project, with a service account of its own."""
        self._issuer.add_account(project_id)

    def service_account_info(self, project_id: str | None = None) -> dict[str, str]:
        """A service-account key dict (as in Google's JSON key file) for this fake's
        project, or for ``project_id`` (see :meth:`add_project`)."""
        account = self._issuer.account(project_id or self.project_id)
        return self._issuer.info(account, self.url, self.token_uri)

    def write_service_account(self, path: str | Path, project_id: str | None = None) -> str:
        """Write :meth:`service_account_info` as a JSON key file; returns the path."""
        return write_service_account_file(self.service_account_info(project_id), path)

    # -- what tests control and look at ----------------------------------------

    @property
    def token_grants(self) -> int:
        """How many access tokens the OAuth endpoint has issued."""
        return self._issuer.grants

    def expire_access_tokens(self) -> None:
        """Invalidate every issued access token, as a revocation would."""
        self._issuer.expire_all()

    def register_token(self, token: str, project_id: str | None = None) -> None:
        """``token`` was issued to an app of ``project_id`` (default: this fake's
        project): messages to it from another project get ``403
        SENDER_ID_MISMATCH``. Registering an unregistered token makes it live."""
        project = project_id or self.project_id
        self._issuer.account(project)  # only projects the fake serves
        with self._state_lock:
            self._token_projects[token] = project
            self._unregistered.discard(token)

    def enforce_quota(self, messages: int, window_s: float = 60.0) -> None:
        """Quota mode: a message past ``messages`` in any ``window_s`` seconds
        is answered ``429 QUOTA_EXCEEDED`` with a Retry-After, as FCM does
        over a project's per-minute quota ("Throttling and quotas"), so a
        sender that breaches it shows in :attr:`received`."""
        if messages < 1 or window_s <= 0:
            raise ValueError("a quota needs at least 1 message in a positive window")
        with self._state_lock:
            self._quota = (messages, window_s)
            self._quota_window.clear()

    def _over_quota(self) -> float | None:
        """Count one message against the quota; the seconds until there is room
        again when it is over (None: within the quota, or no quota)."""
        with self._state_lock:
            if self._quota is None:
                return None
            messages, window_s = self._quota
            now = self._clock()
            while self._quota_window and self._quota_window[0] <= now - window_s:
                self._quota_window.popleft()
            if len(self._quota_window) >= messages:
                return self._quota_window[0] + window_s - now
            self._quota_window.append(now)
            return None

    def unregister(self, token: str) -> None:
        """Answer later messages to ``token`` with ``404 UNREGISTERED``."""
        with self._state_lock:
            self._unregistered.add(token)

    # -- serving ---------------------------------------------------------------

    def _is_push(self, request: HTTPRequest) -> bool:
        return request.path != TOKEN_PATH

    async def _handle(self, request: HTTPRequest) -> Outcome:
        if request.path == TOKEN_PATH:
            return Outcome(self._issuer.grant(request, self.token_uri), record=False)
        match = _SEND_PATH.fullmatch(request.path)
        if match is None or request.method != "POST":
            return Outcome(_google_error(404, None, "Requested entity was not found."))
        body = _parse_json(request.body)
        message = body.get("message") if isinstance(body, dict) else None
        token = message.get("token") if isinstance(message, dict) else None
        token = token if isinstance(token, str) else None
        response, reason = self._send(request, match.group(1), body, token)
        return Outcome(response, token, body, reason)

    def _send(
        self, request: HTTPRequest, project_id: str, body: Any, token: str | None
    ) -> tuple[HTTPResponse, str | None]:
        sender = self._issuer.project_of(request.header("authorization"))
        if sender is None:
            message = (
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential."
            )
            return _google_error(401, None, message), "UNAUTHENTICATED"
        if project_id != sender:
            message = "Permission 'cloudmessaging.messages.create' denied on resource."
            return _google_error(403, None, message), "PERMISSION_DENIED"
        try:
            validate(body)
        except InvalidMessage as invalid:
            return _google_error(400, "INVALID_ARGUMENT", invalid.message, invalid.field), (
                "INVALID_ARGUMENT"
            )
        fault = self._faults.take(token)
        if fault is not None:
            extra = [("retry-after", fault.retry_after)] if fault.retry_after else []
            message = f"Injected failure: {fault.reason}"
            return _google_error(fault.status, fault.reason, message, headers=extra), fault.reason
        wait_s = self._over_quota()
        if wait_s is not None:
            retry_after = [("retry-after", str(max(1, int(wait_s + 0.999))))]
            return _google_error(429, "QUOTA_EXCEEDED", "Quota exceeded for quota metric.",
                                 headers=retry_after), "QUOTA_EXCEEDED"
        with self._state_lock:
            unregistered = token in self._unregistered
            owner = self._token_projects.get(token) if token else None
            self._message_ids += 1
            message_id = self._message_ids
        if owner is not None and owner != project_id:
            # "The authenticated sender ID is different from the sender ID for the
            # registration token" (FCM error codes, SENDER_ID_MISMATCH, HTTP 403).
            return _google_error(403, "SENDER_ID_MISMATCH", "SenderId mismatch"), (
                "SENDER_ID_MISMATCH"
            )
        if unregistered:
            return _google_error(404, "UNREGISTERED", "Requested entity was not found."), (
                "UNREGISTERED"
            )
        name = f"projects/{project_id}/messages/0:{message_id}%{secrets.token_hex(8)}"
        return HTTPResponse.json(200, {"name": name}), None

    def _phone_message(self, record: ReceivedRequest) -> PhoneMessage | None:
        if record.json.get("validate_only"):
            return None  # "Flag for testing the request without actually delivering"
        message = record.json["message"]
        android = message.get("android") or {}
        shown = {**(message.get("notification") or {}), **(android.get("notification") or {})}
        collapse_key = android.get("collapse_key")
        return PhoneMessage(
            request=record,
            expires_at=self._clock() + ttl_s(message),
            collapse_key=collapse_key,
            visible=bool(shown.get("title") or shown.get("body")),
            screen_key=(android.get("notification") or {}).get("tag"),
        )


def _google_error(
    status: int,
    error_code: str | None,
    message: str,
    field: str | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> HTTPResponse:
    details: list[dict[str, Any]] = []
    if error_code is not None:
        details.append({"@type": _FCM_ERROR_TYPE, "errorCode": error_code})
    if field is not None:
        details.append(
            {
                "@type": _BAD_REQUEST_TYPE,
                "fieldViolations": [{"field": field, "description": message}],
            }
        )
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": GOOGLE_STATUS.get(status, _status_name(status)),
    }
    if details:
        error["details"] = details
    return HTTPResponse.json(status, {"error": error}, headers)


def _status_name(status: int) -> str:
    try:
        return HTTPStatus(status).name
    except ValueError:
        return "UNKNOWN"


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
