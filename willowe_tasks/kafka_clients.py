"""The application's Kafka clients' settings, in kafka-python's words.

Every producer, consumer and admin client of the application gets the same
security settings: :func:`client_options` for the broker (which passes them
to each client it makes) and :func:`admin_client` for the operator commands.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from broker.access import ClientPrincipal, hide_secrets
from broker.encryption import AesGcmCipher, KeyRing
from broker.payload_codec import PayloadCodec
from willowe_tasks import payload_dictionary
from willowe_tasks.settings import Settings

__all__ = ["admin_client", "client_options", "payload_codec", "principal", "producer_options"]


def client_options(settings: Settings) -> dict[str, Any]:
    """kafka-python's security options for ``settings`` (none for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            # kafka-python takes SCRAM credentials in its PLAIN-named settings.
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_secret(),
        )
    if protocol.endswith("SSL"):
        options["ssl_check_hostname"] = True
        for option, path in (("ssl_cafile", settings.kafka_ssl_ca_file),
                             ("ssl_certfile", settings.kafka_ssl_cert_file),
                             ("ssl_keyfile", settings.kafka_ssl_key_file)):
            if path is not None:
                options[option] = str(path)
    return hide_secrets(options)


def producer_options(settings: Settings) -> dict[str, Any]:
    """kafka-python's producer options beyond the broker's defaults: the
    batch codec (KAFKA_COMPRESSION; ``none`` is kafka-python's None)."""
    codec = settings.kafka_compression
    return {"compression_type": None if codec == "none" else codec}


def principal(settings: Settings) -> ClientPrincipal:
    """Who the application's clients are to Kafka (for messages)."""
    return ClientPrincipal.of(settings.bootstrap_servers, client_options(settings))


def admin_client(settings: Settings) -> KafkaAdminClient:
    """An admin client with the application's settings; a refusal raises
    :class:`~broker.access.KafkaAccessDenied` naming the user."""
    try:
        return KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                client_id=settings.kafka_client_id, **client_options(settings))
    except KafkaError as e:
        denied = principal(settings).denied(e, "connecting")
        if denied is None:
            raise
        raise denied from e


def payload_codec(settings: Settings) -> PayloadCodec:
    """Compressing with the shipped dictionary as PAYLOAD_COMPRESSION says,
    then encrypting when PAYLOAD_KEYS (or its file) gives keys. Either way it
    decodes compressed records (old or other producers' records drain)."""
    keys = settings.payload_keys_text()
    return PayloadCodec(AesGcmCipher(KeyRing.parse(keys)) if keys is not None else None,
                        compressor=payload_dictionary.compressor(),
                        compress=settings.compresses_bodies)
