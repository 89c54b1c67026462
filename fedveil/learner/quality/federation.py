"""A party that cleans its own data with the current global adapter before every round.

Why a Party subclass and not another round loop: run_round / run_federated
(learner.federated_local) only call `train_round`, `apply_aggregate`, `weight` and read
the adapter fields, so a party that cleans inside its own `train_round` runs in the
unchanged driver, over any aggregate (plaintext FedAvg or in-process SecAgg+).

What leaves the party: exactly what leaves a plain party, the delta (the adapter's size)
and the weight, which stays the party's full example count. Why the full count: a weight
of only the kept examples would tell the server (through the round's total weight) how
many examples the party dropped; the scores and the kept set stay in `history`, in the
party's memory.

Why the same number of optimiser steps (`keep_steps`): a round is one local epoch, so a
party that drops a third of its examples would also take a third fewer steps and weigh
less in the optimisation path than before (measured: an oracle that only removes the
corrupted examples, with fewer steps, never learns its domain in 20 rounds;
benchmarks/README.md); with keep_steps it takes as many steps as over its full data, in
more passes over what it kept, as learner.federated_local.office_train_config does for
branch offices.

Why a warm-up (`start_round`): the round-0 adapter is the open base model, which has
never seen a domain word, so every domain caption scores as an outlier to it alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fedveil.errors import ConfigError
from fedveil.learner.quality.cleaning import CleaningPolicy
from fedveil.learner.quality.scoring import Scorer, score_examples
from fedveil.learner.training.batches import EncodedCaptions, EncodedText
from fedveil.learner.training.loop import TrainConfig
from fedveil.learner.training.party import Party, PartyUpdate


def subset(data: EncodedCaptions | EncodedText, keep: np.ndarray) -> EncodedCaptions | EncodedText:
    """The rows of `data` where `keep` is True, in order."""
    index = torch.from_numpy(np.flatnonzero(np.asarray(keep, dtype=bool)))
    return type(data)(**{f.name: getattr(data, f.name)[index] for f in dataclasses.fields(data)})


def same_steps(config: TrainConfig, full: int, kept: int) -> TrainConfig:
    """`config` over `kept` examples taking the optimiser steps it takes over `full`."""
    if not 0 < kept <= full:
        raise ConfigError(f"kept examples must be in [1, {full}], got {kept}")
    steps = math.ceil(full / config.batch_size) * config.epochs
    if config.max_steps is not None:
        steps = min(steps, config.max_steps)
    per_pass = math.ceil(kept / config.batch_size)
    return dataclasses.replace(config, epochs=math.ceil(steps / per_pass), max_steps=steps)


@dataclass(frozen=True, eq=False)
class CleaningRecord:
    """One round's cleaning, kept by the party: its scores and what it trained on."""

    round_index: int
    scores: np.ndarray = field(repr=False)
    keep: np.ndarray = field(repr=False)

    @property
    def dropped(self) -> int:
        return int((~self.keep).sum())


class CleaningParty(Party):
    """`party`, taken over (its model, data and adapter, not copied), that from round
    `start_round` on scores all its examples with the round's global adapter (`scorer`,
    learner.quality.scoring) and trains only on those `policy` keeps. Use it instead of
    `party` from then on."""

    def __init__(
        self,
        party: Party,
        policy: CleaningPolicy,
        start_round: int = 1,
        scorer: Scorer | str = Scorer.PROMPT_CONTRAST,
        other_prompts: Sequence[str] = (),
        keep_steps: bool = True,
    ) -> None:
        """`other_prompts`: the prompts the prompt contrast compares with (the other
        parties' domain prompts; they are public vocabulary of the shared tokenizer)."""
        if party.dp is not None:
            raise ConfigError(
                f"party {party.name!r} trains with sample-level DP-SGD, whose accounting "
                "assumes a fixed dataset; cleaning cannot choose its examples per round"
            )
        if isinstance(start_round, bool) or not isinstance(start_round, int) or start_round < 0:
            raise ConfigError(f"start_round must be a non-negative int, got {start_round!r}")
        self.scorer = Scorer(scorer)
        if self.scorer is Scorer.PROMPT_CONTRAST and not other_prompts:
            raise ConfigError("the prompt-contrast scorer needs the other prompts")
        self.other_prompts = tuple(other_prompts)
        self.keep_steps = keep_steps
        self.full_train_config = party.train_config
        vars(self).update(vars(party))  # adopt the state; LoRA is already in the model
        self.full_data = party.data
        self.policy = policy
        self.start_round = start_round
        self.history: list[CleaningRecord] = []

    @property
    def weight(self) -> int:
        """The full example count, whatever was dropped (see the module docstring)."""
        return len(self.full_data)

    def choose(self, round_index: int) -> np.ndarray | None:
        """This round's keep mask over full_data (None before start_round: keep all),
        recorded in `history`."""
        if round_index < self.start_round:
            return None
        scores = score_examples(self, self.scorer, self.full_data, self.other_prompts)
        keep = self.policy.keep_mask(scores)
        self.history.append(CleaningRecord(round_index, scores, keep))
        return keep

    def train_round(self, round_index: int) -> PartyUpdate:
        """Clean with the round-start global adapter (from start_round on), then train."""
        keep = self.choose(round_index)
        self.data = self.full_data if keep is None else subset(self.full_data, keep)
        self.train_config = self.full_train_config
        if self.keep_steps:
            self.train_config = same_steps(self.full_train_config, self.weight, len(self.data))
        return super().train_round(round_index)  # its weight: self.weight, the full count
