"""Google's OAuth token endpoint for service accounts, as the fake FCM needs it.

google-auth signs a JWT assertion with a service account's private key and
trades it at the account's ``token_uri`` for an access token (the RFC 7523
JWT-bearer grant). :class:`TokenIssuer` checks such assertions against the
accounts it made and hands out access tokens, each tied to the Firebase project
of the account that asked for it, so a sender authenticated for one project
cannot send for another.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from willowe_tasks.testing._asgi import HTTPRequest, HTTPResponse

#: Scope a service account must ask for to send messages.
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

#: Audience google-auth puts in service-account assertions, whatever the token_uri.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"

#: OAuth grant type of a service-account assertion (RFC 7523).
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

#: Lifetime of issued access tokens, as Google's.
ACCESS_TOKEN_LIFETIME_S = 3600

#: Clock difference tolerated in an assertion's iat/exp.
ASSERTION_LEEWAY_S = 60


def new_service_account_key_pem() -> str:
    """A new RSA private key in PKCS#8 PEM, as in a Google service-account file."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def write_service_account_file(info: dict[str, str], path: str | Path) -> str:
    """Write ``info`` as a service-account JSON key file, readable by its
    owner alone (it holds a private key); returns the path."""
    target = Path(path)
    target.write_text(json.dumps(info, indent=2))
    target.chmod(0o600)
    return str(target)


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """One project's service account (they share the issuer's RSA key)."""

    project_id: str
    client_email: str
    private_key_id: str


class TokenIssuer:
    """Service accounts, the assertions they sign and the access tokens they get."""

    def __init__(self, private_key_pem: str) -> None:
        # The key was made by new_service_account_key_pem(); skipping RSA's
        # consistency check saves ~35 ms per fake.
        key = serialization.load_pem_private_key(
            private_key_pem.encode(), None, unsafe_skip_rsa_key_validation=True
        )
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("a service account key must be an RSA private key")
        self._public_key = key.public_key()
        self._private_key_pem = private_key_pem
        self._lock = threading.Lock()
        self._accounts: dict[str, ServiceAccount] = {}
        #: access token -> (time.time() it expires, project id)
        self._access_tokens: dict[str, tuple[float, str]] = {}
        self._grants = 0

    def add_account(self, project_id: str) -> ServiceAccount:
        account = ServiceAccount(
            project_id=project_id,
            client_email=f"push-sender@{project_id}.iam.gserviceaccount.com",
            private_key_id=secrets.token_hex(20),
        )
        with self._lock:
            if any(known.project_id == project_id for known in self._accounts.values()):
                raise ValueError(f"project {project_id!r} is already served")
            self._accounts[account.client_email] = account
        return account

    def account(self, project_id: str) -> ServiceAccount:
        with self._lock:
            for account in self._accounts.values():
                if account.project_id == project_id:
                    return account
        raise ValueError(f"project {project_id!r} is not served by this fake")

    def info(self, account: ServiceAccount, base_url: str, token_uri: str) -> dict[str, str]:
        """The account as Google's JSON key file has it, pointing at the fake."""
        return {
            "type": "service_account",
            "project_id": account.project_id,
            "private_key_id": account.private_key_id,
            "private_key": self._private_key_pem,
            "client_email": account.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": f"{base_url}/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": f"{base_url}/certs",
            "client_x509_cert_url": f"{base_url}/certs/{account.client_email}",
            "universe_domain": "googleapis.com",
        }

    @property
    def grants(self) -> int:
        with self._lock:
            return self._grants

    def expire_all(self) -> None:
        with self._lock:
            self._access_tokens.clear()

    def project_of(self, authorization: str | None) -> str | None:
        """The project a live ``Bearer`` access token was issued for, else ``None``."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        with self._lock:
            issued = self._access_tokens.get(token)
        if issued is None or issued[0] <= time.time():
            return None
        return issued[1]

    def grant(self, request: HTTPRequest, token_uri: str) -> HTTPResponse:
        """Answer a token request as ``oauth2.googleapis.com/token`` does."""
        form = parse_qs(request.body.decode("utf-8", "replace"))
        if request.method != "POST" or form.get("grant_type") != [JWT_BEARER_GRANT]:
            return _oauth_error("unsupported_grant_type", "Invalid grant_type.")
        assertion = (form.get("assertion") or [""])[0]
        try:
            header = jwt.get_unverified_header(assertion)
            issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
            with self._lock:
                account = self._accounts.get(str(issuer))
            if account is None:
                return _oauth_error("invalid_grant", "Invalid JWT: unknown service account.")
            claims = jwt.decode(
                assertion,
                self._public_key,
                algorithms=["RS256"],
                audience=[GOOGLE_TOKEN_AUDIENCE, token_uri],
                issuer=account.client_email,
                options={"require": ["iss", "aud", "iat", "exp"]},
                leeway=ASSERTION_LEEWAY_S,
            )
        except jwt.InvalidTokenError as exc:
            return _oauth_error("invalid_grant", f"Invalid JWT: {type(exc).__name__}")
        if header.get("kid") not in (None, account.private_key_id):
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        if claims["exp"] - claims["iat"] > ACCESS_TOKEN_LIFETIME_S:
            return _oauth_error("invalid_grant", "Invalid JWT: lifetime over one hour.")
        if FCM_SCOPE not in str(claims.get("scope", "")).split():
            return _oauth_error("invalid_scope", "The scope does not allow sending messages.")
        access_token = f"ya29.fake-{secrets.token_urlsafe(24)}"
        with self._lock:
            expires_at = time.time() + ACCESS_TOKEN_LIFETIME_S
            self._access_tokens[access_token] = (expires_at, account.project_id)
            self._grants += 1
        return HTTPResponse.json(
            200,
            {
                "access_token": access_token,
                "expires_in": ACCESS_TOKEN_LIFETIME_S,
                "token_type": "Bearer",
            },
        )


def _oauth_error(error: str, description: str) -> HTTPResponse:
    body: dict[str, Any] = {"error": error, "error_description": description}
    return HTTPResponse.json(400, body)
