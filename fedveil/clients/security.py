"""Mutual TLS for the client's channel to the aggregation service.

Why it refuses so much up front: a client that silently fell back to a plaintext channel,
or presented a certificate for another client, would either leak its round messages or
be refused by the server at every call; both are configuration errors, raised here
before a channel opens. `insecure=True` is explicit, for tests, and warns each time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from fedveil.clients.credentials import ClientCredentials
from fedveil.errors import ConfigError

# The SDK logs under one name (calls, drivers, channel), so one logger configures it.
logger = logging.getLogger("fedveil.clients.transport")
_PEM_START = b"-----BEGIN "


@dataclass(frozen=True)
class TransportSecurity:
    """Mutual-TLS material, or an explicit `insecure=True` (tests only; logs a warning)."""

    ca_pem: bytes | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = field(default=None, repr=False)
    server_name_override: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        pems = {"ca_pem": self.ca_pem, "cert_pem": self.cert_pem, "key_pem": self.key_pem}
        given = sorted(name for name, value in pems.items() if value is not None)
        if self.insecure:
            if given or self.server_name_override is not None:
                raise ConfigError(
                    f"insecure=True together with TLS settings {given or ['server_name_override']}"
                    ": choose either TLS material or an insecure channel"
                )
            return
        missing = sorted(name for name, value in pems.items() if value is None)
        if missing:
            raise ConfigError(
                f"TLS needs ca_pem, cert_pem and key_pem; missing {missing} (pass "
                "insecure=True explicitly for a plaintext channel in tests)"
            )
        for name, value in pems.items():
            if not isinstance(value, bytes) or not value.lstrip().startswith(_PEM_START):
                raise ConfigError(f"{name} is not PEM data")
        if self.server_name_override == "":
            raise ConfigError("server_name_override must be a host name or None")

    @classmethod
    def from_credentials(
        cls, credentials: ClientCredentials, *, server_name_override: str | None = None
    ) -> TransportSecurity:
        return cls(
            ca_pem=credentials.ca_pem,
            cert_pem=credentials.cert_pem,
            key_pem=credentials.key_pem,
            server_name_override=server_name_override,
        )

    def common_name(self) -> str | None:
        """The client certificate's CN (the id the server will see), None if insecure."""
        if self.cert_pem is None:
            return None
        try:
            cert = x509.load_pem_x509_certificate(self.cert_pem)
        except ValueError as exc:
            raise ConfigError(f"cert_pem cannot be parsed: {exc}") from exc
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        value = names[0].value if len(names) == 1 else None
        return value if isinstance(value, str) else None

    def open_channel(self, target: str) -> grpc.aio.Channel:
        if self.insecure:
            logger.warning(
                "opening an INSECURE plaintext channel to %s: no TLS, the server is not "
                "authenticated and traffic is readable; use only in tests",
                target,
            )
            return grpc.aio.insecure_channel(target)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )
        options = []
        if self.server_name_override is not None:
            options.append(("grpc.ssl_target_name_override", self.server_name_override))
        return grpc.aio.secure_channel(target, credentials, options=options)
