"""The roster: which clients are enrolled, with which identity and which certificate.

Why a roster on top of mutual TLS: the TLS handshake only proves that a caller holds *a*
certificate our CA signed. The roster decides who may take part now (a client removed
from it is refused even though its certificate still chains) and pins each client to the
exact certificate it was issued, so a second certificate minted for the same name (a
leaked or misused CA key) does not pass as that client. It also carries each client's
Ed25519 identity, which peers use to check signed key advertisements.

Stored as JSON (never pickle) so an operator can read and review it:
``{"version": 1, "clients": [{"client_id", "identity_public_key", "certificate_sha256"}]}``
with both keys hex encoded.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from fedveil.durable import PUBLIC_MODE, write_atomically
from fedveil.errors import ConfigError, UnauthenticatedError, UnknownClientError
from fedveil.secagg.crypto.identity import VerifyingIdentity
from fedveil.secagg.roster_format import (
    FINGERPRINT_BYTES,
    ROSTER_VERSION,
    RosterEntry,
    parse_roster,
    roster_document,
    roster_sha256,
)
from fedveil.server.pki import validate_client_id

__all__ = ["FINGERPRINT_BYTES", "ROSTER_VERSION", "EnrolledClient", "Roster", "certificate_sha256"]


def certificate_sha256(certificate_der: bytes) -> bytes:
    """SHA-256 over a DER certificate: the fingerprint the roster pins."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(certificate_der)
    return digest.finalize()


@dataclass(frozen=True)
class EnrolledClient:
    """One enrolled client: its id (= certificate CN), identity and pinned certificate."""

    client_id: str
    identity: VerifyingIdentity
    certificate_sha256: bytes

    def __post_init__(self) -> None:
        validate_client_id(self.client_id)
        if not isinstance(self.identity, VerifyingIdentity):
            raise ConfigError(f"client {self.client_id!r}: identity must be a VerifyingIdentity")
        if (
            not isinstance(self.certificate_sha256, bytes)
            or len(self.certificate_sha256) != FINGERPRINT_BYTES
        ):
            raise ConfigError(
                f"client {self.client_id!r}: certificate_sha256 must be {FINGERPRINT_BYTES} bytes"
            )


class Roster(Mapping[str, EnrolledClient]):
    """An immutable mapping client_id -> EnrolledClient; changes return a new roster."""

    def __init__(self, clients: Iterable[EnrolledClient] = ()) -> None:
        entries: dict[str, EnrolledClient] = {}
        for client in clients:
            if not isinstance(client, EnrolledClient):
                raise ConfigError(f"a roster holds EnrolledClient entries, got {client!r}")
            if client.client_id in entries:
                raise ConfigError(f"client id {client.client_id!r} appears twice in the roster")
            entries[client.client_id] = client
        self._clients = entries

    # --- Mapping -----------------------------------------------------------------------

    def __getitem__(self, client_id: str) -> EnrolledClient:
        return self._clients[client_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._clients)

    def __len__(self) -> int:
        return len(self._clients)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._clients

    def __repr__(self) -> str:
        return f"Roster({sorted(self._clients)!r})"

    # --- queries -----------------------------------------------------------------------

    def ids(self) -> tuple[str, ...]:
        """Enrolled ids, sorted (the order the protocol hashes into session ids)."""
        return tuple(sorted(self._clients))

    def identities(self) -> dict[str, VerifyingIdentity]:
        """What the protocol state machines need to check signed advertisements."""
        return {cid: c.identity for cid, c in self._clients.items()}

    def sha256(self) -> bytes:
        """The fingerprint clients check out of band (secagg.roster_format.roster_sha256)."""
        return roster_sha256(
            RosterEntry(c.client_id, c.identity, c.certificate_sha256)
            for c in self._clients.values()
        )

    # --- changes -----------------------------------------------------------------------

    def with_client(self, client: EnrolledClient) -> Roster:
        """A roster with `client` added; ConfigError if its id is already enrolled."""
        return Roster([*self._clients.values(), client])

    def without(self, client_id: str) -> Roster:
        """A roster with `client_id` removed (revocation); ConfigError if it is absent."""
        if client_id not in self._clients:
            raise ConfigError(f"client id {client_id!r} is not on the roster")
        return Roster(c for cid, c in self._clients.items() if cid != client_id)

    # --- authorisation -----------------------------------------------------------------

    def authorize(self, common_name: str | None, certificate_der: bytes | None) -> EnrolledClient:
        """Map a TLS peer to its enrolment, or raise.

        UnauthenticatedError: no certificate, or not the one pinned for that name (the
        caller has not proven who it is). UnknownClientError (PERMISSION_DENIED): the
        certificate names a client that is not, or no longer, enrolled.
        """
        if not certificate_der or not common_name:
            raise UnauthenticatedError(
                "no client certificate was presented; connect with mutual TLS using the "
                "client.pem/client.key issued by `fedveil keys`"
            )
        client = self._clients.get(common_name)
        if client is None:
            raise UnknownClientError(
                f"client {common_name!r} is not enrolled on this server (or was revoked); "
                "send a request from `fedveil keys request` to the operator, who enrols it "
                "with `fedveil keys enrol`"
            )
        if not hmac.compare_digest(certificate_sha256(certificate_der), client.certificate_sha256):
            raise UnauthenticatedError(
                f"the certificate presented for {common_name!r} is not the one it enrolled with"
            )
        return client

    def authorize_peer(self, auth_context: Mapping[str, Sequence[bytes]]) -> EnrolledClient:
        """`authorize` fed from a gRPC `context.auth_context()`.

        gRPC hands the peer's CN and certificate as lists of *bytes* under
        ``x509_common_name`` and ``x509_pem_cert`` (PEM, not DER); both are absent on a
        connection without a client certificate.
        """
        names = list(auth_context.get("x509_common_name", ()))
        pems = list(auth_context.get("x509_pem_cert", ()))
        if len(names) > 1 or len(pems) > 1:
            raise UnauthenticatedError("the client certificate is ambiguous (several names)")
        common_name = names[0].decode("utf-8", errors="replace") if names else None
        der: bytes | None = None
        if pems:
            try:
                cert = x509.load_pem_x509_certificate(pems[0])
            except ValueError as exc:
                raise UnauthenticatedError("the client certificate cannot be parsed") from exc
            der = cert.public_bytes(serialization.Encoding.DER)
        return self.authorize(common_name, der)

    # --- persistence -------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return roster_document(
            RosterEntry(c.client_id, c.identity, c.certificate_sha256)
            for c in self._clients.values()
        )

    @classmethod
    def from_json(cls, data: object, source: str = "roster") -> Roster:
        """Validate every field (secagg.roster_format) and the id rules of enrolment."""
        clients = []
        for index, entry in enumerate(parse_roster(data, source).values()):
            try:
                validate_client_id(entry.client_id)
            except ConfigError as exc:
                raise ConfigError(f"{source}: clients[{index}]: {exc}") from exc
            clients.append(
                EnrolledClient(entry.client_id, entry.identity, entry.certificate_sha256)
            )
        return cls(clients)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically, so a crash never leaves a half-written roster."""
        target = Path(path)
        text = json.dumps(self.to_json(), indent=2) + "\n"
        write_atomically(target, text.encode("utf-8"), mode=PUBLIC_MODE)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Roster:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(f"no roster at {path}; create one with `fedveil keys init`") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_json(data, source=str(path))
