"""Membership attacks on a tiny GPT-2 that really memorised planted canaries.

The scenario (attacks/targets/canary_lm.py) trains a base model on public text, then
fine-tunes LoRA adapters on private text with canaries planted by fair coins: plainly
(150 epochs, memorised) and with Opacus DP-SGD (epsilon about 6). Both directions are
asserted: attacks find members where the model memorised them, and find nothing on the
base model (no member ever seen) or through DP.
"""

from __future__ import annotations

import math

import pytest

from fedveil.attacks.output.canaries import CanaryConfig
from fedveil.attacks.output.empirical_epsilon import audit
from fedveil.attacks.output.generation import ProbeConfig, generation_probe
from fedveil.attacks.output.generator import HFGenerator, SamplingConfig
from fedveil.attacks.output.language_model import LanguageModel
from fedveil.attacks.output.membership import (
    MembershipAuditConfig,
    MembershipReport,
    audit_membership,
)
from fedveil.attacks.output.metrics import BootstrapConfig, roc_auc, scores_by_label
from fedveil.attacks.targets.canary_lm import CanaryLMConfig, CanaryScenario, canary_scenario

ATTACKER = SamplingConfig(max_new_tokens=10, temperature=0.5)
AUDIT = MembershipAuditConfig(
    probe=ProbeConfig(n_samples=8), bootstrap=BootstrapConfig(200), exposure_candidates=64
)


@pytest.fixture(scope="module")
def scenario() -> CanaryScenario:
    return canary_scenario(CanaryLMConfig())


def _report(scenario: CanaryScenario, protection: str) -> MembershipReport:
    trained = scenario.released(protection)
    return audit_membership(
        scenario.registry,
        released=LanguageModel(trained.model, scenario.tokenizer),
        generate=HFGenerator(trained.model, scenario.tokenizer, ATTACKER),
        reference=LanguageModel(scenario.base, scenario.tokenizer),
        epsilon_claimed=trained.epsilon,
        delta=trained.delta,
        config=AUDIT,
    )


@pytest.fixture(scope="module")
def plain(scenario: CanaryScenario) -> MembershipReport:
    return _report(scenario, "none")


@pytest.fixture(scope="module")
def private(scenario: CanaryScenario) -> MembershipReport:
    return _report(scenario, "dp-sgd")


def test_generation_probe_detects_planted_canaries(plain: MembershipReport) -> None:
    samia = plain.outcomes["samia_rouge_l"].metrics
    assert samia.auc.value >= 0.8 and samia.auc.low > 0.5
    assert plain.probe is not None
    assert plain.probe.extraction_rate(members=True) >= 0.5
    assert plain.probe.extraction_rate(members=False) <= 0.05  # 1 in 10^4 by chance
    summary = plain.summary()
    assert "samia_rouge_l" in summary and "greedy extraction" in summary


def test_probe_on_the_base_model_is_at_chance(scenario: CanaryScenario) -> None:
    # The base model never saw a canary: the same probe must not "detect" members, which
    # also shows members and non-members are not separable by their distribution.
    probe = generation_probe(
        HFGenerator(scenario.base, scenario.tokenizer, ATTACKER), scenario.registry, AUDIT.probe
    )
    auc = roc_auc(*scores_by_label(probe.scores["samia_rouge_l"], probe.labels))
    assert 0.3 < auc < 0.7
    assert probe.extraction_rate(members=True) == 0.0


def test_likelihood_attacks_detect_members(plain: MembershipReport) -> None:
    assert plain.outcomes["reference"].metrics.auc.value >= 0.9
    assert plain.outcomes["loss"].metrics.auc.value >= 0.8
    assert plain.outcomes["reference"].metrics.tpr_at_1pct_fpr.value >= 0.3


def test_exposure_of_members_far_above_non_members(plain: MembershipReport) -> None:
    assert plain.mean_exposure(True) > plain.mean_exposure(False) + 5
    assert plain.mean_exposure(False) < 3  # a random secret sits mid-pack: ~1 bit


def test_dp_sgd_lowers_the_attacks_auc(plain: MembershipReport, private: MembershipReport) -> None:
    for attack in ("samia_rouge_l", "reference", "loss"):
        before = plain.outcomes[attack].metrics.auc.value
        after = private.outcomes[attack].metrics.auc.value
        assert after < before - 0.2, attack
        assert after < 0.75, attack
    assert private.probe is not None and private.probe.extraction_rate() == 0.0
    assert abs(private.mean_exposure(True) - private.mean_exposure(False)) < 2


def test_audit_upholds_the_dp_claim_and_refutes_a_false_one(
    plain: MembershipReport, private: MembershipReport
) -> None:
    assert 1 < private.epsilon_claimed < 20  # the accountant's answer for this run
    for outcome in private.outcomes.values():
        assert outcome.verdict.passed, outcome.verdict.summary()
    assert math.isinf(plain.epsilon_claimed)
    # Claiming epsilon 0.5 for the memorising run is refuted by the same canaries.
    reference = plain.outcomes["reference"]
    verdict = audit(reference.scores, plain.labels, epsilon_claimed=0.5, delta=1e-5)
    assert not verdict.passed and verdict.epsilon_lower_bound > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_other_seeds_same_conclusions(seed: int) -> None:
    scenario = canary_scenario(CanaryLMConfig(canaries=CanaryConfig(seed=seed), seed=seed))
    plain, private = _report(scenario, "none"), _report(scenario, "dp-sgd")
    assert plain.outcomes["samia_rouge_l"].metrics.auc.value >= 0.8
    assert private.outcomes["samia_rouge_l"].metrics.auc.value < 0.7
    assert all(o.verdict.passed for o in private.outcomes.values())
