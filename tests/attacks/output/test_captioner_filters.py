"""Output blacklisting filters on the vision-language captioner: utility cost and blocking.

Why a quickly fine-tuned captioner (the weak FAST base, 20 federated rounds on 96 captions
per party, ~20 s): the ban filters' cost is only meaningful on a model that says domain
concepts, and the n-gram filter only bites on one that reproduces its training captions.
Figures are asserted by direction and with tolerances, never as hard-coded values.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from fedveil.attacks.measure.captioner_filters import (
    NONE,
    SECRET_LITERALS,
    StackUtility,
    captioner_stacks,
    filter_utility,
    filter_utility_reports,
    filtered_captions,
    secret_block_list,
    training_texts,
)
from fedveil.attacks.output.filters import REDACTION, BlockList, FilterStack
from fedveil.attacks.output.language_model import cpu_threads
from fedveil.errors import ConfigError
from fedveil.learner.data.concepts import DOMAIN_CONCEPTS, DOMAINS
from fedveil.learner.data.datasets import (
    CityDataConfig,
    PartyDataset,
    SceneExample,
    make_party_datasets,
    make_test_set,
)
from fedveil.learner.evaluation.report import full_captions
from fedveil.learner.federated_local import CaptionerRecipe, make_parties, run_federated
from fedveil.learner.lora.codec import load_adapter_vector
from fedveil.learner.metrics import find_concepts
from fedveil.learner.models.loading import load_model
from fedveil.learner.training.batches import encode_images
from tests.helpers.captioner_fixtures import fast_base_dir

BAN_STACKS = ("sequence-ban", "text-ban", "redactor")


@dataclass(frozen=True, eq=False)
class Captioner:
    model: torch.nn.Module
    tokenizer: Any
    image_processor: object
    datasets: dict[str, PartyDataset]
    test_set: tuple[SceneExample, ...]
    pixels: torch.Tensor


@functools.cache
def captioner() -> Captioner:
    """A federated LoRA captioner that says domain concepts (mean recall ~0.5)."""
    with cpu_threads(1):
        base = load_model(fast_base_dir())
        recipe = CaptionerRecipe(
            rounds=20,
            train=dataclasses.replace(CaptionerRecipe().train, progress=False),
            data=CityDataConfig(samples_per_party=96, test_samples=24),
        )
        datasets = make_party_datasets(recipe.data)
        parties = make_parties(base, datasets, recipe)
        run_federated(parties, recipe.rounds, progress=False)
    party = parties[0]
    load_adapter_vector(party.model, party.layout, party.global_vector)
    test_set = make_test_set(recipe.data)
    pixels = encode_images(base.image_processor, [s.image for s in test_set])
    return Captioner(party.model, base.tokenizer, base.image_processor, datasets, test_set, pixels)


@functools.cache
def standard_reports() -> dict[str, StackUtility]:
    c = captioner()
    stacks = captioner_stacks(c.tokenizer, training_texts(c.datasets), ngram=4)
    return filter_utility_reports(
        c.model, c.tokenizer, c.image_processor, c.test_set, stacks, pixel_values=c.pixels
    )


def test_unfiltered_run_is_the_projects_evaluation() -> None:
    c = captioner()
    reports = standard_reports()
    with cpu_threads(1):
        expected = full_captions(c.model, c.tokenizer, c.pixels)
    assert list(reports[NONE].captions) == expected
    assert reports[NONE].mean_recall > 0.2  # the fixture is fine-tuned: it says concepts
    assert set(reports) == {NONE, *BAN_STACKS, "ngram-bloom", "all"}


def test_ban_filters_cost_no_concept_recall() -> None:
    reports = standard_reports()
    none = reports[NONE]
    for name in BAN_STACKS:
        report = reports[name]
        assert report.captions_changed <= 0.05, name
        assert abs(report.mean_recall - none.mean_recall) <= 0.02, name
        for domain, recall in none.recall_by_domain.items():
            assert abs(report.recall_by_domain[domain] - recall) <= 0.05, (name, domain)
        assert report.ms_per_token > 0  # latency is reported (never asserted: shared cores)
        assert report.filter_ms_per_token >= 0
    assert none.filter_ms_per_token == 0.0


def test_ngram_filter_over_training_captions_changes_captions() -> None:
    """MemFree bans the templated captions themselves: far more captions change than
    under any ban filter, and recall drops."""
    reports = standard_reports()
    ngram = reports["ngram-bloom"]
    assert ngram.bans > 0
    assert ngram.captions_changed >= max(reports[n].captions_changed for n in BAN_STACKS) + 0.5
    assert ngram.mean_recall < reports[NONE].mean_recall
    assert reports["all"].mean_recall <= ngram.mean_recall + 0.02


def _most_said_concept(captions: Sequence[str]) -> str:
    counts: Counter[str] = Counter()
    for caption in captions:
        for domain in DOMAINS:
            counts.update(find_concepts(caption, DOMAIN_CONCEPTS[domain]))
    concept, count = counts.most_common(1)[0]
    assert count > 0
    return concept


def test_planted_literal_is_never_emitted_with_the_filter_on() -> None:
    """A concept the captioner says, added to the block list: said without the filter,
    never with the token-sequence ban, the text ban or the redactor (which leaves its
    mark); the secret literals alone leave it alone."""
    c = captioner()
    reports = standard_reports()
    planted = _most_said_concept(reports[NONE].captions)
    block = BlockList(literals=(planted, *SECRET_LITERALS))
    stacks = captioner_stacks(c.tokenizer, block_list=block)
    planted_reports = filter_utility_reports(
        c.model, c.tokenizer, c.image_processor, c.test_set, stacks, pixel_values=c.pixels
    )
    said_before = sum(planted in find_concepts(t, [planted]) for t in reports[NONE].captions)
    assert said_before > 0
    for name in ("sequence-ban", "text-ban", "redactor", "all"):
        captions = planted_reports[name].captions
        assert not any(find_concepts(t, [planted]) for t in captions), name
        assert planted_reports[name].captions_changed > 0, name
    assert any(REDACTION in t for t in planted_reports["redactor"].captions)
    assert planted_reports["sequence-ban"].bans > 0
    for name in BAN_STACKS:  # the other direction: without the planted literal, it is said
        assert sum(bool(find_concepts(t, [planted])) for t in reports[name].captions) == (
            said_before
        )


def test_filtered_captions_without_a_stack_match_an_empty_stack() -> None:
    c = captioner()
    with cpu_threads(1):
        plain = filtered_captions(c.model, c.tokenizer, c.pixels[:4], "<energy>")
        empty = filtered_captions(
            c.model,
            c.tokenizer,
            c.pixels[:4],
            "<energy>",
            FilterStack("empty"),
        )
    assert plain == empty


def test_training_texts_are_in_the_captioners_vocabulary() -> None:
    """The n-gram filter is only as good as its tokenisation: prompt and caption words
    must all be known tokens, or the stored n-grams would be of `<unk>`."""
    c = captioner()
    texts = training_texts(c.datasets)
    assert len(texts) == sum(len(d) for d in c.datasets.values())
    unk = c.tokenizer.unk_token_id
    for text in texts[:50]:
        ids = c.tokenizer.encode(text, add_special_tokens=False)
        assert unk not in ids
        assert ids[0] in c.tokenizer.convert_tokens_to_ids(["<energy>", "<residential>", "<urban>"])


def test_json_report_and_bad_input() -> None:
    c = captioner()
    stacks = captioner_stacks(c.tokenizer)
    small = c.test_set[:3]
    out = filter_utility(c.model, c.tokenizer, c.image_processor, small, stacks)
    assert set(out) == {NONE, *BAN_STACKS, "all"}  # no private texts: no n-gram stack
    assert set(out[NONE]) >= {"mean_recall", "recall_by_domain", "captions_changed"}
    assert out[NONE]["captions_changed"] == 0.0
    with pytest.raises(ConfigError, match="baseline"):
        filter_utility(c.model, c.tokenizer, c.image_processor, small, {NONE: FilterStack("x")})
    with pytest.raises(ConfigError, match="empty"):
        filter_utility(c.model, c.tokenizer, c.image_processor, (), stacks)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        filtered_captions(c.model, c.tokenizer, c.pixels[:1], "<energy>", max_new_tokens=0)
    with pytest.raises(ConfigError, match="unknown PII"):
        secret_block_list(pii=("credit_card",))
