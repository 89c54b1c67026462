"""What `fedveil client` and `fedveil train` both build before they talk to the server:
the roster they trust and the mutual-TLS security that logs one line per stage.

Why one place: a training party is, on the wire, a `fedveil client`; the roster check (and
the warning when no out-of-band fingerprint pins it) and the observed channel must not drift
apart between the two commands.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.roster_file import load_roster_identities
from fedveil.commands.client_stages import ObservedTransportSecurity
from fedveil.secagg.crypto.identity import VerifyingIdentity
from fedveil.secagg.protocol.stages import Stage

logger = logging.getLogger("fedveil.client")


def trusted_roster(
    path: Path, fingerprint: bytes | None, how_to_pin: str
) -> dict[str, VerifyingIdentity]:
    """The roster's identities, checked against `fingerprint` when one was given; without it
    the file is trusted as given, and the user is told how to pin it (`how_to_pin`)."""
    roster = load_roster_identities(path, fingerprint)
    if fingerprint is None:
        logger.warning(
            "no %s: the roster %s is trusted as given; pass the fingerprint the operator "
            "printed with `fedveil keys show`",
            how_to_pin,
            path,
        )
    return roster


def observed_security(
    credentials: ClientCredentials, server_name: str | None, stop_before: Stage | None = None
) -> ObservedTransportSecurity:
    """Mutual TLS from the enrolment folder, logging one `stage ...` line per stage."""
    return ObservedTransportSecurity(
        ca_pem=credentials.ca_pem,
        cert_pem=credentials.cert_pem,
        key_pem=credentials.key_pem,
        server_name_override=server_name,
        stop_before=stop_before,
    )
