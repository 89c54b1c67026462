"""Token recovery from a LoRA update (DAGER, Petrov et al. 2024, adapted to LoRA).

Why it works: for a linear layer y = W x + s * B A x, the gradient of A is
s * (B^T G^T) X, with X the (tokens x d) inputs and G the output gradients, so every row
of dA is a linear combination of the layer's inputs; the gradient of B is
s * G^T (X A^T), whose rows combine the inputs projected by A. Plain SGD steps add such
matrices, so a FedAvg delta of the first adapted layer keeps the property (its inputs,
token plus position embeddings, do not depend on the adapters). When fewer tokens than
the rank r contributed, the row space *is* span(X), and a candidate input (every token
at every position) lies in it exactly when that token was at that position: a span
check by projection residual. With more tokens than r, or an aggregate of many clients,
the observed r-dimensional space is a mix and the check fails: the rank bounds what one
layer leaks. Noise perturbs every direction, so the ranking variant instead scores each
candidate by its distance to the top-k singular subspace and keeps clear outliers.
Adam steps (elementwise rescaling) break the property; clients here use SGD.
attacks.update.text_recovery_ffa measures the project's real recipe (FFA-LoRA, B only, Adam).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fedveil.attacks.update.base import (
    Attack,
    AttackError,
    ObservedUpdate,
    Reconstruction,
    Target,
    TokenTarget,
)
from fedveil.errors import ConfigError

_FACTORS = ("auto", "A", "B")


@dataclass(frozen=True)
class TextRecoveryConfig:
    """factor: which LoRA factor's rows to use ("auto": A unless it is ~zero, as at peft's
    B = 0 initialisation); rank_tolerance: singular values below this fraction of the
    largest count as zero (numerical rank); span_tolerance: a candidate is in the span
    when its relative projection residual is below it; infer_eos: append the end token
    after each recovered sequence (the last token of a causal-LM sequence gets no
    gradient, and every training sequence ends with it)."""

    factor: str = "auto"
    rank_tolerance: float = 1e-4
    span_tolerance: float = 1e-2
    infer_eos: bool = True

    def __post_init__(self) -> None:
        if self.factor not in _FACTORS:
            raise ConfigError(f"factor must be one of {_FACTORS}, got {self.factor!r}")
        for name in ("rank_tolerance", "span_tolerance"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"TextRecoveryConfig.{name} must be in (0, 1), got {value!r}")


@dataclass(frozen=True)
class TextRankingConfig(TextRecoveryConfig):
    """subspace_dim: k of the top-k subspace (None: the numerical rank, i.e. all of the
    rank-r space under noise: isotropic noise adds directions that bring every
    candidate a little closer alike, so a generous k costs little while a too small
    one drops true tokens; "gap": the k after which the singular values drop most,
    for views whose every direction is filled but unevenly, as the B rows of an Adam
    delta in the rank-r space, where the numerical rank is r and a k of r keeps
    everything); outlier_ratio: keep the best token at a position only if its
    distance is below this fraction of the median candidate distance there."""

    subspace_dim: int | str | None = None
    outlier_ratio: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        k = self.subspace_dim
        if (
            k is not None
            and k != "gap"
            and (isinstance(k, bool) or not isinstance(k, int) or k < 1)
        ):
            raise ConfigError(f"subspace_dim must be None, 'gap' or an int >= 1, got {k!r}")
        if not 0 < self.outlier_ratio <= 1:
            raise ConfigError(f"outlier_ratio must be in (0, 1], got {self.outlier_ratio!r}")


def _token_target(target: Target) -> TokenTarget:
    if not isinstance(target, TokenTarget):
        raise AttackError(
            f"text recovery needs a TokenTarget (a LoRA layer and its candidate inputs), "
            f"got {type(target).__name__} {target.name!r}"
        )
    return target


def observed_rows(
    observed: ObservedUpdate, target: TokenTarget, factor: str
) -> tuple[Tensor, Tensor | None, str]:
    """(rows spanning the inputs, the projection applied to candidates or None, factor used).

    A-factor rows live in the input space; B-factor rows in the rank-r space, where the
    candidates must be projected by the (public, global) A first. Under FFA-LoRA the
    update holds no A at all (it is frozen), so the B factor is used whatever `factor`
    says, unless it says "A", which is refused.
    """
    grad_b = observed.parameter(target.lora_b)  # (d_out, r)
    if target.lora_a not in observed.layout.names:
        # FFA-LoRA: A is frozen (derived from the public seed), so it is not in the
        # update; the B rows and the known A are all there is
        if factor == "A":
            raise AttackError(
                f"{target.lora_a!r} is frozen (FFA-LoRA), so the update has no A rows; "
                "use factor 'B' or 'auto'"
            )
        factor = "B"
    grad_a = observed.parameter(target.lora_a) if factor != "B" else grad_b.new_zeros(0)
    if factor == "auto":
        factor = "A" if float(grad_a.norm()) > 1e-6 * float(grad_b.norm()) else "B"
    if factor == "A":
        return grad_a, None, "A"
    weight_a = dict(target.model.named_parameters())[target.lora_a].detach().to(torch.float64)
    return grad_b, weight_a, "B"


def gap_dimension(singular: Tensor, rank_tolerance: float) -> int:
    """The k (>= 1) maximising singular[k-1] / singular[k]: the largest spectral drop.

    With an exact low rank (plain SGD) the drop at the numerical rank is unbounded, so
    this is the numerical rank; with a full but uneven spectrum (an Adam delta's B rows)
    it is the elbow, an estimate of how many tokens the layer read.
    """
    if singular.numel() == 0 or float(singular[0]) == 0.0:
        return 1
    if singular.numel() == 1:
        return 1
    floor = rank_tolerance * float(singular[0])
    ratios = singular[:-1] / singular[1:].clamp_min(floor)
    return int(torch.argmax(ratios)) + 1


def span_distances(candidates: Tensor, basis: Tensor) -> Tensor:
    """Relative residual of each candidate after projection onto the (orthonormal) basis
    rows: 0 in the span, about sqrt(1 - k / d) for a direction unrelated to a k-dim span."""
    residual = candidates - (candidates @ basis.T) @ basis
    return residual.norm(dim=1) / candidates.norm(dim=1).clamp_min(1e-30)


def restrict_candidates(
    inputs: Tensor, ids: Tensor, tokens: Collection[int], free_positions: int = 1
) -> tuple[Tensor, Tensor]:
    """The candidates whose token is in `tokens` (a token filter, e.g. the LM head's token
    bag), except at positions below `free_positions`, kept whole.

    Why free positions: the bag holds the *targets* of next-token prediction, and the
    first token of a sequence is never a target, so a bag filter at position 0 would
    drop it; DAGER's span check alone decides there.
    """
    allowed = torch.tensor(sorted({int(t) for t in tokens}), dtype=ids.dtype)
    keep = torch.isin(ids[:, 0], allowed) | (ids[:, 1] < free_positions)
    return inputs[keep], ids[keep]


def candidate_inputs(
    target: TokenTarget, projection: Tensor | None, bag: Collection[int] | None = None
) -> tuple[Tensor, Tensor]:
    """The candidate (token, position) inputs and their ids, restricted to `bag` when
    given (restrict_candidates), in the rows' space: projected by the public A when the
    rows are B-factor rows (observed_rows' projection)."""
    assert target.candidates is not None
    inputs, ids = target.candidates()
    if bag is not None:
        inputs, ids = restrict_candidates(inputs, ids, bag)
    if projection is not None:
        inputs = inputs @ projection.T
    return inputs, ids


def assemble(found: dict[int, list[tuple[float, int]]], eos_id: int | None) -> list[list[int]]:
    """Sequences from the (distance, token) lists found per position, best first.

    Sequence j takes the j-th best token at every position that has one, in position
    order; with one sequence per update (a single client's text) this is exact. With
    several sequences sharing positions the split between them is a guess (telling them
    apart is DAGER's second-layer search, attacks.update.text_sequence), but every found
    token is in exactly one output sequence, so bag-of-token metrics stay exact.
    """
    width = max((len(v) for v in found.values()), default=0)
    ranked = {position: sorted(v) for position, v in found.items()}
    sequences: list[list[int]] = []
    for j in range(width):
        seq = [ranked[p][j][1] for p in sorted(ranked) if len(ranked[p]) > j]
        if eos_id is not None and seq[-1] != eos_id:
            seq.append(eos_id)
        sequences.append(seq)
    return sequences


@dataclass(frozen=True)
class _Prepared:
    target: TokenTarget
    inputs: Tensor  # candidate inputs, projected by A for the B-factor
    ids: Tensor  # (token, position) per candidate
    singular: Tensor
    basis: Tensor  # right singular vectors of the observed rows, best first
    factor: str


class _TextAttack(Attack[Any]):
    """Shared plumbing: candidate inputs, the observed rows' SVD, sequence assembly."""

    def _prepare(
        self, observed: ObservedUpdate, target: Target, bag: Collection[int] | None = None
    ) -> _Prepared:
        t = _token_target(target)
        rows, projection, used = observed_rows(observed, t, self.config.factor)
        inputs, ids = candidate_inputs(t, projection, bag)
        _, singular, basis = torch.linalg.svd(rows.to(torch.float64), full_matrices=False)
        return _Prepared(t, inputs, ids, singular, basis, used)

    def _result(
        self, p: _Prepared, keep: Tensor, distance: Tensor, scores: dict[str, float]
    ) -> Reconstruction:
        found: dict[int, list[tuple[float, int]]] = {}
        for index in torch.nonzero(keep).flatten().tolist():
            token, position = (int(v) for v in p.ids[index])
            found.setdefault(position, []).append((float(distance[index]), token))
        eos = p.target.eos_id if self.config.infer_eos else None
        return Reconstruction(
            attack=self.name,
            tokens=assemble(found, eos),
            token_positions=sorted((tok, pos) for pos, v in found.items() for _, tok in v),
            scores={**scores, "factor_b": float(p.factor == "B"), "kept": float(keep.sum())},
        )


class SpanCheck(_TextAttack):
    """Exact DAGER span check: keep every (token, position) whose input lies in the span.
    Side information `bag` (token ids) restricts the candidates (`restrict_candidates`)."""

    name = "dager_span"
    config_type = TextRecoveryConfig

    def reconstruct(self, observed: ObservedUpdate, target: Target, **side: Any) -> Reconstruction:
        p = self._prepare(observed, target, side.get("bag"))
        if float(p.singular[0]) == 0.0:  # nothing observed in this layer
            nothing = torch.zeros(p.ids.shape[0], dtype=torch.bool)
            return self._result(p, nothing, torch.ones(p.ids.shape[0]), {"rank": 0.0})
        rank = int((p.singular > self.config.rank_tolerance * p.singular[0]).sum())
        distance = span_distances(p.inputs, p.basis[:rank])
        return self._result(
            p, distance < self.config.span_tolerance, distance, {"rank": float(rank)}
        )


class SubspaceRanking(_TextAttack):
    """Noise-robust variant: per position, the candidate nearest the top-k subspace, if it
    stands out from the rest (distance < outlier_ratio * median). Side information `bag`
    restricts the candidates as for SpanCheck."""

    name = "dager_rank"
    config_type = TextRankingConfig

    def reconstruct(self, observed: ObservedUpdate, target: Target, **side: Any) -> Reconstruction:
        p = self._prepare(observed, target, side.get("bag"))
        numerical_rank = int((p.singular > self.config.rank_tolerance * p.singular[0]).sum())
        chosen = self.config.subspace_dim
        if chosen == "gap":
            k = gap_dimension(p.singular, self.config.rank_tolerance)
        else:
            k = int(chosen) if chosen is not None else max(1, numerical_rank)
        k = min(k, p.basis.shape[0], p.inputs.shape[1] - 1)
        distance = span_distances(p.inputs, p.basis[:k])
        keep = torch.zeros_like(distance, dtype=torch.bool)
        positions = p.ids[:, 1]
        for position in torch.unique(positions).tolist():
            at = torch.nonzero(positions == position).flatten()
            best = at[torch.argmin(distance[at])]
            if distance[best] < self.config.outlier_ratio * distance[at].median():
                keep[best] = True
        return self._result(p, keep, distance, {"subspace_dim": float(k)})
