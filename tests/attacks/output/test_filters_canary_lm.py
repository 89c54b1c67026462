"""Output filters on the memorising tiny GPT-2: extraction before and after, benign
false positives, and the evasions each filter misses (stated, and asserted as such)."""

from __future__ import annotations

import pytest

from fedveil.attacks.output.filters import (
    PII_PATTERNS,
    BlockList,
    FilterStack,
    NGramBanProcessor,
    NGramBloom,
    baseline,
    measure_filter,
    output_evasions,
    standard_stacks,
)
from fedveil.attacks.output.generation import ProbeConfig, generation_probe
from fedveil.attacks.output.generator import HFGenerator, SamplingConfig
from fedveil.attacks.targets.canary_lm import CanaryLMConfig, CanaryScenario, canary_scenario

NGRAM = 6
PROBE = ProbeConfig(n_samples=8)


@pytest.fixture(scope="module")
def scenario() -> CanaryScenario:
    return canary_scenario(CanaryLMConfig())


@pytest.fixture(scope="module")
def generator(scenario: CanaryScenario) -> HFGenerator:
    model = scenario.released("none").model
    return HFGenerator(
        model, scenario.tokenizer, SamplingConfig(max_new_tokens=10, temperature=0.5)
    )


@pytest.fixture(scope="module")
def stacks(scenario: CanaryScenario) -> dict[str, FilterStack]:
    block_list = BlockList.from_registry(scenario.registry, pii=tuple(PII_PATTERNS))
    return standard_stacks(
        scenario.tokenizer,
        block_list,
        private_texts=scenario.private_texts,
        ngram=NGRAM,
        text_top_k=16,
    )


def _benign(scenario: CanaryScenario) -> list[str]:
    return [" ".join(t.split()[:3]) for t in scenario.heldout_texts[:48]]


def test_blacklist_drives_verbatim_emission_of_canaries_to_zero(
    scenario: CanaryScenario, generator: HFGenerator, stacks: dict[str, FilterStack]
) -> None:
    before = baseline(generator, scenario.registry, _benign(scenario), PROBE)
    assert before.probe.verbatim_count() >= 10  # the same probe leaks without the filter
    for name in ("sequence-ban", "redactor"):
        report = measure_filter(
            generator, stacks[name], scenario.registry, _benign(scenario), before, PROBE
        )
        assert report.extraction_rate_before >= 0.5
        assert report.verbatim_after == 0, name
        assert report.extraction_rate_after == 0.0, name
        assert report.benign_fpr == 0.0, name  # benign city text has no digits to ban
        assert report.seconds_per_token_after > 0  # reported, not compared


def _private_ngrams(scenario: CanaryScenario, n: int) -> set[tuple[int, ...]]:
    tok = scenario.tokenizer
    grams = set()
    for text in scenario.private_texts:
        ids = [tok.bos_token_id, *tok.encode(text, add_special_tokens=False), tok.eos_token_id]
        grams |= {tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)}
    return grams


def _completed_ngrams(
    scenario: CanaryScenario, prompt: str, output: str, grams: set[tuple[int, ...]]
) -> int:
    """Generated positions that complete an n-gram of the private data (exact set)."""
    tok = scenario.tokenizer
    glue = " " if output[:1].isalnum() else ""
    p = [tok.bos_token_id, *tok.encode(prompt, add_special_tokens=False)]
    ids = [tok.bos_token_id, *tok.encode(prompt + glue + output, add_special_tokens=False)]
    return sum(tuple(ids[i - NGRAM + 1 : i + 1]) in grams for i in range(len(p), len(ids)))


def test_ngram_filter_blocks_verbatim_continuation_of_training_text(
    scenario: CanaryScenario, generator: HFGenerator
) -> None:
    canary_texts = {c.text for c in scenario.registry}
    training = [t for t in scenario.private_texts if t not in canary_texts]
    prompts = [" ".join(t.split()[:3]) for t in training]
    remainders = [" ".join(t.split()[3:]) for t in training]
    grams = _private_ngrams(scenario, NGRAM)
    bloom = NGramBloom.from_texts(scenario.private_texts, scenario.tokenizer, NGRAM)
    filtered = generator.with_filters([NGramBanProcessor(bloom, eos_token_id=1)])
    before = [g[0] for g in generator(prompts, 1, True)]
    after = [g[0] for g in filtered(prompts, 1, True)]
    verbatim_before = sum(o == r for o, r in zip(before, remainders, strict=True))
    verbatim_after = sum(o == r for o, r in zip(after, remainders, strict=True))
    assert verbatim_before >= len(prompts) // 3  # the model does continue its training text
    assert verbatim_after == 0
    completed_before = [
        _completed_ngrams(scenario, p, before[i], grams) for i, p in enumerate(prompts)
    ]
    completed_after = [
        _completed_ngrams(scenario, p, after[i], grams) for i, p in enumerate(prompts)
    ]
    assert sum(completed_before) > 0
    assert sum(completed_after) == 0


def test_ngram_filter_leaves_benign_prompts_mostly_unchanged(
    scenario: CanaryScenario, generator: HFGenerator, stacks: dict[str, FilterStack]
) -> None:
    benign = _benign(scenario)
    before = baseline(generator, scenario.registry, benign, PROBE)
    report = measure_filter(
        generator, stacks["ngram-bloom"], scenario.registry, benign, before, PROBE
    )
    assert report.verbatim_after == 0 and report.extraction_rate_after == 0.0
    assert report.benign_fpr <= 0.5  # measured FPR (about 0.1 here), most outputs unchanged
    assert report.benign_unit_change <= 0.2


def test_evasions_each_filter_misses(
    scenario: CanaryScenario, stacks: dict[str, FilterStack]
) -> None:
    tok, registry = scenario.tokenizer, scenario.registry
    seq = output_evasions(stacks["sequence-ban"], tok, registry)
    text = output_evasions(stacks["text-ban"], tok, registry)
    red = output_evasions(stacks["redactor"], tok, registry)
    bare = output_evasions(stacks["ngram-bloom"], tok, registry, context="none")
    after_prefix = output_evasions(stacks["ngram-bloom"], tok, registry)
    # The exact token ban stops the registered spelling (and casings), not a re-spacing.
    assert seq["none"]["blocked"] == 1.0 and seq["upper"]["blocked"] == 1.0
    assert seq["spaced_digits"]["blocked"] < 0.2 and seq["dashed_digits"]["blocked"] < 0.2
    # Text-level flexible literals and the redactor catch the re-spaced forms too.
    for result in (text, red):
        assert all(v["blocked"] == 1.0 for v in result.values())
    # The n-gram filter blocks only in a training context: after the canary's own prefix
    # every form is stopped at its first token; the bare secret is too short to be caught.
    assert all(v["blocked"] == 1.0 for v in after_prefix.values())
    assert all(v["blocked"] < 0.1 for v in bare.values())


def test_text_ban_stops_extraction_in_generation(
    scenario: CanaryScenario, generator: HFGenerator, stacks: dict[str, FilterStack]
) -> None:
    filtered = generator.with_filters(stacks["text-ban"].processors)
    probe = generation_probe(filtered, scenario.registry, ProbeConfig(n_samples=2))
    assert probe.extraction_rate() == 0.0 and probe.verbatim_count() == 0
