"""Text recovery from LoRA updates (DAGER-style), plain vs secure aggregate vs noise.

Both directions: one client's plain update with fewer tokens than the rank gives its
text back almost verbatim; the same attack on the real SecAgg aggregate of 10 clients,
on an update with more tokens than the rank, or under strong Gaussian noise recovers
next to nothing. The noise is an explicit N(0, sigma^2) per element (a stand-in until
secagg/dp lands), with sigma set from the signal-to-noise ratio ||update|| / (sigma sqrt d).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from fedveil.attacks.targets.tiny_lm import WordVocab, sentences, tiny_lm_target
from fedveil.attacks.update.base import (
    LocalTraining,
    ObservedUpdate,
    TokenTarget,
    Truth,
    UpdateKind,
)
from fedveil.attacks.update.gradient_matching import torch_threads
from fedveil.attacks.update.local_training import client_update
from fedveil.attacks.update.run import run_attack
from fedveil.attacks.update.text_recovery import SpanCheck, SubspaceRanking
from fedveil.attacks.views import aggregate_view, gaussian_view, plain_view, sigma_for_snr
from fedveil.runners.simulation import secure_mean

TRAINING = LocalTraining(steps=3, lr=0.5)  # FedAvg: 3 local SGD steps


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models: extra OpenMP threads only spin-wait on a shared machine."""
    with torch_threads(1):
        yield


def delta(target: TokenTarget, vocab: WordVocab, ids: list[int]) -> np.ndarray:
    batch = vocab.pad([ids])
    return client_update(target, batch, batch, UpdateKind.DELTA, TRAINING).numpy()


def recover(
    observed: ObservedUpdate, target: TokenTarget, truth: list[list[int]], ranking: bool = False
) -> dict[str, float]:
    attack = SubspaceRanking() if ranking else SpanCheck()
    return run_attack(attack, observed, target, truth=Truth(tokens=truth)).metrics


@pytest.fixture(scope="module")
def lm() -> tuple[TokenTarget, WordVocab]:
    return tiny_lm_target(rank=16)


def test_single_plain_update_gives_the_text_back(lm: tuple[TokenTarget, WordVocab]) -> None:
    target, vocab = lm
    f1, exact = [], []
    for sentence in sentences(6, seed=3):  # 7 to 11 tokens, rank 16
        ids = vocab.encode(sentence)
        observed = plain_view(
            delta(target, vocab, ids), target.layout, kind=UpdateKind.DELTA, training=TRAINING
        )
        for ranking in (False, True):
            metrics = recover(observed, target, [ids], ranking)
            f1.append(metrics["token_f1"])
            exact.append(metrics["exact_seq"])
    assert min(f1) >= 0.9, f1
    assert np.mean(exact) >= 0.9, exact


def test_fresh_adapter_leaks_through_the_b_factor() -> None:
    # peft starts with B = 0: the A-gradient is zero, B's rows span A-projected inputs.
    target, vocab = tiny_lm_target(rank=16, adapter="fresh")
    ids = vocab.encode(sentences(1, seed=8)[0])
    batch = vocab.pad([ids])
    observed = plain_view(client_update(target, batch, batch), target.layout)
    assert float(observed.parameter(target.lora_a).abs().max()) == 0.0
    result = run_attack(SpanCheck(), observed, target, truth=Truth(tokens=[ids]))
    assert result.scores["factor_b"] == 1.0
    assert result.metrics["token_f1"] >= 0.9, result.metrics


def test_rank_bounds_what_one_layer_leaks() -> None:
    sentence = sentences(1, seed=5)[0]
    f1 = {}
    for rank in (4, 32):
        target, vocab = tiny_lm_target(rank=rank)
        ids = vocab.encode(sentence)
        assert 4 < len(ids) - 1 < 32  # tokens that get a gradient
        observed = plain_view(
            delta(target, vocab, ids), target.layout, kind=UpdateKind.DELTA, training=TRAINING
        )
        f1[rank] = recover(observed, target, [ids])["token_f1"]
    assert f1[32] >= 0.9 and f1[4] <= 0.2, f1


def test_secure_aggregate_of_10_clients_hides_the_text(lm: tuple[TokenTarget, WordVocab]) -> None:
    target, vocab = lm
    texts = [vocab.encode(s) for s in sentences(10, seed=11)]
    updates = [delta(target, vocab, ids) for ids in texts]
    observed = aggregate_view(
        updates, [1] * 10, target.layout, secure_mean, kind=UpdateKind.DELTA, training=TRAINING
    )
    assert observed.n_clients == 10 and observed.examples == 10
    # the decoded aggregate is the true mean (so the attack is not fooled by a broken round)
    assert np.abs(observed.vector.numpy() - np.mean(updates, axis=0)).max() < 1e-4
    for ranking in (False, True):
        metrics = recover(observed, target, texts, ranking)
        assert metrics["token_f1"] <= 0.2 and metrics["exact_seq"] == 0.0, metrics
    # ...while each of those clients' own plain updates would have leaked its text
    single = plain_view(updates[0], target.layout, kind=UpdateKind.DELTA, training=TRAINING)
    assert recover(single, target, [texts[0]])["token_f1"] >= 0.9


def test_strong_noise_collapses_recovery_and_mild_noise_only_breaks_the_exact_check(
    lm: tuple[TokenTarget, WordVocab],
) -> None:
    target, vocab = lm
    ids = vocab.encode(sentences(1, seed=20)[0])
    clean = plain_view(
        delta(target, vocab, ids), target.layout, kind=UpdateKind.DELTA, training=TRAINING
    )
    strong = gaussian_view(clean, sigma_for_snr(clean, 1.0), seed=1)  # noise norm = update norm
    assert strong.notes["snr"] == pytest.approx(1.0)
    for ranking in (False, True):
        assert recover(strong, target, [ids], ranking)["token_f1"] <= 0.2
    mild = gaussian_view(clean, sigma_for_snr(clean, 100.0), seed=1)
    assert recover(mild, target, [ids], ranking=True)["token_f1"] >= 0.9
    assert recover(mild, target, [ids], ranking=False)["token_f1"] < 0.9
