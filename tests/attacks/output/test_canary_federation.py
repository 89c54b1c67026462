"""The model a federation releases, attacked through its outputs, under each protection.

Three parties fine-tune LoRA adapters by FedAvg (attacks/targets/canary_federation.py);
party 0's texts carry canaries planted by fair coins, and the round means are computed
by the real SecAgg+ / client-DP rounds (fedveil.runners.aggregators). Both directions are
asserted: through secure aggregation alone the generation-only attacker still finds
party 0's members (secagg hides updates, not what the model learnt) and the filter
stack stops verbatim emission; with DP-SGD or client-level DP the attack falls to chance.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedveil.attacks import registry as attack_registry
from fedveil.attacks.measure.output_leakage import OutputLeakageSettings, downsampled_roc
from fedveil.attacks.output.canaries import CanaryConfig
from fedveil.attacks.output.filters import (
    PII_PATTERNS,
    BlockList,
    baseline,
    measure_filter,
    standard_stacks,
)
from fedveil.attacks.output.generation import ProbeConfig
from fedveil.attacks.output.generator import HFGenerator, SamplingConfig
from fedveil.attacks.output.metrics import roc_auc, scores_by_label
from fedveil.attacks.output.target import OutputTarget
from fedveil.attacks.protections import Aggregators, DPSettings, Protection
from fedveil.attacks.targets.canary_federation import FederationSettings, release
from fedveil.attacks.targets.canary_lm import (
    CanaryLMConfig,
    CanaryScenario,
    TrainedModel,
    canary_scenario,
)
from fedveil.errors import ConfigError
from fedveil.runners.aggregators import real_aggregators

ATTACKER = SamplingConfig(max_new_tokens=10, temperature=0.5)
PROBE = ProbeConfig(n_samples=8)
# The benchmark's quick federation (fewer rounds memorise too little to test reliably).
SMALL = FederationSettings.quick()


@pytest.fixture(scope="module")
def scenario() -> CanaryScenario:
    return canary_scenario(CanaryLMConfig(canaries=CanaryConfig(n_canaries=48)))


@pytest.fixture(scope="module")
def aggregators() -> Aggregators:
    return real_aggregators()


@pytest.fixture(scope="module")
def secagg_model(scenario: CanaryScenario, aggregators: Aggregators) -> TrainedModel:
    return release("secagg", scenario, aggregators, SMALL)


def _probe_auc(scenario: CanaryScenario, trained: TrainedModel, attack: str) -> float:
    generate = HFGenerator(trained.model, scenario.tokenizer, ATTACKER)
    target = OutputTarget(scenario.registry, generate=generate, probe_config=PROBE)
    scores = attack_registry.output_attack(attack).score(target)
    return roc_auc(*scores_by_label(scores, scenario.registry.labels()))


def test_secagg_federation_leaks_party0_canaries_to_generation_probe(
    scenario: CanaryScenario, secagg_model: TrainedModel
) -> None:
    assert secagg_model.epsilon == float("inf") and secagg_model.train_seconds > 0
    assert _probe_auc(scenario, secagg_model, "samia_rouge_l") > 0.7


def test_filter_stack_drives_verbatim_emission_to_zero(
    scenario: CanaryScenario, secagg_model: TrainedModel
) -> None:
    generator = HFGenerator(secagg_model.model, scenario.tokenizer, ATTACKER)
    registry = scenario.registry
    benign = [" ".join(t.split()[:3]) for t in scenario.heldout_texts[:16]]
    block_list = BlockList.from_registry(registry, pii=tuple(PII_PATTERNS))
    stack = standard_stacks(scenario.tokenizer, block_list, private_texts=scenario.private_texts)[
        "all"
    ]
    before = baseline(generator, registry, benign, PROBE)
    report = measure_filter(generator, stack, registry, benign, before, PROBE)
    assert report.verbatim_before > 0  # without the filter the federation's model leaks
    assert report.verbatim_after == 0 and report.extraction_rate_after == 0


def test_dp_sgd_federation_lowers_auc(
    scenario: CanaryScenario, aggregators: Aggregators, secagg_model: TrainedModel
) -> None:
    private = release("dp-sgd", scenario, aggregators, SMALL)
    assert 0 < private.epsilon < 20 and private.events
    plain_auc = _probe_auc(scenario, secagg_model, "samia_rouge_l")
    dp_auc = _probe_auc(scenario, private, "samia_rouge_l")
    assert dp_auc < 0.65 and dp_auc < plain_auc - 0.1


@pytest.mark.slow
def test_client_dp_federation_lowers_auc(
    scenario: CanaryScenario, aggregators: Aggregators, secagg_model: TrainedModel
) -> None:
    private = release("secagg+client-dp", scenario, aggregators, SMALL)
    # held to the record-level claim (a record of party 0: sensitivity 2C, so z / 2)
    dp = SMALL.client_dp
    record_level = DPSettings(dp.clip_norm, dp.noise_multiplier / 2, dp.delta)
    assert private.epsilon == pytest.approx(record_level.epsilon(steps=SMALL.rounds))
    assert _probe_auc(scenario, private, "samia_rouge_l") < 0.65


def test_release_is_cached_per_protection_and_settings(
    scenario: CanaryScenario, aggregators: Aggregators, secagg_model: TrainedModel
) -> None:
    assert release("secagg", scenario, aggregators, SMALL) is secagg_model
    with pytest.raises(ConfigError, match="unknown protection 'tee'"):
        release("tee", scenario, aggregators, SMALL)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("parties", 1),
        ("rounds", 0),
        ("local_epochs", 2.5),
        ("lr", -1.0),
        ("dp_sgd_lr", float("nan")),
        ("batch_size", True),
        ("client_dp", 1.0),
    ],
)
def test_settings_validation_names_the_bad_value(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"FederationSettings.{field} .*{value!r}"):
        dataclasses.replace(FederationSettings(), **{field: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="clip_norm"):
        FederationSettings(client_dp=DPSettings(clip_norm=0.0))


def test_output_leakage_settings_validation() -> None:
    assert OutputLeakageSettings.full().n_samples > OutputLeakageSettings.quick().n_samples
    with pytest.raises(ConfigError, match="bootstrap must be an int >= 10, got 3"):
        OutputLeakageSettings(bootstrap=3)
    with pytest.raises(ConfigError, match="evasions=True needs filters=True"):
        OutputLeakageSettings(filters=False)


def test_output_registry_names_and_errors(scenario: CanaryScenario) -> None:
    assert attack_registry.available("likelihood") == (
        "loss",
        "zlib",
        "min_k",
        "min_k_pp",
        "reference",
        "rmia",
        "lira_offline",
    )
    assert attack_registry.available("generation") == (
        "samia_rouge_l",
        "samia_ngram",
        "samples_exact",
    )
    with pytest.raises(ConfigError, match="unknown output attack 'nope'"):
        attack_registry.output_attack("nope")
    with pytest.raises(ConfigError, match="already registered"):
        attack_registry.register("loss", "likelihood", lambda t: np.zeros(1))
    with pytest.raises(ConfigError, match="likelihood attacks need"):
        OutputTarget(scenario.registry).likelihood_scores()


def test_downsampled_roc_keeps_low_fpr_region() -> None:
    rng = np.random.default_rng(0)
    members, non_members = rng.normal(1, 1, 500), rng.normal(0, 1, 500)
    roc = downsampled_roc(members, non_members)
    fpr, tpr = np.array(roc.fpr), np.array(roc.tpr)
    assert len(fpr) <= 64 and fpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    # Dense where the log-log plot needs it: every attainable FPR below 1% is kept.
    assert fpr[fpr > 0].min() == pytest.approx(1 / 500)
    assert (fpr[fpr > 0] < 0.01).sum() == 4


def test_the_client_dp_claim_is_for_one_record_of_party_0() -> None:
    """The output attacks test one canary record of party 0 in or out. Client-level DP is
    calibrated for a whole client (sensitivity C); a record moves party 0's clipped update
    by up to 2C, so the claim the attack is held to is that of noise multiplier z / 2."""
    from fedveil.attacks.targets.canary_federation import _claim

    settings = FederationSettings()
    dp = settings.client_dp
    epsilon, delta, (event,) = _claim(Protection.SECAGG_CLIENT_DP, settings, [], 1e-5)
    client_level = dp.epsilon(steps=settings.rounds)
    assert event.noise_multiplier == dp.noise_multiplier / 2 and delta == dp.delta
    assert epsilon > 2 * client_level  # the client-level number would overstate the privacy
    assert epsilon == pytest.approx(
        DPSettings(dp.clip_norm, dp.noise_multiplier / 2, dp.delta).epsilon(settings.rounds)
    )
