"""A secured local Kafka: SASL_SSL with SCRAM-SHA-512 users, TLS from a
throwaway CA, and ACLs enforced by the StandardAuthorizer.

Its home holds, beside what every local Kafka keeps (see the package)::

    home/ca.pem                 the CA certificate clients trust
    home/broker.pem             the broker's key and certificate chain (0600)
    home/users/<user>.password  one password a user (0600), made at format time
    home/admin.properties       Kafka's CLI tools' settings, as admin (0600)

The users exist from the first start on: the storage formatter writes their
SCRAM credentials into the metadata log (KIP-900), so no broker ever runs
without them. ``admin`` is the super user; the others get no ACLs here, so
until someone grants them some, every request of theirs is denied.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.localkafka import DEFAULT_START_TIMEOUT_S, KafkaNotReady, LocalKafka
from broker.localkafka._files import PRIVATE_DIR_MODE, render_properties, write_private
from broker.localkafka._process import say
from broker.localkafka._tls import write_certificates

__all__ = ["ADMIN_USER", "APP_USERS", "SecureLocalKafka"]

#: The super user: sets up topics and ACLs, and is the broker's own identity
#: on its inter-broker and controller listeners.
ADMIN_USER = "admin"

#: The application's principals; their ACLs come from the application.
APP_USERS = ("web", "worker", "operator")

#: The only SASL mechanism the secured broker enables.
SASL_MECHANISM = "SCRAM-SHA-512"

#: The only security protocol its listeners speak.
SECURITY_PROTOCOL = "SASL_SSL"

#: Bytes of randomness in each generated password.
PASSWORD_BYTES = 24

#: What a user's name may be made of.
_USER_NAME = re.compile(r"[A-Za-z0-9._-]+")

#: Which option of each CLI tool takes a client configuration file.
_TOOL_CONFIG_OPTIONS = {
    "kafka-topics": "--command-config",
    "kafka-consumer-groups": "--command-config",
    "kafka-configs": "--command-config",
    "kafka-get-offsets": "--command-config",
    "kafka-console-consumer": "--consumer.config",
    "kafka-console-producer": "--producer.config",
}


@dataclass(frozen=True)
class SecureLocalKafka(LocalKafka):
    """A single-node Kafka whose one client listener is SASL_SSL on
    ``host:port``; its controller listener (``host:controller_port``) is
    SASL_SSL too, as ``admin``, so no unauthenticated principal needs to be
    a super user."""

    port: int = 9094
    controller_port: int = 9095
    #: Users besides ``admin``.
    users: tuple[str, ...] = APP_USERS

    def __post_init__(self) -> None:
        # A name goes into the formatter's --add-scram list and a JAAS line.
        for user in self.users:
            if not _USER_NAME.fullmatch(user) or user == ADMIN_USER:
                raise ValueError(f"users: {user!r} is not a name to give a Kafka user "
                                 f"(letters, digits, '.', '_', '-'; not {ADMIN_USER!r})")

    @property
    def ca_file(self) -> Path:
        return self.home / "ca.pem"

    @property
    def keystore_file(self) -> Path:
        return self.home / "broker.pem"

    @property
    def admin_config_file(self) -> Path:
        return self.home / "admin.properties"

    @property
    def all_users(self) -> tuple[str, ...]:
        return (ADMIN_USER, *self.users)

    def password_file(self, user: str) -> Path:
        self._check_user(user)
        return self.home / "users" / f"{user}.password"

    def password(self, user: str) -> str:
        try:
            return self.password_file(user).read_text().strip()
        except FileNotFoundError:
            raise KafkaNotReady(
                f"no password for {user!r} in {self.home}: start the secured Kafka first"
            ) from None

    def client_options(self, user: str) -> dict[str, Any]:
        """kafka-python settings for ``user`` (add ``bootstrap_servers``)."""
        return {
            "security_protocol": SECURITY_PROTOCOL,
            "sasl_mechanism": SASL_MECHANISM,
            # kafka-python takes SCRAM credentials in its PLAIN-named settings.
            "sasl_plain_username": user,
            "sasl_plain_password": self.password(user),
            "ssl_cafile": str(self.ca_file),
            "ssl_check_hostname": True,
        }

    def client_env(self, user: str) -> dict[str, str]:
        """The application's environment for ``user``: the password stays in
        its file, the environment only says where that file is."""
        return {
            "KAFKA_BROKER": self.bootstrap_servers,
            "KAFKA_SECURITY_PROTOCOL": SECURITY_PROTOCOL,
            "KAFKA_SASL_MECHANISM": SASL_MECHANISM,
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD_FILE": str(self.password_file(user)),
            "KAFKA_SSL_CA_FILE": str(self.ca_file),
        }

    def describe_clients(self) -> str:
        """Every user's client settings, as shell lines (no passwords)."""
        blocks = []
        for user in self.all_users:
            lines = [f"# as {user}"] + [f"{k}={v}" for k, v in self.client_env(user).items()]
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> bool:
        started = super().start(timeout_s)
        say("Client settings (python -m broker.localkafka --secure env USER prints exports):\n"
            + self.describe_clients())
        return started

    def tool_command(self, tool: str, args: Sequence[str]) -> list[str]:
        option = _TOOL_CONFIG_OPTIONS.get(tool.removesuffix(".sh"))
        if option is not None and option not in args:
            args = [*args, option, str(self.admin_config_file)]
        return super().tool_command(tool, args)

    # -- hooks ---------------------------------------------------------------

    def _server_properties(self) -> dict[str, str]:
        jaas = self._jaas(ADMIN_USER)
        return {
            **super()._server_properties(),
            "listeners": f"SASL_SSL://{self.host}:{self.port},"
                         f"CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"SASL_SSL://{self.host}:{self.port}",
            "inter.broker.listener.name": "SASL_SSL",
            # The controller listener is SASL_SSL too: the broker reaches its
            # controller as admin. With PLAINTEXT there it would be
            # User:ANONYMOUS, which would then have to be a super user.
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL",
            "sasl.enabled.mechanisms": SASL_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
            "sasl.mechanism.controller.protocol": SASL_MECHANISM,
            # A listener's JAAS entry gives both sides: the SCRAM server, and
            # the credentials this broker logs in with when it is the client.
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            "listener.name.controller.scram-sha-512.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore_file),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{ADMIN_USER}",
        }

    def _format_options(self) -> list[str]:
        options = super()._format_options()
        for user in self.all_users:
            # The formatter salts and hashes it (4096 rounds, its default).
            options += ["--add-scram", f"{SASL_MECHANISM}=[name={user},"
                                       f"password={self.password(user)}]"]
        return options

    def _probe_options(self) -> dict[str, Any] | None:
        if not self.password_file(ADMIN_USER).exists():
            return None  # never formatted: whatever answers there is not ours
        return self.client_options(ADMIN_USER)

    def _write_config(self) -> None:
        if not self.is_formatted():
            self._new_credentials()
        elif not all(self.password_file(user).exists() for user in self.all_users):
            raise KafkaNotReady(
                f"{self.home} holds a formatted Kafka but not every user's password; "
                "delete the folder to start afresh"
            )
        if not (self.ca_file.exists() and self.keystore_file.exists()):
            write_certificates(self.ca_file, self.keystore_file, [self.host, "localhost"])
        super()._write_config()
        write_private(self.admin_config_file, render_properties({
            "security.protocol": SECURITY_PROTOCOL,
            "sasl.mechanism": SASL_MECHANISM,
            "sasl.jaas.config": self._jaas(ADMIN_USER),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
        }))

    # -- internals -----------------------------------------------------------

    def _new_credentials(self) -> None:
        """New passwords for every user, and new certificates, before the
        storage is formatted with the users' SCRAM credentials."""
        users_dir = self.home / "users"
        users_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(users_dir, PRIVATE_DIR_MODE)
        for user in self.all_users:
            write_private(self.password_file(user), secrets.token_urlsafe(PASSWORD_BYTES) + "\n")
        write_certificates(self.ca_file, self.keystore_file, [self.host, "localhost"])

    def _jaas(self, user: str) -> str:
        # token_urlsafe passwords hold no quote or backslash to escape.
        return ("org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{user}" password="{self.password(user)}";')

    def _check_user(self, user: str) -> None:
        if user not in self.all_users:
            raise ValueError(f"unknown Kafka user {user!r}; known: {', '.join(self.all_users)}")

