"""The wire side of `fedveil train`: the enrolled client, built as `fedveil client` builds it.

Why the same pieces: a party that trains is, on the wire, exactly a `fedveil client` with
an adapter delta as its update. It loads the enrolment folder (clients.credentials), the
roster (with the out-of-band fingerprint when given), pins the modes it allows, and talks
mutual TLS over the channel that logs one `stage ...` line per stage
(commands.client_stages). Only the model chain differs: it starts from the checkpoint, so
a resumed party derives the model hash of the round after the last one it applied.

The privacy ledger is the one `fedveil client --privacy-ledger` keeps (clients.
privacy_ledger): a file bound to the federation's CA, this client and the budget. With
[dp] kind = "client" the client charges it before it masks each noised update and
refuses to send an un-noised one; with kind = "sample" DP-SGD charges it each round.
"""

from __future__ import annotations

import hashlib
import logging

from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.privacy_ledger import PersistentPrivacyLedger, federation_fingerprint
from fedveil.clients.transport import AggregationClient
from fedveil.commands.client_wiring import observed_security, trusted_roster
from fedveil.commands.party_settings import DpTable, PartyTable
from fedveil.proto.convert_plan import plan_from_spec
from fedveil.secagg.dp import PrivacyBudget, PrivacyLedger
from fedveil.secagg.protocol.model_chain import ModelChain
from fedveil.secagg.protocol.plan import FederationPlan

logger = logging.getLogger("fedveil.train")

_BOOTSTRAP_ROOT = hashlib.sha256(b"fedveil-party-plan-fetch").digest()
"""The chain root of the short-lived client that only reads the served plan: it never
joins a round, and its root matches no real federation."""


def load_credentials(party: PartyTable) -> ClientCredentials:
    """The enrolment folder (`fedveil keys request --dir`, plus the issued client.pem)."""
    return ClientCredentials.load(party.credentials)


def open_ledger(
    party: PartyTable, dp: DpTable | None, credentials: ClientCredentials
) -> PersistentPrivacyLedger | None:
    """The party's privacy ledger file ([dp]; None without it), loaded if it exists.

    ConfigError (before the model is loaded or anything sent) when it belongs to another
    federation or client, was started with another budget or accountant, is corrupt, or
    is held by another process: a ledger is never silently started over."""
    if dp is None:
        return None
    path = dp.ledger_path(party.credentials)
    ledger = PersistentPrivacyLedger.open(
        path,
        PrivacyBudget(float(dp.epsilon), float(dp.delta)),
        federation=federation_fingerprint(credentials.ca_pem),
        owner=credentials.client_id,
        method=dp.accountant,
    )
    spent = f"epsilon {ledger.spent_epsilon:.4g}" if ledger.rounds else "nothing"
    logger.info(
        "%s: privacy ledger %s (%s DP): %s spent over %d round(s), budget epsilon %g at delta %g",
        credentials.client_id,
        path,
        dp.kind,
        spent,
        ledger.rounds,
        ledger.budget.epsilon,
        ledger.budget.delta,
    )
    return ledger


def build_client(
    party: PartyTable,
    credentials: ClientCredentials,
    chain: ModelChain,
    privacy_budget: PrivacyLedger | None = None,
) -> AggregationClient:
    """The blocking client (its own event loop thread), so training stays a plain loop.

    `privacy_budget`: the ledger of a [dp] kind = "client" party; the client then takes
    part only in rounds that add client-level DP noise, charging it before it masks."""
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
        privacy_budget=privacy_budget,
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
