"""A throwaway certificate authority and the broker's certificate, as the PEM
files Kafka reads directly (``ssl.keystore.type=PEM``): no keytool, no
Java keystore, no store password."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from broker.localkafka._files import write_private


def write_certificates(ca_file: Path, keystore_file: Path, hosts: Sequence[str]) -> None:
    """Make a new CA and a broker certificate for ``hosts`` (names or IP
    addresses); write the CA certificate to ``ca_file`` and the broker's key
    and certificate chain to ``keystore_file`` (owner-only). The CA's own key
    is not kept: nothing else is ever signed with it."""
    # trustme comes with the `testing` extra; only the secured shape needs it.
    import trustme

    ca = trustme.CA(organization_name="broker.localkafka")
    leaf = ca.issue_cert(*hosts, common_name=hosts[0])
    # trustme writes the traditional OpenSSL key format; Kafka's PEM keystore
    # reads PKCS#8 only ("-----BEGIN PRIVATE KEY-----").
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    chain = b"".join(pem.bytes() for pem in leaf.cert_chain_pems)
    write_private(keystore_file, (pkcs8 + chain).decode())
    ca_file.parent.mkdir(parents=True, exist_ok=True)
    ca_file.write_bytes(ca.cert_pem.bytes())
