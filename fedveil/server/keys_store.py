"""The operator's key folders: enrolment without a dealer, and the dealer layout for tests.

Why two folders and no client keys: a server that can read ``ca.key`` can mint
certificates, and one that can read a client's ``identity.key`` can sign substituted keys
and survivor sets in that client's name. So `fedveil keys init` writes the CA and the
server's runtime folder apart, each organisation makes its own keys (`fedveil keys
request`, clients/enrolment.py) and the operator only signs and lists them (`enrol`)::

    CA/ca.key (0600)  CA/ca.pem                                   keep offline
    SERVER/server.key (0600)  SERVER/server.pem  SERVER/ca.pem  SERVER/roster.json

`fedveil server --keys-dir SERVER` refuses to start when any private key other than its
own is readable in the folders it is given (`check_server_folders`).

`init_keys` / `add_client` still write the old single-folder *dealer* layout, in which the
operator generates every client's secrets; it exists for in-process tests and benchmarks
that need many clients quickly, and the server refuses such a folder::

    DIR/ca.pem  DIR/ca.key (0600)  DIR/roster.json
    DIR/server/server.pem  DIR/server/server.key (0600)
    DIR/clients/<id>/client.pem  client.key (0600)  identity.key (0600)  ca.pem

This module writes the folders; `clients.credentials` reads a client's part. The
dependency rule (server and clients never import each other) means the client file
names are spelled in both modules; tests/server/test_pki.py checks that they agree.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedveil.durable import write_atomically
from fedveil.errors import ConfigError
from fedveil.secagg.crypto.identity import SigningIdentity
from fedveil.secagg.enrolment import EnrolmentRequest
from fedveil.server.pki import (
    CertificateAuthority,
    create_ca,
    issue_client_certificate,
    issue_server_certificate,
    sign_client_certificate,
    validate_client_id,
)
from fedveil.server.roster import EnrolledClient, Roster

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
    """Atomic; a secret is 0600 from its first byte (never briefly readable)."""
    path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    write_atomically(path, data, mode=_SECRET_MODE if secret else _PUBLIC_MODE)


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
            "that would invalidate every issued certificate. Use `add_client` to enrol more "
            "clients, or pass overwrite=True to start over."
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


def _server_pair_dir(root: Path) -> Path:
    """Where the server's key pair lives: SERVER/ (made by `fedveil keys init`), or the
    dealer layout's DIR/server/."""
    return root if (root / SERVER_KEY).exists() else root / SERVER_DIR


def load_server_credentials(directory: str | os.PathLike[str]) -> ServerCredentials:
    """The server's key, certificate and the CA it requires client certificates from."""
    root = Path(directory)
    pair = _server_pair_dir(root)
    return ServerCredentials(
        key_pem=_read(pair / SERVER_KEY, "server key"),
        cert_pem=_read(pair / SERVER_CERT, "server certificate"),
        ca_pem=_read(root / CA_CERT, "CA certificate"),
    )


# --- enrolment without a dealer ------------------------------------------------------


def _apart(a: Path, b: Path) -> bool:
    ra, rb = a.resolve(), b.resolve()
    return ra != rb and ra not in rb.parents and rb not in ra.parents


def init_federation(
    ca_dir: str | os.PathLike[str],
    server_dir: str | os.PathLike[str],
    hostnames: Sequence[str],
    overwrite: bool = False,
) -> None:
    """Create the CA in `ca_dir` and the server's runtime folder (its key pair, the CA
    certificate and an empty roster) in `server_dir`; the two must not overlap."""
    ca_root, server_root = Path(ca_dir), Path(server_dir)
    if not _apart(ca_root, server_root):
        raise ConfigError(
            f"the CA folder {ca_root} and the server folder {server_root} must be apart "
            "(neither inside the other): the server must never be able to read ca.key"
        )
    existing = [
        p for p in (ca_root / CA_KEY, ca_root / CA_CERT, server_root / SERVER_KEY) if p.exists()
    ]
    if existing and not overwrite:
        raise ConfigError(
            f"{existing[0]} already exists; refusing to replace it because a new CA "
            "invalidates every issued certificate (pass --force to start over)"
        )
    ca = create_ca()
    server = issue_server_certificate(ca, hostnames)  # validates hosts before any write
    _write(ca_root / CA_KEY, ca.key_pem(), secret=True)
    _write(ca_root / CA_CERT, ca.cert_pem(), secret=False)
    _write(server_root / SERVER_KEY, server.key_pem(), secret=True)
    _write(server_root / SERVER_CERT, server.cert_pem(), secret=False)
    _write(server_root / CA_CERT, ca.cert_pem(), secret=False)
    Roster().save(server_root / ROSTER_FILE)


def read_request(path: str | os.PathLike[str]) -> EnrolmentRequest:
    """Parse and verify an enrolment request file (signatures, names, key type)."""
    source = Path(path)
    try:
        text = source.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"no enrolment request at {source}; the organisation makes it with "
            "`fedveil keys request`"
        ) from exc
    request = EnrolmentRequest.loads(text, source=str(source)).verified()
    validate_client_id(request.client_id)
    return request


