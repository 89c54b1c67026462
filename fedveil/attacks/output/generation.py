"""Generation-only membership inference and extraction: prompt with a canary's prefix.

Why this attack: a released model is often reachable only through generated text (a
caption service, a chat endpoint): no logits, no loss. SaMIA (Kaneko et al. 2024)
shows sampled continuations still leak membership: sample s continuations of a
prefix and measure how much of the true suffix they reproduce; a memorised member's
samples reproduce it, a non-member's only by chance. Our prefixes are canary prefixes
(whose subject names the secret), so the score measures memorisation of exactly the
planted secret, and members and non-members are drawn from one distribution.

Scores (higher = member), per canary, over its s samples truncated to the secret's
length in units (attacks.output.overlap): "samia_rouge_l" (mean ROUGE-L F1),
"samia_ngram" (mean n-gram recall), "samples_exact" (share reproducing the secret
exactly). Extraction is the greedy continuation starting with the secret's units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedveil.attacks.output.canaries import CanaryRegistry
from fedveil.attacks.output.generator import GenerateFn
from fedveil.attacks.output.overlap import (
    ngram_recall,
    rouge_l,
    starts_with_units,
    units,
    verbatim,
)
from fedveil.errors import ConfigError

GENERATION_ATTACKS = ("samia_rouge_l", "samia_ngram", "samples_exact")


@dataclass(frozen=True)
class ProbeConfig:
    """n_samples: continuations sampled per prefix (SaMIA uses 10); ngram: n of the
    n-gram recall score; greedy: also decode greedily for the extraction rate."""

    n_samples: int = 8
    ngram: int = 2
    greedy: bool = True

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ConfigError(f"ProbeConfig.n_samples must be >= 1, got {self.n_samples}")
        if self.ngram < 1:
            raise ConfigError(f"ProbeConfig.ngram must be >= 1, got {self.ngram}")


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """What the generation-only attacker observed and scored, in registry order.

    extracted: the greedy continuation starts with the secret (units). verbatim_*: the
    secret's exact characters occur in the greedy output / in any sample.
    """

    labels: np.ndarray
    scores: dict[str, np.ndarray]
    samples: list[list[str]]
    greedy: list[str]
    extracted: np.ndarray
    verbatim_greedy: np.ndarray
    verbatim_sampled: np.ndarray

    def extraction_rate(self, members: bool = True) -> float:
        """Share of member (or non-member) canaries extracted greedily."""
        chosen = self.labels if members else ~self.labels
        return float(self.extracted[chosen].mean()) if chosen.any() else float("nan")

    def verbatim_count(self) -> int:
        """How many canaries were emitted verbatim in the greedy output or any sample."""
        return int((self.verbatim_greedy | self.verbatim_sampled).sum())


def score_samples(samples: list[str], secret: str, ngram: int) -> dict[str, float]:
    """SaMIA-style scores of one canary's samples against its secret."""
    reference = units(secret)
    cut = [units(s)[: len(reference)] for s in samples]
    return {
        "samia_rouge_l": float(np.mean([rouge_l(c, reference) for c in cut])),
        "samia_ngram": float(np.mean([ngram_recall(c, reference, ngram) for c in cut])),
        "samples_exact": float(np.mean([c == reference for c in cut])),
    }


def generation_probe(
    generate: GenerateFn,
    registry: CanaryRegistry,
    config: ProbeConfig | None = None,
    *,
    prompts: list[str] | None = None,
) -> ProbeResult:
    """Prompt with every canary's prefix (or `prompts`, e.g. evasive rewrites of them)."""
    config = config or ProbeConfig()
    canaries = list(registry)
    prompts = prompts or [c.prefix for c in canaries]
    if len(prompts) != len(canaries):
        raise ConfigError(f"{len(prompts)} prompts for {len(canaries)} canaries")
    samples = generate(prompts, config.n_samples, False)
    if config.greedy:
        greedy = [g[0] if g else "" for g in generate(prompts, 1, True)]
    else:
        greedy = [""] * len(canaries)
    per = [score_samples(s, c.secret, config.ngram) for s, c in zip(samples, canaries, strict=True)]
    scores = {name: np.array([p[name] for p in per]) for name in GENERATION_ATTACKS}
    return ProbeResult(
        labels=registry.labels(),
        scores=scores,
        samples=samples,
        greedy=greedy,
        extracted=np.array(
            [
                config.greedy and starts_with_units(g, c.secret)
                for g, c in zip(greedy, canaries, strict=True)
            ]
        ),
        verbatim_greedy=np.array(
            [verbatim(g, c.secret) for g, c in zip(greedy, canaries, strict=True)]
        ),
        verbatim_sampled=np.array(
            [
                any(verbatim(s, c.secret) for s in ss)
                for ss, c in zip(samples, canaries, strict=True)
            ]
        ),
    )
