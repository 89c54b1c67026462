"""The cleaning policies (learner.quality.cleaning): what they keep, and what they refuse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedveil.errors import ConfigError
from fedveil.learner.quality import CleaningMethod, CleaningPolicy


def test_top_fraction_drops_exactly_the_highest_scores() -> None:
    scores = np.arange(20, dtype=float)[::-1].copy()  # 19 ... 0
    keep = CleaningPolicy(CleaningMethod.TOP_FRACTION, fraction=0.25).keep_mask(scores)
    assert keep.sum() == 15 and not keep[:5].any() and keep[5:].all()


def test_mad_drops_the_shifted_minority_and_nothing_from_clean_scores() -> None:
    rng = np.random.default_rng(0)
    clean = rng.normal(0.0, 0.1, size=70)
    bad = rng.normal(2.0, 0.1, size=30)
    keep = CleaningPolicy(CleaningMethod.MAD, mad_c=3.0).keep_mask(np.concatenate([clean, bad]))
    assert keep[:70].all() and not keep[70:].any()
    uniform = np.linspace(0.0, 1.0, 50)  # no tail: nothing is an outlier
    assert CleaningPolicy(CleaningMethod.MAD).keep_mask(uniform).all()


def test_no_policy_drops_more_than_max_drop_or_everything() -> None:
    scores = np.array([0.0] * 6 + [5.0] * 4)  # MAD is 0: every 5.0 is above the threshold
    keep = CleaningPolicy(CleaningMethod.MAD, max_drop=0.3).keep_mask(scores)
    assert keep.sum() == 7
    assert CleaningPolicy(CleaningMethod.MAD).keep_mask(np.array([3.0])).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "median"}, "method"),
        ({"fraction": 1.0}, "fraction"),
        ({"fraction": -0.1}, "fraction"),
        ({"mad_c": 0.0}, "mad_c"),
        ({"mad_c": math.nan}, "mad_c"),
        ({"mad_c": math.inf}, "mad_c"),
        ({"max_drop": 0.0}, "max_drop"),
        ({"max_drop": 1.0}, "max_drop"),
        ({"method": "top-fraction", "fraction": 0.6, "max_drop": 0.5}, "exceeds max_drop"),
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CleaningPolicy(**kwargs)  # type: ignore[arg-type]


def test_bad_scores_are_refused() -> None:
    policy = CleaningPolicy()
    for scores, match in (
        (np.array([]), "non-empty"),
        (np.zeros((2, 2)), "non-empty"),
        (np.array([1.0, math.nan]), "finite"),
    ):
        with pytest.raises(ConfigError, match=match):
            policy.keep_mask(scores)


def test_threshold_drops_what_scores_above_it() -> None:
    scores = np.array([-1.0, -0.2, 0.0, 0.3, 2.0])
    keep = CleaningPolicy(CleaningMethod.THRESHOLD, threshold=0.0).keep_mask(scores)
    assert keep.tolist() == [True, True, True, False, False]
    with pytest.raises(ConfigError, match="threshold"):
        CleaningPolicy(CleaningMethod.THRESHOLD, threshold=math.nan)
