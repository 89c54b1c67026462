"""DAGER's second-layer sequence search, and a token filter on the layer-0 candidates.

Both directions, on the tiny GPT-2 with LoRA rank 32 on both blocks' c_attn: one
client's plain gradient over a batch of 2 or 3 sentences gives every sentence back in
order through the layer-1 search, where the layer-0 span check alone splits them wrong
(its (token, position) closure, see text_sequence); the real SecAgg+ mean of 10 such
clients leaves nothing for either layer, no better than sentences drawn from the public
generator.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from fedveil.attacks import registry
from fedveil.attacks.families import Family
from fedveil.attacks.measure.text_leakage import prior_baseline
from fedveil.attacks.targets.tiny_lm import WordVocab, sentences, tiny_lm_target
from fedveil.attacks.update.base import (
    AttackError,
    LocalTraining,
    ObservedUpdate,
    TokenTarget,
    Truth,
    UpdateKind,
)
from fedveil.attacks.update.fedavg_rounds import ffa_variant
from fedveil.attacks.update.gradient_matching import torch_threads
from fedveil.attacks.update.local_training import client_update
from fedveil.attacks.update.run import run_attack
from fedveil.attacks.update.text_recovery import SpanCheck
from fedveil.attacks.update.text_sequence import SequenceSearch, SequenceSearchConfig
from fedveil.attacks.views import aggregate_view, plain_view
from fedveil.errors import ConfigError
from fedveil.runners.simulation import secure_mean


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models: extra OpenMP threads only spin-wait on a shared machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def lm() -> tuple[TokenTarget, WordVocab]:
    return tiny_lm_target(rank=32)


def batch_view(
    target: TokenTarget,
    vocab: WordVocab,
    texts: list[list[int]],
    training: LocalTraining | None = None,
) -> ObservedUpdate:
    """One client's plain update over a batch of sentences (a gradient without training)."""
    batch = vocab.pad(texts)
    kind = UpdateKind.GRADIENT if training is None else UpdateKind.DELTA
    update = client_update(target, batch, batch, kind, training)
    return plain_view(update, target.layout, kind=kind, training=training)


def test_layer1_search_orders_a_batch_the_layer0_check_cannot(
    lm: tuple[TokenTarget, WordVocab],
) -> None:
    target, vocab = lm
    searched, spanned = [], []
    for size in (2, 3):
        for seed in (40, 41, 42):
            texts = [vocab.encode(s) for s in sentences(size, seed=seed)]
            observed = batch_view(target, vocab, texts)
            truth = Truth(tokens=texts)
            result = run_attack(SequenceSearch(), observed, target, truth=truth)
            assert result.scores["sequences"] == size and result.scores["exploded"] == 0.0
            searched.append(result.metrics["exact_seq"])
            spanned.append(run_attack(SpanCheck(), observed, target, truth=truth).metrics)
    assert min(searched) == 1.0, searched
    # the layer-0 check finds the tokens but not which sentence each belongs to
    assert np.mean([m["exact_seq"] for m in spanned]) <= 0.2, spanned
    assert min(m["token_recall"] for m in spanned) >= 0.85, spanned


def test_a_small_step_delta_is_searched_too(lm: tuple[TokenTarget, WordVocab]) -> None:
    target, vocab = lm
    texts = [vocab.encode(s) for s in sentences(3, seed=41)]
    observed = batch_view(target, vocab, texts, LocalTraining(steps=3, lr=0.05))
    result = run_attack(SequenceSearch(), observed, target, truth=Truth(tokens=texts))
    assert result.metrics["exact_seq"] == 1.0, (result.metrics, result.scores)


def test_ffa_lora_b_rows_carry_the_search_too(lm: tuple[TokenTarget, WordVocab]) -> None:
    target, vocab = lm
    ffa = ffa_variant(target)  # A frozen: the B rows, with the public A as projection
    texts = [vocab.encode(s) for s in sentences(2, seed=45)]
    observed = batch_view(ffa, vocab, texts)
    assert ffa.lora_a not in observed.layout.names
    result = run_attack(SequenceSearch(), observed, ffa, truth=Truth(tokens=texts))
    assert result.metrics["exact_seq"] == 1.0, (result.metrics, result.scores)


def test_the_secure_mean_of_10_clients_leaves_nothing_to_search(
    lm: tuple[TokenTarget, WordVocab],
) -> None:
    target, vocab = lm
    texts = [vocab.encode(s) for s in sentences(10, seed=43)]
    updates = [batch_view(target, vocab, [ids]).vector.numpy() for ids in texts]
    observed = aggregate_view(updates, [1] * 10, target.layout, secure_mean)
    result = run_attack(SequenceSearch(), observed, target, truth=Truth(tokens=texts))
    baseline = prior_baseline(
        texts, lambda n, d: [vocab.encode(s) for s in sentences(n, seed=10_000 + d)], 20
    )
    assert result.scores["layer0_kept"] == 0.0, result.scores
    assert result.metrics["exact_seq"] == 0.0
    assert result.metrics["token_f1"] <= baseline["token_f1"], (result.metrics, baseline)
    # ...while one of those clients' own plain gradient gives its sentence back
    alone = plain_view(updates[0], target.layout)
    single = run_attack(SequenceSearch(), alone, target, truth=Truth(tokens=texts[:1]))
    assert single.metrics["exact_seq"] == 1.0


def test_a_token_filter_restricts_the_layer0_candidates(
    lm: tuple[TokenTarget, WordVocab],
) -> None:
    target, vocab = lm
    texts = [vocab.encode(s) for s in sentences(2, seed=44)]
    observed = batch_view(target, vocab, texts)
    truth = Truth(tokens=texts)
    bag = {t for ids in texts for t in ids}
    full = run_attack(SequenceSearch(), observed, target, truth=truth, bag=bag)
    assert full.metrics["exact_seq"] == 1.0
    dropped = texts[0][2]  # a token of the first sentence past position 0
    cut = run_attack(SpanCheck(), observed, target, truth=truth, bag=bag - {dropped})
    assert all(t != dropped or p == 0 for t, p in cut.token_positions or [])
    assert cut.scores["kept"] < run_attack(SpanCheck(), observed, target).scores["kept"]


def test_registered_and_refuses_what_it_cannot_use() -> None:
    assert "dager_sequence" in registry.available(Family.TEXT)
    assert isinstance(registry.create("dager_sequence", layer1_tolerance=0.05), SequenceSearch)
    with pytest.raises(ConfigError, match="layer1_tolerance"):
        SequenceSearchConfig(layer1_tolerance=0.0)
    with pytest.raises(ConfigError, match="max_beam"):
        SequenceSearchConfig(max_beam=0)
    one_block, vocab = tiny_lm_target(rank=8, n_layer=1)
    observed = batch_view(one_block, vocab, [vocab.encode(sentences(1, seed=1)[0])])
    with pytest.raises(AttackError, match="second adapted layer"):
        SequenceSearch().reconstruct(observed, one_block)
