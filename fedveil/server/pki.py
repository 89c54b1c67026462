"""The federation's own certificate authority and the certificates it issues.

Why a private CA rather than the system trust store: the only parties that may talk to
an aggregation server are the ones its operator enrolled, so trust is rooted in a CA
the operator creates for this federation (`fedveil keys init`) and nothing else. The
server certificate proves to clients that they reached the real aggregator; each client
certificate carries the client id (subject CN and a `fedveil:client:<id>` URI SAN) so the
server can look the caller up on its roster after the mutual-TLS handshake. An operator
certificate (`fedveil keys operator`) carries an extended key usage of its own,
`OPERATOR_USAGE`, which the CA never puts in a party's certificate: it lets its holder ask
the server's status (server.operators), and takes part in no round.

All keys are ECDSA P-256 and all signatures SHA-256: small, fast to generate in tests and
accepted by every TLS stack gRPC ships with.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedveil.errors import ConfigError

#: X.509 caps a subject common name at 64 characters (RFC 5280 ub-common-name) and
#: `cryptography` refuses longer ones; since the CN *is* the client id, enrolled ids are
#: held to that bound even though the protocol itself accepts ids up to 128 characters.
MAX_CLIENT_ID_CHARS = 64
CLIENT_URI_PREFIX = "fedveil:client:"
OPERATOR_URI_PREFIX = "fedveil:operator:"
#: The operator's extended key usage: a UUID OID (ITU-T X.667, arc 2.25), so it needs no
#: registration and collides with nothing. Party certificates carry only clientAuth.
OPERATOR_USAGE = x509.ObjectIdentifier("2.25.332194771545735118275396156514372148287")
#: Operator names become the CN "operator:<name>", which no client id can equal (':' is
#: outside the client-id alphabet), so an operator never passes for a party on the roster.
OPERATOR_CN_PREFIX = "operator:"
DEFAULT_VALID_DAYS = 825
_CLIENT_ID_RE = re.compile(r"[A-Za-z0-9._-]+")
_DNS_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
# Certificates start slightly in the past so a peer whose clock lags still accepts them.
_CLOCK_SKEW = datetime.timedelta(minutes=5)


def validate_client_id(client_id: str) -> str:
    """Return `client_id` unchanged or raise ConfigError naming it.

    The id becomes a certificate CN, a URI and a directory name under the keys folder, so
    it is held to a conservative alphabet; `.` and `..` are refused because they would
    name the clients folder itself or its parent.
    """
    if not isinstance(client_id, str) or not client_id:
        raise ConfigError(f"client id {client_id!r} is empty; give a non-empty name")
    if len(client_id) > MAX_CLIENT_ID_CHARS:
        raise ConfigError(
            f"client id {client_id!r} has {len(client_id)} characters; "
            f"at most {MAX_CLIENT_ID_CHARS} fit in a certificate common name"
        )
    if not _CLIENT_ID_RE.fullmatch(client_id):
        raise ConfigError(
            f"client id {client_id!r} may only contain letters, digits, '.', '_' and '-'"
        )
    if client_id in (".", ".."):
        raise ConfigError(f"client id {client_id!r} is reserved; choose another name")
    return client_id


def _validate_hostname(host: str) -> x509.GeneralName:
    """Map one --hosts entry to the SAN it needs (IP or DNS), or raise ConfigError."""
    if not isinstance(host, str) or not host:
        raise ConfigError(f"server hostname {host!r} is empty")
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_DNS_LABEL_RE.fullmatch(label) for label in labels):
        raise ConfigError(
            f"server hostname {host!r} is neither an IP address nor a DNS name "
            "(letters, digits and '-' in dot-separated labels of at most 63 characters)"
        )
    return x509.DNSName(host.rstrip(".").lower())


def _validity(
    valid_days: int, not_after_cap: datetime.datetime | None
) -> tuple[datetime.datetime, datetime.datetime]:
    if isinstance(valid_days, bool) or not isinstance(valid_days, int) or valid_days < 1:
        raise ConfigError(f"valid_days must be a positive integer, got {valid_days!r}")
    now = datetime.datetime.now(datetime.UTC)
    not_after = now + datetime.timedelta(days=valid_days)
    if not_after_cap is not None:
        # A leaf that outlives its CA would only fail later and more confusingly.
        not_after = min(not_after, not_after_cap)
    return now - _CLOCK_SKEW, not_after


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8: the form gRPC's TLS stacks load; the file mode protects it.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _same_public_key(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


@dataclass(frozen=True)
class IssuedCertificate:
    """A leaf certificate with its private key, as written to disk for one party."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            raise ConfigError("an issued certificate needs an ECDSA private key")
        if not _same_public_key(self.private_key, self.certificate):
            raise ConfigError("the private key does not belong to the certificate")

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def cert_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def key_pem(self) -> bytes:
        return _pem_key(self.private_key)

    def sha256(self) -> bytes:
        """The fingerprint the roster pins (SHA-256 over the DER certificate)."""
        return self.certificate.fingerprint(hashes.SHA256())


