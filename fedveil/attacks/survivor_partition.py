"""A malicious server that partitions the consistency check to unmask one client.

The attack (issue 14): the server relays the share-keys stage honestly, then relays to
the victim only t - 1 neighbours' shares (so it masks with few peers), and shows
different survivor sets ("views") to different groups of honest clients. In views where
the victim survived, its holders reveal its self-mask share; in views where the
victim's mask peers dropped, their holders reveal those peers' key shares. With enough
of each the server strips every mask off the victim's upload: its exact quantised
update and weight. Colluding clients sign any view and hand over every share they hold.

`plan_partition` searches for such views for a given round and victim; `run_partition`
drives them through the real `ClientSession`s and reports what the server could
rebuild. The defence is in secagg.protocol.consistency; tests/attacks/test_survivor_partition.py
shows the attack succeeding against the old rule (t signatures suffice) and failing
against the real one.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedveil.errors import FedveilError, ShareError
from fedveil.secagg.crypto import shamir
from fedveil.secagg.crypto.identity import SigningIdentity, survivor_set_message
from fedveil.secagg.crypto.prg import MaskExpander
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.config import RoundConfig
from fedveil.secagg.protocol.graph import neighbour_graph
from fedveil.secagg.protocol.masking import (
    client_subtracts,
    pairwise_mask_seed,
    self_mask_commitment,
    self_mask_seed,
)
from fedveil.secagg.protocol.messages import (
    ConsistencyRequest,
    ConsistencySignature,
    KeyAdvertisement,
    MaskedInput,
    MaskedInputRequest,
    UnmaskRequest,
    UnmaskResponse,
)
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.quantize import unpack


@dataclass(frozen=True)
class View:
    """One survivor set the server shows, to whom, and which owners it calls dropped."""

    survivors: frozenset[str]
    signers: frozenset[str]
    dropped: frozenset[str]


@dataclass(frozen=True)
class PartitionPlan:
    victim: str
    mask_peers: frozenset[str]  # whose shares the victim gets: the peers it masks with
    views: tuple[View, ...]


@dataclass
class PartitionOutcome:
    """What the attack obtained: revealed shares, refusals, and the victim's input if rebuilt."""

    refusals: dict[str, str] = field(default_factory=dict)  # client -> error class
    revealed: dict[tuple[str, str], int] = field(default_factory=dict)  # (owner, kind) -> count
    recovered: np.ndarray | None = None


def _held_owners(
    graph: Mapping[str, frozenset[str]], plan: PartitionPlan, holder: str
) -> frozenset[str]:
    """Owners whose shares `holder` holds when the victim's inbox is trimmed."""
    if holder == plan.victim:
        return plan.mask_peers | {holder}
    return graph[holder] | {holder}


def _valid_view(
    view: View,
    graph: Mapping[str, frozenset[str]],
    victim: str,
    mask_peers: frozenset[str],
    floor: int,
    threshold: int,
    colluders: frozenset[str],
) -> bool:
    if len(view.signers) < threshold or len(view.survivors) < floor:
        return False
    if view.survivors & view.dropped or not view.signers <= view.survivors:
        return False
    for signer in view.signers - colluders:
        peers = mask_peers if signer == victim else graph[signer]
        if signer == victim and (view.survivors & graph[victim]) - mask_peers:
            return False
        if not view.survivors & peers:
            return False
    return True


def count_reveals(
    graph: Mapping[str, frozenset[str]], plan: PartitionPlan, colluders: frozenset[str]
) -> dict[tuple[str, str], int]:
    """How many shares of each (owner, kind) the plan obtains under the old rule
    (`graph`: the round's neighbour graph)."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for view in plan.views:
        for holder in view.signers - colluders:
            for owner in _held_owners(graph, plan, holder):
                if owner in view.survivors:
                    counts[(owner, "self-mask")] += 1
                elif owner in view.dropped:
                    counts[(owner, "masking-key")] += 1
    for holder in colluders:
        for owner in graph[holder] | {holder}:
            counts[(owner, "self-mask")] += 1
            counts[(owner, "masking-key")] += 1
    return dict(counts)


def plan_succeeds(
    graph: Mapping[str, frozenset[str]], t: int, plan: PartitionPlan, colluders: frozenset[str]
) -> bool:
    """Whether the plan gets t shares of the victim's self-mask and of each honest mask
    peer's key."""
    counts = count_reveals(graph, plan, colluders)
    if counts.get((plan.victim, "self-mask"), 0) < t:
        return False
    return all(counts.get((v, "masking-key"), 0) >= t for v in plan.mask_peers - colluders)


