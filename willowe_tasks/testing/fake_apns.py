"""A local APNs that checks requests the way Apple does.

HTTP/2 over TLS only, ``POST /3/device/<hex token>``, the ``apns-*`` headers,
payload limits and provider-token (JWT) rules, answered with Apple's status
codes, ``{"reason": ...}`` bodies and ``apns-id`` headers. Its signing key is
made on the fly and handed out as PEM text and as a ``.p8`` file, so a client in
another process can authenticate; :meth:`FakeAPNs.issue_client_cert` does the
same for certificate authentication.

Token-rotation rules follow Apple's documentation: a JWT older than an hour is
``403 ExpiredProviderToken``; a connection whose JWT changes to one issued less
than 20 minutes after its previous one gets ``429 TooManyProviderTokenUpdates``.
Apple tracks rotation per connection (separate worker processes, each with its
own token and connection, are fine), and so does the fake.

Environments: APNs has a development (sandbox) and a production host, and a
device token is only good on the one its app was built for; "a valid sandbox
[token] used in production environment will also give this error"
(BadDeviceToken, Apple's DTS on the developer forums). The fake listens on
both (:attr:`FakeAPNs.sandbox_url`, :attr:`FakeAPNs.production_url`); a token
registered for one (:meth:`FakeAPNs.register_token`) gets ``400
BadDeviceToken`` on the other, and ``400 DeviceTokenNotForTopic`` when pushed
under another app's topic. Tokens nobody registered are accepted on both
unless the fake is made with ``only_registered_tokens=True``.

Payloads are checked by :mod:`._apns_payload`. Offline phones follow Apple's
storage rule (see :data:`STORAGE`).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from willowe_tasks.testing._apns_payload import (
    MAX_PAYLOAD_BYTES,
    MAX_VOIP_PAYLOAD_BYTES,
    APNsRejection,
    check_payload,
)
from willowe_tasks.testing._asgi import HTTPRequest, HTTPResponse
from willowe_tasks.testing._fake import FakeProvider, Outcome
from willowe_tasks.testing._phones import PhoneMessage, StoragePolicy
from willowe_tasks.testing._records import ReceivedRequest
from willowe_tasks.testing._server import KEEP_ALIVE_TIMEOUT_S

__all__ = ["DEFAULT_BUNDLE_ID", "DEFAULT_KEY_ID", "DEFAULT_TEAM_ID", "MAX_PAYLOAD_BYTES",
           "MAX_VOIP_PAYLOAD_BYTES", "Environment", "FakeAPNs", "signing_key_pem"]

#: The app, team and key the fake stands for unless told otherwise.
DEFAULT_BUNDLE_ID = "com.willowe.app"
DEFAULT_TEAM_ID = "W1LL0WE7EA"
DEFAULT_KEY_ID = "FAKEKEY001"


def signing_key_pem(key: ec.EllipticCurvePrivateKey | None = None) -> str:
    """A provider token signing key (``AuthKey_<key id>.p8``: P-256, PKCS#8
    PEM), ``key`` or a new one."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


#: APNs' two hosts: ``api.sandbox.push.apple.com`` and ``api.push.apple.com``.
Environment = Literal["sandbox", "production"]

#: Apple's limit on ``apns-collapse-id``: "The value of this key must not exceed
#: 64 bytes" (Sending notification requests to APNs).
MAX_COLLAPSE_ID_BYTES = 64

#: "If APNs can't deliver a notification immediately, it may store the
#: notification for 30 days or less, depending on the date you specify in the
#: apns-expiration header" (Sending notification requests to APNs). Apple
#: documents no upper bound on the header itself, so the fake accepts any date
#: and keeps a notification at most this long.
MAX_STORAGE_S = 30 * 24 * 3600.0

#: "APNs stores only one notification per bundle ID. When you send multiple
#: notifications to the same device for a bundle ID, APNs selects only one
#: notification to store. In most cases, the latest notification is stored"
#: (Sending notification requests to APNs): one collapse key per app, the latest wins.
STORAGE = StoragePolicy(max_collapse_keys=None, max_plain_messages=0)

#: What ``apns-topic`` must be per push type: the bundle id plus this suffix
#: (Sending notification requests to APNs, apns-push-type).
TOPIC_SUFFIXES = {
    "alert": "",
    "background": "",
    "voip": ".voip",
    "complication": ".complication",
    "fileprovider": ".pushkit.fileprovider",
    "liveactivity": ".push-type.liveactivity",
    "location": ".location-query",
    "pushtotalk": ".voip-ptt",
    "widgets": ".push-type.widgets",
    "controls": ".push-type.controls",
}

