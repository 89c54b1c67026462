"""The LM adaptor and the generate interface on an untrained tiny GPT-2 (no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedveil.attacks.output.canaries import Canary, CanaryFormat, CanaryRegistry, SlotSpace
from fedveil.attacks.output.generator import HFGenerator, SamplingConfig
from fedveil.attacks.output.language_model import LanguageModel, TokenScores
from fedveil.attacks.output.likelihood import (
    LikelihoodConfig,
    likelihood_scores,
    loss_score,
    min_k_pp_score,
    min_k_score,
    reference_score,
    zlib_score,
)
from fedveil.attacks.output.membership import canary_exposures
from fedveil.attacks.targets.canary_lm import (
    CanaryLMConfig,
    build_base_model,
    build_tokenizer,
    vocabulary_words,
)
from fedveil.errors import ConfigError


@pytest.fixture(scope="module")
def tiny() -> tuple[object, object]:
    tokenizer = build_tokenizer(vocabulary_words())
    return build_base_model(tokenizer, CanaryLMConfig()), tokenizer


def _scores(logprobs: list[float], mean: float = -2.0, std: float = 1.0) -> TokenScores:
    n = len(logprobs)
    return TokenScores(
        "some text",
        np.arange(n),
        np.array(logprobs),
        np.full(n, mean),
        np.full(n, std),
        np.arange(n),
    )


def test_likelihood_scores_by_hand() -> None:
    s = _scores([-1.0, -2.0, -3.0, -10.0, -4.0])
    assert loss_score(s) == pytest.approx(-4.0)
    assert min_k_score(s, 0.2) == pytest.approx(-10.0)  # the lowest 1 of 5
    assert min_k_score(s, 0.4) == pytest.approx(-7.0)  # mean of -10 and -4
    assert min_k_pp_score(s, 0.2) == pytest.approx((-10.0 + 2.0) / 1.0)
    assert zlib_score(s) < 0
    assert reference_score(s, _scores([-2.0, -2.0, -3.0, -10.0, -5.0])) == pytest.approx(0.4)
    with pytest.raises(ConfigError):
        reference_score(s, _scores([-1.0]))
    all_scores = likelihood_scores([s, s], [s, s])
    assert set(all_scores) == {"loss", "zlib", "min_k", "min_k_pp", "reference"}
    assert "reference" not in likelihood_scores([s])
    with pytest.raises(ConfigError):
        LikelihoodConfig(k=0)


def test_token_scores_match_the_models_own_loss(tiny: tuple[object, object]) -> None:
    model, tokenizer = tiny
    lm = LanguageModel(model, tokenizer)  # type: ignore[arg-type]
    text = "the gate code of anna berg is 4719."
    (scores,) = lm.score([text])
    ids, _ = lm.encode(text)
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss  # type: ignore[operator]
    assert -scores.logprobs.mean() == pytest.approx(float(loss), rel=1e-4)
    # batching and padding do not change a text's scores
    batch = lm.score(["a lamp", text, "the meter leaks near the gate"])
    assert np.allclose(batch[1].logprobs, scores.logprobs, atol=1e-5)
    assert np.all(scores.std > 0) and np.all(scores.mean < 0)


def test_select_picks_the_secrets_tokens(tiny: tuple[object, object]) -> None:
    model, tokenizer = tiny
    lm = LanguageModel(model, tokenizer)  # type: ignore[arg-type]
    prefix = "the gate code of anna berg is"
    (scores,) = lm.score([prefix + " 4719."])
    secret = scores.select(len(prefix))
    assert tokenizer.decode(secret.token_ids.tolist()) == "4719."  # type: ignore[attr-defined]
    assert len(secret) == 6  # "▁", four digits, "."
    with pytest.raises(ConfigError):
        scores.select(1000)


def test_generate_contract(tiny: tuple[object, object]) -> None:
    model, tokenizer = tiny
    gen = HFGenerator(model, tokenizer, SamplingConfig(max_new_tokens=5, seed=3))  # type: ignore[arg-type]
    prompts = ["the gate code of anna berg is", "a lamp", "the meter"]  # different lengths
    samples = gen(prompts, 4, False)
    assert [len(s) for s in samples] == [4, 4, 4]
    assert gen(prompts, 4, False) == samples  # same seed, same samples
    greedy = gen(prompts, 4, True)
    assert [len(g) for g in greedy] == [1, 1, 1]
    alone = gen(prompts[1:2], 1, True)
    assert alone[0] == greedy[1]  # order and grouping by length do not mix prompts up
    assert gen.stats.tokens > 0 and gen.stats.seconds_per_token > 0
    assert all(not s.startswith(p) for p, ss in zip(prompts, samples, strict=True) for s in ss)
    redacting = gen.with_filters(postprocess=lambda prompt, text: "x")
    assert redacting(prompts, 2, False) == [["x", "x"]] * 3
    with pytest.raises(ConfigError):
        gen(prompts, 0, False)
    with pytest.raises(ConfigError):
        SamplingConfig(temperature=0.0)


def test_total_loglik_is_the_sum(tiny: tuple[object, object]) -> None:
    model, tokenizer = tiny
    lm = LanguageModel(model, tokenizer)  # type: ignore[arg-type]
    texts = ["a lamp", "the gate"]
    totals = lm.total_loglik(texts)
    assert totals == pytest.approx([s.logprobs.sum() for s in lm.score(texts)])
    assert all(math.isfinite(t) for t in totals)


def test_exposure_exact_path_ranks_against_every_value(tiny: tuple[object, object]) -> None:
    model, tokenizer = tiny
    lm = LanguageModel(model, tokenizer)  # type: ignore[arg-type]
    digits = tuple("0123456789")
    fmt = CanaryFormat(
        "two_digit_code",
        "the gate code of {subject} is {secret}.",
        SlotSpace("{} {}", (("anna", "ben"), ("berg", "graf"))),
        SlotSpace("{}{}", (digits, digits)),
        "access_code",
    )
    canary = Canary("c0", fmt.name, "anna berg", fmt.split("anna berg")[0], "42", ".", True)
    other = Canary("c1", fmt.name, "ben graf", fmt.split("ben graf")[0], "07", ".", False)
    registry = CanaryRegistry((canary, other), {fmt.name: fmt})
    exposures = canary_exposures(lm, registry, n_candidates=128)
    assert [e.method for e in exposures] == ["exact", "exact"]
    every = lm.total_loglik([fmt.render("anna berg", s) for s in fmt.secret.enumerate()])
    rank = 1 + int((every > every[42]).sum())
    assert exposures[0].n_candidates == 99
    assert exposures[0].exposure == pytest.approx(math.log2(100) - math.log2(rank))
