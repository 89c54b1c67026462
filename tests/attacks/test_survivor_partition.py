"""The survivor-set partition attack, driven through real client sessions.

A malicious server shows different survivor sets to different groups and collects the
victim's self-mask share from one and its mask peers' key shares from the others
(attacks.survivor_partition). Against the old rule (t signatures over a set suffice,
no owner consent) it rebuilds the victim's exact quantised input and weight; against
the real rule (more than (n + c) / 2 signers, every owner's own signature) every honest
client refuses and nothing of the victim can be rebuilt.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedveil.secagg.protocol.client as client_module
import fedveil.secagg.protocol.consistency as consistency_module
from fedveil.attacks.survivor_partition import (
    PartitionPlan,
    View,
    plan_partition,
    run_partition,
)
from fedveil.runners.simulation import Federation
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.config import ClientPolicy, RoundConfig
from fedveil.secagg.protocol.graph import default_neighbours, default_threshold, neighbour_graph
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.quantize import QuantizationConfig
from tests.helpers.harness import MODEL_HASH

_FEDERATIONS: dict[int, Federation] = {}


def federation_of(n: int) -> Federation:
    if n not in _FEDERATIONS:
        _FEDERATIONS[n] = Federation.enrol(n)
    return _FEDERATIONS[n]


def server_default_round(
    n: int, *, neighbours: int | None = None, threshold: int | None = None, round_id: int = 3
) -> RoundConfig:
    """A round shaped as the server shapes it by default (SecAgg+ k and t for n)."""
    federation = federation_of(n)
    k = default_neighbours(n) if neighbours is None else neighbours
    t = default_threshold(n, k) if threshold is None else threshold
    return RoundConfig(
        round_id=round_id,
        roster=federation.ids,
        threshold=t,
        neighbours=k,
        dimension=8,
        quantization=QuantizationConfig(clip=1.0, bits=32, max_cohort=n, max_weight=100),
        model_hash=MODEL_HASH,
    )


@pytest.fixture
def old_rule(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The rule before issue 14: t valid signatures over the set, no owner consent."""

    def t_signatures(roster_size: int, colluders: int = 0) -> int:
        return 2

    monkeypatch.setattr(client_module, "consistency_quorum", t_signatures)
    monkeypatch.setattr(consistency_module, "consistency_quorum", t_signatures)
    monkeypatch.setattr(client_module, "require_owner_signatures", lambda held, signers: None)
    yield


def sessions(
    config: RoundConfig, policy: ClientPolicy, seed: int = 0
) -> tuple[ServerRound, dict[str, ClientSession], dict[str, np.ndarray]]:
    federation = federation_of(config.size)
    clients = {
        cid: ClientSession(config, cid, federation.identities[cid], federation.roster, policy)
        for cid in config.roster
    }
    rng = np.random.default_rng(seed)
    quantized = {}
    for cid, session in clients.items():
        update = rng.uniform(-1, 1, config.dimension).astype(np.float32)
        quantized[cid] = session.set_input(update, int(rng.integers(1, 100))).values
    return ServerRound(config, federation.roster), clients, quantized


def attack(
    config: RoundConfig,
    victim: str,
    colluders: frozenset[str],
    policy: ClientPolicy,
    plan: PartitionPlan,
):  # type: ignore[no-untyped-def]
    server, clients, quantized = sessions(config, policy)
    identities = {c: federation_of(config.size).identities[c] for c in colluders}
    return run_partition(server, clients, plan, identities), quantized[victim]


CASES = [
    pytest.param(20, frozenset(), 0, id="secagg+-n20-no-colluder"),
    pytest.param(50, frozenset(), 0, id="secagg+-n50-no-colluder"),
    pytest.param(5, frozenset({"client-3"}), 1, id="classic-n5-one-colluder"),
]


