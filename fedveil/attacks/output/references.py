"""The auditor's reference models for RMIA and offline LiRA, trained by the released
model's own recipe and shared by every protection row.

Why the federation's recipe: a reference model calibrates only as well as its training
resembles the target's (both papers assume the auditor knows the recipe), and the audit
releases a FedAvg model of `parties` parties over `rounds` x `local_epochs`, not a single
party's fine-tune. So each OUT model is the same plain federation (same
FederationSettings, same LoRA, same learning-rate decay, through
attacks.targets.canary_federation.federate_texts) on data the auditor holds without any
canary secret: party 0's texts are `reference_texts` (the held-out texts plus the
canaries' subjects with fresh random secrets), the other parties' are fresh city
sentences drawn by the auditor (a user's scenario: the user's own pool, which holds no
canary). A release that did not come from a federation (a single party's fine-tune) gets
references by the single-party recipe (`train_reference_models`).

Why unprotected, whatever row is audited: RMIA's offline setting asks how likely x is
under models that never saw it; the protection is what is audited, so the references
must not depend on it (one set judges every row with the same attack), and a DP-trained
OUT model barely moves from the base model, which the family's `reference` attack
already uses as its calibration. On a DP row the references are therefore stronger
learners than the target; that can only make RMIA / LiRA weaker there, never a false
leak (non-members stay non-members for every model).

Why a cache in the process: reference models depend on the scenario, the federation
settings and the seed, not on the protection row, and the audit's output lane runs all
rows in one process, so they are trained once per (scenario, settings, count, seed) and
reused (a later audit in another process trains them again; they are not stored on disk
because the job store keeps records, not models).
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Hashable

from fedveil.attacks.output.language_model import LanguageModel
from fedveil.attacks.output.reference_mia import (
    ReferenceMIAConfig,
    ReferenceModels,
    reference_texts,
    train_reference_models,
)
from fedveil.attacks.targets.canary_federation import (
    FederationSettings,
    federate_texts,
    federation_of,
)
from fedveil.attacks.targets.canary_lm import CanaryScenario, TrainedModel
from fedveil.attacks.targets.tiny_lm import sentences
from fedveil.errors import ConfigError

SEED_STRIDE = 1_000_003
"""Reference i trains with the federation's seed + (i + 1) * SEED_STRIDE: its own
initialisation and batch order, never the target's (the target's run uses seed +
1000 * round + party, far below the stride for any audit's rounds)."""

CACHE_SIZE = 2
"""Reference sets kept per process (an audit uses one)."""


@dataclasses.dataclass(frozen=True)
class TrainedReferences:
    """The reference set and what it cost (seconds of training, 0 when cached)."""

    references: ReferenceModels
    seconds: float
    recipe: str  # "federation" or "single-party"


_CACHE: OrderedDict[Hashable, ReferenceModels] = OrderedDict()


def auditor_party_texts(
    scenario: CanaryScenario, settings: FederationSettings, seed: int
) -> list[list[str]]:
    """The other parties' texts of one reference federation (parties 1..P-1).

    Built-in scenario: fresh city sentences from the auditor's own seeds, none of them
    public, private or held out. A user's scenario: the user's pool shares, as the
    release uses (the team auditing its model holds them; they carry no canary).
    """
    if scenario.party_pool is not None:
        from fedveil.attacks.targets.canary_federation import party_texts

        return party_texts(scenario, settings)[1:]
    taken = {*scenario.public_texts, *scenario.private_texts, *scenario.heldout_texts}
    count = scenario.config.n_private
    out = []
    for party in range(1, settings.parties):
        drawn = sentences(4 * count, seed=seed + 7919 * party)
        fresh = [t for t in dict.fromkeys(drawn) if t not in taken][:count]
        if len(fresh) < count:
            raise ConfigError(f"could not draw {count} fresh reference texts for party {party}")
        taken |= set(fresh)
        out.append(fresh)
    return out


def federated_references(
    scenario: CanaryScenario,
    settings: FederationSettings,
    count: int,
    config: ReferenceMIAConfig | None = None,
) -> ReferenceModels:
    """`count` OUT models, each the plain federation of `settings` on auditor data."""
    if count < 1:
        raise ConfigError(f"reference model count must be >= 1, got {count}")
    models = []
    for i in range(count):
        seed = settings.seed + (i + 1) * SEED_STRIDE
        texts = [reference_texts(scenario, seed), *auditor_party_texts(scenario, settings, seed)]
        trained = federate_texts(texts, scenario, dataclasses.replace(settings, seed=seed))
        models.append(LanguageModel(trained.model, scenario.tokenizer))
    return ReferenceModels(tuple(models), config=config or ReferenceMIAConfig())


def _key(scenario: CanaryScenario, settings: FederationSettings | None, count: int) -> Hashable:
    # The protection-independent part of the recipe: the DP noise settings do not touch
    # a plain federation, so every row of one audit shares the key.
    default = FederationSettings()
    recipe = (
        None
        if settings is None
        else dataclasses.replace(settings, client_dp=default.client_dp, dp_sgd=default.dp_sgd)
    )
    canaries = tuple(c.text for c in scenario.registry)
    return (scenario.origin, scenario.config, canaries, len(scenario.heldout_texts), recipe, count)


def references_for(
    scenario: CanaryScenario, trained: TrainedModel, count: int
) -> TrainedReferences:
    """The reference set for a release of `scenario`: by the federation recipe that
    released `trained` (or the single-party recipe), trained once per process."""
    settings = federation_of(scenario, trained)
    recipe = "single-party" if settings is None else "federation"
    key = _key(scenario, settings, count)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return TrainedReferences(_CACHE[key], 0.0, recipe)
    start = time.perf_counter()
    if settings is None:
        references = train_reference_models(scenario, count, seed=scenario.config.seed + 100)
    else:
        references = federated_references(scenario, settings, count)
    _CACHE[key] = references
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return TrainedReferences(references, time.perf_counter() - start, recipe)


def clear_cache() -> None:
    """Forget the trained reference sets (tests that time a cold start)."""
    _CACHE.clear()
