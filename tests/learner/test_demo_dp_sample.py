"""Sample-level DP-SGD in a captioner party, and `fedveil demo --dp sample` (slow).

Why a tiny captioner: the Opacus path (per-sample losses, hooks on the LoRA layers of
ViT and GPT-2, the ledger) is the same at any size; the tiny build trains in a second.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fedveil.demo.run import DemoOptions, run_demo
from fedveil.errors import ConfigError, PrivacyBudgetExceededError
from fedveil.learner.data.concepts import DOMAINS
from fedveil.learner.data.datasets import CityDataConfig, make_party_datasets
from fedveil.learner.federated_local import CaptionerRecipe, make_parties
from fedveil.learner.lora.codec import adapter_vector
from fedveil.learner.training.dp_loop import DPTrainConfig, per_sample_caption_loss
from fedveil.learner.training.party import Party
from fedveil.secagg.modes import DPKind
from tests.helpers.captioner_fixtures import tiny_base

ROUNDS = 2


def _party(epsilon: float = 8.0, rounds: int = ROUNDS) -> Party:
    recipe = CaptionerRecipe(
        rounds=rounds,
        data=CityDataConfig(samples_per_party=40),
        dp=DPTrainConfig(clip_norm=0.5, epsilon=epsilon, delta=1e-5, rounds=rounds),
    )
    recipe = dataclasses.replace(
        recipe, train=dataclasses.replace(recipe.train, batch_size=8, progress=False)
    )
    datasets = make_party_datasets(recipe.data, DOMAINS[:1])
    return make_parties(tiny_base(), datasets, recipe)[0]


def _snapshot(party: Party) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in party.model.named_parameters()}


def test_dp_rounds_train_only_lora_b_and_spend_within_the_budget() -> None:
    party = _party()
    before = _snapshot(party)
    update = party.train_round(0)
    trainer = party.dp_trainer
    assert trainer is not None
    assert update.stats.steps == trainer.steps_per_round == 5  # ceil(40 / 8)
    assert trainer.sample_rate == pytest.approx(1 / 5)
    assert trainer.noise_multiplier > 0
    changed = {
        n for n, p in party.model.named_parameters() if not torch.equal(before[n], p.detach())
    }
    trainable = {n for n, p in party.model.named_parameters() if p.requires_grad}
    assert changed and changed == trainable  # every trainable parameter moved, nothing else
    assert all("lora_B" in n for n in trainable)  # FFA-LoRA: A frozen, base frozen
    assert np.linalg.norm(update.vector) > 0
    first = trainer.epsilon()
    assert 0 < first < 8.0
    party.train_round(1)
    assert first < trainer.epsilon() <= 8.0
    assert trainer.ledger.rounds == ROUNDS


def test_the_ledger_refuses_a_round_past_the_budget_and_leaves_the_adapter() -> None:
    party = _party()
    for r in range(ROUNDS):  # calibrated for exactly ROUNDS rounds
        party.train_round(r)
    trainer = party.dp_trainer
    assert trainer is not None
    spent, steps = trainer.epsilon(), trainer.session.steps
    adapter = adapter_vector(party.model, party.layout).copy()
    with pytest.raises(PrivacyBudgetExceededError, match="budget"):
        party.train_round(ROUNDS)
    assert trainer.epsilon() == spent and trainer.session.steps == steps
    assert trainer.ledger.rounds == ROUNDS
    np.testing.assert_array_equal(adapter_vector(party.model, party.layout), adapter)


def test_per_sample_grads_exist_for_lora_params_only() -> None:
    party = _party()
    trainer = party.dp_trainer
    assert trainer is not None
    session = trainer.session
    session.model.train()
    batch = party.data.rows(torch.arange(4))
    session.optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Full backward hook.*")
        per_sample_caption_loss(session.model, batch).mean().backward()
    for name, param in party.model.named_parameters():
        sample_grads = getattr(param, "grad_sample", None)
        if param.requires_grad:
            assert sample_grads is not None, name
            assert sample_grads.shape == (4, *param.shape), name
        else:
            assert sample_grads is None and param.grad is None, name


def test_each_samples_loss_depends_on_that_sample_only() -> None:
    party = _party()
    party.model.eval()  # no dropout: compare exact forward passes
    with torch.no_grad():
        together = per_sample_caption_loss(party.model, party.data.rows(torch.arange(6)))
        alone = torch.stack(
            [
                per_sample_caption_loss(party.model, party.data.rows(torch.tensor([i])))[0]
                for i in range(6)
            ]
        )
    assert together.shape == (6,)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_the_dp_batch_size_sets_the_sampling_rate_and_the_steps() -> None:
    recipe = CaptionerRecipe(
        rounds=1,
        data=CityDataConfig(samples_per_party=40),
        dp=DPTrainConfig(epsilon=8.0, rounds=1, batch_size=20, learning_rate=1e-3),
    )
    datasets = make_party_datasets(recipe.data, DOMAINS[:1])
    party = make_parties(tiny_base(), datasets, recipe)[0]
    trainer = party.dp_trainer
    assert trainer is not None
    assert trainer.steps_per_round == 2 and trainer.sample_rate == pytest.approx(0.5)
    assert trainer.session.optimizer.original_optimizer.param_groups[0]["lr"] == 1e-3
    assert party.train_round(0).stats.steps == 2
    assert 0 < trainer.epsilon() <= 8.0


@pytest.mark.parametrize(
    "bad",
    [
        {"clip_norm": 0.0},
        {"epsilon": -1.0},
        {"delta": 1.5},
        {"rounds": 0},
        {"accountant": "x"},
        {"batch_size": 0},
        {"learning_rate": 0.0},
    ],
)
def test_bad_dp_train_configs_are_refused(bad: dict) -> None:
    with pytest.raises((ConfigError, ValueError)):
        DPTrainConfig(**bad)


def test_sample_dp_is_allowed_with_any_service_mode_and_reaches_the_recipe() -> None:
    for mode in ("secagg", "ckks", "plaintext"):
        recipe = DemoOptions(mode=mode, dp="sample", epsilon=4.0, rounds=5).recipe()
        assert recipe.dp is not None
        assert (recipe.dp.epsilon, recipe.dp.delta, recipe.dp.rounds) == (4.0, 1e-5, 5)
        assert recipe.dp.clip_norm == 1.0 and recipe.dp.noise_multiplier is None
    assert DemoOptions().recipe().dp is None


@pytest.mark.slow
def test_the_sample_dp_demo_stays_within_epsilon(tmp_path: Path) -> None:
    report = run_demo(
        DemoOptions(
            dp="sample",
            epsilon=8.0,
            adapter_dir=tmp_path / "adapter",
            json_out=tmp_path / "report.json",
            model_dir=tmp_path / "model",
            progress=False,
        )
    )
    assert json.loads((tmp_path / "report.json").read_text())["epsilon"] == report.privacy.epsilon
    assert 0 < report.privacy.epsilon <= 8.0
    assert {r.name for r in report.parties if r.dp is not None} == {r.name for r in report.parties}
    assert report.privacy.epsilon == max(r.dp.epsilon for r in report.parties)
    assert report.privacy.delta == 1e-5 and report.privacy.clip_norm == 1.0
    assert report.privacy.noise_multiplier > 0
    assert report.privacy.kind is DPKind.SAMPLE
    steps = math.ceil(CityDataConfig().samples_per_party / report.privacy.batch_size)
    assert {r.name: r.dp.steps for r in report.parties if r.dp is not None} == {
        r.name: steps * report.rounds for r in report.parties
    }
