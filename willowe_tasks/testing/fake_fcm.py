"""A local FCM HTTP v1 endpoint with its own OAuth token endpoint.

:meth:`FakeFCM.service_account_info` hands out a service account whose
``token_uri`` points at the fake, so google-auth runs its real JWT-bearer grant:
the fake verifies the assertion's RS256 signature against the key it issued and
answers with an access token, which ``messages:send`` then requires. Messages
are validated as strictly as Google does for the fields a sender commonly gets
wrong (string-only data, ``ttl`` duration strings, ``priority`` values, unknown
fields), and errors come in Google's format with an ``FcmError`` detail.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from willowe_tasks.testing._asgi import HTTPRequest, HTTPResponse
from willowe_tasks.testing._fake import FakeProvider, Outcome

#: Scope a service account must ask for to send messages.
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

#: Audience google-auth puts in service-account assertions, whatever the token_uri.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"

#: OAuth grant type of a service-account assertion (RFC 7523).
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

#: Lifetime of issued access tokens, as Google's.
ACCESS_TOKEN_LIFETIME_S = 3600

#: Google's limit on the data of one message.
MAX_DATA_BYTES = 4096

#: Path of the OAuth token endpoint on the fake.
TOKEN_PATH = "/token"

_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
_SEND_PATH = re.compile(r"/v1/projects/([^/]+)/messages:send")
_TTL = re.compile(r"\d{1,10}(\.\d{1,9})?s")
_REGISTRATION_TOKEN = re.compile(r"[A-Za-z0-9_:\-]{1,4096}")

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

_TOP_LEVEL_FIELDS = frozenset({"message", "validate_only"})
_MESSAGE_FIELDS = frozenset(
    [
        "name",
        "data",
        "notification",
        "android",
        "webpush",
        "apns",
        "fcm_options",
        "token",
        "topic",
        "condition",
    ]
)
_NOTIFICATION_FIELDS = frozenset({"title", "body", "image"})
_ANDROID_FIELDS = frozenset(
    [
        "collapse_key",
        "priority",
        "ttl",
        "restricted_package_name",
        "data",
        "notification",
        "fcm_options",
        "direct_boot_ok",
    ]
)
_ANDROID_NOTIFICATION_FIELDS = frozenset(
    [
        "title",
        "body",
        "icon",
        "color",
        "sound",
        "tag",
        "click_action",
        "body_loc_key",
        "body_loc_args",
        "title_loc_key",
        "title_loc_args",
        "channel_id",
        "ticker",
        "sticky",
        "event_time",
        "local_only",
        "notification_priority",
        "default_sound",
        "default_vibrate_timings",
        "default_light_settings",
        "vibrate_timings",
        "visibility",
        "notification_count",
        "light_settings",
        "image",
        "bypass_proxy_notification",
    ]
)
_ANDROID_PRIORITIES = frozenset({"normal", "high", "NORMAL", "HIGH"})
_RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type"})


def new_service_account_key_pem() -> str:
    """A new RSA private key in PKCS#8 PEM, as in a Google service-account file."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


