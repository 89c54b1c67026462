"""Likelihood-based membership inference on a released causal LM.

Why several scores: each fixes a different confounder of the plain loss. A text can be
likely because it is simple, not because it was trained on; zlib divides by how
compressible it is (Carlini et al. 2021), Min-K% looks only at the least likely tokens
(Shi et al. 2024), Min-K%++ standardises each token by how peaked the model's own
distribution is at that position (Zhang et al. 2024), and the reference attack
subtracts what the base model already assigned (Carlini et al. 2021; Mireshghallah et
al. 2022) -- with the base model as reference it isolates what fine-tuning added.

Every score is "higher = more likely a member", so the metrics and the audit in
attacks.output.metrics / attacks.output.empirical_epsilon never need to know which attack ran.
The scores read `TokenScores` (attacks.output.language_model), i.e. white-box log-probabilities
of a released model; the black-box attack that sees only sampled text is
attacks.output.generation. The calibrations by the auditor's own reference models
(RMIA, offline LiRA) are attacks.output.reference_mia, registered in the same family.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedveil.attacks.output.canaries import Canary, CanaryRegistry
from fedveil.attacks.output.language_model import LanguageModel, TokenScores
from fedveil.errors import ConfigError

LIKELIHOOD_ATTACKS = ("loss", "zlib", "min_k", "min_k_pp", "reference")


@dataclass(frozen=True)
class LikelihoodConfig:
    """k: the fraction of lowest-scoring tokens Min-K% and Min-K%++ average (0.2 in both
    papers). scope: "text" scores every token of a canary; "secret" only the tokens
    of its secret (the part a member's model has seen and a non-member's has not)."""

    k: float = 0.2
    scope: str = "text"

    def __post_init__(self) -> None:
        if not (isinstance(self.k, int | float) and 0 < self.k <= 1):
            raise ConfigError(f"LikelihoodConfig.k must be in (0, 1], got {self.k!r}")
        if self.scope not in ("text", "secret"):
            raise ConfigError(
                f"LikelihoodConfig.scope must be 'text' or 'secret', got {self.scope!r}"
            )


def loss_score(scores: TokenScores) -> float:
    """LOSS (Yeom et al. 2018): the mean token log-likelihood."""
    return float(scores.logprobs.mean())


def zlib_score(scores: TokenScores) -> float:
    """Mean negative log-likelihood over zlib entropy (bits of the compressed text), negated.

    Carlini et al.'s ratio is log-perplexity / zlib entropy, low for members; the sign
    is flipped so that higher means member.
    """
    entropy = 8 * len(zlib.compress(scores.text.encode("utf-8")))
    return float(scores.logprobs.mean()) / entropy


def _lowest_mean(values: np.ndarray, k: float) -> float:
    count = max(1, math.ceil(k * values.shape[0]))
    return float(np.sort(values)[:count].mean())


def min_k_score(scores: TokenScores, k: float = 0.2) -> float:
    """Min-K% (Shi et al. 2024): the mean log-probability of the k% least likely tokens."""
    return _lowest_mean(scores.logprobs, k)


def min_k_pp_score(scores: TokenScores, k: float = 0.2) -> float:
    """Min-K%++ (Zhang et al. 2024): tokens standardised by (log p - mu) / sigma, where mu
    and sigma are the mean and spread of log p under the model's own next-token
    distribution; then the mean of the k% lowest."""
    z = (scores.logprobs - scores.mean) / scores.std
    return _lowest_mean(z, k)


def reference_score(target: TokenScores, reference: TokenScores) -> float:
    """Mean log-likelihood under the released model minus under the reference model."""
    if target.token_ids.shape != reference.token_ids.shape or not np.array_equal(
        target.token_ids, reference.token_ids
    ):
        raise ConfigError(
            "the reference model must score the same tokens (same tokenizer) as the target"
        )
    return float(target.logprobs.mean() - reference.logprobs.mean())


def likelihood_scores(
    target: Sequence[TokenScores],
    reference: Sequence[TokenScores] | None = None,
    config: LikelihoodConfig | None = None,
) -> dict[str, np.ndarray]:
    """Every likelihood attack's score for each text ("reference" only with a reference)."""
    config = config or LikelihoodConfig()
    out = {
        "loss": np.array([loss_score(s) for s in target]),
        "zlib": np.array([zlib_score(s) for s in target]),
        "min_k": np.array([min_k_score(s, config.k) for s in target]),
        "min_k_pp": np.array([min_k_pp_score(s, config.k) for s in target]),
    }
    if reference is not None:
        if len(reference) != len(target):
            raise ConfigError("reference scores must cover the same texts as the target's")
        out["reference"] = np.array(
            [reference_score(t, r) for t, r in zip(target, reference, strict=True)]
        )
    return out


def _scoped(scores: list[TokenScores], canaries: Sequence[Canary], scope: str) -> list[TokenScores]:
    if scope == "text":
        return scores
    return [s.select(len(c.prefix)) for s, c in zip(scores, canaries, strict=True)]


def canary_likelihood_scores(
    target: LanguageModel,
    registry: CanaryRegistry,
    reference: LanguageModel | None = None,
    config: LikelihoodConfig | None = None,
) -> dict[str, np.ndarray]:
    """Every likelihood attack on every canary of `registry`, in registry order."""
    config = config or LikelihoodConfig()
    canaries = list(registry)
    texts = [c.text for c in canaries]
    released = _scoped(target.score(texts), canaries, config.scope)
    base = _scoped(reference.score(texts), canaries, config.scope) if reference else None
    return likelihood_scores(released, base, config)
