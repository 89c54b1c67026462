"""The wire side of `fedveil train`: the enrolled client, built as `fedveil client` builds it.

Why the same pieces: a party that trains is, on the wire, exactly a `fedveil client` with
an adapter delta as its update. It loads the enrolment folder (clients.credentials), the
roster (with the out-of-band fingerprint when given), pins the modes it allows, and talks
mutual TLS over the channel that logs one `stage ...` line per stage
(commands.client_stages). Only the model chain differs: it starts from the checkpoint, so
a resumed party derives the model hash of the round after the last one it applied.
"""

from __future__ import annotations

from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.transport import AggregationClient
from fedveil.commands.client_wiring import observed_security, trusted_roster
from fedveil.commands.party_settings import PartyTable
from fedveil.secagg.protocol.model_chain import ModelChain


def load_credentials(party: PartyTable) -> ClientCredentials:
    """The enrolment folder (`fedveil keys request --dir`, plus the issued client.pem)."""
    return ClientCredentials.load(party.credentials)


def build_client(
    party: PartyTable, credentials: ClientCredentials, chain: ModelChain
) -> AggregationClient:
    """The blocking client (its own event loop thread), so training stays a plain loop."""
    roster = trusted_roster(party.roster, party.roster_fingerprint(), "party.roster_sha256")
    security = observed_security(credentials, party.server_name)
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
