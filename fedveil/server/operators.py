"""Who may ask a running server for its status: the federation's operators.

Why a role of its own, and not "any enrolled certificate": a party is an organisation
the operator trusts to send updates, not to watch the service (who is connected, who is
late, why a round failed). So `fedveil keys operator` issues a certificate from the
federation's CA with an extended key usage no party certificate carries
(pki.OPERATOR_USAGE), and pins its SHA-256 in the server folder's `operators.json`, the
way `roster.json` pins each party's. The server answers GetStatus only to a caller whose
mutual-TLS certificate carries that usage *and* is pinned there, re-reading the file at
each call, so deleting an operator's entry (`fedveil keys revoke-operator`) takes effect
at once. A certificate from another CA never gets past the handshake::

    OUT/operator.pem  OUT/operator.key (0600)  OUT/ca.pem      the operator's folder
    SERVER/operators.json                                      the pins, beside roster.json
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from fedveil.durable import write_atomically
from fedveil.errors import ConfigError, FedveilError, UnauthenticatedError
from fedveil.server.keys_store import CA_CERT, load_ca
from fedveil.server.pki import (
    OPERATOR_CN_PREFIX,
    is_operator_certificate,
    issue_operator_certificate,
    validate_client_id,
)

OPERATORS_FILE = "operators.json"
OPERATOR_CERT = "operator.pem"
OPERATOR_KEY = "operator.key"
OPERATOR_CA = "ca.pem"
_FORMAT = "fedveil-operators/1"


class NotAnOperatorError(FedveilError):
    """The caller proved who it is, but it is not one of this server's operators."""

    grpc_status = "PERMISSION_DENIED"


def _apart(a: Path, b: Path) -> bool:
    ra, rb = a.resolve(), b.resolve()
    return ra != rb and ra not in rb.parents and rb not in ra.parents


def load_operators(server_dir: str | os.PathLike[str]) -> dict[str, bytes]:
    """name -> pinned certificate SHA-256; empty when no operator was issued."""
    path = Path(server_dir) / OPERATORS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the operators list ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ConfigError(f"{path}: not a fedveil operators list ({_FORMAT})")
    pins: dict[str, bytes] = {}
    entries = data.get("operators")
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'operators' must be a list")
    for index, entry in enumerate(entries):
        try:
            name = validate_client_id(entry["name"])
            pins[name] = bytes.fromhex(entry["certificate_sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: operators[{index}] is malformed ({exc})") from exc
    return pins


def _save_operators(server_dir: Path, pins: Mapping[str, bytes]) -> None:
    document = {
        "format": _FORMAT,
        "operators": [
            {"name": name, "certificate_sha256": pins[name].hex()} for name in sorted(pins)
        ],
    }
    text = json.dumps(document, indent=2) + "\n"
    write_atomically(server_dir / OPERATORS_FILE, text.encode("utf-8"), mode=0o644)


def issue_operator(
    ca_dir: str | os.PathLike[str],
    server_dir: str | os.PathLike[str],
    name: str,
    out_dir: str | os.PathLike[str],
) -> bytes:
    """Issue operator `name`'s certificate into `out_dir` and pin it in the server folder;
    returns its SHA-256. A name already pinned is replaced (the old certificate stops
    working: re-issuing is how a lost operator key is rotated)."""
    try:
        validate_client_id(name)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("client id", "operator name", 1)) from None
    server_root, out = Path(server_dir), Path(out_dir)
    if not _apart(server_root, out) or not _apart(Path(ca_dir), out):
        raise ConfigError(
            f"the operator folder {out} must be apart from the CA folder and the server "
            "folder: the server refuses to start when it can read a key other than its own"
        )
    ca = load_ca(ca_dir)
    try:
        server_ca = (server_root / CA_CERT).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{server_root / CA_CERT} not found; give the server folder `fedveil keys init` made"
        ) from exc
    if server_ca != ca.cert_pem():
        raise ConfigError(
            f"{server_root} belongs to another CA than {ca_dir}; use the CA folder that "
            "`fedveil keys init` made together with this server folder"
        )
    pins = load_operators(server_root)  # a malformed list is refused before anything is written
    issued = issue_operator_certificate(ca, name)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(out / OPERATOR_KEY, issued.key_pem(), mode=0o600)
    write_atomically(out / OPERATOR_CERT, issued.cert_pem(), mode=0o644)
    write_atomically(out / OPERATOR_CA, ca.cert_pem(), mode=0o644)
    pins[name] = issued.sha256()
    _save_operators(server_root, pins)
    return issued.sha256()


def revoke_operator(server_dir: str | os.PathLike[str], name: str) -> None:
    """Unpin operator `name`: the server refuses its certificate from the next call."""
    root = Path(server_dir)
    pins = load_operators(root)
    if name not in pins:
        raise ConfigError(f"operator {name!r} is not in {root / OPERATORS_FILE}")
    del pins[name]
    _save_operators(root, pins)


def authorize_operator(
    auth_context: Mapping[str, Sequence[bytes]], server_dir: str | os.PathLike[str] | None
) -> str:
    """The operator's name behind a gRPC auth context, or raise.

    UnauthenticatedError: no client certificate (an insecure server has no operators).
    NotAnOperatorError (PERMISSION_DENIED): a party's certificate, or an operator
    certificate this server does not (or no longer) pin.
    """
    pems = list(auth_context.get("x509_pem_cert", ()))
    if len(pems) != 1:
        raise UnauthenticatedError(
            "the status is for the federation's operators: connect with mutual TLS using "
            "the operator.pem/operator.key from `fedveil keys operator`"
        )
    try:
        certificate = x509.load_pem_x509_certificate(pems[0])
    except ValueError as exc:
        raise UnauthenticatedError("the client certificate cannot be parsed") from exc
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else "?"
    if not is_operator_certificate(certificate):
        raise NotAnOperatorError(
            f"certificate {common_name!r} is a party's, not an operator's: the status is for "
            "the federation's operators (`fedveil keys operator`)"
        )
    name = common_name.removeprefix(OPERATOR_CN_PREFIX)
    pinned = load_operators(server_dir).get(name) if server_dir is not None else None
    fingerprint = certificate.fingerprint(hashes.SHA256())
    if pinned is None or not hmac.compare_digest(pinned, fingerprint):
        raise NotAnOperatorError(
            f"operator certificate {common_name!r} is not pinned in this server's "
            f"{OPERATORS_FILE} (revoked, re-issued, or issued for another server folder)"
        )
    return name
