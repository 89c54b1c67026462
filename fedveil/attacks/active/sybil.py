"""A Sybil cohort: n - 1 enrolled identities the attacker controls around one victim.

Why this row states limits rather than a defence: secure aggregation hides an input
inside a sum over other *parties*; it cannot tell whether those parties are people. If
the operator (or whoever it colludes with) enrols n - 1 identities of its own, each runs
the real client honestly on inputs the attacker chose, the round completes, and the
"aggregate" minus the attacker's own known contributions is the victim's update (to the
round's rounding bound; its weight comes out of the total weight).

What the roster and the minimum cohort do prevent, shown by `roster_refusals`:
- a server cannot *invent* clients: an honest client refuses a round whose roster names
  an identity it holds no enrolment for, and refuses any advertisement not signed by the
  enrolled identity of the client it names (so the server cannot speak for enrolled
  clients it does not control);
- a server cannot shrink the cohort below a client's own floor: a roster smaller than
  the client's minimum cohort is refused before any key leaves.
What they do not prevent: Sybils that were *enrolled*. Enrolment is the operator's act
(secagg.enrolment: the operator approves requests), so a client is protected only by
trusting the roster it is given, out of band. The minimum cohort counts Sybils too.
Client-level DP noise still covers the victim in a DP round; without it the update leaks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedveil.attacks.active.secagg_round import (
    CLIP,
    Enrolment,
    default_policy,
    round_config,
    run_round,
)
from fedveil.attacks.protections import Aggregator
from fedveil.errors import ConfigError, FedveilError
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.messages import ShareKeysRequest

VICTIM = "victim"


@dataclass(frozen=True, eq=False)
class SybilResult:
    """The victim's update as the Sybil operator recovers it from the round's result."""

    cohort: int
    sybils: int
    recovered: np.ndarray
    recovered_weight: float
    clipped_truth: np.ndarray
    max_abs_error: float
    error_bound: float

    @property
    def recovered_exactly(self) -> bool:
        """Within the round's rounding bound, amplified by total weight / victim's weight."""
        return self.max_abs_error <= self.error_bound


@dataclass(frozen=True)
class RosterRefusals:
    """What an honest victim refuses, as the exception class names (None: accepted)."""

    invented_identity: str | None
    forged_advertisement: str | None
    cohort_below_floor: str | None
    enrolled_sybils: str | None


def subtract_sybils(
    mean: np.ndarray,
    total_weight: float,
    sybil_updates: Sequence[np.ndarray],
    sybil_weights: Sequence[int],
) -> tuple[np.ndarray, float]:
    """The victim's (update, weight) from a weighted mean over it and known Sybil inputs."""
    known = sum(int(w) for w in sybil_weights)
    victim_weight = float(total_weight) - known
    if victim_weight <= 0:
        raise ConfigError("the total weight leaves nothing for the victim")
    weighted = np.asarray(mean, dtype=np.float64) * float(total_weight)
    for update, weight in zip(sybil_updates, sybil_weights, strict=True):
        weighted = weighted - int(weight) * np.clip(np.asarray(update, np.float64), -CLIP, CLIP)
    return weighted / victim_weight, victim_weight


def _sybil_ids(n: int) -> list[str]:
    return [f"sybil-{i}" for i in range(1, n)]


