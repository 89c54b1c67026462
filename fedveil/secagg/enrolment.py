"""The enrolment request an organisation sends to the operator: no trusted dealer.

Why a request rather than keys made by the operator: a party holding a client's Ed25519
identity key can sign substituted X25519 keys and survivor sets in that client's name,
which voids every active-attack defence of the protocol. So each organisation makes its
identity key and its TLS key on its own machine (`fedveil keys request`) and sends only
public material; the operator signs a certificate for the TLS key and puts the identity
on the roster (`fedveil keys enrol`).

The request is JSON (never pickle), readable by the operator who approves it::

    {"version": 1, "kind": "fedveil-enrolment-request", "client_id": "...",
     "csr": "-----BEGIN CERTIFICATE REQUEST-----...", "identity_public_key": "<hex>",
     "identity_signature": "<hex>"}

The CSR is signed by the TLS key (proof of possession for the certificate) and names the
client id as its common name; `identity_signature` is the identity key's signature over
the client id, the identity public key and the CSR's SHA-256, so nobody can enrol another
organisation's identity under their own name or pair it with their own TLS key.

Both sides import this module (clients write requests, the operator verifies them), which
the dependency rule allows for secagg only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedveil.errors import ConfigError, InvalidSignatureError
from fedveil.secagg.crypto.encoding import encode_fields
from fedveil.secagg.crypto.identity import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    SigningIdentity,
    VerifyingIdentity,
)

REQUEST_VERSION = 1
REQUEST_KIND = "fedveil-enrolment-request"
_REQUEST_TAG = b"fedveil-enrolment-request-v1"
_KEYS = frozenset(
    {"version", "kind", "client_id", "csr", "identity_public_key", "identity_signature"}
)
# A request is a few kilobytes; anything far larger is not one.
MAX_REQUEST_BYTES = 64 * 1024


def request_message(client_id: str, identity: VerifyingIdentity, csr_der: bytes) -> bytes:
    """What the identity key signs: it belongs to `client_id` together with this CSR."""
    return encode_fields(
        _REQUEST_TAG, client_id, identity.public_bytes, hashlib.sha256(csr_der).digest()
    )


@dataclass(frozen=True)
class EnrolmentRequest:
    """A parsed request; `verified()` checks every signature before it is trusted."""

    client_id: str
    csr: x509.CertificateSigningRequest
    identity: VerifyingIdentity
    identity_signature: bytes

    @classmethod
    def create(
        cls, client_id: str, tls_key: ec.EllipticCurvePrivateKey, identity: SigningIdentity
    ) -> EnrolmentRequest:
        """A request for `client_id`, signed by both of the organisation's keys."""
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, client_id)]))
            .sign(tls_key, hashes.SHA256())
        )
        der = csr.public_bytes(serialization.Encoding.DER)
        verifying = identity.verifying()
        signature = identity.sign(request_message(client_id, verifying, der))
        return cls(client_id, csr, verifying, signature)

    def csr_der(self) -> bytes:
        return self.csr.public_bytes(serialization.Encoding.DER)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": REQUEST_VERSION,
            "kind": REQUEST_KIND,
            "client_id": self.client_id,
            "csr": self.csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            "identity_public_key": self.identity.public_bytes.hex(),
            "identity_signature": self.identity_signature.hex(),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def sha256(self) -> bytes:
        """The request's fingerprint, for the organisation to read to the operator out of
        band: covers the client id, the CSR and the identity key."""
        return hashlib.sha256(
            encode_fields(_REQUEST_TAG, self.client_id, self.csr_der(), self.identity.public_bytes)
        ).digest()

    @classmethod
    def loads(cls, text: str | bytes, source: str = "enrolment request") -> EnrolmentRequest:
        """Parse a request document; ConfigError naming the first wrong field."""
        if len(text) > MAX_REQUEST_BYTES:
            raise ConfigError(f"{source}: {len(text)} bytes is too large for an enrolment request")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: not valid JSON ({exc})") from exc
        return cls.from_json(data, source)

    @classmethod
    def from_json(cls, data: object, source: str = "enrolment request") -> EnrolmentRequest:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object at the top level")
        keys = set(data)
        if keys != _KEYS:
            raise ConfigError(
                f"{source}: missing fields {sorted(_KEYS - keys)}, "
                f"unknown fields {sorted(keys - _KEYS)}"
            )
        if data["kind"] != REQUEST_KIND or data["version"] != REQUEST_VERSION:
            raise ConfigError(
                f"{source}: not a version {REQUEST_VERSION} {REQUEST_KIND} "
                f"(kind {data['kind']!r}, version {data['version']!r})"
            )
        client_id, csr_pem = data["client_id"], data["csr"]
        if not isinstance(client_id, str) or not client_id:
            raise ConfigError(f"{source}: client_id must be a non-empty string")
        if not isinstance(csr_pem, str):
            raise ConfigError(f"{source}: csr must be a PEM string")
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise ConfigError(f"{source}: csr is not a PEM certificate request ({exc})") from exc
        identity = VerifyingIdentity(_hex(data, "identity_public_key", PUBLIC_KEY_BYTES, source))
        signature = _hex(data, "identity_signature", SIGNATURE_BYTES, source)
        return cls(client_id, csr, identity, signature)

    def verified(self) -> EnrolmentRequest:
        """Return self once every check passed; ConfigError / InvalidSignatureError naming
        the one that failed. The caller still validates the client id's alphabet."""
        names = self.csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(names) != 1 or names[0].value != self.client_id:
            raise ConfigError(
                f"the request for {self.client_id!r} carries a CSR for another name "
                f"({[n.value for n in names]!r})"
            )
        key = self.csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ConfigError(
                f"the request for {self.client_id!r} has a TLS key that is not ECDSA P-256; "
                "make it with `fedveil keys request`"
            )
        if not self.csr.is_signature_valid:
            raise InvalidSignatureError(
                f"the CSR for {self.client_id!r} is not signed by its own key"
            )
        self.identity.verify(
            self.identity_signature, request_message(self.client_id, self.identity, self.csr_der())
        )
        return self


def _hex(data: dict[str, Any], key: str, size: int, source: str) -> bytes:
    value = data[key]
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise ConfigError(f"{source}: {key} is not valid hex") from exc
    if len(raw) != size:
        raise ConfigError(f"{source}: {key} must be {size} bytes, got {len(raw)}")
    return raw
