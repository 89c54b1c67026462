"""Run the update attacks that apply to a team's delta, and score its records.

Why these attacks and no new math: token recovery from the LoRA factors (DAGER, the
span check for SGD deltas and the subspace ranking that survives Adam; the B-factor
variants under FFA-LoRA) and the LM head's token bag are the project's measured attacks
(attacks.update); this module only points them at the team's model and delta.

Views: a single delta is attacked as it is (what a plaintext server, or anyone who
reads the file, holds). A file of several uploads is attacked per client and as their
weighted mean, which is all a SecAgg server decodes, so the report shows what the
secure aggregate hides and what it does not (the token bag of the cohort is *not*
hidden: README, "Not claimed").

Saturation: the exact span check keeps every candidate once the observed rows span
their whole space (a mix of at least as many tokens as the rank); it then tells nothing
apart, and is reported as saturated with nothing recovered rather than as a list of
every token at every position.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fedveil.attacks.own.delta_file import DeltaFile
from fedveil.attacks.own.model_target import DEFAULT_MAX_LENGTH, OwnModel
from fedveil.attacks.own.per_record import RecordScore, Recovered, rank_records
from fedveil.attacks.own.records import Record, baseline_records
from fedveil.attacks.update.base import (
    Attack,
    ObservedUpdate,
    Reconstruction,
    Target,
    TokenTarget,
)
from fedveil.attacks.update.text_recovery import SpanCheck, SubspaceRanking
from fedveil.attacks.update.text_recovery_ffa import BSpanCheck, BSubspaceRanking
from fedveil.attacks.update.token_bag import TokenBag
from fedveil.learner.lora.config import AggregationVariant

MAX_CANDIDATE_VALUES = 60_000_000
"""Token recovery lists (vocabulary x positions) inputs of the layer's width in float64;
past this many values (about 480 MB) it is skipped with a hint to lower --max-length."""
SHOWN_SEQUENCES = 5


@dataclass(frozen=True)
class AttackOutcome:
    """One attack on one view: whether it applied, what it recovered, its own scores."""

    attack: str
    applies: bool
    reason: str = ""
    recovered: Recovered | None = None
    sequences: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)
    saturated: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"attack": self.attack, "applies": self.applies}
        if not self.applies:
            out["reason"] = self.reason
            return out
        out.update(
            saturated=self.saturated,
            recovered_count=self.recovered.size if self.recovered else 0,
            recovered=list(self.sequences),
            scores=self.scores,
            seconds=round(self.seconds, 3),
        )
        if self.recovered is not None and self.recovered.positional:
            out["token_positions"] = [list(p) for p in sorted(self.recovered.pairs)]
        elif self.recovered is not None:
            out["token_ids"] = sorted(self.recovered.bag)
        if self.reason:
            out["note"] = self.reason
        return out


@dataclass(frozen=True)
class ViewResult:
    """Every attack on one view, and the records ranked against what they recovered."""

    label: str
    clients: int
    outcomes: tuple[AttackOutcome, ...]
    records: tuple[RecordScore, ...]
    baseline: tuple[RecordScore, ...]


def token_attacks(variant: AggregationVariant) -> tuple[Attack[Any], ...]:
    """The span check and the ranking, on B under FFA-LoRA, on A (or B) under FedAvg."""
    if variant is AggregationVariant.FFA:
        return BSpanCheck(), BSubspaceRanking()
    return SpanCheck(), SubspaceRanking()


def views_of(delta: DeltaFile, which: str) -> list[tuple[str, dict[str, torch.Tensor], int]]:
    """(label, tensors, clients) per view: the delta, or each client and/or the mean."""
    if not delta.stacked:
        return [("delta", delta.clients[0], 1)]
    count = len(delta.clients)
    out: list[tuple[str, dict[str, torch.Tensor], int]] = []
    if which in ("each", "both"):
        out += [(f"client {i}", c, 1) for i, c in enumerate(delta.clients)]
    if which in ("mean", "both"):
        out.append((f"mean of {count} (what SecAgg reveals)", delta.mean(), count))
    return out


def recovery_length(model: OwnModel, records: Sequence[Record] | None) -> int:
    """Positions tried: the default, or the longest record plus room for bos and a prompt."""
    longest = max((len(r.tokens) for r in records or ()), default=0)
    return max(DEFAULT_MAX_LENGTH, longest + 4)


def attack_view(
    model: OwnModel,
    observed: ObservedUpdate,
    target: TokenTarget | None,
    target_reason: str,
) -> list[AttackOutcome]:
    """Every applicable attack on one view; the others with their reason."""
    specials = frozenset(int(i) for i in model.tokenizer.all_special_ids)
    outcomes: list[AttackOutcome] = []
    for attack in token_attacks(model.source.settings.variant):
        if target is None:
            outcomes.append(AttackOutcome(attack.name, False, target_reason))
            continue
        started = time.perf_counter()
        result = attack.reconstruct(observed, target)
        outcomes.append(_token_outcome(model, attack, target, result, specials, started))
    applies, reason = model.head_applies()
    bag = TokenBag()
    if not applies:
        outcomes.append(AttackOutcome(bag.name, False, reason))
        return outcomes
    started = time.perf_counter()
    result = bag.reconstruct(observed, target or _no_target(model))
    ids = [t for t in (result.tokens or [[]])[0] if t not in specials]
    outcomes.append(
        AttackOutcome(
            bag.name,
            True,
            recovered=Recovered(bag.name, False, bag=frozenset(ids)),
            sequences=(" ".join(model.tokenizer.convert_ids_to_tokens(ids)),) if ids else (),
            scores=result.scores,
            seconds=time.perf_counter() - started,
        )
    )
    return outcomes


def _token_outcome(
    model: OwnModel,
    attack: Attack[Any],
    target: TokenTarget,
    result: Reconstruction,
    specials: frozenset[int],
    started: float,
) -> AttackOutcome:
    a_shape = tuple(dict(model.model.named_parameters())[target.lora_a].shape)
    space = a_shape[0] if result.scores.get("factor_b") else a_shape[1]
    saturated = "rank" in result.scores and result.scores["rank"] >= space
    pairs = frozenset(
        (tok, pos) for tok, pos in result.token_positions or () if tok not in specials
    )
    note = ""
    if saturated:
        pairs = frozenset()
        note = (
            f"the observed rows span their whole {space}-dimensional space (rank "
            f"{result.scores['rank']:.0f}): the update mixes at least as many tokens as the "
            "rank, so the span check tells no token apart"
        )
    sequences = tuple(
        model.tokenizer.decode([t for t in seq if t not in specials])
        for seq in (result.tokens or [])[:SHOWN_SEQUENCES]
    )
    return AttackOutcome(
        attack.name,
        True,
        reason=note,
        recovered=Recovered(attack.name, True, pairs=pairs),
        sequences=() if saturated else tuple(s for s in sequences if s),
        scores=result.scores,
        saturated=saturated,
        seconds=time.perf_counter() - started,
    )


def _no_target(model: OwnModel) -> Target:
    """The plain white-box target the token bag takes when token recovery does not apply
    (the bag reads only the observed head rows)."""
    return Target(name=model.loaded.path.name, model=model.model)


def run_views(
    model: OwnModel,
    delta: DeltaFile,
    records: Sequence[Record] | None,
    *,
    which: str = "both",
    max_length: int | None = None,
) -> list[ViewResult]:
    """Attack every view of the delta file and rank the records against each."""
    length = max_length or recovery_length(model, records)
    target, reason = model.token_target(length)
    if target is not None:
        width = int(target.model.get_parameter(target.lora_a).shape[1])
        vocab = len(model.tokenizer)
        if vocab * target.max_length * width > MAX_CANDIDATE_VALUES:
            reason = (
                f"{vocab} tokens x {target.max_length} positions x {width} values exceed "
                f"the {MAX_CANDIDATE_VALUES:,} candidate values token recovery lists; "
                "lower --max-length"
            )
            target = None
    given = list(records or ())
    baseline = baseline_records(model.tokenizer, [len(r.tokens) for r in given])
    results = []
    for label, tensors, clients in views_of(delta, which):
        observed = model.observe(tensors, clients=clients)
        outcomes = attack_view(model, observed, target, reason)
        found = [o.recovered for o in outcomes if o.recovered is not None]
        ranked, reference = rank_records(given, baseline, found)
        results.append(ViewResult(label, clients, tuple(outcomes), tuple(ranked), tuple(reference)))
    return results
