"""Output attacks by name: each scores every canary from what a released model emits.

Why a registry beside attacks.registry: those attacks read an observed *update*; these
read the released *model* (log-probabilities: the likelihood family; sampled text only:
the generation family), so they take an `OutputTarget` instead. The benchmark and
`fedveil audit` iterate over `available()`, and a new attack registers itself without
touching either.

Why `OutputTarget` caches: the five likelihood attacks are five statistics of the same
token log-probabilities, and the three generation attacks three scores of the same
samples; scoring or sampling once per target keeps a full audit at the cost of one
pass of each, and every attack sees exactly the same observations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from attacks.canaries import CanaryRegistry
from attacks.membership import LIKELIHOOD_ATTACKS, LikelihoodConfig, canary_likelihood_scores
from attacks.membership_generate import GenerateFn
from attacks.membership_lm import LanguageModel
from attacks.membership_samia import (
    GENERATION_ATTACKS,
    ProbeConfig,
    ProbeResult,
    generation_probe,
)
from secagg.errors import ConfigError

FAMILIES = ("likelihood", "generation")


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


@dataclass(frozen=True)
class OutputAttack:
    """A named score per canary (higher = more likely a member), in registry order."""

    name: str
    family: str
    score: Callable[[OutputTarget], np.ndarray]

    def applies_to(self, target: OutputTarget) -> bool:
        """Whether the target grants the access this attack needs."""
        if self.family == "likelihood":
            return target.released is not None and (
                self.name != "reference" or target.reference is not None
            )
        return target.generate is not None


_ATTACKS: dict[str, OutputAttack] = {}


def register(name: str, family: str, score: Callable[[OutputTarget], np.ndarray]) -> None:
    """Make `score` available as `name`; a name is registered once."""
    if family not in FAMILIES:
        raise ConfigError(f"family must be one of {FAMILIES}, got {family!r}")
    if not name or name in _ATTACKS:
        raise ConfigError(f"output attack name {name!r} is empty or already registered")
    _ATTACKS[name] = OutputAttack(name, family, score)


def available(family: str | None = None) -> tuple[str, ...]:
    """Registered names in registration order (likelihood first), optionally one family."""
    return tuple(n for n, a in _ATTACKS.items() if family is None or a.family == family)


def create(name: str) -> OutputAttack:
    try:
        return _ATTACKS[name]
    except KeyError:
        raise ConfigError(
            f"unknown output attack {name!r}; available: {', '.join(_ATTACKS)}"
        ) from None


def _likelihood(name: str) -> Callable[[OutputTarget], np.ndarray]:
    return lambda target: target.likelihood_scores()[name]


def _generation(name: str) -> Callable[[OutputTarget], np.ndarray]:
    return lambda target: target.probe().scores[name]


for _name in LIKELIHOOD_ATTACKS:
    register(_name, "likelihood", _likelihood(_name))
for _name in GENERATION_ATTACKS:
    register(_name, "generation", _generation(_name))
