"""The multi-round observer: DAGER on FedAvg-LoRA A rows stacked over real SecAgg+ rounds.

Both directions, on one enrolled cohort of 5 one-sentence clients (tiny GPT-2, LoRA rank
16) running real in-process SecAgg+ rounds: one round's secure mean gives nothing (more
distinct inputs than the rank), five stacked rounds give the cohort's distinct tokens
exactly (not their positions: the span's closure), well above as many sentences drawn
from the public generator; the same clients under FFA-LoRA (A frozen) leave the stacked
B rows at rank r, saturated, with nothing recovered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from fedveil.attacks.measure.text_leakage import TEXT_TRAINING, prior_baseline
from fedveil.attacks.protections import Aggregator
from fedveil.attacks.targets.tiny_lm import WordVocab, sentences, tiny_lm_target
from fedveil.attacks.update.base import AttackError, ObservedUpdate, TokenTarget, UpdateKind
from fedveil.attacks.update.fedavg_rounds import Client, fedavg_rounds, ffa_variant
from fedveil.attacks.update.gradient_matching import torch_threads
from fedveil.attacks.update.local_training import client_update
from fedveil.attacks.update.metrics import token_metrics
from fedveil.attacks.update.multi_round_observer import MultiRoundConfig, MultiRoundObserver
from fedveil.errors import ConfigError
from fedveil.runners.aggregators import InProcessSecAgg

N, ROUNDS = 5, 5


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models: extra OpenMP threads only spin-wait on a shared machine."""
    with torch_threads(1):
        yield


def secagg(n: int, dimension: int, rounds: int) -> Aggregator:
    """One enrolled cohort's real SecAgg+ rounds, as an attacks.protections.Aggregator."""
    secure = InProcessSecAgg([f"client-{i}" for i in range(n)], dimension, rounds=rounds)

    def aggregate(updates: Sequence[np.ndarray], weights: Sequence[int]) -> tuple[np.ndarray, int]:
        mean = secure(list(zip(updates, (float(w) for w in weights), strict=True)))
        return mean, int(secure.results[-1].total_weight)

    return aggregate


@pytest.fixture(scope="module")
def lm() -> tuple[TokenTarget, WordVocab]:
    return tiny_lm_target(rank=16, target_modules=("c_attn", "lm_head"))


@pytest.fixture(scope="module")
def cohort(lm: tuple[TokenTarget, WordVocab]) -> tuple[list[list[int]], list[Client]]:
    _, vocab = lm
    texts = [vocab.encode(s) for s in sentences(N, seed=705)]
    return texts, [(vocab.pad([ids]), vocab.pad([ids])) for ids in texts]


def rounds_of(target: TokenTarget, clients: list[Client]) -> list[ObservedUpdate]:
    aggregate = secagg(len(clients), target.layout.size, ROUNDS)
    return fedavg_rounds(target, clients, ROUNDS, aggregate, TEXT_TRAINING)


@pytest.fixture(scope="module")
def fedavg_views(
    lm: tuple[TokenTarget, WordVocab], cohort: tuple[list[list[int]], list[Client]]
) -> list[ObservedUpdate]:
    return rounds_of(lm[0], cohort[1])


def distinct(sequences: Sequence[Sequence[int]]) -> list[list[int]]:
    return [sorted({t for s in sequences for t in s})]


def bag_f1(predicted: Sequence[Sequence[int]], truth: Sequence[Sequence[int]]) -> float:
    return token_metrics(distinct(predicted), distinct(truth))["token_f1"]


def prior(vocab: WordVocab, n: int, draw: int) -> list[list[int]]:
    """n sentences from the public generator, as leakage_bench's baseline draws them."""
    return [vocab.encode(s) for s in sentences(n, seed=10_000 + draw)]


