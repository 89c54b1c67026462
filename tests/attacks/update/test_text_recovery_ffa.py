"""Caption tokens from the real adapter: FFA-LoRA (A frozen and public, only B sent).

What must hold, both directions: one FFA client's SGD gradient (or SGD delta) of B gives
its caption back through the B-factor span check while the caption has fewer tokens
than the rank; with more tokens than the rank, or in a real SecAgg+ mean of 10 clients,
it does not. The real recipe's Adam delta is only asserted in its measured direction:
it fills all r directions (the exact check collapses) and ranks below the SGD
gradient, not a number.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from fedveil.attacks.measure.text_leakage import FFA_ADAM, FFA_RANK, FFA_SGD, prior_baseline
from fedveil.attacks.registry import create
from fedveil.attacks.targets.captioner import CaptionerTargets, captioner_target, prior_captions
from fedveil.attacks.update.base import Attack, AttackError, LocalTraining, Truth, UpdateKind
from fedveil.attacks.update.gradient_matching import torch_threads
from fedveil.attacks.update.local_training import client_update
from fedveil.attacks.update.run import run_attack
from fedveil.attacks.update.text_recovery import (
    SpanCheck,
    TextRankingConfig,
    TextRecoveryConfig,
    gap_dimension,
)
from fedveil.attacks.update.text_recovery_ffa import (
    AdamTraining,
    BRecoveryConfig,
    BSpanCheck,
    BSubspaceRanking,
    adam_delta,
)
from fedveil.attacks.views import aggregate_view, plain_view
from fedveil.errors import ConfigError
from fedveil.runners.aggregators import real_aggregators


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models: extra OpenMP threads only spin-wait on a shared machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def ffa() -> CaptionerTargets:
    return captioner_target(rank=FFA_RANK, variant="ffa")


def _f1(attack: Attack[Any], vector: torch.Tensor, ct: CaptionerTargets, truth: list[list[int]],
        kind: UpdateKind = UpdateKind.GRADIENT) -> dict[str, float]:  # fmt: skip
    training = None if kind is UpdateKind.GRADIENT else FFA_ADAM.as_local_training()
    view = plain_view(vector, ct.tokens.layout, kind=kind, training=training)
    return run_attack(attack, view, ct.tokens, truth=Truth(tokens=truth)).metrics


def test_ffa_update_holds_b_only(ffa: CaptionerTargets) -> None:
    names = ffa.tokens.layout.names
    assert ffa.tokens.lora_b in names and ffa.tokens.lora_a not in names
    assert not any("lora_A" in n for n in names)
    assert ffa.tokens.name == f"captioner-caption-ffa-r{FFA_RANK}"


def test_b_span_recovers_the_caption_from_one_sgd_gradient_or_delta(ffa: CaptionerTargets) -> None:
    x, labels = ffa.examples(6, seed=902)
    truths = ffa.caption_tokens(labels)
    assert max(len(t) for t in truths) < FFA_RANK  # the regime where the check can work
    for i, truth in enumerate(truths):
        xb, yb = x[i : i + 1], labels[i : i + 1]
        grad = _f1(BSpanCheck(), client_update(ffa.image, xb, yb), ffa, [truth])
        assert grad["token_f1"] >= 0.95 and grad["exact_seq"] == 1.0, (i, grad)
        sgd = client_update(ffa.image, xb, yb, UpdateKind.DELTA, FFA_SGD)
        assert _f1(BSpanCheck(), sgd, ffa, [truth], UpdateKind.DELTA)["token_f1"] >= 0.95
    # the plain SpanCheck picks the B factor on its own when A is absent from the update
    auto = _f1(SpanCheck(), client_update(ffa.image, x[:1], labels[:1]), ffa, truths[:1])
    assert auto["token_f1"] >= 0.95


def test_more_tokens_than_the_rank_recovers_nothing() -> None:
    small = captioner_target(rank=4, variant="ffa")
    x, labels = small.examples(12, seed=912)
    truths = small.caption_tokens(labels)
    long = [i for i, t in enumerate(truths) if len(t) > 4]
    assert long
    for i in long:
        update = client_update(small.image, x[i : i + 1], labels[i : i + 1])
        assert _f1(BSpanCheck(), update, small, [truths[i]])["token_f1"] <= 0.2


def test_secagg_mean_of_10_ffa_gradients_hides_the_captions(ffa: CaptionerTargets) -> None:
    x, labels = ffa.examples(10, seed=910)
    truths = ffa.caption_tokens(labels)
    updates = [client_update(ffa.image, x[i : i + 1], labels[i : i + 1]) for i in range(10)]
    view = aggregate_view(updates, [1] * 10, ffa.tokens.layout, real_aggregators().secagg)
    assert view.n_clients == 10
    baseline = prior_baseline(truths, lambda n, d: prior_captions(ffa, n, 50_000 + d), draws=3)
    for attack in (BSpanCheck(), BSubspaceRanking()):
        metrics = run_attack(attack, view, ffa.tokens, truth=Truth(tokens=truths)).metrics
        assert metrics["token_f1"] < baseline["token_f1"], (attack.name, metrics, baseline)
        assert metrics["exact_seq"] == 0.0


def test_adam_fills_the_rank_r_space_and_leaks_less_than_sgd(ffa: CaptionerTargets) -> None:
    x, labels = ffa.examples(4, seed=902)
    truths = ffa.caption_tokens(labels)
    sgd_f1, adam_span, adam_rank = [], [], []
    for i, truth in enumerate(truths):
        xb, yb = x[i : i + 1], labels[i : i + 1]
        grad = client_update(ffa.image, xb, yb)
        adam = adam_delta(ffa.image, xb, yb, FFA_ADAM)
        layout = ffa.tokens.layout
        s_grad = torch.linalg.svdvals(layout.get(grad, ffa.tokens.lora_b))
        s_adam = torch.linalg.svdvals(layout.get(adam, ffa.tokens.lora_b))
        # SGD: one direction per token read; Adam: every one of the r directions
        assert int((s_grad > 1e-4 * s_grad[0]).sum()) == len(truth)
        assert int((s_adam > 1e-4 * s_adam[0]).sum()) == FFA_RANK
        sgd_f1.append(_f1(BSpanCheck(), grad, ffa, [truth])["token_f1"])
        adam_span.append(_f1(BSpanCheck(), adam, ffa, [truth], UpdateKind.DELTA)["token_f1"])
        adam_rank.append(_f1(BSubspaceRanking(), adam, ffa, [truth], UpdateKind.DELTA)["token_f1"])
    mean = sum(sgd_f1) / len(sgd_f1)
    assert max(adam_span) < 0.2  # the exact check keeps everything or nothing
    assert sum(adam_rank) / len(adam_rank) < mean


def test_adam_first_step_is_a_sign_step(ffa: CaptionerTargets) -> None:
    """What makes Adam break the span: its first step is lr * g / (|g| + eps)."""
    x, labels = ffa.examples(1, seed=3)
    grad = client_update(ffa.image, x, labels)
    delta = adam_delta(ffa.image, x, labels, AdamTraining(steps=1, lr=1e-2))
    big = grad.abs() > 1e-5
    torch.testing.assert_close(delta[big], -1e-2 * torch.sign(grad[big]), rtol=1e-3, atol=1e-6)


def test_records_use_the_shipped_recipe() -> None:
    from fedveil.learner.federated_local import CaptionerRecipe

    assert AdamTraining.of_recipe() == FFA_ADAM
    assert CaptionerRecipe().lora.rank == FFA_RANK
    assert FFA_SGD.steps == FFA_ADAM.steps and isinstance(FFA_SGD, LocalTraining)


def test_gap_dimension_is_the_exact_rank_or_the_elbow() -> None:
    assert gap_dimension(torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0]), 1e-4) == 3
    assert gap_dimension(torch.tensor([1.0, 0.9, 0.8, 0.2, 0.15]), 1e-4) == 3
    assert gap_dimension(torch.zeros(4), 1e-4) == 1


def test_registered_and_bad_input_refused(ffa: CaptionerTargets) -> None:
    assert isinstance(create("dager_b_span"), BSpanCheck)
    assert create("dager_b_rank").config.subspace_dim == "gap"
    with pytest.raises(ConfigError, match="factor"):
        BRecoveryConfig(factor="A")
    with pytest.raises(ConfigError, match="BRankingConfig"):
        BSubspaceRanking(TextRankingConfig())
    with pytest.raises(ConfigError, match="subspace_dim"):
        TextRankingConfig(subspace_dim="elbow")
    with pytest.raises(ConfigError, match="steps"):
        AdamTraining(steps=0)
    with pytest.raises(ConfigError, match="max_grad_norm"):
        AdamTraining(max_grad_norm=0.0)
    with pytest.raises(ConfigError, match="variant"):
        captioner_target(variant="lora-fa")
    x, labels = ffa.examples(1, seed=1)
    view = plain_view(client_update(ffa.image, x, labels), ffa.tokens.layout)
    with pytest.raises(AttackError, match="frozen"):
        SpanCheck(TextRecoveryConfig(factor="A")).reconstruct(view, ffa.tokens)
