"""The wire side of `fedveil train`: the enrolled client, built as `fedveil client` builds it.

Why the same pieces: a party that trains is, on the wire, exactly a `fedveil client` with
an adapter delta as its update. It loads the enrolment folder (clients.credentials), the
roster (with the out-of-band fingerprint when given), pins the modes it allows, and talks
mutual TLS over the channel that logs one `stage ...` line per stage
(commands.client_stages). Only the model chain differs: it starts from the checkpoint, so
a resumed party derives the model hash of the round after the last one it applied.
"""

from __future__ import annotations

import hashlib

from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.transport import AggregationClient
from fedveil.commands.client_wiring import observed_security, trusted_roster
from fedveil.commands.party_settings import PartyTable
from fedveil.proto.convert_plan import plan_from_spec
from fedveil.secagg.protocol.model_chain import ModelChain
from fedveil.secagg.protocol.plan import FederationPlan

_BOOTSTRAP_ROOT = hashlib.sha256(b"fedveil-party-plan-fetch").digest()
"""The chain root of the short-lived client that only reads the served plan: it never
joins a round, and its root matches no real federation."""


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


def fetch_served_plan(party: PartyTable, credentials: ClientCredentials) -> FederationPlan | None:
    """The plan the service serves with its open round (None when it runs without one).

    Read over the same mutual-TLS channel as the rounds, before the model is built: a
    party without a [lora] table adopts the plan's adapter. What it adopts is not trusted
    for more than that: the party then derives its chain root from what it built, so a
    plan that differs from the other parties' fails the round closed (secagg.protocol.plan).
    """
    client = build_client(party, credentials, ModelChain(_BOOTSTRAP_ROOT))
    try:
        info = client.wait_for_round(timeout_s=party.join_timeout_s)
    finally:
        client.close()
    return plan_from_spec(info.spec)