#: Provider tokens older than this are rejected as expired.
TOKEN_MAX_AGE_S = 3600.0

#: A connection's provider token may change at most this often.
TOKEN_MIN_ROTATION_S = 20 * 60.0

#: Tolerated clock difference for a provider token issued "in the future".
CLOCK_SKEW_S = 60.0

#: A connection unused this long (real time) has been closed by the server, whose
#: keep-alive timeout is shorter, so a new connection on the same client port
#: starts afresh.
CONNECTION_FORGET_S = KEEP_ALIVE_TIMEOUT_S + 60.0

#: Provider tokens whose verified claims are remembered (then forgotten all at once).
VERIFIED_TOKENS_KEPT = 64

#: Values Apple accepts in ``apns-push-type``.
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "location",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "pushtotalk",
        "widgets",
        "controls",
    }
)

#: Values Apple accepts in ``apns-priority``.
PRIORITIES = frozenset({"10", "5", "1"})

#: Headers that must not be repeated (Apple: 400 DuplicateHeaders).
SINGLE_HEADERS = (
    "authorization",
    "apns-topic",
    "apns-push-type",
    "apns-priority",
    "apns-expiration",
    "apns-collapse-id",
    "apns-id",
)

_PATH = re.compile(r"/3/device/([^/]*)")
_HEX = re.compile(r"[0-9a-fA-F]{32,200}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True, slots=True)
class _Device:
    """Where a registered token is good."""

    environment: Environment
    bundle_id: str


@dataclass(slots=True)
class _ConnectionToken:
    token: str
    iat: int
    #: time.monotonic() of the last request on the connection.
    last_used: float


class FakeAPNs(FakeProvider):
    """Fake APNs on ``https://127.0.0.1:<port>`` (HTTP/2 only), sandbox and production.

    :attr:`url` is the sandbox host; :attr:`production_url` the production one.
    ``bundle_id`` is the app whose topics (``bundle_id`` itself for alert and
    background pushes, ``<bundle_id>.voip`` for VoIP, ...) are accepted. With
    ``client_cert_auth`` the TLS handshake requires a client certificate signed
    by :attr:`ca_file` (see :meth:`issue_client_cert`) instead of a provider
    token. ``clock`` (unix seconds) judges token ages and how long an offline
    phone's notification lives, so a test can move time forward together with
    the client's ``TokenAuth``. With ``only_registered_tokens`` a token nobody
    registered is ``400 BadDeviceToken``, as a made-up token is.
    """

    name = "fake-apns"

    def __init__(
        self,
        *,
        bundle_id: str = DEFAULT_BUNDLE_ID,
        team_id: str = DEFAULT_TEAM_ID,
        key_id: str = DEFAULT_KEY_ID,
        client_cert_auth: bool = False,
        latency_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        only_registered_tokens: bool = False,
    ) -> None:
        super().__init__(
            alpn_protocols=["h2"],
            storage=STORAGE,
            require_client_cert=client_cert_auth,
            latency_s=latency_s,
            clock=clock,
            listeners=len(get_args(Environment)),
        )
        self.bundle_id = bundle_id
        self.team_id = team_id
        self.key_id = key_id
        self.client_cert_auth = client_cert_auth
        self.only_registered_tokens = only_registered_tokens
        key = ec.generate_private_key(ec.SECP256R1())
        self._public_key = key.public_key()
        #: The ``.p8`` signing key as PEM text, for ``TokenAuth(key_pem=...)``.
        self.signing_key_pem = signing_key_pem(key)
        self._signing_key_path = self.directory / f"AuthKey_{key_id}.p8"
        self._signing_key_path.write_text(self.signing_key_pem)
        self._state_lock = threading.Lock()
        self._connection_tokens: dict[str, _ConnectionToken] = {}
        self._unregistered: dict[str, int] = {}
        self._devices: dict[str, _Device] = {}
        self._verified_tokens: dict[str, tuple[Any, Any]] = {}

    @property
    def sandbox_url(self) -> str:
        """The development host (``api.sandbox.push.apple.com``); the same as :attr:`url`."""
        return self.url_for("sandbox")

    @property
    def production_url(self) -> str:
        """The production host (``api.push.apple.com``)."""
        return self.url_for("production")

    def url_for(self, environment: Environment) -> str:
        return self._server.url_of(get_args(Environment).index(environment))

    @property
    def signing_key_path(self) -> str:
        """Path of the ``.p8`` signing key, for ``TokenAuth(key_path=...)``."""
        return str(self._signing_key_path)

    def issue_client_cert(self, name: str | None = None) -> tuple[str, str]:
        """A client certificate and key signed by the fake's CA: ``(cert_file, key_file)``."""
        return self._tls.issue_client_cert(name or self.bundle_id)

    def register_token(
        self, token: str, *, environment: Environment = "sandbox", bundle_id: str | None = None
    ) -> None:
        """``token`` was issued to app ``bundle_id`` (default :attr:`bundle_id`) by
        APNs' ``environment``: it gets ``BadDeviceToken`` on the other host and
        ``DeviceTokenNotForTopic`` under another app's topic. Registering an
        unregistered token makes it live again, as an app reinstalled on the
        phone reporting its token to the provider does."""
        if environment not in get_args(Environment):
            raise ValueError(f"environment must be one of {get_args(Environment)}")
        with self._state_lock:
            self._devices[token.lower()] = _Device(environment, bundle_id or self.bundle_id)
            self._unregistered.pop(token.lower(), None)

    def unregister(self, token: str, *, at: float | None = None) -> None:
        """Answer later pushes to ``token`` with ``410 Unregistered``, as for a
        deleted app, with ``timestamp``: "The time, represented in milliseconds
        since Epoch, at which APNs confirmed the token was no longer valid for the
        topic" (Handling notification responses from APNs); ``at`` (unix seconds)
        sets it, else the fake's clock."""
        when = self._clock() if at is None else at
        with self._state_lock:
            self._unregistered[token.lower()] = int(when * 1000)

    # -- request checks --------------------------------------------------------

    async def _handle(self, request: HTTPRequest) -> Outcome:
        match = _PATH.fullmatch(request.path)
        token = match.group(1) if match else None
        payload = _parse_json(request.body)
        try:
            self._check(request, token, payload)
            fault = self._faults.take(token)
        except APNsRejection as rejection:
            return self._reject(rejection.status, rejection.reason, token, payload)
        apns_id = request.header("apns-id") or str(uuid.uuid4()).upper()
        if fault is not None:
            extra = [("retry-after", fault.retry_after)] if fault.retry_after else []
            return self._reject(fault.status, fault.reason, token, payload, apns_id, extra)
        with self._state_lock:
            unregistered_at = self._unregistered.get(token.lower()) if token else None
        if unregistered_at is not None:
            body = {"reason": "Unregistered", "timestamp": unregistered_at}
            response = HTTPResponse.json(410, body, [("apns-id", apns_id)])
            return Outcome(response, token, payload, "Unregistered")
        return Outcome(HTTPResponse(200, [("apns-id", apns_id)]), token, payload)

    def _reject(
        self,
        status: int,
        reason: str,
        token: str | None,
        payload: Any,
        apns_id: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> Outcome:
        headers = [("apns-id", apns_id or str(uuid.uuid4()).upper()), *(extra or [])]
        return Outcome(
            HTTPResponse.json(status, {"reason": reason}, headers), token, payload, reason
        )

    def _check(self, request: HTTPRequest, token: str | None, payload: Any) -> None:
        if request.http_version != "2":
            # Apple only speaks HTTP/2; ALPN offers nothing else, so this is a
            # client that ignored ALPN.
            raise APNsRejection(505, "HTTPVersionNotSupported")
        if token is None:
            raise APNsRejection(404, "BadPath")
        if request.method != "POST":
            raise APNsRejection(405, "MethodNotAllowed")
        for name in SINGLE_HEADERS:
            if len(request.header_values(name)) > 1:
                raise APNsRejection(400, "DuplicateHeaders")
        if not token:
            raise APNsRejection(400, "MissingDeviceToken")
        if not self.client_cert_auth:
            self._check_provider_token(request)
        if not _HEX.fullmatch(token):
            raise APNsRejection(400, "BadDeviceToken")
        self._check_headers(request)
        push_type = request.header("apns-push-type")
        check_payload(request.body, payload, request.body_truncated, push_type)
        self._check_device(request, token)

    def _check_device(self, request: HTTPRequest, token: str) -> None:
        with self._state_lock:
            device = self._devices.get(token.lower())
        if device is None:
            if self.only_registered_tokens:
                raise APNsRejection(400, "BadDeviceToken")
            return
        if device.environment != self._environment_of(request):
            raise APNsRejection(400, "BadDeviceToken")
        topic = request.header("apns-topic") or ""
        if topic != device.bundle_id and not topic.startswith(device.bundle_id + "."):
            raise APNsRejection(400, "DeviceTokenNotForTopic")

    def _environment_of(self, request: HTTPRequest) -> Environment:
        environments = get_args(Environment)
        for index, port in enumerate(self._server.ports):
            if port == request.server_port:
                return environments[index]  # type: ignore[no-any-return]
        return "sandbox"

    def _check_provider_token(self, request: HTTPRequest) -> None:
        header = request.header("authorization")
        if not header:
            raise APNsRejection(403, "MissingProviderToken")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise APNsRejection(403, "InvalidProviderToken")
        iat, issuer = self._verified_claims(token)
        if issuer != self.team_id or not isinstance(iat, int):
            raise APNsRejection(403, "InvalidProviderToken")
        now = self._clock()
        if iat > now + CLOCK_SKEW_S:
            raise APNsRejection(403, "InvalidProviderToken")
        if now - iat > TOKEN_MAX_AGE_S:
            raise APNsRejection(403, "ExpiredProviderToken")
        self._check_rotation(request.connection, token, iat)

    def _verified_claims(self, token: str) -> tuple[Any, Any]:
        """``(iat, iss)`` of a provider token whose signature checks out.

        A client reuses one token for up to an hour, so each distinct token's
        signature is checked once: an ES256 verification per push was a good
        part of the fake's CPU, and the fake shares the machine with the
        clients it measures. Age and rotation are still judged per request.
        """
        with self._state_lock:
            known = self._verified_tokens.get(token)
        if known is not None:
            return known
        try:
            if jwt.get_unverified_header(token).get("kid") != self.key_id:
                raise APNsRejection(403, "InvalidProviderToken")
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["ES256"],
                options={"verify_iat": False, "require": ["iss", "iat"]},
            )
        except jwt.InvalidTokenError as exc:
            raise APNsRejection(403, "InvalidProviderToken") from exc
        found = (claims["iat"], claims["iss"])
        with self._state_lock:
            if len(self._verified_tokens) >= VERIFIED_TOKENS_KEPT:
                self._verified_tokens.clear()
            self._verified_tokens[token] = found
        return found

    def _check_rotation(self, connection: str, token: str, iat: int) -> None:
        now = time.monotonic()
        with self._state_lock:
            current = self._connection_tokens.get(connection)
            if current is not None and now - current.last_used > CONNECTION_FORGET_S:
                current = None
            if current is not None and current.token != token:
                if iat - current.iat < TOKEN_MIN_ROTATION_S:
                    raise APNsRejection(429, "TooManyProviderTokenUpdates")
                current = None
            if current is None:
                current = _ConnectionToken(token, iat, now)
                self._connection_tokens[connection] = current
            current.last_used = now

    def _check_headers(self, request: HTTPRequest) -> None:
        topic = request.header("apns-topic")
        push_type = request.header("apns-push-type")
        if not topic:
            raise APNsRejection(400, "MissingTopic")
        if push_type not in PUSH_TYPES:
            raise APNsRejection(400, "InvalidPushType")
        suffix = TOPIC_SUFFIXES.get(push_type)
        if (suffix is not None and topic != self.bundle_id + suffix) or not topic.startswith(
            self.bundle_id
        ):
            raise APNsRejection(400, "TopicDisallowed")
        priority = request.header("apns-priority") or "10"
        if priority not in PRIORITIES:
            raise APNsRejection(400, "BadPriority")
        # "the notification's POST request should contain the apns-push-type
        # header field with a value of background, and the apns-priority field
        # with a value of 5" (Pushing background updates to your app).
        if push_type == "background" and priority != "5":
            raise APNsRejection(400, "BadPriority")
        expiration = request.header("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            raise APNsRejection(400, "BadExpirationDate")
        collapse_id = request.header("apns-collapse-id")
        if collapse_id is not None and len(collapse_id.encode("utf-8")) > MAX_COLLAPSE_ID_BYTES:
            raise APNsRejection(400, "BadCollapseId")
        apns_id = request.header("apns-id")
        if apns_id is not None and not _UUID.fullmatch(apns_id):
            raise APNsRejection(400, "BadMessageId")

    # -- phones ------------------------------------------------------------------

    def _device_key(self, token: str) -> str:
        return token.lower()

    def _phone_message(self, record: ReceivedRequest) -> PhoneMessage:
        now = self._clock()
        # "If the value is 0, APNs treats the notification as if it expires
        # immediately and doesn't store the notification or attempt to redeliver
        # it"; without the header Apple keeps it as long as it keeps any.
        expiration = record.headers.get("apns-expiration")
        expires_at = now + MAX_STORAGE_S if expiration is None else float(expiration)
        aps = record.json["aps"]
        return PhoneMessage(
            request=record,
            expires_at=min(expires_at, now + MAX_STORAGE_S),
            collapse_key=self.bundle_id,
            visible=record.headers.get("apns-push-type") == "alert" and bool(aps.get("alert")),
            # "Multiple notifications with the same collapse identifier are
            # displayed to the user as a single notification."
            screen_key=record.headers.get("apns-collapse-id"),
        )


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