@dataclass(frozen=True)
class CertificateAuthority:
    """The federation's root: its key signs the server and every client certificate."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            raise ConfigError("the CA key must be an ECDSA private key")
        if not _same_public_key(self.private_key, self.certificate):
            raise ConfigError("the CA key does not belong to the CA certificate")
        try:
            constraints = self.certificate.extensions.get_extension_for_class(
                x509.BasicConstraints
            ).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise ConfigError("the CA certificate is not marked as a CA (BasicConstraints)")

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        """Load a CA written by `cert_pem()`/`key_pem()`; ConfigError if it is not one."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"cannot parse the CA certificate or key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(
                "the CA key is not an ECDSA key; recreate it with `fedveil keys init`"
            )
        return cls(cert, key)

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return _pem_key(self.private_key)

    def _issue(
        self,
        subject: str,
        san: list[x509.GeneralName],
        usage: x509.ObjectIdentifier | list[x509.ObjectIdentifier],
        valid_days: int,
    ) -> IssuedCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(subject, san, usage, key.public_key(), valid_days)
        return IssuedCertificate(cert, key)

    def _sign(
        self,
        subject: str,
        san: list[x509.GeneralName],
        usage: x509.ObjectIdentifier | list[x509.ObjectIdentifier],
        public_key: ec.EllipticCurvePublicKey,
        valid_days: int,
    ) -> x509.Certificate:
        """A leaf certificate for a key held elsewhere (the CA never sees its private half)."""
        usages = usage if isinstance(usage, list) else [usage]
        not_before, not_after = _validity(valid_days, self.certificate.not_valid_after_utc)
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
            .sign(self.private_key, hashes.SHA256())
        )


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def create_ca(
    common_name: str = "fedveil CA", valid_days: int = DEFAULT_VALID_DAYS
) -> CertificateAuthority:
    """Create a fresh self-signed CA that may sign leaves only (path length 0)."""
    if not isinstance(common_name, str) or not 0 < len(common_name) <= 64:
        raise ConfigError(f"CA common name {common_name!r} must have 1 to 64 characters")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity(valid_days, None)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(cert, key)


def issue_server_certificate(
    ca: CertificateAuthority,
    hostnames: Sequence[str],
    valid_days: int = DEFAULT_VALID_DAYS,
) -> IssuedCertificate:
    """Issue the aggregator's TLS certificate for the names clients will dial.

    Clients check the name they connect to against the SAN (DNS names and IP addresses;
    the CN is ignored by modern verifiers), so every address in use must be listed.
    """
    if isinstance(hostnames, str) or not hostnames:
        raise ConfigError(f"the server certificate needs at least one hostname, got {hostnames!r}")
    san = [_validate_hostname(h) for h in hostnames]
    if len(set(san)) != len(san):
        raise ConfigError(f"server hostnames contain duplicates: {list(hostnames)!r}")
    first = hostnames[0].rstrip(".")
    subject = first if len(first) <= 64 else "fedveil server"
    return ca._issue(subject, san, ExtendedKeyUsageOID.SERVER_AUTH, valid_days)


def issue_client_certificate(
    ca: CertificateAuthority, client_id: str, valid_days: int = DEFAULT_VALID_DAYS
) -> IssuedCertificate:
    """Issue one enrolled client's TLS certificate; its CN is the client id."""
    validate_client_id(client_id)
    san: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(f"{CLIENT_URI_PREFIX}{client_id}")
    ]
    return ca._issue(client_id, san, ExtendedKeyUsageOID.CLIENT_AUTH, valid_days)


def sign_client_certificate(
    ca: CertificateAuthority,
    client_id: str,
    public_key: ec.EllipticCurvePublicKey,
    valid_days: int = DEFAULT_VALID_DAYS,
) -> x509.Certificate:
    """Certify a TLS key the client made itself (from its enrolment request's CSR)."""
    validate_client_id(client_id)
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise ConfigError(f"client {client_id!r}: the TLS key must be ECDSA P-256")
    san: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(f"{CLIENT_URI_PREFIX}{client_id}")
    ]
    return ca._sign(client_id, san, ExtendedKeyUsageOID.CLIENT_AUTH, public_key, valid_days)


def certificate_common_name(certificate: x509.Certificate) -> str:
    """The subject CN of a certificate, or ConfigError when it has none."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise ConfigError("the certificate must have exactly one subject common name")
    return names[0].value


def issue_operator_certificate(
    ca: CertificateAuthority, name: str, valid_days: int = DEFAULT_VALID_DAYS
) -> IssuedCertificate:
    """Issue an operator's TLS certificate: clientAuth (so the mutual-TLS handshake accepts
    it) plus `OPERATOR_USAGE`, which is what the server checks before it answers
    GetStatus; CN "operator:<name>", URI SAN "fedveil:operator:<name>"."""
    validate_client_id(name)  # the same conservative alphabet: it names a folder too
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(f"{OPERATOR_URI_PREFIX}{name}")]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH, OPERATOR_USAGE]
    return ca._issue(f"{OPERATOR_CN_PREFIX}{name}", san, usages, valid_days)


def is_operator_certificate(certificate: x509.Certificate) -> bool:
    """Whether the certificate carries the operator's extended key usage."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return OPERATOR_USAGE in usage
