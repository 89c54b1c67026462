"""The on-disk keys folder written by `fedveil keys`: the operator's side of enrolment.

Why one folder with a fixed layout: the operator runs `fedveil keys init` once, keeps
``ca.key`` offline, hands ``server/`` to the aggregator and each ``clients/<id>/`` to that
client, and nothing needs to be configured by hand::

    DIR/ca.pem  DIR/ca.key (0600)  DIR/roster.json
    DIR/server/server.pem  DIR/server/server.key (0600)
    DIR/clients/<id>/client.pem  client.key (0600)  identity.key (0600)  ca.pem

This module writes the folder; `clients.credentials` reads a client's part of it. The
dependency rule (server and clients never import each other) means the client file
names are spelled in both modules; tests/test_pki.py checks that they agree.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg.crypto.identity import SigningIdentity
from secagg.errors import ConfigError
from server.pki import (
    CertificateAuthority,
    create_ca,
    issue_client_certificate,
    issue_server_certificate,
    validate_client_id,
)
from server.roster import EnrolledClient, Roster

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
ROSTER_FILE = "roster.json"
SERVER_DIR = "server"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
CLIENTS_DIR = "clients"
# Mirrored in clients/credentials.py (clients may not import server/).
CLIENT_CERT = "client.pem"
CLIENT_KEY = "client.key"
CLIENT_IDENTITY = "identity.key"
CLIENT_CA = "ca.pem"

_SECRET_MODE = 0o600
_PUBLIC_MODE = 0o644
_DIR_MODE = 0o700


class ServerCredentials(NamedTuple):
    """What `grpc.ssl_server_credentials` needs: the server key pair and the client CA."""

    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    """Write atomically; a secret is 0600 from its first byte (never briefly readable)."""
    path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _SECRET_MODE if secret else _PUBLIC_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{what} not found at {path}; create it with `fedveil keys init`"
        ) from exc


def _identity_pem(identity: SigningIdentity) -> bytes:
    key = Ed25519PrivateKey.from_private_bytes(identity.private_bytes())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def client_dir(directory: str | os.PathLike[str], client_id: str) -> Path:
    """Where one client's material lives (the id is validated, so no path tricks)."""
    return Path(directory) / CLIENTS_DIR / validate_client_id(client_id)


def _issue_client(directory: Path, ca: CertificateAuthority, client_id: str) -> EnrolledClient:
    issued = issue_client_certificate(ca, client_id)
    identity = SigningIdentity.generate()
    target = client_dir(directory, client_id)
    _write(target / CLIENT_KEY, issued.key_pem(), secret=True)
    _write(target / CLIENT_IDENTITY, _identity_pem(identity), secret=True)
    _write(target / CLIENT_CERT, issued.cert_pem(), secret=False)
    _write(target / CLIENT_CA, ca.cert_pem(), secret=False)
    return EnrolledClient(client_id, identity.verifying(), issued.sha256())


def _remove_client_material(directory: Path, client_id: str) -> None:
    """Delete only the files this module writes, then the folder if that emptied it."""
    target = client_dir(directory, client_id)
    for name in (CLIENT_CERT, CLIENT_KEY, CLIENT_IDENTITY, CLIENT_CA):
        (target / name).unlink(missing_ok=True)
    # Missing, or holding files we did not write: leave those to the operator.
    with contextlib.suppress(OSError):
        target.rmdir()


def init_keys(
    directory: str | os.PathLike[str],
    hostnames: Sequence[str],
    client_ids: Sequence[str],
    overwrite: bool = False,
) -> Roster:
    """Create the CA, the server certificate and every listed client; return the roster.

    Replacing an existing CA invalidates every certificate it issued, so that needs
    `overwrite=True`; stale client folders from the old roster are then removed.
    """
    root = Path(directory)
    ids = [validate_client_id(cid) for cid in client_ids]
    if len(set(ids)) != len(ids):
        dupes = sorted({cid for cid in ids if ids.count(cid) > 1})
        raise ConfigError(f"client ids listed more than once: {dupes}")
    existing = [p for p in (root / CA_CERT, root / CA_KEY) if p.exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"{root} already holds a CA ({existing[0].name}); refusing to replace it because "
            "that would invalidate every issued certificate. Use `fedveil keys add-client` "
            "to enrol more clients, or pass --force to start over."
        )
    old_ids: tuple[str, ...] = ()
    if overwrite and (root / ROSTER_FILE).exists():
        try:
            old_ids = Roster.load(root / ROSTER_FILE).ids()
        except ConfigError:
            old_ids = ()  # an unreadable old roster is being replaced anyway
    ca = create_ca()
    server = issue_server_certificate(ca, hostnames)  # validates hosts before any write
    root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    _write(root / CA_KEY, ca.key_pem(), secret=True)
    _write(root / CA_CERT, ca.cert_pem(), secret=False)
    _write(root / SERVER_DIR / SERVER_KEY, server.key_pem(), secret=True)
    _write(root / SERVER_DIR / SERVER_CERT, server.cert_pem(), secret=False)
    for stale in set(old_ids) - set(ids):
        _remove_client_material(root, stale)
    roster = Roster(_issue_client(root, ca, cid) for cid in ids)
    roster.save(root / ROSTER_FILE)
    return roster


def load_ca(directory: str | os.PathLike[str]) -> CertificateAuthority:
    root = Path(directory)
    return CertificateAuthority.from_pem(
        _read(root / CA_CERT, "CA certificate"), _read(root / CA_KEY, "CA key")
    )


def load_roster(directory: str | os.PathLike[str]) -> Roster:
    return Roster.load(Path(directory) / ROSTER_FILE)


def add_client(directory: str | os.PathLike[str], client_id: str) -> EnrolledClient:
    """Enrol one more client with the existing CA and append it to the roster."""
    root = Path(directory)
    validate_client_id(client_id)
    ca = load_ca(root)
    roster = load_roster(root)
    if client_id in roster:
        raise ConfigError(
            f"client id {client_id!r} is already enrolled; pick another id "
            "(re-issuing an enrolled client is not supported)"
        )
    target = client_dir(root, client_id)
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"{target} already exists and is not empty; move it away first")
    enrolled = _issue_client(root, ca, client_id)
    roster.with_client(enrolled).save(root / ROSTER_FILE)
    return enrolled


def load_server_credentials(directory: str | os.PathLike[str]) -> ServerCredentials:
    """The server's key, certificate and the CA it requires client certificates from."""
    root = Path(directory)
    return ServerCredentials(
        key_pem=_read(root / SERVER_DIR / SERVER_KEY, "server key"),
        cert_pem=_read(root / SERVER_DIR / SERVER_CERT, "server certificate"),
        ca_pem=_read(root / CA_CERT, "CA certificate"),
    )