def plan_partition(
    config: RoundConfig,
    victim: str,
    colluders: frozenset[str] = frozenset(),
    *,
    min_cohort: int = 3,
    attempts: int = 4000,
    seed: int = 0,
) -> PartitionPlan | None:
    """Search for views that unmask `victim` under the old rule (t signatures per view).

    Structure: the victim masks with M (t - 1 neighbours, colluders first). View U1
    holds the victim's other neighbours (victim survives, M dropped); view U2 the victim
    itself and a few of M (M' survives, the rest of M dropped); view E the rest of M
    (M' dropped); view D everyone else (M dropped). Fillers are spread at random; the
    search keeps the first assignment whose reveal counts suffice.
    """
    rng = random.Random(seed)
    graph = neighbour_graph(config.roster, config.neighbours, config.session_id)
    t, floor = config.threshold, max(config.threshold, min_cohort)
    neighbours = sorted(graph[victim])
    honest = [c for c in config.roster if c not in colluders]
    for _ in range(attempts):
        mine = [c for c in neighbours if c in colluders]
        others = [c for c in neighbours if c not in colluders]
        rng.shuffle(others)
        mask_peers = frozenset((mine + others)[: t - 1])
        honest_m = sorted(mask_peers - colluders)
        rng.shuffle(honest_m)
        m_prime = frozenset(honest_m[: rng.randint(0, len(honest_m))])
        groups: dict[str, set[str]] = {"U1": set(), "U2": {victim}, "E": set(), "D": set()}
        for c in honest:
            if c == victim:
                continue
            if c in m_prime:
                groups["U2"].add(c)
            elif c in mask_peers:
                groups["E"].add(c)
            elif c in graph[victim]:
                groups["U1"].add(c)
            else:
                groups[rng.choice(("U1", "U2", "E", "D", "D"))].add(c)
        specs = {
            "U1": (frozenset({victim}), mask_peers),
            "U2": (frozenset({victim}) | m_prime, mask_peers - m_prime),
            "E": (mask_peers - m_prime, m_prime),
            "D": (frozenset(), mask_peers),
        }
        views = []
        for name, members in groups.items():
            extra, dropped = specs[name]
            signers = frozenset(members) | colluders
            survivors = signers | extra
            view = View(survivors, signers, dropped - survivors)
            if _valid_view(view, graph, victim, mask_peers, floor, t, colluders):
                views.append(view)
        plan = PartitionPlan(victim, mask_peers, tuple(views))
        if plan_succeeds(graph, t, plan, colluders):
            return plan
    return None