def test_fedavg_lora_rounds_stack_past_the_rank_bound(
    lm: tuple[TokenTarget, WordVocab],
    cohort: tuple[list[list[int]], list[Client]],
    fedavg_views: list[ObservedUpdate],
) -> None:
    target, vocab = lm
    texts, clients = cohort
    views = fedavg_views
    # the first view is the real round's decoded mean of the clients' first deltas
    first = [client_update(target, x, y, UpdateKind.DELTA, TEXT_TRAINING) for x, y in clients]
    assert views[0].n_clients == N and views[0].examples == N
    assert float((views[0].vector - sum(first) / N).abs().max()) < 1e-9
    observer = MultiRoundObserver()
    one = observer.reconstruct(views[:1], target)
    assert one.scores["rank"] == 16.0 and one.scores["kept"] == 0.0, one.scores
    assert token_metrics(one.tokens or [], texts)["token_f1"] == 0.0
    many = observer.reconstruct(views, target)
    assert many.tokens is not None and many.scores["saturated"] == 0.0
    assert many.scores["rank"] > 16.0, many.scores
    # positions shared by several sentences: the closure; the answer is the cohort's bag
    assert many.scores["as_bag"] == 1.0
    baseline = prior_baseline(texts, lambda n, d: prior(vocab, n, d), 20)
    metrics = token_metrics(many.tokens, texts)
    assert metrics["token_precision"] == 1.0, metrics
    assert metrics["token_f1"] >= baseline["token_f1"] + 0.2, (metrics, baseline)
    prior_bag = np.mean([bag_f1(prior(vocab, N, d), texts) for d in range(20)])
    assert bag_f1(many.tokens, texts) >= 0.95 and prior_bag <= 0.7, prior_bag
    # as position-ordered guesses, every true (token, position) is among them
    ordered = MultiRoundObserver(MultiRoundConfig(output="sequences")).reconstruct(views, target)
    assert token_metrics(ordered.tokens or [], texts)["token_recall"] >= 0.95


def test_a_token_filter_narrows_the_stacked_check(
    lm: tuple[TokenTarget, WordVocab],
    cohort: tuple[list[list[int]], list[Client]],
    fedavg_views: list[ObservedUpdate],
) -> None:
    target, _ = lm
    texts, _ = cohort
    words = {t for ids in texts for t in ids}
    dropped = texts[0][3]
    full = MultiRoundObserver().reconstruct(fedavg_views, target, bag=words)
    assert bag_f1(full.tokens or [], texts) >= 0.95
    cut = MultiRoundObserver().reconstruct(fedavg_views, target, bag=words - {dropped})
    assert all(t != dropped or p == 0 for t, p in cut.token_positions or [])
    assert cut.scores["candidates"] < full.scores["candidates"]


def test_ffa_lora_b_rows_stay_at_rank_r_whatever_the_rounds(
    lm: tuple[TokenTarget, WordVocab], cohort: tuple[list[list[int]], list[Client]]
) -> None:
    target, _ = lm
    texts, clients = cohort
    ffa = ffa_variant(target)
    assert target.lora_a not in ffa.layout.names and target.lora_a in target.layout.names
    views = rounds_of(ffa, clients)
    result = MultiRoundObserver().reconstruct(views, ffa)
    assert result.scores["factor_b"] == 1.0 and result.scores["rank"] == 16.0, result.scores
    assert result.scores["saturated"] == 1.0 and result.scores["kept"] == 0.0
    assert token_metrics(result.tokens or [], texts)["token_f1"] == 0.0


def test_b_rows_of_moving_rounds_are_not_stacked(
    lm: tuple[TokenTarget, WordVocab], cohort: tuple[list[list[int]], list[Client]]
) -> None:
    target, _ = lm
    _, clients = cohort
    aggregate = secagg(N, target.layout.size, 2)
    views = fedavg_rounds(target, clients, 2, aggregate, TEXT_TRAINING)
    with pytest.raises(AttackError, match="A rows"):
        MultiRoundObserver(MultiRoundConfig(factor="B")).reconstruct(views, target)


def test_bad_settings_are_config_errors(lm: tuple[TokenTarget, WordVocab]) -> None:
    target, vocab = lm
    batch = vocab.pad([vocab.encode(sentences(1, seed=1)[0])])
    with pytest.raises(ConfigError, match="normalise"):
        MultiRoundConfig(normalise="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="output"):
        MultiRoundConfig(output="text")
    with pytest.raises(ConfigError, match="rounds"):
        fedavg_rounds(target, [(batch, batch)] * 2, 0, secagg(2, 1, 1), TEXT_TRAINING)
    with pytest.raises(ConfigError, match="at least 2"):
        fedavg_rounds(target, [(batch, batch)], 1, secagg(2, 1, 1), TEXT_TRAINING)
    with pytest.raises(AttackError, match="at least one round"):
        MultiRoundObserver().reconstruct([], target)