def _case(n: int, colluders: frozenset[str]) -> tuple[RoundConfig, str, PartitionPlan]:
    config = server_default_round(n)
    victim = config.roster[0]
    plan = plan_partition(config, victim, colluders)
    assert plan is not None, "the attack planner found no partition for this round shape"
    assert len(plan.views) >= 1
    return config, victim, plan


@pytest.mark.parametrize(("n", "colluders", "c"), CASES)
def test_partition_unmasks_the_victim_under_the_old_rule(
    n: int, colluders: frozenset[str], c: int, old_rule: None
) -> None:
    config, victim, plan = _case(n, colluders)
    policy = ClientPolicy(min_cohort=3, min_threshold=2)
    outcome, truth = attack(config, victim, colluders, policy, plan)
    assert not outcome.refusals, outcome.refusals
    assert outcome.recovered is not None
    np.testing.assert_array_equal(outcome.recovered, truth)  # exact update and weight


@pytest.mark.parametrize(("n", "colluders", "c"), CASES)
def test_partition_is_refused_by_every_honest_client(
    n: int, colluders: frozenset[str], c: int
) -> None:
    config, victim, plan = _case(n, colluders)
    policy = ClientPolicy(min_cohort=3, min_threshold=2, max_colluders=c)
    if c and 2 * config.threshold <= n + c:
        # Classic SecAgg with t = 3 of 5 and one assumed colluder is refused up front.
        with pytest.raises(Exception, match="needs 2t > n \\+ c"):
            sessions(config, policy)
        policy = ClientPolicy(min_cohort=3, min_threshold=2)
    outcome, _ = attack(config, victim, colluders, policy, plan)
    honest_signers = set().union(*(v.signers for v in plan.views)) - colluders
    assert set(outcome.refusals) == honest_signers
    assert set(outcome.refusals.values()) <= {
        "SurvivorQuorumError",
        "CohortTooSmallError",
        "SurvivorSetMismatchError",
    }
    assert outcome.recovered is None
    t = config.threshold
    assert outcome.revealed.get((victim, "self-mask"), 0) < t or all(
        outcome.revealed.get((v, "masking-key"), 0) < t for v in plan.mask_peers - colluders
    )


def test_padding_the_views_does_not_get_past_the_quorum() -> None:
    """A server that lists enough survivors for clients to sign still lacks signatures."""
    config, victim, plan = _case(50, frozenset())
    everyone = frozenset(config.roster)
    padded = tuple(View(everyone - view.dropped, view.signers, view.dropped) for view in plan.views)
    outcome, _ = attack(
        config,
        victim,
        frozenset(),
        ClientPolicy(min_cohort=3, min_threshold=2),
        PartitionPlan(victim, plan.mask_peers, padded),
    )
    assert outcome.recovered is None
    assert "SurvivorQuorumError" in outcome.refusals.values()
    assert not outcome.revealed


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(2, 4), st.sampled_from([12, 16, 20]))
def test_no_two_survivor_sets_both_get_shares(seed: int, groups: int, n: int) -> None:
    """Random partitions of the roster into views: at most one view gets any reveal."""
    config = server_default_round(n, round_id=seed % 1000)
    rng = random.Random(seed)
    members: list[set[str]] = [set() for _ in range(groups)]
    for cid in config.roster:
        members[rng.randrange(groups)].add(cid)
    everyone = frozenset(config.roster)
    views = []
    for group in members:
        extra = {c for c in everyone - group if rng.random() < 0.5}
        survivors = frozenset(group | extra)
        views.append(View(survivors, frozenset(group), everyone - survivors))
    victim = config.roster[0]
    graph = neighbour_graph(config.roster, config.neighbours, config.session_id)
    plan = PartitionPlan(victim, graph[victim], tuple(views))
    server, clients, _ = sessions(config, ClientPolicy(min_cohort=3, min_threshold=2))
    outcome = run_partition(server, clients, plan)
    revealing_views = [v for v in views if any(s not in outcome.refusals for s in v.signers)]
    assert len(revealing_views) <= 1
    assert outcome.recovered is None
