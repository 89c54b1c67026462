"""RMIA and offline LiRA registered in the likelihood family, fed by reference models
the auditor trains by the released model's own federation recipe.

Fast: a one-round federation (the recipe and the plumbing, not the attack's strength;
tests/attacks/audit/test_reference_mia_audit.py judges that on the quick federation).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedveil.attacks import registry as attack_registry
from fedveil.attacks.measure.output_leakage import OutputLeakageSettings, output_leakage_records
from fedveil.attacks.measure.records import OutputRecord
from fedveil.attacks.output.language_model import LanguageModel
from fedveil.attacks.output.likelihood import LIKELIHOOD_ATTACKS
from fedveil.attacks.output.reference_mia import REFERENCE_MIA_ATTACKS
from fedveil.attacks.output.references import (
    auditor_party_texts,
    clear_cache,
    references_for,
)
from fedveil.attacks.protections import Aggregators
from fedveil.attacks.targets.canary_federation import (
    FederationSettings,
    federate_texts,
    federation_of,
    federation_scenario,
    release,
)
from fedveil.attacks.targets.canary_lm import CanaryScenario
from fedveil.errors import ConfigError
from fedveil.runners.aggregators import real_aggregators

TINY = FederationSettings(rounds=1, local_epochs=1, dp_sgd_local_epochs=1)
CHEAP = OutputLeakageSettings(
    n_samples=1, exposure_candidates=8, bootstrap=10, filters=False, evasions=False
)


@pytest.fixture(scope="module")
def scenario() -> CanaryScenario:
    return federation_scenario(True)


@pytest.fixture(scope="module")
def aggregators() -> Aggregators:
    return real_aggregators()


def _likelihood(records: list[OutputRecord]) -> dict[str, OutputRecord]:
    return {r.attack: r for r in records if r.attack_family == "likelihood"}


def test_the_likelihood_family_lists_the_calibrated_attacks() -> None:
    names = attack_registry.available("likelihood")
    assert names == (*LIKELIHOOD_ATTACKS, *REFERENCE_MIA_ATTACKS)
    for name in REFERENCE_MIA_ATTACKS:
        assert attack_registry.output_attack(name).family is attack_registry.Family.LIKELIHOOD


def test_reference_count_is_checked() -> None:
    assert OutputLeakageSettings.quick().reference_models == 2
    assert OutputLeakageSettings.full().reference_models == 4
    for bad in (-1, True, 1.5):
        with pytest.raises(ConfigError, match="reference_models must be an int >= 0"):
            OutputLeakageSettings(reference_models=bad)  # type: ignore[arg-type]


def test_reference_federations_hold_no_secret(scenario: CanaryScenario) -> None:
    others = auditor_party_texts(scenario, TINY, seed=1_000_003)
    assert len(others) == TINY.parties - 1
    flat = [t for party in others for t in party]
    assert all(len(party) == scenario.config.n_private for party in others)
    assert not set(flat) & {*scenario.public_texts, *scenario.private_texts}
    assert not set(flat) & set(scenario.heldout_texts)
    assert not set(flat) & {c.text for c in scenario.registry}
    with pytest.raises(ConfigError, match="2 parties' texts for a federation of 3"):
        federate_texts(others, scenario, TINY)


def test_k0_is_the_old_attack_set_and_k_adds_rmia_and_lira(
    scenario: CanaryScenario, aggregators: Aggregators
) -> None:
    clear_cache()
    trained = release("none", scenario, aggregators, TINY)
    assert federation_of(scenario, trained) == TINY
    old = _likelihood(
        output_leakage_records(scenario, trained, dataclasses.replace(CHEAP, reference_models=0))
    )
    assert tuple(old) == LIKELIHOOD_ATTACKS
    assert old["loss"].details.params["reference_models"] == 0
    new = _likelihood(
        output_leakage_records(scenario, trained, dataclasses.replace(CHEAP, reference_models=1))
    )
    assert tuple(new) == (*LIKELIHOOD_ATTACKS, *REFERENCE_MIA_ATTACKS)
    params = new["rmia"].details.params
    assert params["reference_models"] == 1 and params["reference_recipe"] == "federation"
    assert isinstance(params["reference_seconds"], float) and params["reference_seconds"] > 0
    for name in REFERENCE_MIA_ATTACKS:
        assert 0 <= new[name].auc <= 1 and new[name].auc_low <= new[name].auc_high
        per_record = params["per_record"]
        assert isinstance(per_record, dict) and name in per_record["scores"]
    # The base-model attacks are untouched by the references: same scores, same AUC.
    for name in LIKELIHOOD_ATTACKS:
        assert new[name].auc == old[name].auc


def test_references_are_trained_once_and_shared_by_the_rows(
    scenario: CanaryScenario, aggregators: Aggregators
) -> None:
    clear_cache()
    none = release("none", scenario, aggregators, TINY)
    dp = release("dp-sgd", scenario, aggregators, TINY)
    first = references_for(scenario, none, 1)
    again = references_for(scenario, dp, 1)  # another row, the same recipe and seed
    assert first.seconds > 0 and again.seconds == 0
    assert again.references is first.references
    # The models are the plain federation's: they moved off the base model.
    texts = [c.text for c in scenario.registry][:4]
    tuned = [s.logprobs.mean() for s in first.references.models[0].score(texts)]
    base = [
        s.logprobs.mean() for s in LanguageModel(scenario.base, scenario.tokenizer).score(texts)
    ]
    assert np.isfinite(tuned).all() and not np.allclose(tuned, base)
    other = references_for(scenario, none, 2)  # another K: another set
    assert other.seconds > 0 and len(other.references.models) == 2