def run_sybil_round(
    victim_update: np.ndarray,
    victim_weight: int = 1,
    *,
    cohort: int = 4,
    seed: int = 0,
) -> SybilResult:
    """A real SecAgg round of `cohort` enrolled parties, all but the victim Sybils."""
    if cohort < 2:
        raise ConfigError("a cohort needs the victim and at least one Sybil")
    rng = np.random.default_rng(seed)
    dimension = int(np.asarray(victim_update).shape[0])
    sybils = _sybil_ids(cohort)
    enrolment = Enrolment.of([VICTIM, *sybils])
    config = round_config([VICTIM, *sybils], dimension=dimension)
    inputs = {s: rng.uniform(-CLIP, CLIP, dimension) for s in sybils}
    weights = {s: int(rng.integers(1, 50)) for s in sybils}
    inputs[VICTIM], weights[VICTIM] = np.asarray(victim_update, np.float64), victim_weight
    result = run_round(config, enrolment, inputs, weights, default_policy(min_cohort=cohort))
    estimate = result.estimate
    recovered, weight = subtract_sybils(
        estimate.weighted_mean,
        estimate.total_weight,
        [inputs[s] for s in sybils],
        [weights[s] for s in sybils],
    )
    truth = np.clip(inputs[VICTIM], -CLIP, CLIP)
    # rounding: each coordinate of the mean is off by error_bound; the subtraction
    # scales it by total_weight / victim_weight
    bound = estimate.error_bound * estimate.total_weight / victim_weight
    return SybilResult(
        cohort=cohort,
        sybils=len(sybils),
        recovered=recovered,
        recovered_weight=weight,
        clipped_truth=truth,
        max_abs_error=float(np.max(np.abs(recovered - truth))),
        error_bound=float(bound) * (1 + 1e-9) + 1e-12,
    )


def sybil_view(
    aggregate: Aggregator,
    victim_update: np.ndarray,
    sybil_updates: Sequence[np.ndarray],
    victim_weight: int = 1,
    sybil_weights: Sequence[int] | None = None,
) -> np.ndarray:
    """What a Sybil operator sees of the victim through an injected aggregator (e.g.
    `Aggregators.secagg`): the round's mean minus its own known inputs."""
    weights = [1] * len(sybil_updates) if sybil_weights is None else list(sybil_weights)
    mean, total = aggregate([victim_update, *sybil_updates], [victim_weight, *weights])
    recovered, _ = subtract_sybils(mean, total, sybil_updates, weights)
    return recovered


def _refusal(build: object) -> str | None:
    try:
        if callable(build):
            build()
    except FedveilError as exc:
        return type(exc).__name__
    return None


def roster_refusals(cohort: int = 4, dimension: int = 8) -> RosterRefusals:
    """Drive the victim's real ClientSession against each roster trick of a server."""
    honest = [f"client-{i}" for i in range(1, cohort)]
    enrolment = Enrolment.of([VICTIM, *honest])
    roster = enrolment.roster
    identity = enrolment.identities[VICTIM]
    policy = default_policy(min_cohort=cohort)

    def invented() -> None:  # the server adds an identity nobody enrolled
        config = round_config([VICTIM, *honest, "ghost"], dimension=dimension)
        ClientSession(config, VICTIM, identity, roster, policy)

    def forged() -> None:  # the server signs an advertisement in an enrolled client's name
        config = round_config([VICTIM, *honest], dimension=dimension)
        victim = ClientSession(config, VICTIM, identity, roster, policy)
        victim.set_input(np.zeros(dimension), 1)
        impostor = ClientSession(config, honest[0], enrolment.identities[honest[0]], roster, policy)
        advert = impostor.advertise()
        server_key = Enrolment.of(["server"]).identities["server"]
        forged_advert = dataclasses.replace(
            advert, signature=server_key.sign(b"the server's own key, not the enrolled one")
        )
        others = [
            ClientSession(config, c, enrolment.identities[c], roster, policy).advertise()
            for c in honest[1:]
        ]
        victim.advertise()
        victim.handle(ShareKeysRequest((forged_advert, *others)))

    def too_small() -> None:  # the server pairs the victim with one other client
        config = round_config([VICTIM, honest[0]], dimension=dimension)
        ClientSession(config, VICTIM, identity, roster, policy)

    def sybils() -> None:  # the operator enrolled n - 1 identities it holds
        sybil_enrolment = Enrolment.of([VICTIM, *_sybil_ids(cohort)])
        config = round_config(list(sybil_enrolment.identities), dimension=dimension)
        ClientSession(
            config, VICTIM, sybil_enrolment.identities[VICTIM], sybil_enrolment.roster, policy
        )

    return RosterRefusals(
        invented_identity=_refusal(invented),
        forged_advertisement=_refusal(forged),
        cohort_below_floor=_refusal(too_small),
        enrolled_sybils=_refusal(sybils),
    )
