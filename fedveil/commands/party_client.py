"""The wire side of `fedveil train`: the enrolled client, built as `fedveil client` builds it.

Why the same pieces: a party that trains is, on the wire, exactly a `fedveil client` with
an adapter delta as its update. It loads the enrolment folder (clients.credentials), the
roster (with the out-of-band fingerprint when given), pins the modes it allows, and talks
mutual TLS over the channel that logs one `stage ...` line per stage
(commands.client_stages). Only the model chain differs: it starts from the checkpoint, so
a resumed party derives the model hash of the round after the last one it applied.
"""

from __future__ import annotations

import logging

from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.roster_file import load_roster_identities
from fedveil.clients.transport import AggregationClient
from fedveil.commands.client_stages import ObservedTransportSecurity
from fedveil.commands.party_settings import PartyTable
from fedveil.secagg.protocol.model_chain import ModelChain

logger = logging.getLogger("fedveil.train")


def load_credentials(party: PartyTable) -> ClientCredentials:
    """The enrolment folder (`fedveil keys request --dir`, plus the issued client.pem)."""
    return ClientCredentials.load(party.credentials)


def build_client(
    party: PartyTable, credentials: ClientCredentials, chain: ModelChain
) -> AggregationClient:
    """The blocking client (its own event loop thread), so training stays a plain loop."""
    roster = load_roster_identities(party.roster, party.roster_fingerprint())
    if party.roster_sha256 is None:
        logger.warning(
            "no party.roster_sha256: the roster %s is trusted as given; add the fingerprint "
            "the operator printed with `fedveil keys show`",
            party.roster,
        )
    security = ObservedTransportSecurity(
        ca_pem=credentials.ca_pem,
        cert_pem=credentials.cert_pem,
        key_pem=credentials.key_pem,
        server_name_override=party.server_name,
    )
    return AggregationClient(
        party.server,
        credentials.client_id,
        credentials.identity,
        roster,
        security,
        policy=party.policy(),
        base_model_hash=chain.base_model_hash,
        model_chain=chain,
    )
