"""A client's enrolment material, read from the folder `fedveil keys` gave it.

Why this lives in clients/ and not next to the writer in server/: clients may not import
server code (dependency rule), and a client only ever needs to *read* its own folder::

    client.pem  client.key  identity.key  ca.pem

The file names are spelled again here on purpose; tests/server/test_pki.py checks that they
agree with server/keys_store.py, which writes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID

from fedveil.errors import ConfigError
from fedveil.secagg.crypto.identity import SigningIdentity

CLIENT_CERT = "client.pem"
CLIENT_KEY = "client.key"
CLIENT_IDENTITY = "identity.key"
CLIENT_CA = "ca.pem"
_PEM_START = b"-----BEGIN "


def _read(folder: Path, name: str) -> bytes:
    try:
        return (folder / name).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{folder / name} is missing; make the keys with `fedveil keys request` and "
            "get client.pem and ca.pem from the operator's `fedveil keys enrol`"
        ) from exc


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True, eq=False)
class ClientCredentials:
    """Everything one client needs to open a mutual-TLS channel and sign as itself.

    Secrets stay out of `repr` so a logged credentials object leaks nothing.
    """

    client_id: str
    key_pem: bytes = field(repr=False)
    cert_pem: bytes
    ca_pem: bytes
    identity: SigningIdentity = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not self.client_id:
            raise ConfigError(f"client id {self.client_id!r} is empty")
        for name in ("key_pem", "cert_pem", "ca_pem"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or not value.lstrip().startswith(_PEM_START):
                raise ConfigError(f"{name} of client {self.client_id!r} is not PEM data")
        if not isinstance(self.identity, SigningIdentity):
            raise ConfigError(f"identity of client {self.client_id!r} must be a SigningIdentity")

    @classmethod
    def load(cls, client_dir: str | os.PathLike[str]) -> ClientCredentials:
        """Read and cross-check one client folder.

        The key is checked against the certificate here because a mismatch would
        otherwise surface only as an opaque TLS handshake failure.
        """
        folder = Path(client_dir)
        cert_pem = _read(folder, CLIENT_CERT)
        key_pem = _read(folder, CLIENT_KEY)
        ca_pem = _read(folder, CLIENT_CA)
        identity_pem = _read(folder, CLIENT_IDENTITY)
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
            x509.load_pem_x509_certificate(ca_pem)
            identity_key = serialization.load_pem_private_key(identity_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"cannot parse the credentials in {folder}: {exc}") from exc
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise ConfigError(f"{folder / CLIENT_KEY} does not belong to {folder / CLIENT_CERT}")
        if not isinstance(identity_key, Ed25519PrivateKey):
            raise ConfigError(f"{folder / CLIENT_IDENTITY} is not an Ed25519 private key")
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(names) != 1 or not isinstance(names[0].value, str):
            raise ConfigError(f"{folder / CLIENT_CERT} must carry exactly one common name")
        return cls(
            client_id=names[0].value,
            key_pem=key_pem,
            cert_pem=cert_pem,
            ca_pem=ca_pem,
            identity=SigningIdentity(identity_key),
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Mutual-TLS credentials that trust only the federation's CA."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )
