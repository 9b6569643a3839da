"""How an :class:`~willowe_tasks.providers.apns.client.APNsClient` proves who it is to APNs.

Two ways, as Apple offers them:

* :class:`TokenAuth`: a provider token, an ES256 JWT signed with the team's
  ``.p8`` key and sent as ``authorization: bearer ...``. Apple wants the same token
  reused for up to an hour and answers 429 ``TooManyProviderTokenUpdates`` when a
  connection's token changes more often than every 20 minutes, so the token is
  cached and only replaced after :data:`TOKEN_REFRESH_AFTER_S`.
* :class:`CertificateAuth`: a TLS client certificate for one bundle id.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

logger = logging.getLogger(__name__)

#: Age at which a cached provider token is replaced. Apple rejects tokens older
#: than an hour (403 ExpiredProviderToken); 50 minutes leaves room for clock skew
#: and for a request that is already in flight.
TOKEN_REFRESH_AFTER_S = 50 * 60.0

#: Minimum age before a token may be replaced at all, even after APNs called it
#: expired: Apple answers 429 TooManyProviderTokenUpdates to faster rotation.
TOKEN_MIN_LIFETIME_S = 20 * 60.0


class TokenAuth:
    """Provider-token (JWT) authentication, shared safely by many threads.

    Give the ``.p8`` signing key either as PEM text (``key_pem``) or as a file
    (``key_path``). ``clock`` returns unix seconds; tests inject one to cross the
    refresh window without sleeping.
    """

    def __init__(
        self,
        *,
        key_id: str,
        team_id: str,
        key_pem: str | bytes | None = None,
        key_path: str | Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (key_pem is None) == (key_path is None):
            raise ValueError("TokenAuth needs exactly one of key_pem or key_path")
        if not key_id or not team_id:
            raise ValueError("TokenAuth needs a key_id and a team_id")
        pem = Path(key_path).read_bytes() if key_path is not None else key_pem
        assert pem is not None
        if isinstance(pem, str):
            pem = pem.encode("ascii")
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("an APNs signing key must be an EC P-256 private key (.p8)")
        self._key = key
        self.key_id = key_id
        self.team_id = team_id
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._issued_at = 0.0
        self._rejected = False

    def __repr__(self) -> str:
        return f"TokenAuth(key_id={self.key_id!r}, team_id={self.team_id!r})"

    def token(self) -> str:
        """The current provider token, made anew only when it is due."""
        with self._lock:
            now = self._clock()
            age_s = now - self._issued_at
            due = self._token is None or age_s >= TOKEN_REFRESH_AFTER_S
            if self._rejected and age_s >= TOKEN_MIN_LIFETIME_S:
                due = True
            if due:
                self._token = self._sign(now)
                self._issued_at = now
                self._rejected = False
                logger.info("made a new APNs provider token for key %s", self.key_id)
            assert self._token is not None
            return self._token

    def authorization(self) -> str:
        """The ``authorization`` header value for a request."""
        return f"bearer {self.token()}"

    def token_rejected(self, token: str) -> None:
        """Note that APNs called ``token`` expired, so the next call replaces it.

        Still no sooner than :data:`TOKEN_MIN_LIFETIME_S` after it was made, since
        a faster replacement only trades one rejection for another.
        """
        with self._lock:
            if token == self._token:
                self._rejected = True

    def _sign(self, now: float) -> str:
        return jwt.encode(
            {"iss": self.team_id, "iat": int(now)},
            self._key,
            algorithm="ES256",
            headers={"kid": self.key_id},
        )


class CertificateAuth:
    """TLS client-certificate authentication (a ``.pem`` certificate and its key).

    The files are read when the client is built, so a wrong path fails at start-up
    rather than on the first push.
    """

    def __init__(
        self, cert_file: str | Path, key_file: str | Path, *, password: str | None = None
    ) -> None:
        self.cert_file = str(cert_file)
        self.key_file = str(key_file)
        self._password = password

    def __repr__(self) -> str:
        return f"CertificateAuth(cert_file={self.cert_file!r})"

    @property
    def password(self) -> str | None:
        """The key's password (kept out of the repr)."""
        return self._password

    def check(self) -> None:
        """Read the certificate and its key once, so a wrong path or password
        fails when the client is built (ssl.SSLError or OSError)."""
        self.load_into(ssl.create_default_context())

    def load_into(self, context: ssl.SSLContext) -> None:
        """Present this certificate on every connection made with ``context``."""
        context.load_cert_chain(self.cert_file, self.key_file, password=self._password)
