"""`fedveil keys request` on the organisation's machine: keys that never leave it.

Why here: the client's Ed25519 identity and its TLS key are made where they are used, so
neither the operator nor the aggregation server ever holds a key that can sign in this
client's name (secagg.enrolment says why that matters). The folder ends up in the layout
`clients.credentials.ClientCredentials.load` reads::

    DIR/identity.key (0600)  DIR/client.key (0600)  DIR/request.json   <- this module
    DIR/client.pem  DIR/ca.pem                                         <- from the operator

Only request.json goes to the operator; client.pem and ca.pem come back.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedveil.clients.credentials import CLIENT_CERT, CLIENT_IDENTITY, CLIENT_KEY
from fedveil.durable import write_atomically
from fedveil.errors import ConfigError
from fedveil.secagg.crypto.identity import SigningIdentity
from fedveil.secagg.enrolment import EnrolmentRequest

REQUEST_FILE = "request.json"
_SECRET_MODE = 0o600
_PUBLIC_MODE = 0o644
_DIR_MODE = 0o700


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    write_atomically(path, data, mode=_SECRET_MODE if secret else _PUBLIC_MODE)


def _pkcs8(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def request_enrolment(
    directory: str | os.PathLike[str], client_id: str, *, force: bool = False
) -> EnrolmentRequest:
    """Make this client's keys in `directory` and write request.json; return the request.

    Refuses a folder that already holds keys unless `force` (re-enrolment with fresh keys;
    the old certificate, which belonged to the old key, is removed).
    """
    folder = Path(directory)
    existing = [folder / n for n in (CLIENT_KEY, CLIENT_IDENTITY) if (folder / n).exists()]
    if existing and not force:
        raise ConfigError(
            f"{existing[0]} already exists; this folder holds an enrolment already "
            "(pass --force to make fresh keys and a new request)"
        )
    tls_key = ec.generate_private_key(ec.SECP256R1())
    identity_key = Ed25519PrivateKey.generate()
    request = EnrolmentRequest.create(client_id, tls_key, SigningIdentity(identity_key))
    if not folder.exists():
        folder.mkdir(mode=_DIR_MODE, parents=True)
        os.chmod(folder, _DIR_MODE)  # mkdir's mode is filtered by the umask
    (folder / CLIENT_CERT).unlink(missing_ok=True)  # it certified the previous key
    _write(folder / CLIENT_KEY, _pkcs8(tls_key), secret=True)
    _write(folder / CLIENT_IDENTITY, _pkcs8(identity_key), secret=True)
    _write(folder / REQUEST_FILE, request.dumps().encode("utf-8"), secret=False)
    return request