class _Invalid(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class FakeFCM(FakeProvider):
    """Fake FCM (and OAuth token endpoint) on ``https://127.0.0.1:<port>``.

    Point ``FCMClient(endpoint=fake.url, ca_file=fake.ca_file, ...)`` at it with
    the service account from :meth:`service_account_info` or
    :meth:`write_service_account`. ``fail(status, reason)`` takes an FCM
    ``errorCode`` such as ``"UNREGISTERED"`` or ``"QUOTA_EXCEEDED"`` as ``reason``.
    """

    name = "fake-fcm"

    def __init__(
        self,
        *,
        project_id: str = "willowe-test",
        latency_s: float = 0.0,
        service_account_key_pem: str | None = None,
    ) -> None:
        super().__init__(alpn_protocols=["h2", "http/1.1"], latency_s=latency_s)
        self.project_id = project_id
        self.client_email = f"push-sender@{project_id}.iam.gserviceaccount.com"
        # A fresh 2048-bit RSA key takes ~0.1 s; a test suite may pass one in
        # to share it between many short-lived fakes.
        if service_account_key_pem is None:
            service_account_key_pem = new_service_account_key_pem()
        # The key was made by new_service_account_key_pem(); skipping RSA's
        # consistency check saves ~35 ms per fake.
        key = serialization.load_pem_private_key(
            service_account_key_pem.encode(), None, unsafe_skip_rsa_key_validation=True
        )
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("a service account key must be an RSA private key")
        self._public_key = key.public_key()
        self._private_key_pem = service_account_key_pem
        self._private_key_id = secrets.token_hex(20)
        self._state_lock = threading.Lock()
        self._access_tokens: dict[str, float] = {}
        self._unregistered: set[str] = set()
        self._token_grants = 0
        self._message_ids = 0

    # -- what clients need ---------------------------------------------------

    @property
    def token_uri(self) -> str:
        return f"{self.url}{TOKEN_PATH}"

    def service_account_info(self) -> dict[str, str]:
        """A service-account key dict (as in Google's JSON key file) for this fake."""
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self._private_key_id,
            "private_key": self._private_key_pem,
            "client_email": self.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": f"{self.url}/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": f"{self.url}/certs",
            "client_x509_cert_url": f"{self.url}/certs/{self.client_email}",
            "universe_domain": "googleapis.com",
        }

    def write_service_account(self, path: str | Path) -> str:
        """Write :meth:`service_account_info` as a JSON key file; returns the path."""
        target = Path(path)
        target.write_text(json.dumps(self.service_account_info(), indent=2))
        target.chmod(0o600)
        return str(target)

    # -- what tests control and look at ----------------------------------------

    @property
    def token_grants(self) -> int:
        """How many access tokens the OAuth endpoint has issued."""
        with self._state_lock:
            return self._token_grants

    def expire_access_tokens(self) -> None:
        """Invalidate every issued access token, as a revocation would."""
        with self._state_lock:
            self._access_tokens.clear()

    def unregister(self, token: str) -> None:
        """Answer later messages to ``token`` with ``404 UNREGISTERED``."""
        with self._state_lock:
            self._unregistered.add(token)

    # -- serving ---------------------------------------------------------------

    def _is_push(self, request: HTTPRequest) -> bool:
        return request.path != TOKEN_PATH

    async def _handle(self, request: HTTPRequest) -> Outcome:
        if request.path == TOKEN_PATH:
            return Outcome(self._grant(request), record=False)
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
        if not self._authorized(request.header("authorization")):
            message = (
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential."
            )
            return _google_error(401, None, message), "UNAUTHENTICATED"
        if project_id != self.project_id:
            message = "Permission 'cloudmessaging.messages.create' denied on resource."
            return _google_error(403, None, message), "PERMISSION_DENIED"
        try:
            _validate(body)
        except _Invalid as invalid:
            return _google_error(400, "INVALID_ARGUMENT", invalid.message, invalid.field), (
                "INVALID_ARGUMENT"
            )
        fault = self._faults.take(token)
        if fault is not None:
            extra = [("retry-after", fault.retry_after)] if fault.retry_after else []
            message = f"Injected failure: {fault.reason}"
            return _google_error(fault.status, fault.reason, message, headers=extra), fault.reason
        with self._state_lock:
            unregistered = token in self._unregistered
            self._message_ids += 1
            message_id = self._message_ids
        if unregistered:
            return _google_error(404, "UNREGISTERED", "Requested entity was not found."), (
                "UNREGISTERED"
            )
        name = f"projects/{self.project_id}/messages/0:{message_id}%{secrets.token_hex(8)}"
        return HTTPResponse.json(200, {"name": name}), None

    def _authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        with self._state_lock:
            expires_at = self._access_tokens.get(token)
        return expires_at is not None and expires_at > time.time()

    def _grant(self, request: HTTPRequest) -> HTTPResponse:
        form = parse_qs(request.body.decode("utf-8", "replace"))
        if request.method != "POST" or form.get("grant_type") != [JWT_BEARER_GRANT]:
            return _oauth_error("unsupported_grant_type", "Invalid grant_type.")
        assertion = (form.get("assertion") or [""])[0]
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self._public_key,
                algorithms=["RS256"],
                audience=[GOOGLE_TOKEN_AUDIENCE, self.token_uri],
                issuer=self.client_email,
                options={"require": ["iss", "aud", "iat", "exp"]},
                leeway=60,
            )
        except jwt.InvalidTokenError as exc:
            return _oauth_error("invalid_grant", f"Invalid JWT: {type(exc).__name__}")
        if header.get("kid") not in (None, self._private_key_id):
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        if claims["exp"] - claims["iat"] > ACCESS_TOKEN_LIFETIME_S:
            return _oauth_error("invalid_grant", "Invalid JWT: lifetime over one hour.")
        if FCM_SCOPE not in str(claims.get("scope", "")).split():
            return _oauth_error("invalid_scope", "The scope does not allow sending messages.")
        access_token = f"ya29.fake-{secrets.token_urlsafe(24)}"
        with self._state_lock:
            self._access_tokens[access_token] = time.time() + ACCESS_TOKEN_LIFETIME_S
            self._token_grants += 1
        return HTTPResponse.json(
            200,
            {
                "access_token": access_token,
                "expires_in": ACCESS_TOKEN_LIFETIME_S,
                "token_type": "Bearer",
            },
        )


