"""The bag of target tokens, read off the LM head's LoRA update (LLG/iDLG for language models).

Why it works: the LM head maps a hidden state h_t to logits W h_t + s B A h_t, so the
gradient of its B factor is s * G^T (H A^T), with G = softmax - onehot(target) per
position. Row v of that gradient is indexed by vocabulary id v: it collects
(p_tv - [y_t = v]) A h_t over the positions. A token that was a target at some
position gets a contribution of weight about -1 there, every other token only its
softmax mass p_tv, which is small when the vocabulary is large and the model unsure. So
the target rows stand out by their norm, with no rank bound (each row is its own
channel) and whatever the number of clients: a (weighted) mean of updates sums the
rows, and every client's target rows stand out in it. A secure sum hides who wrote which
token, not the cohort's bag. Plain SGD deltas add such gradients, so they leak alike.

Why the row norm of dB: it needs neither the sign conventions of the view (a gradient
or a delta, whose sign is flipped) nor the hidden states; A is public (the global
model) but not needed, as it maps every row by the same full-rank matrix. The signed
projection would be sharper on one client but depends on the hidden states being
aligned across positions, which an aggregate does not promise.

Why a robust outlier threshold: most vocabulary rows are not targets, so the median row
norm and the median absolute deviation (MAD) around it describe the non-target (or
noise) floor, measured from the update itself without any data; a row is predicted
when it lies more than `z` robust standard deviations (1.4826 MAD) above the median.
Non-target rows sit in a narrow band (their softmax masses are alike), so even a token
that one client of many used once clears it; under noise that drowns the rows, the
band widens with the noise and only a chance scatter, if anything, passes.
The prediction is a set of token ids (one "sequence"), scored as a bag of distinct
tokens. Limits: a well-trained head predicts its targets (p_tv near 1), shrinking
their rows; and only tokens that are targets (not the prompt a decoder reads) leak.
"""

from __future__ import annotations

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
)
from fedveil.errors import ConfigError

HEAD_SUFFIX = "lm_head.lora_B"
"""Where peft puts the head's B factor (rows indexed by vocabulary id)."""

MAD_TO_SIGMA = 1.4826
"""The MAD of a Gaussian times this is its standard deviation."""


@dataclass(frozen=True)
class TokenBagConfig:
    """head: the layout name of the LM head's lora_B (None: the one parameter whose name
    contains HEAD_SUFFIX); z: predict rows whose norm exceeds the median row norm by
    more than z robust standard deviations (a Gaussian-tail threshold: a pure-noise
    row passes it with negligible probability)."""

    head: str | None = None
    z: float = 6.0

    def __post_init__(self) -> None:
        if not self.z > 0.0:
            raise ConfigError(f"TokenBagConfig.z must be > 0, got {self.z!r}")


def head_parameter(observed: ObservedUpdate, head: str | None = None) -> str:
    """The layout name of the LM head's B factor; AttackError when the adapter has none."""
    names = observed.layout.names
    if head is not None:
        if head not in names:
            raise AttackError(f"{head!r} is not in the observed update's layout")
        return head
    found = [n for n in names if HEAD_SUFFIX in n]
    if len(found) != 1:
        raise AttackError(
            f"the update has {len(found)} LM-head LoRA B factors ({HEAD_SUFFIX!r}); the "
            "token-bag attack needs exactly one (is the head adapted?)"
        )
    return found[0]


def row_scores(observed: ObservedUpdate, head: str | None = None) -> Tensor:
    """Per vocabulary id, the norm of its row of the head's B-factor update."""
    rows = observed.parameter(head_parameter(observed, head))
    return rows.norm(dim=1)


class TokenBag(Attack[TokenBagConfig]):
    """Predict the view's bag of target tokens: the head rows standing above the floor."""

    name = "token_bag"
    config_type = TokenBagConfig

    def reconstruct(self, observed: ObservedUpdate, target: Target, **side: Any) -> Reconstruction:
        scores = row_scores(observed, self.config.head)
        floor = float(scores.median())
        spread = MAD_TO_SIGMA * float((scores - floor).abs().median())
        threshold = floor + self.config.z * spread
        keep = torch.nonzero(scores > threshold).flatten()
        if spread == 0.0:  # no band to stand out from (an all-zero head update)
            keep = keep[:0]
        order = keep[torch.argsort(scores[keep], descending=True)]
        tokens = [int(t) for t in order]
        return Reconstruction(
            attack=self.name,
            tokens=[tokens],
            scores={"kept": float(len(tokens)), "floor": floor, "spread": spread},
        )


__all__ = [
    "HEAD_SUFFIX",
    "MAD_TO_SIGMA",
    "TokenBag",
    "TokenBagConfig",
    "head_parameter",
    "row_scores",
]
