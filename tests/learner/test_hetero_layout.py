"""Heterogeneous ranks and modalities over the real masked SecAgg+ protocol.

Each party sends its delta padded to the rank-max layout plus an indicator section; the
secure round (runners.aggregators.InProcessSecAgg: real key agreement, masks, Shamir
shares, quantisation) returns the weighted mean of those extended vectors, and the decode
must give, per coordinate, the weighted mean over only the parties that trained it,
within the bound it reports. The naive mean of padded vectors must differ (the zeros
dilute), or the test would not show anything.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedveil.clients.streams import TensorLayout, TensorSlot
from fedveil.errors import ConfigError
from fedveil.learner.lora.codec import AdapterLayout, AdapterMismatchError
from fedveil.learner.lora.config import AggregationVariant
from fedveil.learner.lora.hetero_config import HeteroConfig
from fedveil.learner.lora.hetero_layout import (
    HeteroLayout,
    Side,
    hetero_weighted_mean,
)
from fedveil.runners.aggregators import InProcessSecAgg

R = 8
BASE = bytes(32)
# (name, shape at rank r): A is (r, in), B is (out, r)
TENSORS = (
    ("decoder.h.0.attn.lora_A.weight", lambda r: (r, 6)),
    ("decoder.h.0.attn.lora_B.weight", lambda r: (10, r)),
    ("decoder.lm_head.lora_B.weight", lambda r: (7, r)),
    ("encoder.layer.0.q.lora_A.weight", lambda r: (r, 5)),
    ("encoder.layer.0.q.lora_B.weight", lambda r: (9, r)),
)


def layout(ranks: dict[Side, int]) -> AdapterLayout:
    slots, offset = [], 0
    for name, shape_at in sorted(TENSORS):
        side = Side.VISION if name.startswith("encoder.") else Side.TEXT
        if side not in ranks:
            continue
        shape = shape_at(ranks[side])
        slots.append(TensorSlot(name, shape, offset))
        offset += int(np.prod(shape))
    return AdapterLayout(TensorLayout(tuple(slots)), BASE, AggregationVariant.FEDAVG)


FULL = HeteroLayout(layout({Side.TEXT: R, Side.VISION: R}), R)


def secure(vectors: list[np.ndarray], weights: list[int]) -> tuple[np.ndarray, float]:
    ids = [f"party-{i}" for i in range(len(vectors))]
    round_ = InProcessSecAgg(ids, FULL.size, rounds=1)
    mean = round_(list(zip(vectors, weights, strict=True)))
    return mean, round_.results[0].error_bound


def deltas(locals_: list[AdapterLayout], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.02, size=loc.size) for loc in locals_]


def test_heterogeneous_ranks_over_secagg_give_the_per_group_weighted_mean() -> None:
    locals_ = [layout({Side.TEXT: r, Side.VISION: r}) for r in (2, 4, 8)]
    weights = [30, 20, 10]
    updates = deltas(locals_)
    extended = [FULL.extend(loc, d) for loc, d in zip(locals_, updates, strict=True)]
    assert {len(x) for x in extended} == {FULL.size}
    mean, bound = secure(extended, weights)
    decoded = FULL.decode(mean, bound)
    exact = hetero_weighted_mean(FULL, list(zip(locals_, updates, weights, strict=True)))
    assert bound > 0
    assert np.all(np.abs(decoded.values - exact) <= decoded.bound + 1e-15)
    # columns 4..7 were trained by the rank-8 party alone: its own delta, undiluted
    alone = FULL.pad(locals_[2], updates[2])
    b = FULL.full.tensors.slots[1]  # decoder.h.0.attn.lora_B
    block = (decoded.values - alone)[b.offset : b.offset + b.size].reshape(b.shape)
    assert np.max(np.abs(block[:, 4:])) <= 1e-9
    # the naive mean of the padded deltas is a third of that there: the zeros dilute it
    naive = mean[: FULL.full.size]
    naive_block = naive[b.offset : b.offset + b.size].reshape(b.shape)
    alone_block = alone[b.offset : b.offset + b.size].reshape(b.shape)
    assert np.allclose(naive_block[:, 4:], alone_block[:, 4:] * 10 / 60, atol=1e-9)
    assert not np.allclose(naive, exact, atol=1e-4)
    assert np.allclose(decoded.shares[:R], [1, 1, 0.5, 0.5, 1 / 6, 1 / 6, 1 / 6, 1 / 6])


def test_a_text_only_partys_zeros_never_dilute_the_image_side() -> None:
    image = [layout({Side.TEXT: R, Side.VISION: R}) for _ in range(2)]
    text = layout({Side.TEXT: R})
    locals_ = [*image, text]
    weights = [10, 30, 60]
    updates = deltas(locals_, seed=1)
    mean, bound = secure(
        [FULL.extend(loc, d) for loc, d in zip(locals_, updates, strict=True)], weights
    )
    decoded = FULL.decode(mean, bound)
    vision = np.zeros(FULL.full.size, dtype=bool)
    for slot in FULL.full.tensors.slots:
        if slot.name.startswith("encoder."):
            vision[slot.offset : slot.offset + slot.size] = True
    image_only = (10 * FULL.pad(image[0], updates[0]) + 30 * FULL.pad(image[1], updates[1])) / 40
    everyone = (
        sum(w * FULL.pad(loc, d) for loc, d, w in zip(locals_, updates, weights, strict=True)) / 100
    )
    # image side: the mean over the image parties only, within the round's bound...
    assert np.all(np.abs(decoded.values - image_only)[vision] <= decoded.bound[vision] + 1e-15)
    # ...which the naive mean misses by far (the text party holds 60% of the weight)
    assert np.max(np.abs(mean[: FULL.full.size] - image_only)[vision]) > 100 * bound
    # text side: everyone trained it, so it is the plain weighted mean
    text_side = ~vision
    assert np.all(np.abs(decoded.values - everyone)[text_side] <= decoded.bound[text_side] + 1e-15)


def test_truncation_round_trips_and_padding_is_zero_beyond_the_rank() -> None:
    rng = np.random.default_rng(2)
    full_vector = rng.normal(size=FULL.full.size)
    small = layout({Side.TEXT: 3})
    cut = FULL.truncate(small, full_vector)
    assert cut.shape == (small.size,)
    assert np.array_equal(FULL.truncate(small, FULL.pad(small, cut)), cut)
    padded = FULL.pad(small, cut)
    again = FULL.pad(small, FULL.truncate(small, padded))
    assert np.array_equal(again, padded)
    for slot in FULL.full.tensors.slots:
        block = padded[slot.offset : slot.offset + slot.size].reshape(slot.shape)
        if slot.name.startswith("encoder."):
            assert not block.any()
        elif ".lora_A." in slot.name:
            assert not block[3:].any() and block[:3].all()
        else:
            assert not block[:, 3:].any() and block[:, :3].all()


def test_an_untrained_group_decodes_to_zero_and_the_bound_grows_with_a_small_share() -> None:
    locals_ = [layout({Side.TEXT: 2}), layout({Side.TEXT: 2, Side.VISION: 1})]
    updates = deltas(locals_, seed=3)
    mean, bound = secure(
        [FULL.extend(loc, d) for loc, d in zip(locals_, updates, strict=True)], [99, 1]
    )
    decoded = FULL.decode(mean, bound)
    assert not decoded.trained.all() and not decoded.values[~decoded.trained].any()
    groups = FULL.coordinate_groups()
    small = groups == FULL.group(Side.VISION, 0)
    full_share = groups == FULL.group(Side.TEXT, 0)
    assert decoded.bound[small].max() > 10 * decoded.bound[full_share].max()


def test_layouts_that_do_not_fit_are_refused() -> None:
    other = layout({Side.TEXT: R + 1})
    with pytest.raises(AdapterMismatchError, match="maximum"):
        FULL.extend(other, np.zeros(other.size))
    with pytest.raises(AdapterMismatchError, match="maximum rank"):
        HeteroLayout(layout({Side.TEXT: 4}), R)
    with pytest.raises(AdapterMismatchError, match="reference"):
        FULL.decode(np.zeros(FULL.size))
    assert FULL.fingerprint() != HeteroLayout(layout({Side.TEXT: 4}), 4).fingerprint()


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"max_rank": 8, "ranks": {"a": 16}}, "above the federation's maximum rank 8"),
        ({"max_rank": 8, "ranks": {"a": 0}}, "rank must be an int >= 1"),
        ({"max_rank": 0}, "maximum rank must be >= 1"),
    ],
)
def test_bad_hetero_configs_are_refused_in_one_line(kwargs: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        HeteroConfig(**kwargs)
    assert "\n" not in str(caught.value)


def test_party_checks() -> None:
    config = HeteroConfig(8, {"a": 4}, frozenset({"b"}))
    config.check_parties(["a", "b"], has_vision=True)
    with pytest.raises(ConfigError, match="no party named c"):
        HeteroConfig(8, text_only=frozenset({"c"})).check_parties(["a", "b"], has_vision=True)
    with pytest.raises(ConfigError, match="image encoder"):
        config.check_parties(["a", "b"], has_vision=False)
    with pytest.raises(ConfigError, match="every party is text-only"):
        HeteroConfig(8, text_only=frozenset({"a", "b"})).check_parties(["a", "b"], has_vision=True)


def test_not_claimed_a_group_one_party_trains_reveals_its_delta() -> None:
    """The limit of the scheme: a sum over one party is that party's update. Rank band
    4..7 below is trained by the rank-8 party alone, and the secure round's output there
    is its delta to within the round's bound; lone_bands names every such band."""
    locals_ = [layout({Side.TEXT: r, Side.VISION: r}) for r in (4, 4, 8)]
    updates = deltas(locals_, seed=4)
    extended = [FULL.extend(loc, d) for loc, d in zip(locals_, updates, strict=True)]
    mean, bound = secure(extended, [5, 5, 5])
    decoded = FULL.decode(mean, bound)
    lone = np.isin(FULL.coordinate_groups(), [FULL.group(s, k) for s in Side for k in range(4, 8)])
    own = FULL.pad(locals_[2], updates[2])
    assert np.all(np.abs(decoded.values - own)[lone] <= decoded.bound[lone] + 1e-15)
    config = HeteroConfig(8, {"a": 4, "b": 4, "c": 8})
    bands = config.lone_bands(["a", "b", "c"], ["text", "vision"])
    assert len(bands) == 8 and all(band.endswith(": c") for band in bands)
    assert HeteroConfig(8, {"a": 4, "b": 8, "c": 8}).lone_bands(["a", "b", "c"], ["text"]) == []