def run_partition(
    server: ServerRound,
    clients: Mapping[str, ClientSession],
    plan: PartitionPlan,
    colluder_identities: Mapping[str, SigningIdentity] | None = None,
) -> PartitionOutcome:
    """Drive the plan through real sessions; return what the server could rebuild.

    `server` runs the first three stages honestly (advertise, share keys, masked input,
    except for the victim's trimmed inbox); from the consistency check on, the attacker
    talks to the clients directly.
    """
    colluder_identities = dict(colluder_identities or {})
    colluders = frozenset(colluder_identities)
    config = server.config
    outcome = PartitionOutcome()
    adverts: dict[str, KeyAdvertisement] = {}
    for cid, client in clients.items():
        adverts[cid] = client.advertise()
        server.receive(adverts[cid])
    server.advance()
    for cid, client in clients.items():
        server.receive(client.handle(server.request_for(cid)))
    server.advance()
    payloads: dict[str, bytes] = {}
    for cid, client in clients.items():
        request = server.request_for(cid)
        assert isinstance(request, MaskedInputRequest)
        if cid == plan.victim:
            request = MaskedInputRequest(
                tuple(s for s in request.shares if s.sender in plan.mask_peers)
            )
        reply = client.handle(request)
        assert isinstance(reply, MaskedInput)
        payloads[cid] = reply.payload
        server.receive(reply)
    server.advance()
    assert server.stage is Stage.CONSISTENCY_CHECK

    shares: dict[tuple[str, str], list[shamir.Share]] = defaultdict(list)
    for view in plan.views:
        listed = tuple(sorted(view.survivors))
        signatures = []
        for signer in sorted(view.signers):
            if signer in colluders:
                message = survivor_set_message(config.session_id, view.survivors)
                sig = colluder_identities[signer].sign(message)
                signatures.append(ConsistencySignature(signer, sig))
                continue
            try:
                signature = clients[signer].handle(ConsistencyRequest(listed))
            except FedveilError as exc:
                outcome.refusals[signer] = type(exc).__name__
                continue
            assert isinstance(signature, ConsistencySignature)
            signatures.append(signature)
        request = UnmaskRequest(
            survivors=listed,
            dropped=tuple(sorted(view.dropped)),
            signatures=tuple(signatures),
        )
        for signer in sorted(view.signers - colluders):
            if signer in outcome.refusals:
                continue
            try:
                response = clients[signer].handle(request)
            except FedveilError as exc:
                outcome.refusals[signer] = type(exc).__name__
                continue
            assert isinstance(response, UnmaskResponse)
            point = config.share_point(signer)
            for item in response.self_mask_shares:
                shares[(item.owner, "self-mask")].append(shamir.Share(point, item.share))
            for item in response.key_shares:
                shares[(item.owner, "masking-key")].append(shamir.Share(point, item.share))
    for cid in colluders:
        # A colluder hands over what it holds (read before its session wipes it).
        for owner, (b_share, s_share) in clients[cid]._held.items():
            shares[(owner, "self-mask")].append(b_share)
            shares[(owner, "masking-key")].append(s_share)
    outcome.revealed = {key: len(value) for key, value in shares.items()}
    outcome.recovered = _strip_masks(
        config, plan, adverts, payloads[plan.victim], shares, clients, colluders
    )
    return outcome


def _combine(shares: list[shamir.Share], t: int) -> bytes | None:
    if len(shares) < t:
        return None
    try:
        return shamir.combine(shares[:t], t)
    except ShareError:
        return None


def _strip_masks(
    config: RoundConfig,
    plan: PartitionPlan,
    adverts: Mapping[str, KeyAdvertisement],
    payload: bytes,
    shares: Mapping[tuple[str, str], list[shamir.Share]],
    clients: Mapping[str, ClientSession],
    colluders: frozenset[str],
) -> np.ndarray | None:
    """The victim's quantised input, if the revealed shares strip every mask; else None."""
    t, session, victim = config.threshold, config.session_id, plan.victim
    b_secret = _combine(shares.get((victim, "self-mask"), []), t)
    if b_secret is None:
        return None
    if self_mask_commitment(b_secret, session, victim) != adverts[victim].self_mask_commitment:
        return None
    ring = config.quantization.ring
    values = unpack(payload, config.quantization.bits, config.element_count).astype(
        ring.zeros(1).dtype
    )
    expander = MaskExpander()
    expander.apply(values, self_mask_seed(b_secret, session, victim), subtract=True)
    for peer in sorted(plan.mask_peers):
        if peer in colluders:
            key = clients[peer]._masking_key
        else:
            raw = _combine(shares.get((peer, "masking-key"), []), t)
            if raw is None:
                return None
            key = X25519PrivateKey.from_private_bytes(raw)
        seed = pairwise_mask_seed(key, peer, adverts[victim].masking_key, victim, session)
        expander.apply(values, seed, subtract=not client_subtracts(victim, peer))
    ring.reduce(values)
    return values
