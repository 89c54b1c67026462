"""What a simulated round at scale is: its options, roster, config and dropout schedule.

Why shared: the local and Ray backends must run the same round for the same options and
seed (same client ids, same inputs, same dropouts), so their reports can be compared and
a test can regenerate any client's input. The seed drives inputs and the dropout schedule
only; keys and masks always come from the OS.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fedveil.errors import ConfigError
from fedveil.runners.simulation import CLIENT_STAGES, random_dropouts
from fedveil.secagg.protocol.config import RoundConfig
from fedveil.secagg.protocol.graph import default_neighbours, default_threshold
from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.quantize import QuantizationConfig

SIMULATED_MODEL_HASH = hashlib.sha256(b"fedveil-simulated-model").digest()

SURVIVABLE_STAGES = (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK)
"""Stages a round survives losing a client before (given enough holders remain). A client
that uploads and then leaves before signing the survivor set fails the round by design
(its self-mask share is revealed only with its own signature: secagg.protocol.consistency),
so dropouts "at random stages" that the round is meant to survive skip that stage."""


@dataclass(frozen=True)
class ScaleOptions:
    """One simulated round: n clients, d values each, degree k (None: O(log n) default),
    threshold t (None: majority), a `drop` fraction leaving at stages drawn from
    `drop_stages` (default: the survivable ones), ring width `bits`, clipping bound
    `clip`, and weights in [1, max_weight] (1: every client weighs the same)."""

    clients: int
    dimension: int
    neighbours: int | None = None
    threshold: int | None = None
    drop: float = 0.1
    drop_stages: tuple[Stage, ...] = SURVIVABLE_STAGES
    seed: int = 0
    bits: int = 32
    clip: float = 1.0
    max_weight: int = 1

    def __post_init__(self) -> None:
        if self.clients < 2:
            raise ConfigError(f"a round needs at least 2 clients, got {self.clients}")
        if self.dimension < 1:
            raise ConfigError(f"the dimension must be at least 1, got {self.dimension}")
        if not 0.0 <= self.drop < 1.0:
            raise ConfigError(f"the dropout fraction must be in [0, 1), got {self.drop}")
        if not self.drop_stages or any(s not in CLIENT_STAGES for s in self.drop_stages):
            raise ConfigError("dropout stages must be client stages")
        if self.max_weight < 1:
            raise ConfigError(f"max_weight must be at least 1, got {self.max_weight}")


def client_ids(n: int) -> tuple[str, ...]:
    """The roster, in the order whose positions seed the inputs (as Federation.enrol)."""
    width = len(str(n - 1))
    return tuple(f"client-{i:0{width}d}" for i in range(n))


def round_config(options: ScaleOptions, ids: tuple[str, ...]) -> RoundConfig:
    """The round's config for roster `ids` (as simulation.make_config, without needing
    the clients' private identities, which stay with the clients)."""
    n = len(ids)
    k = default_neighbours(n) if options.neighbours is None else options.neighbours
    if not 1 <= k <= n - 1:
        raise ConfigError(f"neighbours k must be in [1, {n - 1}] for {n} clients, got {k}")
    t = default_threshold(n, k) if options.threshold is None else options.threshold
    quantization = QuantizationConfig(
        clip=options.clip, bits=options.bits, max_cohort=n, max_weight=options.max_weight
    )
    return RoundConfig(
        round_id=1,
        roster=ids,
        threshold=t,
        neighbours=k,
        dimension=options.dimension,
        quantization=quantization,
        model_hash=SIMULATED_MODEL_HASH,
    )


def dropout_schedule(options: ScaleOptions, ids: tuple[str, ...]) -> dict[str, Stage]:
    """round(drop * n) clients and the stage each leaves before, from the seed."""
    rng = np.random.default_rng([options.seed, 0xD409])
    return random_dropouts(ids, options.drop, rng, options.drop_stages)


def still_in(dropouts: dict[str, Stage], cid: str, stage: Stage) -> bool:
    """Whether `cid` still sends its `stage` message under the schedule."""
    drop = dropouts.get(cid)
    return drop is None or CLIENT_STAGES.index(stage) < CLIENT_STAGES.index(drop)
