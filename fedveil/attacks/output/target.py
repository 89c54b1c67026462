"""What an output attack queries, and the shape of one: a score per canary from a released model.

Why a target of its own: the update attacks (attacks.update) read an observed *update*;
these read the released *model* (log-probabilities: the likelihood family; sampled text
only: the generation family), so they take an `OutputTarget` instead. The attacks are
named in attacks.registry, beside the update attacks; the benchmark and `fedveil audit`
iterate over its `available()`.

Why `OutputTarget` caches: the five likelihood attacks are five statistics of the same
token log-probabilities, and the three generation attacks three scores of the same
samples; scoring or sampling once per target keeps a full audit at the cost of one
pass of each, and every attack sees exactly the same observations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fedveil.attacks.families import Family
from fedveil.attacks.output.canaries import CanaryRegistry
from fedveil.attacks.output.generation import ProbeConfig, ProbeResult, generation_probe
from fedveil.attacks.output.generator import GenerateFn
from fedveil.attacks.output.language_model import LanguageModel
from fedveil.attacks.output.likelihood import LikelihoodConfig, canary_likelihood_scores
from fedveil.errors import ConfigError


@dataclass(eq=False)
class OutputTarget:
    """What the attacker may query: white-box log-probabilities (`released`, and the
    base model as `reference`), and/or black-box text (`generate`)."""

    registry: CanaryRegistry
    released: LanguageModel | None = None
    reference: LanguageModel | None = None
    generate: GenerateFn | None = None
    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)
    probe_config: ProbeConfig = field(default_factory=ProbeConfig)
    _likelihood: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _probe: ProbeResult | None = field(default=None, repr=False)

    def likelihood_scores(self) -> dict[str, np.ndarray]:
        """Every likelihood attack's scores, computed once."""
        if self._likelihood is None:
            if self.released is None:
                raise ConfigError("likelihood attacks need the released model's log-probs")
            self._likelihood = canary_likelihood_scores(
                self.released, self.registry, self.reference, self.likelihood
            )
        return self._likelihood

    def probe(self) -> ProbeResult:
        """The generation probe's samples and scores, sampled once."""
        if self._probe is None:
            if self.generate is None:
                raise ConfigError("generation attacks need a generate function")
            self._probe = generation_probe(self.generate, self.registry, self.probe_config)
        return self._probe


Score = Callable[[OutputTarget], np.ndarray]
"""An output attack: the released model's score for every canary, in registry order."""


@dataclass(frozen=True)
class OutputAttack:
    """A named score per canary (higher = more likely a member), in registry order."""

    name: str
    family: Family
    score: Score

    def applies_to(self, target: OutputTarget) -> bool:
        """Whether the target grants the access this attack needs."""
        if self.family is Family.LIKELIHOOD:
            return target.released is not None and (
                self.name != "reference" or target.reference is not None
            )
        return target.generate is not None


def likelihood_score(name: str) -> Score:
    """The likelihood attack `name`'s scores (one of LIKELIHOOD_ATTACKS)."""
    return lambda target: target.likelihood_scores()[name]


def generation_score(name: str) -> Score:
    """The generation attack `name`'s scores (one of GENERATION_ATTACKS)."""
    return lambda target: target.probe().scores[name]
