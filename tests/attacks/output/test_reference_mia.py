"""RMIA and offline LiRA with reference models trained by the auditor.

Both directions: on the model fine-tuned with the member canaries the calibrated attacks
find them at least as well as LOSS; on the base model, and on a model fine-tuned by the
same recipe that never saw a member, they find nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedveil.attacks.output.language_model import LanguageModel
from fedveil.attacks.output.likelihood import LikelihoodConfig
from fedveil.attacks.output.metrics import roc_auc, scores_by_label, tpr_at_fpr
from fedveil.attacks.output.reference_mia import (
    REFERENCE_MIA_ATTACKS,
    ReferenceMIAConfig,
    ReferenceModels,
    attach_references,
    has_references,
    lira_offline_from_loglik,
    lira_offline_score,
    population_canaries,
    reference_texts,
    rmia_from_loglik,
    rmia_score,
    train_reference_models,
)
from fedveil.attacks.output.target import OutputTarget
from fedveil.attacks.targets.canary_lm import CanaryLMConfig, CanaryScenario, canary_scenario
from fedveil.errors import ConfigError

SCORES = {"rmia": rmia_score, "lira_offline": lira_offline_score}


def test_rmia_by_hand() -> None:
    # Two references; x0 gained 1 nat over them, x1 none; population z gained 0 and 2.
    refs_x = np.log(np.array([[0.2, 0.3], [0.2, 0.3]]))
    target_x = refs_x[0] + np.array([1.0, 0.0])
    refs_z = np.log(np.array([[0.1, 0.4], [0.1, 0.4]]))
    target_z = refs_z[0] + np.array([0.0, 2.0])
    scores = rmia_from_loglik(target_x, refs_x, target_z, refs_z)
    assert scores == pytest.approx([0.5, 0.0])
    # gamma e^0.5: x0 beats z0 by 1 nat > 0.5, still not z1
    high = rmia_from_loglik(target_x, refs_x, target_z, refs_z, gamma=float(np.exp(0.5)))
    assert high == pytest.approx([0.5, 0.0])
    # offline a < 1 flattens Pr(x) towards 1/2 but keeps a gain a gain
    flat = rmia_from_loglik(target_x, refs_x, target_z, refs_z, offline_a=0.0)
    assert flat[0] >= flat[1]


def test_lira_by_hand() -> None:
    refs = np.array([[-2.0, -1.0], [-4.0, -1.0]])
    target = np.array([-1.0, -1.0])
    pooled = np.sqrt((1 + 1 + 0 + 0) / 2)
    assert lira_offline_from_loglik(target, refs) == pytest.approx([2 / pooled, 0.0])
    per = lira_offline_from_loglik(target, refs, variance="per_example")
    assert per[0] == pytest.approx(2 / np.sqrt(2)) and per[1] == pytest.approx(0.0)
    one = lira_offline_from_loglik(target, refs[:1])
    assert one == pytest.approx([1.0, 0.0])


def test_config_is_checked() -> None:
    for bad in ({"gamma": 0}, {"offline_a": 2}, {"n_population": 0}, {"variance": "x"}):
        with pytest.raises(ConfigError):
            ReferenceMIAConfig(**bad)
    with pytest.raises(ConfigError):
        ReferenceModels(())


@pytest.fixture(scope="module")
def scenario() -> CanaryScenario:
    return canary_scenario(CanaryLMConfig())


@pytest.fixture(scope="module")
def references(scenario: CanaryScenario) -> ReferenceModels:
    return train_reference_models(scenario, 2)


def _target(scenario: CanaryScenario, model: LanguageModel, scope: str = "text") -> OutputTarget:
    return OutputTarget(
        scenario.registry,
        released=model,
        reference=LanguageModel(scenario.base, scenario.tokenizer),
        likelihood=LikelihoodConfig(scope=scope),
    )


def _auc(scenario: CanaryScenario, scores: np.ndarray) -> float:
    return roc_auc(*scores_by_label(scores, scenario.registry.labels()))


def test_population_and_reference_data_hold_no_secret(scenario: CanaryScenario) -> None:
    population = population_canaries(scenario.registry, 200)
    assert len(population) == 200 and not any(z.member for z in population)
    assert {z.format for z in population} == set(scenario.registry.formats)
    secrets = {c.text for c in scenario.registry}
    texts = reference_texts(scenario, 0)
    assert not secrets & set(texts)
    assert set(scenario.heldout_texts) <= set(texts)


@pytest.mark.parametrize("scope", ["text", "secret"])
def test_reference_attacks_find_members(
    scenario: CanaryScenario, references: ReferenceModels, scope: str
) -> None:
    released = LanguageModel(scenario.released("none").model, scenario.tokenizer)
    target = attach_references(_target(scenario, released, scope), references)
    loss = _auc(scenario, target.likelihood_scores()["loss"])
    for name in REFERENCE_MIA_ATTACKS:
        scores = SCORES[name](target)
        auc = _auc(scenario, scores)
        assert auc >= max(0.9, loss - 0.03), (name, auc, loss)
        assert tpr_at_fpr(*scores_by_label(scores, scenario.registry.labels()), 0.01) >= 0.3


def test_nothing_found_on_the_base_model(
    scenario: CanaryScenario, references: ReferenceModels
) -> None:
    base = LanguageModel(scenario.base, scenario.tokenizer)
    target = attach_references(_target(scenario, base), references)
    for name in REFERENCE_MIA_ATTACKS:
        assert 0.3 < _auc(scenario, SCORES[name](target)) < 0.7, name


def test_nothing_found_on_a_model_that_never_saw_a_member(
    scenario: CanaryScenario, references: ReferenceModels
) -> None:
    # Fine-tuned by the same recipe on the same kind of data, only without any secret.
    (outsider,) = train_reference_models(scenario, 1, seed=900).models
    target = attach_references(_target(scenario, outsider), references)
    for name in REFERENCE_MIA_ATTACKS:
        assert 0.3 < _auc(scenario, SCORES[name](target)) < 0.7, name


def test_base_model_is_the_fallback_reference(scenario: CanaryScenario) -> None:
    released = LanguageModel(scenario.released("none").model, scenario.tokenizer)
    target = _target(scenario, released)
    assert has_references(target)
    assert _auc(scenario, rmia_score(target)) >= 0.9
    bare = OutputTarget(scenario.registry, released=released)
    assert not has_references(bare)
    with pytest.raises(ConfigError):
        rmia_score(bare)
