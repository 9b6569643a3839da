"""``make compose-secrets``: throwaway secrets for compose.yaml's secured
setup, in ``./secrets`` (or the folder given): a CA and the broker's TLS key
and certificate for the host name ``kafka``, a password for each SCRAM user
(admin, web, worker, operator) and a payload key file.

For trying compose out. In production, make the certificate with your own
CA, keep the files in your secret store, and mount them the same way.

The folder is the owner's alone (0700). The files in it are readable by any
user (0644), because the containers read them as users of their own
(apache/kafka runs as ``appuser``, the worker image as ``nobody``).
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from broker.encryption import KeyRing
from broker.localkafka._tls import write_certificates
from broker.localkafka.secure import ADMIN_USER, APP_USERS, PASSWORD_BYTES

#: The host name the workers reach Kafka by, in compose's network.
KAFKA_HOST = "kafka"

#: Mode of each secret file (see the module: the folder is what is private).
SECRET_FILE_MODE = 0o644


def write_secrets(folder: Path) -> list[Path]:
    """Write every secret compose.yaml names into ``folder``; refuse to
    overwrite (Kafka's storage keeps the users' first passwords)."""
    if (folder / "ca.pem").exists():
        raise SystemExit(f"{folder} already holds secrets; delete it to make new ones "
                         "(and Kafka's volume with it: the users keep their first passwords)")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    write_certificates(folder / "ca.pem", folder / "broker.pem", [KAFKA_HOST, "localhost"])
    written = [folder / "ca.pem", folder / "broker.pem"]
    for user in (ADMIN_USER, *APP_USERS):
        path = folder / f"{user}.password"
        path.write_text(secrets.token_urlsafe(PASSWORD_BYTES) + "\n")
        written.append(path)
    keys = folder / "payload.keys"
    keys.write_text(KeyRing((KeyRing.new_key("k1"),)).render())
    written.append(keys)
    for path in written:
        path.chmod(SECRET_FILE_MODE)
    return written


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "secrets")
    for path in write_secrets(folder):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
