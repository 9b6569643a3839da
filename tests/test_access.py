"""Who a client is to Kafka, named in errors without its secrets
(broker/access.py), and the boot check that comes with SASL."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
)

from broker import KafkaBroker
from broker.access import (
    AuthenticationFailed,
    AuthorizationFailed,
    ClientPrincipal,
    hide_secrets,
)
from broker.credentials_check import CredentialsCheck
from broker.localkafka.secure import SecureLocalKafka

SASL: dict[str, Any] = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                        "sasl_plain_username": "web", "sasl_plain_password": "s3cret-pa55"}


def test_refusals_become_typed_errors_naming_the_principal_and_the_reason() -> None:
    principal = ClientPrincipal.of(["127.0.0.1:9094"], SASL)
    rejected = principal.denied(SaslAuthenticationFailedError(
        "SaslAuthenticationFailedError: Authentication failed during authentication due to "
        "invalid credentials with SASL mechanism SCRAM-SHA-512"), "connecting")
    assert isinstance(rejected, AuthenticationFailed)
    assert str(rejected) == (
        "Kafka at 127.0.0.1:9094 rejected user 'web' (SCRAM-SHA-512): authentication failed "
        "(SaslAuthenticationFailedError: Authentication failed during authentication due to "
        "invalid credentials with SASL mechanism SCRAM-SHA-512)")
    assert isinstance(principal.denied(UnsupportedSaslMechanismError(), "connecting"),
                      AuthenticationFailed)
    denied = principal.denied(GroupAuthorizationFailedError("notifications-group"),
                              "consuming 'high'")
    assert isinstance(denied, AuthorizationFailed)
    assert str(denied).startswith("Kafka at 127.0.0.1:9094 denied user 'web' (SCRAM-SHA-512) "
                                  "consuming 'high': not authorized (GroupAuthorizationFailed")
    # Anything else is not a refusal: the caller's usual error applies.
    assert principal.denied(KafkaTimeoutError("Unable to bootstrap"), "connecting") is None
    assert "s3cret" not in str(rejected) + str(denied) + repr(principal)


def test_principals_without_sasl_are_named_for_what_they_are() -> None:
    assert ClientPrincipal.of(["k:1"], {}).name == "the anonymous principal"
    tls = ClientPrincipal.of(["k:1"], {"security_protocol": "SSL", "ssl_certfile": "c.pem"})
    assert tls.name == "the TLS client certificate's subject" and not tls.sasl


def test_secrets_are_hidden_from_reprs_but_work_as_strings() -> None:
    options = hide_secrets(SASL)
    assert "s3cret-pa55" not in repr(options)
    assert options["sasl_plain_password"] == "s3cret-pa55"
    assert options["sasl_plain_password"].encode() == b"s3cret-pa55"


def test_kafka_pythons_debug_log_of_its_configuration_shows_no_password(
    secure_kafka: SecureLocalKafka, caplog: pytest.LogCaptureFixture,
) -> None:
    options = secure_kafka.client_options("web")
    password = options["sasl_plain_password"]
    caplog.set_level(logging.DEBUG, logger="kafka.admin")
    admin = KafkaAdminClient(bootstrap_servers=secure_kafka.bootstrap_servers,
                             **hide_secrets(options))
    admin.close()
    assert "Starting KafkaAdminClient with configuration" in caplog.text
    assert password not in caplog.text


def test_only_a_broker_that_logs_in_checks_its_credentials_at_worker_boot() -> None:
    plain = KafkaBroker(bootstrap_servers="127.0.0.1:9")
    secured = KafkaBroker(bootstrap_servers="127.0.0.1:9", **SASL)
    assert not any(isinstance(m, CredentialsCheck) for m in plain.middleware)
    assert any(isinstance(m, CredentialsCheck) for m in secured.middleware)
    assert "s3cret" not in repr(secured._client_options)
