"""Per-example scores with the current global model (learner.quality.scoring).

The claim, both ways: on a small trained federation where one party has 30% of its
captions in another domain's words, the prompt contrast ranks the corrupted examples
above the clean ones far better than chance, and a random scorer does not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedveil.errors import ConfigError
from fedveil.learner.data import CityDataConfig, make_party_datasets
from fedveil.learner.data.concepts import DOMAIN_PROMPTS, Domain
from fedveil.learner.federated_local import CaptionerRecipe, make_parties, run_federated
from fedveil.learner.lora import LoraSettings
from fedveil.learner.models import load_model
from fedveil.learner.quality import (
    corrupt_dataset,
    example_losses,
    party_losses,
    party_prompt_contrast,
    score_examples,
    separation_auc,
)
from fedveil.learner.training import TrainConfig, batch_loss
from tests.helpers.captioner_fixtures import fast_base_dir, tiny_base

OTHERS = [DOMAIN_PROMPTS[Domain.RESIDENTIAL], DOMAIN_PROMPTS[Domain.URBAN]]


def test_separation_auc_counts_pairs_and_ties() -> None:
    flags = np.array([True, True, False, False])
    assert separation_auc(np.array([3.0, 4.0, 1.0, 2.0]), flags) == 1.0
    assert separation_auc(np.array([1.0, 2.0, 3.0, 4.0]), flags) == 0.0
    assert separation_auc(np.ones(4), flags) == 0.5
    with pytest.raises(ConfigError, match="both"):
        separation_auc(np.ones(4), np.zeros(4, dtype=bool))
    with pytest.raises(ConfigError, match="scores"):
        separation_auc(np.ones(3), flags)


def test_example_losses_are_each_rows_own_training_loss() -> None:
    recipe = CaptionerRecipe(
        rounds=1,
        lora=LoraSettings(rank=2, alpha=4),
        data=CityDataConfig(samples_per_party=6, test_samples=2, image_size=32),
    )
    party = make_parties(tiny_base(), make_party_datasets(recipe.data), recipe)[0]
    scores = party_losses(party)
    party.model.eval()
    with torch.no_grad():
        single = [
            float(batch_loss(party.model, party.data.rows(torch.tensor([i])))) for i in range(6)
        ]
    np.testing.assert_allclose(scores, single, rtol=1e-5)
    np.testing.assert_allclose(
        example_losses(party.model, party.data, batch_size=4), scores, rtol=1e-5
    )
    with pytest.raises(ConfigError, match="other prompt"):
        party_prompt_contrast(party, [])
    with pytest.raises(ConfigError, match="single token"):
        party_prompt_contrast(party, ["<residential> <urban>"])
    with pytest.raises(ConfigError, match="scorer"):
        score_examples(party, "oracle")


def test_prompt_contrast_finds_wrong_domain_captions_and_a_random_scorer_does_not() -> None:
    """Weak base model, 48 examples per party, 3 rounds with the corrupted party in."""
    recipe = CaptionerRecipe(
        rounds=3,
        train=TrainConfig(epochs=1, batch_size=16, learning_rate=1e-2, progress=False),
        data=CityDataConfig(samples_per_party=48, test_samples=4),
    )
    datasets = make_party_datasets(recipe.data)
    corruption = corrupt_dataset(datasets["energy"], 0.3, "wrong-domain")
    datasets["energy"] = corruption.dataset
    cohort = make_parties(load_model(fast_base_dir()), datasets, recipe)
    run_federated(cohort, recipe.rounds, progress=False)
    bad = corruption.mask()
    assert separation_auc(party_prompt_contrast(cohort[0], OTHERS), bad) > 0.8
    # the plain loss does not: other parties' words are easy for the global model
    assert separation_auc(party_losses(cohort[0]), bad) < 0.5
    random = np.random.default_rng(0)
    aucs = [separation_auc(random.random(len(bad)), bad) for _ in range(200)]
    assert abs(float(np.mean(aucs)) - 0.5) < 0.02 and float(np.quantile(aucs, 0.99)) < 0.8