def test_tower_weighting_dilutes_rank_bands_but_never_by_a_text_only_party() -> None:
    locals_ = [layout({Side.TEXT: 2, Side.VISION: 2}), layout({Side.TEXT: 8, Side.VISION: 8})]
    locals_.append(layout({Side.TEXT: 4}))
    weights = [10, 20, 30]
    updates = deltas(locals_, seed=5)
    extended = [FULL.extend(loc, d) for loc, d in zip(locals_, updates, strict=True)]
    mean, bound = secure(extended, weights)
    total = np.sum(
        [w * FULL.pad(loc, d) for loc, d, w in zip(locals_, updates, weights, strict=True)], axis=0
    )
    vision = np.isin(FULL.coordinate_groups(), [FULL.group(Side.VISION, k) for k in range(R)])
    expected = np.where(vision, total / 30, total / 60)  # image tower: the first two only
    tower = FULL.decode(mean, bound, "tower")
    assert np.all(np.abs(tower.values - expected) <= tower.bound + 1e-15)
    plain = FULL.decode(mean, bound, "plain")
    assert np.array_equal(plain.values, mean[: FULL.full.size])
    assert not np.allclose(tower.values, FULL.decode(mean, bound).values, atol=1e-6)
    with pytest.raises(ValueError):
        FULL.decode(mean, bound, "median")
    with pytest.raises(ConfigError, match="weighting"):
        HeteroConfig(8, weighting="median")
