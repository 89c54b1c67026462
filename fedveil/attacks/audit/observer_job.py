"""One measurement of the multi-round observer rows: a cohort's T real rounds, attacked.

Why the adapter comes from fedveil's own `apply_lora`: the FFA row's claim is fedveil's
(its learner freezes A under the FFA-LoRA variant, its default), so the audit builds the
tiny GPT-2's adapter the way a party does (learner.lora: shared-seed A, B at zero) and
takes the variant as the only difference between the two rows. An FFA that stopped
freezing A would then reach the observer through the same code path a federation uses.

Why a separate module: it imports the model stack (transformers, peft); the rows'
settings and judgement (attacks.audit.observer_rows) load with the audit config.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedveil.attacks.measure.text_leakage import TEXT_TRAINING, prior_baseline
from fedveil.attacks.protections import Aggregator
from fedveil.attacks.targets.tiny_lm import (
    WordVocab,
    build_gpt2,
    gpt2_block0_inputs,
    lm_loss,
    sentences,
)
from fedveil.attacks.update.base import TokenTarget
from fedveil.attacks.update.fedavg_rounds import fedavg_rounds
from fedveil.attacks.update.gradient_matching import torch_threads
from fedveil.attacks.update.metrics import token_metrics
from fedveil.attacks.update.multi_round_observer import MultiRoundObserver
from fedveil.learner.lora import apply_lora
from fedveil.learner.lora.config import AggregationVariant, LoraSettings

TARGET_MODULES = ("c_attn", "lm_head")
"""As benchmarks/multi_round_observer_bench.py: both blocks' c_attn (block 0's reads the
layer-0 inputs) and the LM head."""

MAX_LENGTH = 16
PRIOR_DRAWS = 20
"""Draws of the public generator per baseline, as the text cells' (text_leakage)."""


@dataclass(frozen=True)
class Measured:
    """One seed of one variant: what the observer got, and a guess's baselines.

    token_f1: the position-ordered (or bag) answer against the clients' sentences; bag_f1:
    the distinct tokens found against the cohort's distinct tokens; rank: of the stacked
    rows; trains_a: whether the adapter's A factors were in the uploads."""

    token_f1: float
    bag_f1: float
    token_f1_baseline: float
    bag_f1_baseline: float
    rank: float
    saturated: bool
    trains_a: bool


def observer_target(variant: AggregationVariant, rank: int) -> TokenTarget:
    """The tiny GPT-2 with fedveil's LoRA of `variant` (shared seed 0), as the server
    knows it at round 0."""
    vocab = WordVocab.default()
    base = build_gpt2(vocab, max_length=MAX_LENGTH, seed=0)
    settings = LoraSettings(
        rank=rank, alpha=float(rank), target_modules=TARGET_MODULES, variant=variant, seed=0
    )
    with warnings.catch_warnings():  # the LM head is tied to the embedding, as peft notes
        warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*")
        model = apply_lora(base, settings)
    model.eval()
    lora_a = next(n for n, _ in model.named_parameters() if ".lora_A." in n)
    transformer = model.get_submodule("base_model.model.transformer")
    token_ids = torch.tensor([i for i in range(len(vocab)) if i != vocab.pad_id])

    def candidates() -> tuple[torch.Tensor, torch.Tensor]:
        return gpt2_block0_inputs(transformer, token_ids, MAX_LENGTH)

    return TokenTarget(
        name=f"tiny-gpt2-{variant.value}-r{rank}",
        model=model,
        loss=lm_loss,
        lora_a=lora_a,
        lora_b=lora_a.replace("lora_A", "lora_B"),
        candidates=candidates,
        max_length=MAX_LENGTH,
        eos_id=vocab.eos_id,
        pad_id=vocab.pad_id,
    )


def _distinct(sequences: Sequence[Sequence[int]]) -> list[list[int]]:
    return [sorted({t for seq in sequences for t in seq})]


def _bag_f1(predicted: Sequence[Sequence[int]], truth: Sequence[Sequence[int]]) -> float:
    return token_metrics(_distinct(predicted), _distinct(truth))["token_f1"]


def measure(
    variant: AggregationVariant,
    *,
    clients: int,
    rounds: int,
    rank: int,
    data_seeds: Sequence[int],
    aggregate: Aggregator,
) -> list[Measured]:
    """Per data draw: `clients` one-sentence clients run `rounds` rounds through
    `aggregate` from the same round-0 adapter; the observer stacks every decoded round."""
    vocab = WordVocab.default()
    target = observer_target(variant, rank)  # fedavg_rounds moves a copy, never this

    def prior(n: int, draw: int) -> list[list[int]]:
        return [vocab.encode(s) for s in sentences(n, seed=10_000 + draw)]

    out = []
    for data_seed in data_seeds:
        texts = [vocab.encode(s) for s in sentences(clients, seed=data_seed)]
        cohort = [(vocab.pad([ids]), vocab.pad([ids])) for ids in texts]
        with torch_threads(1):
            views = fedavg_rounds(target, cohort, rounds, aggregate, TEXT_TRAINING)
            result = MultiRoundObserver().reconstruct(views, target)
        found = result.tokens or []
        out.append(
            Measured(
                token_f1=token_metrics(found, texts)["token_f1"],
                bag_f1=_bag_f1(found, texts),
                token_f1_baseline=prior_baseline(texts, prior, PRIOR_DRAWS)["token_f1"],
                bag_f1_baseline=float(
                    np.mean([_bag_f1(prior(clients, d), texts) for d in range(PRIOR_DRAWS)])
                ),
                rank=result.scores["rank"],
                saturated=bool(result.scores["saturated"]),
                trains_a=target.lora_a in target.layout.names,
            )
        )
    return out
