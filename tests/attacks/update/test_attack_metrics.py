"""Metrics, figures, configs, registry and synthetic data of the attack suite.

These are the yardsticks every leakage figure is read with, so each is checked against
values worked out by hand, in both directions (a perfect and a useless reconstruction).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fedveil.attacks import registry
from fedveil.attacks.targets.shapes import shape_images
from fedveil.attacks.update.base import (
    AttackError,
    LocalTraining,
    ObservedUpdate,
    ParameterLayout,
    Reconstruction,
    Truth,
    UpdateKind,
)
from fedveil.attacks.update.dlg import DLGConfig
from fedveil.attacks.update.inverting_gradients import InvertingGradientsConfig
from fedveil.attacks.update.metrics import (
    grey_image,
    image_metrics,
    label_accuracy,
    match_images,
    psnr,
    save_grid,
    score,
    ssim,
    token_metrics,
)
from fedveil.attacks.update.text_recovery import TextRankingConfig, TextRecoveryConfig
from fedveil.errors import ConfigError


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return shape_images(4, seed=5)[0]


def test_psnr_known_values(images: torch.Tensor) -> None:
    shifted = (images + 0.1).clamp(max=10.0)  # MSE exactly 0.01 -> 20 dB
    assert torch.allclose(psnr(shifted, images), torch.full((4,), 20.0, dtype=torch.float64))
    assert float(psnr(images, images).min()) > 150  # identical: capped, not inf


def test_ssim_identical_is_one_and_grey_is_low(images: torch.Tensor) -> None:
    assert torch.allclose(ssim(images, images), torch.ones(4, dtype=torch.float64))
    assert float(ssim(grey_image(images), images).max()) < 0.5


def test_image_metrics_put_each_metric_next_to_its_baseline(images: torch.Tensor) -> None:
    perfect = image_metrics(images.flip(0), images)  # order is recovered by matching
    assert perfect["psnr"] > 100 and perfect["ssim"] > 0.999
    grey = image_metrics(grey_image(images), images)
    assert grey["psnr"] == pytest.approx(grey["psnr_baseline"])
    assert grey["ssim"] == pytest.approx(grey["ssim_baseline"])
    with_mean = image_metrics(images, images, reference=shape_images(32, seed=9)[0])
    assert with_mean["psnr_mean_baseline"] < 30


def test_match_images_recovers_a_permutation(images: torch.Tensor) -> None:
    order = torch.tensor([2, 0, 3, 1])
    assert torch.equal(match_images(images[order], images), images)
    # fewer reconstructions than originals: each original gets its best one
    best = match_images(images[:1], images)
    assert best.shape == images.shape and torch.equal(best[0], images[0])


def test_label_accuracy_is_a_multiset_overlap() -> None:
    assert label_accuracy(torch.tensor([3, 1, 1]), torch.tensor([1, 3, 1])) == 1.0
    assert label_accuracy(torch.tensor([1, 1, 1]), torch.tensor([1, 3, 2])) == pytest.approx(1 / 3)
    assert label_accuracy(torch.tensor([0]), torch.tensor([4])) == 0.0


def test_token_metrics_known_values() -> None:
    truth = [[5, 6, 7, 1]]
    assert token_metrics([[5, 6, 7, 1]], truth) == {
        "token_precision": 1.0,
        "token_recall": 1.0,
        "token_f1": 1.0,
        "exact_seq": 1.0,
    }
    half = token_metrics([[5, 6, 9, 9]], truth)
    assert half["token_precision"] == 0.5 and half["token_recall"] == 0.5
    assert half["token_f1"] == 0.5 and half["exact_seq"] == 0.0
    assert token_metrics([], truth)["token_f1"] == 0.0


def test_score_dispatches_on_what_was_reconstructed(images: torch.Tensor) -> None:
    result = Reconstruction(attack="x", labels=torch.tensor([1]), tokens=[[4, 1]])
    metrics = score(result, Truth(labels=torch.tensor([1]), tokens=[[4, 1]], inputs=images))
    assert metrics["label_acc"] == 1.0 and metrics["token_f1"] == 1.0
    assert "psnr" not in metrics  # no reconstructed images, no image metric


def test_save_grid_writes_one_row_per_batch(tmp_path, images: torch.Tensor) -> None:
    path = save_grid(tmp_path / "grid.png", [images, grey_image(images)], scale=2, pad=1)
    with Image.open(path) as png:
        assert png.size == (4 * (64 + 1) + 1, 2 * (64 + 1) + 1)
        pixel = np.asarray(png)[1 + 65 + 5, 1 + 5]  # second row: mid-grey
        assert abs(int(pixel[0]) - 128) <= 1


def test_shape_images_are_deterministic_and_varied() -> None:
    a, la = shape_images(6, seed=1)
    b, lb = shape_images(6, seed=1)
    c, _ = shape_images(6, seed=2)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)
    assert a.shape == (6, 3, 32, 32) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert float(a.std(dim=(1, 2, 3)).min()) > 0.05  # not flat images


@pytest.mark.parametrize(
    ("factory", "field", "value"),
    [
        (DLGConfig, "iterations", 0),
        (DLGConfig, "lr", float("nan")),
        (DLGConfig, "init", "zeros"),
        (InvertingGradientsConfig, "tv_weight", -1.0),
        (InvertingGradientsConfig, "restarts", 0),
        (TextRecoveryConfig, "factor", "C"),
        (TextRecoveryConfig, "span_tolerance", 1.5),
        (TextRankingConfig, "outlier_ratio", 0.0),
        (LocalTraining, "steps", 0),
    ],
)
def test_configs_name_the_bad_value(factory: type, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        factory(**{field: value})


def test_observed_update_refuses_a_foreign_vector() -> None:
    layout = ParameterLayout(("w",), ((2, 3),))
    with pytest.raises(ConfigError, match="6"):
        ObservedUpdate(torch.zeros(5), layout)
    with pytest.raises(ConfigError, match="non-finite"):
        ObservedUpdate(torch.full((6,), float("nan")), layout)
    with pytest.raises(ConfigError, match="training"):
        ObservedUpdate(torch.zeros(6), layout, kind=UpdateKind.DELTA)
    observed = ObservedUpdate(torch.arange(6.0), layout)
    assert observed.parameter("w").tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(AttackError):
        observed.parameter("v")


def test_registry_lists_and_builds_every_attack() -> None:
    assert set(registry.available()) >= {
        "dlg",
        "inverting_gradients",
        "label_leakage",
        "dager_span",
        "dager_rank",
    }
    attack = registry.create("dlg", iterations=3)
    assert attack.config == DLGConfig(iterations=3)
    with pytest.raises(ConfigError, match="unknown attack"):
        registry.create("nope")
    with pytest.raises(ConfigError, match="takes a DLGConfig"):
        registry.attack_class("dlg")(TextRecoveryConfig())
