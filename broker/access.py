"""Who the broker's Kafka clients are, and the errors for when Kafka turns
them down.

::

    dramatiq.errors.ConnectionFailed
      └── KafkaAccessDenied        Kafka refused this client; the same settings get the same answer
            ├── AuthenticationFailed   the SASL exchange was rejected (wrong password, unknown
            │                          user, a mechanism the broker doesn't enable)
            └── AuthorizationFailed    the principal may not do that (ACLs)

They are ``ConnectionFailed`` so that whatever handles a Kafka that can't be
reached handles them too (Dramatiq's consumer threads log and restart, its
CLI exits with status 3 when a worker can't boot), and typed so that a
caller can tell "fix the settings" from "wait for Kafka".

Messages name the principal (``user 'web' (SCRAM-SHA-512)``), never a
password: :func:`hide_secrets` also keeps the password out of kafka-python's
own log lines, which print a client's whole configuration at DEBUG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dramatiq.errors import ConnectionFailed
from kafka.errors import AuthorizationError, KafkaError

from broker._kafka_python_fixes import SASL_REFUSALS

__all__ = [
    "AuthenticationFailed",
    "AuthorizationFailed",
    "ClientPrincipal",
    "KafkaAccessDenied",
    "hide_secrets",
]

#: kafka-python options that hold secrets.
SECRET_OPTIONS = ("sasl_plain_password", "ssl_password")


class KafkaAccessDenied(ConnectionFailed):
    """Kafka refused this client. Not retriable: the settings must change."""

    #: Kafka did not store the record (a send refused is a send not made).
    maybe_sent = False


class AuthenticationFailed(KafkaAccessDenied):
    """Kafka rejected the client's credentials."""


class AuthorizationFailed(KafkaAccessDenied):
    """The client's principal is not allowed to do what it asked (ACLs)."""


class _HiddenStr(str):
    """A secret that prints as ``'***'`` in reprs (dicts of options in log
    lines) and works as the string it is everywhere else."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


def hide_secrets(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with each secret wrapped so that a repr of the dict (as
    kafka-python logs it) doesn't show it."""
    return {key: _HiddenStr(value) if key in SECRET_OPTIONS and isinstance(value, str) else value
            for key, value in options.items()}


@dataclass(frozen=True)
class ClientPrincipal:
    """Who a set of kafka-python options makes the client, for messages."""

    servers: tuple[str, ...]
    #: "user 'web' (SCRAM-SHA-512)", "the TLS client certificate's subject", …
    name: str
    #: Whether the client logs in with SASL (so credentials can be wrong).
    sasl: bool = False

    @classmethod
    def of(cls, servers: Sequence[str], options: Mapping[str, Any]) -> ClientPrincipal:
        protocol = str(options.get("security_protocol", "PLAINTEXT"))
        if protocol.startswith("SASL_"):
            return cls(tuple(servers), f"user {options.get('sasl_plain_username')!r} "
                                       f"({options.get('sasl_mechanism') or 'PLAIN'})", sasl=True)
        if protocol == "SSL" and options.get("ssl_certfile"):
            name = "the TLS client certificate's subject"
        else:
            name = "the anonymous principal"
        return cls(tuple(servers), name)

    def denied(self, error: BaseException, doing: str) -> KafkaAccessDenied | None:
        """The typed error for ``error``, met while ``doing`` (``"sending to
        'x'"``), if it means Kafka refused this principal; otherwise None."""
        where = ",".join(self.servers)
        if isinstance(error, SASL_REFUSALS):
            return AuthenticationFailed(
                f"Kafka at {where} rejected {self.name}: authentication failed "
                f"({_reason(error)})")
        if isinstance(error, AuthorizationError):
            return AuthorizationFailed(
                f"Kafka at {where} denied {self.name} {doing}: not authorized "
                f"({_reason(error)})")
        return None


def _reason(error: BaseException) -> str:
    # kafka-python prefixes "[Error 58] SaslAuthenticationFailedError: " and
    # may repeat the class name; what is left is the broker's own reason.
    name = type(error).__name__
    text = str(error).split("] ", 1)[-1]
    while text.startswith(f"{name}: "):
        text = text.removeprefix(f"{name}: ")
    if isinstance(error, KafkaError) and text in ("", name):
        return name
    return f"{name}: {text}" if not text.startswith(name) else text