def _validate(body: Any) -> None:
    if not isinstance(body, dict):
        raise _Invalid("Invalid JSON payload received.")
    _no_unknown_fields(body, _TOP_LEVEL_FIELDS, "")
    message = body.get("message")
    if not isinstance(message, dict):
        raise _Invalid("Request contains an invalid argument.", "message")
    _no_unknown_fields(message, _MESSAGE_FIELDS, "message")
    targets = [key for key in ("token", "topic", "condition") if key in message]
    if len(targets) != 1:
        raise _Invalid("Exactly one of token, topic or condition must be set.", "message")
    if "token" in message:
        token = message["token"]
        if not isinstance(token, str) or not _REGISTRATION_TOKEN.fullmatch(token):
            raise _Invalid(
                "The registration token is not a valid FCM registration token", "message.token"
            )
    _validate_data(message.get("data"), "message.data")
    notification = message.get("notification")
    if notification is not None:
        _string_fields(notification, _NOTIFICATION_FIELDS, "message.notification")
    android = message.get("android")
    if android is not None:
        _validate_android(android)


def _validate_android(android: Any) -> None:
    if not isinstance(android, dict):
        raise _Invalid("Invalid value at 'message.android'.", "message.android")
    _no_unknown_fields(android, _ANDROID_FIELDS, "message.android")
    priority = android.get("priority")
    if priority is not None and priority not in _ANDROID_PRIORITIES:
        raise _Invalid(
            f"Invalid value at 'message.android.priority' ({priority!r}).",
            "message.android.priority",
        )
    ttl = android.get("ttl")
    if ttl is not None and (not isinstance(ttl, str) or not _TTL.fullmatch(ttl)):
        raise _Invalid(
            "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf."
            "Duration), Field 'ttl', Illegal duration format; duration must end with 's'",
            "message.android.ttl",
        )
    collapse_key = android.get("collapse_key")
    if collapse_key is not None and not isinstance(collapse_key, str):
        raise _Invalid("Invalid value at 'message.android.collapse_key'.", "message.android")
    _validate_data(android.get("data"), "message.android.data")
    notification = android.get("notification")
    if notification is not None:
        _no_unknown_fields(
            notification, _ANDROID_NOTIFICATION_FIELDS, "message.android.notification"
        )
        for key in ("title", "body", "tag", "channel_id", "sound", "icon", "color"):
            if key in notification and not isinstance(notification[key], str):
                path = f"message.android.notification.{key}"
                raise _Invalid(f"Invalid value at '{path}' (TYPE_STRING).", path)


def _validate_data(data: Any, path: str) -> None:
    if data is None:
        return
    if not isinstance(data, dict):
        raise _Invalid(f"Invalid value at '{path}'.", path)
    size = 0
    for index, (key, value) in enumerate(data.items()):
        if not isinstance(value, str):
            raise _Invalid(f"Invalid value at '{path}[{index}].value' (TYPE_STRING).", path)
        lowered = key.lower()
        if lowered in _RESERVED_DATA_KEYS or lowered.startswith(("google.", "gcm.")):
            raise _Invalid(f"Invalid data payload key: {key}", path)
        size += len(key.encode("utf-8")) + len(value.encode("utf-8"))
    if size > MAX_DATA_BYTES:
        raise _Invalid("Android message is too big", path)


def _string_fields(value: Any, allowed: frozenset[str], path: str) -> None:
    if not isinstance(value, dict):
        raise _Invalid(f"Invalid value at '{path}'.", path)
    _no_unknown_fields(value, allowed, path)
    for key, item in value.items():
        if not isinstance(item, str):
            raise _Invalid(f"Invalid value at '{path}.{key}' (TYPE_STRING).", f"{path}.{key}")


def _no_unknown_fields(value: dict[str, Any], allowed: frozenset[str], path: str) -> None:
    for key in value:
        if key not in allowed:
            where = f" at '{path}'" if path else ""
            raise _Invalid(
                f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.',
                path or None,
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


def _oauth_error(error: str, description: str) -> HTTPResponse:
    return HTTPResponse.json(400, {"error": error, "error_description": description})


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
