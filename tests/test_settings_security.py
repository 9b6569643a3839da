"""The Kafka security and payload key settings: what fits together, what
fails at start-up naming the variables, and secrets that never show."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from broker.encryption import KeyRing
from willowe_tasks.kafka_clients import client_options, payload_codec
from willowe_tasks.settings import SettingsError, load_settings

PASSWORD = "hunter2-correct-horse"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    paths = {}
    for name, text in (("password", PASSWORD + "\n"), ("ca", "ca"), ("cert", "c"),
                       ("key", "k"), ("empty", "")):
        path = tmp_path / name
        path.write_text(text)
        paths[name] = str(path)
    return paths


def sasl_ssl(**more: str) -> dict[str, str]:
    return {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": "web", **more}


def test_sasl_ssl_settings_become_kafka_python_options(files: dict[str, str]) -> None:
    settings = load_settings(**sasl_ssl(kafka_sasl_password_file=files["password"],
                                        kafka_ssl_ca_file=files["ca"]))
    assert client_options(settings) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "web", "sasl_plain_password": PASSWORD,
        "ssl_check_hostname": True, "ssl_cafile": files["ca"],
    }
    assert client_options(load_settings()) == {}  # PLAINTEXT: nothing to add


def test_mutual_tls_takes_a_certificate_and_its_key(files: dict[str, str]) -> None:
    settings = load_settings(kafka_security_protocol="SSL", kafka_ssl_cert_file=files["cert"],
                             kafka_ssl_key_file=files["key"])
    assert client_options(settings) == {"security_protocol": "SSL", "ssl_check_hostname": True,
                                        "ssl_certfile": files["cert"],
                                        "ssl_keyfile": files["key"]}


@pytest.mark.parametrize(("given", "error"), [
    (sasl_ssl(), "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_PASSWORD or "
                 "KAFKA_SASL_PASSWORD_FILE"),
    ({"kafka_security_protocol": "SASL_SSL"},
     "needs KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD or"),
    ({"kafka_sasl_username": "web", "kafka_sasl_password": PASSWORD},
     "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
     "does not log in with SASL"),
    (sasl_ssl(kafka_sasl_password=PASSWORD, kafka_sasl_password_file="{password}"),
     "KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are both set"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cert_file": "{cert}"},
     "KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN",
      "kafka_sasl_username": "web", "kafka_sasl_password": PASSWORD,
      "kafka_ssl_ca_file": "{ca}"},
     "KAFKA_SSL_CA_FILE set, but KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does not use TLS"),
    (sasl_ssl(kafka_sasl_password_file="/nonexistent/web.password"),
     "KAFKA_SASL_PASSWORD_FILE: no such file: /nonexistent/web.password"),
    (sasl_ssl(kafka_sasl_password_file="{empty}"), "KAFKA_SASL_PASSWORD_FILE: .* is empty"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"},
     "KAFKA_SASL_MECHANISM: Input should be 'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'"),
    ({"payload_keys": f"k1:{base64.b64encode(b'x' * 16).decode()}"},
     "PAYLOAD_KEYS: key 'k1': must be 32 bytes"),
    ({"payload_keys": "k1:" + PASSWORD, "payload_keys_file": "{password}"},
     "PAYLOAD_KEYS and PAYLOAD_KEYS_FILE are both set"),
    ({"payload_keys_file": "{password}"}, "PAYLOAD_KEYS_FILE: key 1: expected id:base64"),
])
def test_settings_that_do_not_fit_fail_naming_the_variables(
    files: dict[str, str], given: dict[str, str], error: str,
) -> None:
    given = {key: value.format(**files) for key, value in given.items()}
    with pytest.raises(SettingsError, match=error) as raised:
        load_settings(**given)
    assert PASSWORD not in str(raised.value)


def test_secrets_stay_out_of_reprs_and_errors(files: dict[str, str]) -> None:
    key = KeyRing.parse(KeyRing((KeyRing.new_key("k1"),)).render())
    key_text = key.render().strip()
    settings = load_settings(**sasl_ssl(kafka_sasl_password=PASSWORD), payload_keys=key_text)
    shown = repr(settings) + str(settings) + repr(client_options(settings))
    assert PASSWORD not in shown and key_text.split(":")[1] not in shown
    assert repr(payload_codec(settings)) == (
        "PayloadCodec(cipher=AesGcmCipher(keys=['k1']), "
        "compressor=ZstdBodyCompressor(dictionaries=['guide-1'], level=3))")
    # A value refused for its type is not echoed either.
    with pytest.raises(SettingsError) as raised:
        load_settings(payload_keys=123)  # type: ignore[arg-type]
    assert str(raised.value).endswith("PAYLOAD_KEYS: Input should be a valid string")


def test_payload_keys_come_from_the_setting_or_its_file(tmp_path: Path) -> None:
    ring = KeyRing((KeyRing.new_key("k2"), KeyRing.new_key("k1")))
    key_file = tmp_path / "keys"
    key_file.write_text(ring.render())
    from_file = payload_codec(load_settings(payload_keys_file=str(key_file)))
    from_env = payload_codec(load_settings(payload_keys=ring.render().replace("\n", ",")))
    for codec in (from_file, from_env):
        assert codec.cipher is not None and codec.cipher.ring.ids == ["k2", "k1"]
    assert payload_codec(load_settings()).cipher is None  # off unless keys are given