def enrol_request(
    request_path: str | os.PathLike[str],
    ca_dir: str | os.PathLike[str],
    server_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
) -> tuple[EnrolledClient, Path]:
    """Sign the request's TLS key, put its identity on the server's roster, and write
    client.pem and ca.pem to `out_dir` (default: the request's folder) for the client.

    Returns the roster entry and that folder. An id already on the roster is refused
    (revoke it first: re-enrolment is a new request with fresh keys), and so is an
    identity key enrolled under another id.
    """
    request = read_request(request_path)
    ca = load_ca(ca_dir)
    server_root = Path(server_dir)
    if _read(server_root / CA_CERT, "the server's CA certificate") != ca.cert_pem():
        raise ConfigError(
            f"{server_root} belongs to another CA than {ca_dir}; enrol with the CA folder "
            "that `fedveil keys init` made together with this server folder"
        )
    roster = load_roster(server_root)
    if request.client_id in roster:
        raise ConfigError(
            f"client id {request.client_id!r} is already enrolled; to re-enrol it with new "
            f"keys, run `fedveil keys revoke {request.client_id}` first"
        )
    for other in roster.values():
        if other.identity == request.identity:
            raise ConfigError(
                f"the request's identity key is already enrolled as {other.client_id!r}; "
                "every client needs its own identity"
            )
    public_key = request.csr.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)  # checked by verified()
    cert = sign_client_certificate(ca, request.client_id, public_key)
    enrolled = EnrolledClient(
        request.client_id, request.identity, cert.fingerprint(hashes.SHA256())
    )
    target = Path(out_dir) if out_dir is not None else Path(request_path).parent
    _write(target / CLIENT_CERT, cert.public_bytes(serialization.Encoding.PEM), secret=False)
    _write(target / CLIENT_CA, ca.cert_pem(), secret=False)
    roster.with_client(enrolled).save(server_root / ROSTER_FILE)
    return enrolled, target


def revoke_client(server_dir: str | os.PathLike[str], client_id: str) -> Roster:
    """Remove `client_id` from the server's roster; the server refuses its certificate
    from the next round it opens (it re-reads the roster at every round open)."""
    root = Path(server_dir)
    roster = load_roster(root).without(client_id)
    roster.save(root / ROSTER_FILE)
    return roster


# --- the server's start-up check ------------------------------------------------------

_SCAN_MAX_FILES = 10_000
_SCAN_MAX_BYTES = 1 << 20
_PEM_KEY_RE = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.DOTALL
)


def _spki(key: object) -> bytes | None:
    public = getattr(key, "public_key", None)
    if public is None:
        return None
    return bytes(
        public().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _foreign_key_in(data: bytes, own_spki: bytes | None) -> bool:
    """True when `data` holds a private key that is not the server's own."""
    blocks = [m.group(0) for m in _PEM_KEY_RE.finditer(data)]
    if not blocks and b"PRIVATE KEY-----" in data:
        return True  # a PEM key we cannot even delimit: not provably the server's
    if not blocks and len(data) <= 8192:
        try:  # a DER private key (PKCS#8 or traditional)
            key = serialization.load_der_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return False
        return own_spki is None or _spki(key) != own_spki
    for block in blocks:
        try:
            key = serialization.load_pem_private_key(block, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return True  # encrypted or unknown: not provably the server's
        if own_spki is None or _spki(key) != own_spki:
            return True
    return False


def foreign_private_keys(
    folders: Iterable[str | os.PathLike[str]], own_cert_pem: bytes | None
) -> list[Path]:
    """Readable files under `folders` holding a private key other than the one matching
    `own_cert_pem` (the server's certificate). Unreadable files are skipped: they are
    exactly what the server cannot use. Directory symlinks are not followed."""
    own: bytes | None = None
    if own_cert_pem is not None:
        own = (
            x509.load_pem_x509_certificate(own_cert_pem)
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    found: list[Path] = []
    seen = 0
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(filenames):
                seen += 1
                if seen > _SCAN_MAX_FILES:
                    raise ConfigError(
                        f"refusing to start: the folders given to the server hold more than "
                        f"{_SCAN_MAX_FILES} files; give it folders of its own (keys: only "
                        "server.key, server.pem, ca.pem, roster.json)"
                    )
                path = Path(dirpath) / name
                try:
                    if not path.is_file() or path.stat().st_size > _SCAN_MAX_BYTES:
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                if _foreign_key_in(data, own):
                    found.append(path)
    return found


def check_server_folders(
    keys_dir: str | os.PathLike[str] | None,
    state_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Refuse (ConfigError, one line) to run a server that can read a CA or client key.

    Such a server could mint certificates or sign in a client's name, so every active
    attack the clients refuse would be open to it. `fedveil server` calls this before it
    binds a port.
    """
    folders = [Path(d) for d in (keys_dir, state_dir) if d is not None and Path(d).is_dir()]
    own = None
    if keys_dir is not None:
        cert = _server_pair_dir(Path(keys_dir)) / SERVER_CERT
        with contextlib.suppress(OSError, ValueError):
            pem = cert.read_bytes()
            x509.load_pem_x509_certificate(pem)
            own = pem
    found = foreign_private_keys(folders, own)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(
            f"refusing to start: {found[0]}{more} is a private key other than this server's "
            "own (a CA or client key); the server's folder may hold only server.key, "
            "server.pem, ca.pem and roster.json: make it with `fedveil keys init --ca-dir CA "
            "--server-dir SERVER`, keep CA/ offline and client keys on the clients"
        )
