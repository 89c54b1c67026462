"""DAGER across rounds: a server that keeps every FedAvg-LoRA aggregate stacks their A rows.

Why one round hides a cohort's tokens and several do not: the A update of the first
adapted layer is a sum of (local SGD) gradients, and every row of every client's
gradient is a combination of that client's layer-0 inputs (token plus position
embedding, normalised), which no adapter changes. One round's secure mean therefore
has rows in the span of the whole cohort's inputs, but only r of them: with more
distinct inputs than the rank the r rows are a mix and the span check finds nothing
(attacks.update.text_recovery). The next round's clients train the same data from a
moved adapter, so their gradients are *other* combinations of the same inputs. Stacked,
the rounds' rows span more and more of that fixed space, up to all of it; the check
then keeps the inputs in it again. The bound moves from the rank r to the layer's input
width d: a cohort whose inputs span fewer than d dimensions gives them away after about
(that dimension / r) rounds, secure aggregation or not. A span as wide as the inputs
themselves tells nothing apart; it is reported as saturated, with nothing kept.

What comes back is the cohort's bag of tokens, not its sentences: a layer-0 input is
a normalised sum of a token and a position embedding, so once the span holds (t, p),
(t', p) and (t, p') it holds (t', p') too. With several sentences sharing positions,
every found token passes at every found position; the distinct tokens are exact, their
positions are not, so the observer then answers with the bag (MultiRoundConfig.output).
Telling the sentences apart needs the second layer, whose inputs depend on each round's
adapter (attacks.update.text_sequence works on one view).

Why FFA-LoRA stops it: with A frozen, only B rows are observed, and they live in the
r-dimensional space of A-projected inputs, the same space every round; stacking adds
no dimension, so the rank bound of one round stays the bound of all of them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fedveil.attacks.update.base import AttackError, ObservedUpdate, Reconstruction, TokenTarget
from fedveil.attacks.update.text_recovery import (
    TextRecoveryConfig,
    assemble,
    candidate_inputs,
    observed_rows,
    span_distances,
)
from fedveil.errors import ConfigError

_OUTPUTS = ("auto", "sequences", "bag")


@dataclass(frozen=True)
class MultiRoundConfig(TextRecoveryConfig):
    """TextRecoveryConfig over a sequence of rounds. normalise: scale each round's block to
    unit Frobenius norm before stacking (a guard for long runs: later rounds move less as
    training converges, and unscaled their new directions could fall under the rank
    tolerance the largest round sets; on the benchmark's 7 rounds it changes nothing).
    output: "sequences" (text_recovery.assemble's position-ordered guesses), "bag" (one
    sequence of the distinct tokens found, the end token appended), or "auto": the bag
    when some position kept several tokens, the closure's sign that positions say
    nothing there, the sequences otherwise."""

    normalise: bool = True
    output: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.normalise, bool):
            raise ConfigError(f"MultiRoundConfig.normalise must be a bool, got {self.normalise!r}")
        if self.output not in _OUTPUTS:
            raise ConfigError(
                f"MultiRoundConfig.output must be one of {_OUTPUTS}, got {self.output!r}"
            )


class MultiRoundObserver:
    """The honest-but-curious server of several rounds: the span check on the stacked rows.

    Not a one-view `Attack` (it reads a list of rounds), so it is not in the registry;
    benchmarks/multi_round_observer_bench.py measures it.
    """

    name = "dager_multi_round"

    def __init__(self, config: MultiRoundConfig | None = None) -> None:
        self.config = MultiRoundConfig() if config is None else config
        if not isinstance(self.config, MultiRoundConfig):
            raise ConfigError(
                f"MultiRoundObserver takes a MultiRoundConfig, got {type(self.config).__name__}"
            )

    def stacked_rows(
        self, views: Sequence[ObservedUpdate], target: TokenTarget
    ) -> tuple[Tensor, Tensor | None, str]:
        """Every round's rows of the first adapted layer, stacked; (rows, projection, factor).

        A rows whenever A trains (FedAvg-LoRA): they live in the input space whatever the
        round. B rows only under FFA-LoRA, where the A that projects them is the same
        frozen matrix every round; under FedAvg-LoRA each round's B rows sit behind that
        round's A, so stacking them is refused.
        """
        if not views:
            raise AttackError("the multi-round observer needs at least one round")
        trains_a = target.lora_a in target.layout.names
        if trains_a and self.config.factor == "B" and len(views) > 1:
            raise AttackError(
                "under FedAvg-LoRA each round's B rows are projected by that round's A; "
                "stack the A rows (factor 'A' or 'auto')"
            )
        factor = "A" if trains_a and self.config.factor == "auto" else self.config.factor
        blocks: list[Tensor] = []
        projection: Tensor | None = None
        used = factor
        for view in views:
            target.check(view)
            rows, projection, used = observed_rows(view, target, factor)
            norm = float(rows.norm())
            if norm == 0.0:
                continue  # e.g. the A rows of a round started from B = 0
            blocks.append(rows / norm if self.config.normalise else rows)
        if not blocks:
            return views[0].vector.new_zeros(0, 0), projection, used
        return torch.cat(blocks).to(torch.float64), projection, used

    def reconstruct(
        self,
        views: Sequence[ObservedUpdate],
        target: TokenTarget,
        *,
        bag: Collection[int] | None = None,
    ) -> Reconstruction:
        """The (token, position) inputs in the span of every round's rows, as sequences;
        `bag` restricts the candidate tokens (position 0 excepted)."""
        rows, projection, used = self.stacked_rows(views, target)
        inputs, ids = candidate_inputs(target, projection, bag)
        found: dict[int, list[tuple[float, int]]] = {}
        rank = 0
        if rows.numel() > 0:
            _, singular, basis = torch.linalg.svd(rows, full_matrices=False)
            rank = int((singular > self.config.rank_tolerance * singular[0]).sum())
        saturated = rank >= inputs.shape[1]  # the whole space: every candidate is "in"
        if rank > 0 and not saturated:
            distance = span_distances(inputs, basis[:rank])
            for index in torch.nonzero(distance < self.config.span_tolerance).flatten().tolist():
                token, position = (int(v) for v in ids[index])
                found.setdefault(position, []).append((float(distance[index]), token))
        eos = target.eos_id if self.config.infer_eos else None
        as_bag = self.config.output == "bag" or (
            self.config.output == "auto" and any(len(v) > 1 for v in found.values())
        )
        tokens: list[list[int]]
        if as_bag and found:
            distinct = {t for v in found.values() for _, t in v}
            tokens = [sorted(distinct if eos is None else distinct | {eos})]
        else:
            tokens = assemble(found, eos)
        return Reconstruction(
            attack=self.name,
            tokens=tokens,
            token_positions=sorted((tok, pos) for pos, v in found.items() for _, tok in v),
            scores={
                "rounds": float(len(views)),
                "rank": float(rank),
                "candidates": float(ids.shape[0]),
                "kept": float(sum(len(v) for v in found.values())),
                "factor_b": float(used == "B"),
                "saturated": float(saturated),
                "as_bag": float(as_bag),
            },
        )


__all__ = ["MultiRoundConfig", "MultiRoundObserver"]
