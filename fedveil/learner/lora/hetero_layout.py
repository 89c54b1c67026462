"""Heterogeneous LoRA under secure aggregation: ranks and modalities that differ per party.

Why this shape (arXiv 2308.11217, II.A/II.B): a party with less compute trains a lower
rank, and a party with captions but no images trains only the decoder-side adapters.
The secure sum can only compute sum_i w_i x_i / sum_i w_i of whatever vector each party
sends, so each party sends an *extended* vector, the same length for every party:

    x_i = [ delta zero-padded to the federation's rank-max layout |
            indicator m_i: one entry per group, INDICATOR where the party trains it |
            one reference entry, INDICATOR for every party ]

A group is (side, rank index): side "vision" for the image encoder's adapters, "text" for
the decoder's and the head's; rank index k is row k of a LoRA A and column k of a LoRA B.
The decoded mean gives a = sum w_i x_i / W and m_g = INDICATOR * (weight share of those who
trained g), so a_c * q / m_g(c) (q the reference entry) is, for every coordinate c, the
weighted mean over only the parties that trained it: the zeros of a text-only party never
dilute an image-side tensor, nor those of a rank-4 party the columns 4..15 of a rank-16
party. The indicator travels masked in the same vector as the weight does today; the
server learns, after unmasking, the weight share of the parties training each group
(what that reveals: benchmarks/README.md and the issue's notes, /tmp/notes/flexible.md).

Why the reference entry: the service clips every value to [-clip, clip] before it
quantises. Dividing by the reference entry, which every party sends and every party has
clipped alike, makes the ratio m_g / q the weight share whatever the clip.

Why not under L2 clipping (client-level DP): scaling a party's whole vector by s_i scales
its delta and its indicator together, so the ratio would reweight that party instead of
shrinking its delta, and the noise would sit in the denominator; hetero_config refuses it.

Rank semantics (B A factorisation, peft): padding rank r to R gives A zero rows r..R-1 and
B zero columns r..R-1; a party truncates the aggregate back to its first r rows/columns.
With FFA-LoRA (A frozen from the shared seed) every party's A is the first r rows of the
federation's rank-R A (learner.lora.hetero_party), so B_r A_r is exactly the rank-R adapter
restricted to the components the party trains. Scaling: peft's alpha / r; each party
uses alpha_r = alpha_R * r / R, so every party's B columns mean the same change.

Pure numpy over AdapterLayout; no torch here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from fedveil.learner.lora.codec import AdapterLayout, AdapterMismatchError

INDICATOR = 1.0
"""Value of an indicator entry. Inside the service's default clip (1.0) so nothing is
clipped; the reference entry makes the decode exact even where a clip is lower."""

VISION_PREFIX = "encoder."
"""Canonical names of a transformers VisionEncoderDecoderModel's image-encoder adapters
start with this (learner.models.captioner); everything else is text side."""


class Weighting(StrEnum):
    """How a coordinate's mean is normalised (HeteroLayout.decode); measured against each
    other in benchmarks/flexible_bench.py."""

    GROUP = "group"
    TOWER = "tower"
    PLAIN = "plain"


class Side(StrEnum):
    """Which tower an adapter tensor belongs to."""

    TEXT = "text"
    VISION = "vision"


def side_of(name: str) -> Side:
    return Side.VISION if name.startswith(VISION_PREFIX) else Side.TEXT


def rank_axis(name: str) -> int:
    """The axis of a LoRA tensor that runs over rank: A is (r, in), B is (out, r)."""
    if ".lora_A." in name or ".lora_embedding_A." in name:
        return 0
    if ".lora_B." in name or ".lora_embedding_B." in name:
        return 1
    raise AdapterMismatchError(f"{name} is not a LoRA A or B tensor")


@dataclass(frozen=True)
class PartyShape:
    """What one party trains: its rank on each side it trains (absent: not trained)."""

    ranks: Mapping[Side, int]

    def rank(self, side: Side) -> int:
        return int(self.ranks.get(side, 0))


@dataclass(frozen=True)
class HeteroLayout:
    """The federation's rank-max adapter, its groups, and the extended vector's layout.

    `full` is the layout of the rank-`max_rank` adapter with every side trainable; every
    party must hold the same `full` (its fingerprint is in the federation plan).
    """

    full: AdapterLayout
    max_rank: int

    def __post_init__(self) -> None:
        for slot in self.full.tensors.slots:
            axis = rank_axis(slot.name)
            if len(slot.shape) != 2 or slot.shape[axis] != self.max_rank:
                raise AdapterMismatchError(
                    f"{slot.name} has shape {slot.shape}; the federation's layout must be at "
                    f"its maximum rank {self.max_rank}"
                )

    @property
    def sides(self) -> tuple[Side, ...]:
        return tuple(sorted({side_of(s.name) for s in self.full.tensors.slots}))

    @property
    def group_count(self) -> int:
        return len(self.sides) * self.max_rank

    @property
    def size(self) -> int:
        """Length of the extended vector every party sends."""
        return self.full.size + self.group_count + 1

    def group(self, side: Side, k: int) -> int:
        return self.sides.index(side) * self.max_rank + k

    def coordinate_groups(self) -> np.ndarray:
        """Group id of every coordinate of the rank-max vector."""
        groups = np.empty(self.full.size, dtype=np.int64)
        for slot in self.full.tensors.slots:
            ks = np.indices(slot.shape)[rank_axis(slot.name)].reshape(-1)
            base = self.sides.index(side_of(slot.name)) * self.max_rank
            groups[slot.offset : slot.offset + slot.size] = base + ks
        return groups

    def fingerprint(self) -> bytes:
        """SHA-256 over the rank-max layout's fingerprint, the group table and the
        indicator value: equal iff two parties' extended vectors can be summed."""
        hasher = hashlib.sha256(b"fedveil-hetero-layout-v1")
        hasher.update(self.full.fingerprint())
        hasher.update(f"{self.max_rank}|{','.join(self.sides)}|{INDICATOR!r}".encode())
        return hasher.digest()

    # --- one party ----------------------------------------------------------------------

    def party_shape(self, local: AdapterLayout) -> PartyShape:
        """A party's ranks per side, read from its own adapter layout (refused unless it
        is a truncation of `full`: same names, at most the maximum rank, one rank a side)."""
        full = {s.name: s for s in self.full.tensors.slots}
        ranks: dict[Side, int] = {}
        for slot in local.tensors.slots:
            theirs = full.get(slot.name)
            if theirs is None:
                raise AdapterMismatchError(
                    f"{slot.name} is not in the federation's adapter (its target modules)"
                )
            axis = rank_axis(slot.name)
            rank = slot.shape[axis]
            other = [d for i, d in enumerate(slot.shape) if i != axis]
            if other != [d for i, d in enumerate(theirs.shape) if i != axis]:
                raise AdapterMismatchError(f"{slot.name}: {slot.shape} does not fit {theirs.shape}")
            if not 1 <= rank <= self.max_rank:
                raise AdapterMismatchError(
                    f"{slot.name} has rank {rank}; the federation's maximum is {self.max_rank}"
                )
            side = side_of(slot.name)
            if ranks.setdefault(side, rank) != rank:
                raise AdapterMismatchError(f"the {side} adapters of one party differ in rank")
        if not ranks:
            raise AdapterMismatchError("the party trains no adapter tensor")
        return PartyShape(ranks)

    def indicator(self, shape: PartyShape) -> np.ndarray:
        out = np.zeros(self.group_count, dtype=np.float64)
        for side in self.sides:
            start = self.group(side, 0)
            out[start : start + shape.rank(side)] = INDICATOR
        return out

    def pad(self, local: AdapterLayout, vector: np.ndarray) -> np.ndarray:
        """A party's vector (its own layout) in the rank-max layout, zeros elsewhere."""
        array = _check(vector, local.size, "party vector")
        out = np.zeros(self.full.size, dtype=np.float64)
        full = {s.name: s for s in self.full.tensors.slots}
        self.party_shape(local)  # refuses a layout that is no truncation of `full`
        for slot in local.tensors.slots:
            target = full[slot.name]
            block = np.zeros(target.shape, dtype=np.float64)
            values = array[slot.offset : slot.offset + slot.size].reshape(slot.shape)
            block[tuple(slice(0, d) for d in slot.shape)] = values
            out[target.offset : target.offset + target.size] = block.reshape(-1)
        return out

    def extend(
        self, local: AdapterLayout, delta: np.ndarray, shape: PartyShape | None = None
    ) -> np.ndarray:
        """What the party sends: padded delta, its indicator, the reference entry.

        `shape`: what the party trains when its layout holds more (a party that holds
        the rank-max adapter but trains its first r columns, learner.lora.hetero_party.
        mask_gradients); the delta outside it is zeroed. None: read from `local`."""
        shape = self.party_shape(local) if shape is None else shape
        padded = self.pad(local, delta) * self.trained_mask(shape)
        return np.concatenate([padded, self.indicator(shape), [INDICATOR]])

    def trained_mask(self, shape: PartyShape) -> np.ndarray:
        """Which rank-max coordinates a party of `shape` trains."""
        limit = np.array([shape.rank(side) for side in self.sides])
        groups = self.coordinate_groups()
        return (groups % self.max_rank) < limit[groups // self.max_rank]

    def truncate(self, local: AdapterLayout, full_vector: np.ndarray) -> np.ndarray:
        """The rank-max vector cut back to a party's layout (its first r rows/columns)."""
        array = _check(full_vector, self.full.size, "rank-max vector")
        self.party_shape(local)
        full = {s.name: s for s in self.full.tensors.slots}
        out = np.empty(local.size, dtype=array.dtype)
        for slot in local.tensors.slots:
            source = full[slot.name]
            block = array[source.offset : source.offset + source.size].reshape(source.shape)
            cut = block[tuple(slice(0, d) for d in slot.shape)]
            out[slot.offset : slot.offset + slot.size] = cut.reshape(-1)
        return out

    # --- the aggregate ------------------------------------------------------------------

    def decode(
        self, mean: np.ndarray, error_bound: float = 0.0, weighting: str = "group"
    ) -> HeteroMean:
        """The weighted mean from the secure mean of the extended vectors.

        `weighting` (Weighting): "group", each coordinate over the parties that trained its
        group; "tower", over the parties that trained its tower (a party training fewer
        rank columns counts as zeros in the others, a text-only party never in the image
        tower); "plain", the zero-padded mean itself. `error_bound`: the round's
        per-element bound on `mean` (the service's quantisation); the result carries the
        bound it implies per coordinate."""
        weighting = Weighting(weighting)
        array = _check(mean, self.size, "aggregate")
        e = float(error_bound)
        a = array[: self.full.size]
        share = array[self.full.size : -1]
        q = float(array[-1])
        if not q > 2 * e:
            raise AdapterMismatchError(
                f"the aggregate's reference entry is {q} (error bound {e}): not an extended "
                "heterogeneous vector"
            )
        groups = self.coordinate_groups()
        trained = share[groups] > 2 * e
        if weighting is Weighting.PLAIN:
            return HeteroMean(a.copy(), np.full(a.shape, e), trained, share / q)
        if weighting is Weighting.TOWER:
            groups = (groups // self.max_rank) * self.max_rank  # the tower's rank index 0
        m = share[groups]
        safe = np.where(trained, m, 1.0)
        values = np.where(trained, a * q / safe, 0.0)
        # |d(a q / m)| <= e (|a| + q + e + |a| q / m) / (m - e), with the true a, q, m
        # bounded from the decoded ones (each within e).
        lo = np.where(trained, m - 2 * e, 1.0)
        abs_a, q_hi = np.abs(a) + e, q + e
        bound = np.where(trained, e * (abs_a + q_hi + e + abs_a * q_hi / lo) / lo, 0.0)
        return HeteroMean(values, bound, trained, share / q)


@dataclass(frozen=True, eq=False)
class HeteroMean:
    """A decoded heterogeneous aggregate, in the rank-max layout.

    values: per-coordinate weighted mean over the parties that trained it (0 if none);
    bound: how far each value may sit from the exact one (quantisation only);
    trained: which coordinates anyone trained; shares: each group's weight share."""

    values: np.ndarray
    bound: np.ndarray
    trained: np.ndarray
    shares: np.ndarray


def _check(vector: np.ndarray, size: int, what: str) -> np.ndarray:
    array = np.asarray(vector)
    if array.ndim != 1 or array.shape[0] != size:
        raise AdapterMismatchError(f"{what} has shape {array.shape}, the layout needs ({size},)")
    if not np.all(np.isfinite(array)):
        raise AdapterMismatchError(f"{what} holds NaN or infinite values")
    return array


def hetero_weighted_mean(
    layout: HeteroLayout, updates: list[tuple[AdapterLayout, np.ndarray, float]]
) -> np.ndarray:
    """The plaintext reference: per coordinate, sum w_i x_i / sum w_i over the parties
    whose layout holds it (0 where none does), in the rank-max layout, float64."""
    total = np.zeros(layout.full.size)
    weight = np.zeros(layout.full.size)
    for local, vector, w in updates:
        total += w * layout.pad(local, vector)
        weight += w * layout.pad(local, np.ones(local.size))
    return np.where(weight > 0, total / np.where(weight > 0, weight, 1.0), 0.0)
