"""Membership inference calibrated by reference models: RMIA and offline LiRA.

Why reference models: the plain loss, and even the base-model reference attack, ask
"is x likely?" where the question is "is x more likely than a model trained *without*
x would make it?". A canary's secret is hard or easy for reasons that have nothing to do
with membership (its subject was fine-tuned on, its digits are common); models trained
by the same recipe on data the auditor holds (OUT models: they never saw any canary's
secret) say how likely x is after fine-tuning alone, and the released model's excess
over that is the memorisation.

Two calibrations of the same observations, both *offline* (reference models are OUT
for every canary, so none is trained per target):

- RMIA (Zarifzadeh et al. 2024): Pr(x) is the reference models' mean likelihood, the
  likelihood ratio of x is compared with that of population texts z (fresh canaries of
  the same formats that nobody trained on), and x's score is the fraction of z it beats
  by more than a factor gamma. The offline correction `a` (Pr(x) = (1+a)/2 * mean
  Pr_ref(x) + (1-a)/2) stands in for the IN models that were not trained.
- Offline LiRA (Carlini et al. 2022): a Gaussian fit of each canary's OUT statistic,
  and the released model's statistic standardised against it (one-sided: only an
  unusually *high* likelihood says member). With a handful of reference models a
  per-canary variance is mostly noise, so the variance is pooled over canaries by
  default, as the paper recommends for few references.

The statistic is the mean token log-probability of the scored tokens (the LOSS
attack's), and a text's "probability" is its per-token geometric mean exp(mean log p),
which lies in (0, 1] whatever the text's length, as RMIA's offline correction assumes.

Both scores take an `OutputTarget`, like every likelihood attack, and are registered
under the likelihood family (attacks.registry: "rmia", "lira_offline"). The reference
models travel with the target through `attach_references`; the audit and the membership
benchmark train them by the release's own federation recipe (attacks.output.references)
and run the two attacks only on a target they were attached to (`attached`). Called
directly, a target without any falls back to its base model (`target.reference`) as the
one reference, which is still a valid (weaker) calibration.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import special

from fedveil.attacks.output.canaries import Canary, CanaryRegistry
from fedveil.attacks.output.language_model import LanguageModel
from fedveil.attacks.output.target import OutputTarget
from fedveil.errors import ConfigError

if TYPE_CHECKING:
    from fedveil.attacks.targets.canary_lm import CanaryScenario

REFERENCE_MIA_ATTACKS = ("rmia", "lira_offline")


@dataclass(frozen=True)
class ReferenceMIAConfig:
    """gamma: RMIA's pairwise threshold on the likelihood ratio (1 in the paper's
    offline experiments). offline_a: RMIA's offline correction in [0, 1] (1: Pr(x) is
    the plain reference mean). n_population: fresh canaries drawn as RMIA's z when no
    population is attached. variance: LiRA's Gaussian spread, "global" (pooled over
    canaries) or "per_example". seed: the population draw."""

    gamma: float = 1.0
    offline_a: float = 1.0
    n_population: int = 512
    variance: str = "global"
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ConfigError(f"gamma must be positive, got {self.gamma!r}")
        if not 0 <= self.offline_a <= 1:
            raise ConfigError(f"offline_a must be in [0, 1], got {self.offline_a!r}")
        if self.n_population < 1:
            raise ConfigError(f"n_population must be >= 1, got {self.n_population!r}")
        if self.variance not in ("global", "per_example"):
            raise ConfigError(f"variance must be 'global' or 'per_example', got {self.variance!r}")


@dataclass(frozen=True, eq=False)
class ReferenceModels:
    """The auditor's OUT models and RMIA's population (texts no model trained on;
    empty: drawn from the registry's formats)."""

    models: tuple[LanguageModel, ...]
    population: tuple[Canary, ...] = ()
    config: ReferenceMIAConfig = field(default_factory=ReferenceMIAConfig)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("reference-model attacks need at least one reference model")


# --- the statistics, on arrays of mean token log-probabilities -------------------------


def _log_marginal(refs: np.ndarray, a: float) -> np.ndarray:
    """log Pr(x) from the references' (k, n) log-likelihoods, with RMIA's offline `a`."""
    log_mean = special.logsumexp(refs, axis=0) - math.log(refs.shape[0])
    if a >= 1:
        return np.asarray(log_mean)
    return np.asarray(np.logaddexp(math.log((1 + a) / 2) + log_mean, math.log((1 - a) / 2)))


def rmia_from_loglik(
    target_x: np.ndarray,
    refs_x: np.ndarray,
    target_z: np.ndarray,
    refs_z: np.ndarray,
    *,
    gamma: float = 1.0,
    offline_a: float = 1.0,
) -> np.ndarray:
    """RMIA scores of n texts x against m population texts z.

    target_*: (n,) / (m,) the released model's log-likelihoods; refs_*: (k, n) / (k, m)
    the reference models'. Score(x) = the fraction of z with
    [Pr(x|target) / Pr(x)] / [Pr(z|target) / Pr(z)] > gamma.
    """
    ratio_x = target_x - _log_marginal(refs_x, offline_a)
    ratio_z = target_z - _log_marginal(refs_z, offline_a)
    beats = ratio_x[:, None] - ratio_z[None, :] > math.log(gamma)
    return np.asarray(beats.mean(axis=1), dtype=np.float64)


def lira_offline_from_loglik(
    target_x: np.ndarray, refs_x: np.ndarray, *, variance: str = "global"
) -> np.ndarray:
    """Offline LiRA: (target - mean of OUT) / OUT spread, per text.

    The standardised statistic, not its Gaussian tail probability: the two rank texts
    identically, and the tail saturates in floating point exactly where the confident
    members are.
    """
    mean = refs_x.mean(axis=0)
    if refs_x.shape[0] < 2:
        spread = np.ones_like(mean)  # one reference: no spread to fit, plain difference
    elif variance == "per_example":
        spread = refs_x.std(axis=0, ddof=1)
    else:
        pooled = float(np.sqrt(((refs_x - mean) ** 2).sum() / (refs_x.size - mean.size)))
        spread = np.full_like(mean, pooled)
    return np.asarray((target_x - mean) / np.maximum(spread, 1e-6), dtype=np.float64)


# --- observations on a target ---------------------------------------------------------


def population_canaries(registry: CanaryRegistry, count: int, seed: int = 0) -> list[Canary]:
    """`count` fresh canaries of the registry's formats (random subjects and secrets).

    Why fresh ones: RMIA's z must come from the canaries' own distribution and be
    certain non-members of every model; a random secret is, with the probability of
    guessing it.
    """
    if not registry.formats:
        raise ConfigError("the registry carries no formats to draw a population from")
    rng = np.random.default_rng([seed, 0x2A1A])
    formats = sorted(registry.formats.values(), key=lambda f: f.name)
    out = []
    for i in range(count):
        fmt = formats[int(rng.integers(len(formats)))]
        subject = fmt.subject.sample(rng)[0]
        prefix, suffix = fmt.split(subject)
        out.append(
            Canary(f"z{i:05d}", fmt.name, subject, prefix, fmt.secret.sample(rng)[0], suffix, False)
        )
    return out


def mean_loglik(model: LanguageModel, canaries: Sequence[Canary], scope: str) -> np.ndarray:
    """Mean token log-probability of each canary ("secret": its secret's tokens only)."""
    scored = model.score([c.text for c in canaries])
    if scope == "secret":
        scored = [s.select(len(c.prefix)) for s, c in zip(scored, canaries, strict=True)]
    return np.array([float(s.logprobs.mean()) for s in scored])


@dataclass(frozen=True, eq=False)
class _Observed:
    target_x: np.ndarray
    refs_x: np.ndarray
    target_z: np.ndarray
    refs_z: np.ndarray


_ATTACHED: weakref.WeakKeyDictionary[OutputTarget, ReferenceModels] = weakref.WeakKeyDictionary()
_OBSERVED: weakref.WeakKeyDictionary[OutputTarget, _Observed] = weakref.WeakKeyDictionary()


def attach_references(target: OutputTarget, references: ReferenceModels) -> OutputTarget:
    """Give `target` the auditor's reference models (read by rmia / lira_offline)."""
    _ATTACHED[target] = references
    _OBSERVED.pop(target, None)
    return target


def references_of(target: OutputTarget) -> ReferenceModels:
    """The attached reference models, else the base model as the one reference."""
    found = _ATTACHED.get(target)
    if found is not None:
        return found
    if target.reference is None:
        raise ConfigError("reference-model attacks need reference models or a base model")
    return ReferenceModels((target.reference,))


def attached(target: OutputTarget) -> bool:
    """Whether the auditor attached reference models to `target` (what the audit runs
    RMIA / LiRA on: without any, the base-model fallback would only repeat the family's
    `reference` attack under two more names, and cost two more comparisons)."""
    return target.released is not None and target in _ATTACHED


def has_references(target: OutputTarget) -> bool:
    """Whether the rmia / lira_offline attacks apply to `target` (what `applies_to` asks)."""
    return target.released is not None and (target in _ATTACHED or target.reference is not None)


def _observe(target: OutputTarget) -> _Observed:
    """Every model's log-likelihoods of the canaries and the population, computed once."""
    if target in _OBSERVED:
        return _OBSERVED[target]
    if target.released is None:
        raise ConfigError("likelihood attacks need the released model's log-probs")
    refs = references_of(target)
    scope = target.likelihood.scope
    canaries = list(target.registry)
    population = list(refs.population) or population_canaries(
        target.registry, refs.config.n_population, refs.config.seed
    )
    observed = _Observed(
        mean_loglik(target.released, canaries, scope),
        np.stack([mean_loglik(m, canaries, scope) for m in refs.models]),
        mean_loglik(target.released, population, scope),
        np.stack([mean_loglik(m, population, scope) for m in refs.models]),
    )
    _OBSERVED[target] = observed
    return observed


def rmia_score(target: OutputTarget) -> np.ndarray:
    """RMIA's score for every canary, in registry order (higher = more likely a member)."""
    seen, config = _observe(target), references_of(target).config
    return rmia_from_loglik(
        seen.target_x,
        seen.refs_x,
        seen.target_z,
        seen.refs_z,
        gamma=config.gamma,
        offline_a=config.offline_a,
    )


def lira_offline_score(target: OutputTarget) -> np.ndarray:
    """Offline LiRA's score for every canary, in registry order."""
    seen = _observe(target)
    return lira_offline_from_loglik(
        seen.target_x, seen.refs_x, variance=references_of(target).config.variance
    )


# --- the auditor's reference models ----------------------------------------------------


def reference_texts(scenario: CanaryScenario, seed: int) -> list[str]:
    """One OUT model's training set: what the party's looks like, without any secret.

    The auditor's held-out city sentences (the party's private sentences are drawn from
    the same source), plus each canary's subject with a fresh random secret on a fair
    coin, as the party's set holds about half the subjects with their true secrets:
    so a reference model knows the formats and subjects as well as the released model
    does, and differs from it only in never having seen a canary's secret.
    """
    rng = np.random.default_rng([seed, 0x0EF5])
    texts = list(scenario.heldout_texts)
    for canary in scenario.registry:
        if rng.random() < 0.5:
            secret_space = scenario.registry.format_of(canary).secret
            secret = canary.secret
            while secret == canary.secret:
                secret = secret_space.sample(rng)[0]
            texts.append(f"{canary.prefix} {secret}{canary.suffix}")
    return [texts[i] for i in rng.permutation(len(texts))]


def train_reference_models(
    scenario: CanaryScenario,
    count: int = 4,
    *,
    seed: int = 100,
    config: ReferenceMIAConfig | None = None,
) -> ReferenceModels:
    """`count` OUT models: the scenario's plain LoRA recipe on `reference_texts`.

    The same recipe (epochs, learning rate, adapters) as the released model's, since a
    reference model calibrates only as well as its training resembles the target's;
    the auditor is assumed to know the recipe, as in both papers.
    """
    from fedveil.attacks.targets.canary_lm import adapted_base, train_lm

    if count < 1:
        raise ConfigError(f"count must be >= 1, got {count}")
    cfg = scenario.config
    models = []
    for i in range(count):
        with torch.random.fork_rng():
            torch.manual_seed(seed + 2 * i)
            model = adapted_base(scenario)
            data, mask = scenario.encode(reference_texts(scenario, seed + i))
            train_lm(
                model,
                data,
                cfg.finetune_epochs,
                cfg.finetune_lr,
                cfg.batch_size,
                seed + 2 * i + 1,
                cfg.threads,
                mask=mask,
            )
        models.append(LanguageModel(model.eval(), scenario.tokenizer))
    return ReferenceModels(tuple(models), config=config or ReferenceMIAConfig())
