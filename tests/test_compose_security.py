"""compose.yaml's secured setup: the Kafka service's start script renders
the same security settings the tested local secured Kafka runs with, the
secrets it names are the ones `make compose-secrets` writes, and every app
service logs in over TLS as its own user."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from broker.localkafka.secure import SecureLocalKafka

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "kafka-secure-start.sh"

#: Broker properties that make a Kafka secured; compose and the local one must agree.
SECURITY_PROPERTIES = (
    "listener.security.protocol.map", "inter.broker.listener.name", "sasl.enabled.mechanisms",
    "sasl.mechanism.inter.broker.protocol", "sasl.mechanism.controller.protocol",
    "ssl.keystore.type", "ssl.truststore.type", "authorizer.class.name",
    "allow.everyone.if.no.acl.found", "super.users",
)


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def properties(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


def test_the_start_script_renders_the_local_secured_kafkas_security_settings(
    tmp_path: Path,
) -> None:
    secrets, bin_dir, config = tmp_path / "secrets", tmp_path / "bin", tmp_path / "config"
    subprocess.run([sys.executable, str(ROOT / "examples" / "compose_secrets.py"),
                    str(secrets)], check=True, capture_output=True, cwd=ROOT, timeout=120)
    # compose mounts each secret under its own name.
    for name, spec in compose()["secrets"].items():
        (secrets / name).write_bytes((secrets / Path(spec["file"]).name).read_bytes())
    bin_dir.mkdir()
    config.mkdir()
    for tool in ("kafka-storage.sh", "kafka-server-start.sh"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/calls"\n')
        stub.chmod(0o755)
    service_env = {key: str(value)
                   for key, value in compose()["services"]["kafka"]["environment"].items()}
    env = {"PATH": os.environ["PATH"], "WILLOWE_SECRETS": str(secrets),
           "WILLOWE_KAFKA_BIN": str(bin_dir), "WILLOWE_CONFIG_DIR": str(config),
           **{key: value.replace("${KAFKA_CLUSTER_ID:-", "").rstrip("}")
              for key, value in service_env.items()}}
    subprocess.run(["bash", str(SCRIPT)], env=env, check=True, timeout=60)

    rendered = properties(config / "server.properties")
    local_kafka = SecureLocalKafka(tmp_path / "local")
    local_kafka._new_credentials()  # (its properties name its admin's password)
    local = local_kafka._server_properties()
    assert {key: rendered[key] for key in SECURITY_PROPERTIES} == \
        {key: local[key] for key in SECURITY_PROPERTIES}
    assert rendered["auto.create.topics.enable"] == "false"
    assert "PLAINTEXT" not in rendered["listener.security.protocol.map"].replace("SASL_", "")
    admin_password = (secrets / "kafka_admin_password").read_text().strip()
    for listener in ("sasl_ssl", "controller"):
        jaas = rendered[f"listener.name.{listener}.scram-sha-512.sasl.jaas.config"]
        assert f'username="admin" password="{admin_password}"' in jaas
    calls = (tmp_path / "calls").read_text()
    for user in ("admin", "web", "worker", "operator"):
        assert f"--add-scram SCRAM-SHA-512=[name={user},password=" in calls
    assert "kafka-server-start.sh" in calls
    assert properties(config / "admin.properties")["security.protocol"] == "SASL_SSL"


def test_every_app_service_logs_in_over_tls_as_its_own_user() -> None:
    services = compose()["services"]
    users = {name: services[name]["environment"]["KAFKA_SASL_USERNAME"]
             for name in ("topics", "acls", "worker")}
    assert users == {"topics": "admin", "acls": "admin", "worker": "worker"}
    for name in users:
        env = services[name]["environment"]
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["KAFKA_SASL_PASSWORD_FILE"].startswith("/run/secrets/")
        assert "KAFKA_SASL_PASSWORD" not in env  # passwords are files, never variables
        assert services[name]["command"][-1] in ("topics", "acls") or name == "worker"
    worker = services["worker"]
    assert worker["environment"]["PAYLOAD_KEYS_FILE"] == "/run/secrets/payload_keys"
    assert "payload_keys" in worker["secrets"]
    assert worker["depends_on"]["acls"]["condition"] == "service_completed_successfully"
