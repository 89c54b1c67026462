"""Output blacklisting filters on the built-in vision-language captioner, and their cost.

Why a module of its own: the filters (attacks.output.filters) were built and measured on a
causal LM, whose generation input is a text prompt. The captioner's input is an image;
its decoder starts from `<bos> <domain prompt>` and reads the image through
cross-attention. The filters' logits processors only see the decoder's token ids, so they
plug into the captioner's decoding loop unchanged -- what changes is what they cost:

- the ban filters (token-sequence ban, text-pattern ban, redactor) block secret-like
  strings that a city-scene captioner never says, so on it they should cost nothing but
  time. (A literal outside the captioner's closed word vocabulary tokenises to `<unk>`,
  which the captioner never emits: the sequence ban cannot fire on it at all, which is
  the point -- such a secret is unsayable by this model; the text-level check and the
  redactor still see decoded text.)
- the n-gram Bloom filter (MemFree) bans every n-gram of the parties' private training
  captions. A templated captioner's correct answer *is* a training n-gram ("<energy> gas
  pipeline with leak"), so this filter is expected to destroy concept recall. It is
  reported as measured.

The decoding loop mirrors learner.evaluation.generation.greedy_captions (greedy, no KV
cache, one caption per image per domain prompt, full caption = domain views joined) with
the stack's processors applied to each step's logits, so the "none" stack reproduces the
project's evaluation captions exactly and recall comes from learner.metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessorList, PreTrainedTokenizerBase

from fedveil.attacks.output.filters.patterns import PII_PATTERNS, BlockList
from fedveil.attacks.output.filters.stack import FilterStack, standard_stacks
from fedveil.attacks.output.language_model import cpu_threads
from fedveil.errors import ConfigError
from fedveil.learner.data.concepts import DOMAIN_PROMPTS, DOMAINS, Domain
from fedveil.learner.data.datasets import PartyDataset, SceneExample
from fedveil.learner.evaluation.generation import greedy_token_ids
from fedveil.learner.evaluation.report import FULL_CAPTION_SEPARATOR
from fedveil.learner.metrics import concept_scores
from fedveil.learner.training.batches import encode_images

SECRET_LITERALS: tuple[str, ...] = (
    "4719 2280",
    "555-0142",
    "jane.doe@example.com",
    "gate code 5531",
    "17 Elm Street",
    "AX-99-ZQ",
)
"""Secret-like strings (an ID, a phone number, an e-mail, an access code, an address, a
plate) in the families PII_PATTERNS imitates. None occurs in a city-scene caption, so a
ban on them should leave the captions alone: any change is the filter's false positive."""

NONE = "none"
"""Name of the unfiltered run every stack is compared against."""


def secret_block_list(
    literals: Sequence[str] = SECRET_LITERALS, *, pii: Iterable[str] = tuple(PII_PATTERNS)
) -> BlockList:
    """The blacklist of an owner who knows some secrets and the PII families: the literals
    plus the named PII regexes (every one by default)."""
    unknown = [p for p in pii if p not in PII_PATTERNS]
    if unknown:
        raise ConfigError(f"unknown PII patterns {unknown}; known: {sorted(PII_PATTERNS)}")
    return BlockList(literals=tuple(literals), patterns=tuple(PII_PATTERNS[p] for p in pii))


def training_texts(datasets: Mapping[str, PartyDataset] | Iterable[PartyDataset]) -> list[str]:
    """The parties' private training sequences as the decoder saw them: prompt + caption.

    Why the prompt too: the n-gram filter matches the generated context `<bos> <prompt>
    words...`, and NGramBloom.from_texts adds bos and eos, so "<energy> grid normal"
    stores exactly the n-grams training showed the decoder.
    """
    parties = datasets.values() if isinstance(datasets, Mapping) else datasets
    return [f"{e.prompt} {e.caption}" for party in parties for e in party]


def captioner_stacks(
    tokenizer: Any,
    private_texts: Sequence[str] = (),
    *,
    block_list: BlockList | None = None,
    ngram: int = 4,
) -> dict[str, FilterStack]:
    """standard_stacks for the captioner: secret literals + PII regexes, and the n-gram
    filter over `private_texts` (omitted when empty).

    text_top_k=None: the word vocabulary is ~100 tokens, so the text check looks at every
    candidate (exact) instead of truncating to the top 32.
    """
    return standard_stacks(
        tokenizer,
        block_list if block_list is not None else secret_block_list(),
        private_texts=private_texts,
        ngram=ngram,
        text_top_k=None,
    )


@dataclass
class GenerationStats:
    """Tokens generated (eos included, padding after eos not), the wall-clock seconds of
    decoding (encoder and redaction included), and the part spent inside the filters.

    Why both: decoding runs the whole batch every step, finished rows included, so the
    wall time per *generated* token also moves with how long the captions are (a filter
    that makes captions end together looks faster); the time inside the processors and
    the redactor is what the filter itself adds.
    """

    tokens: int = 0
    seconds: float = 0.0
    filter_seconds: float = 0.0

    @property
    def ms_per_token(self) -> float:
        return 1000.0 * self.seconds / self.tokens if self.tokens else float("nan")

    @property
    def filter_ms_per_token(self) -> float:
        return 1000.0 * self.filter_seconds / self.tokens if self.tokens else float("nan")


@torch.no_grad()
def filtered_captions(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pixel_values: torch.Tensor,
    prompt: str,
    stack: FilterStack | None = None,
    *,
    max_new_tokens: int = 40,
    batch_size: int = 128,
    stats: GenerationStats | None = None,
) -> list[str]:
    """One caption per image after `<bos> prompt`, greedy, with `stack` applied.

    The stack's processors see the decoder ids (bos, prompt and the caption so far) and
    the step's logits, as `generate(logits_processor=LogitsProcessorList(...))` would
    pass them; the redactor rewrites each decoded caption. stack=None (or an empty stack)
    gives exactly learner.evaluation.greedy_captions: both run greedy_token_ids.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    processors = LogitsProcessorList(stack.processors if stack is not None else ())
    redactor = stack.redactor if stack is not None else None
    filter_seconds = 0.0

    def hook(ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        nonlocal filter_seconds
        ticked = time.perf_counter()
        out = processors(ids, logits)  # type: ignore[arg-type]
        filter_seconds += time.perf_counter() - ticked
        return out

    began = time.perf_counter()
    token_lists = greedy_token_ids(
        model,
        tokenizer,
        pixel_values,
        prompt,
        max_new_tokens,
        batch_size,
        threads=None,
        logits_hook=hook if processors else None,
    )
    captions = []
    for tokens in token_lists:
        text = str(tokenizer.decode(tokens, skip_special_tokens=True)).strip()
        if redactor is not None:
            ticked = time.perf_counter()
            text = redactor.redact(text)
            filter_seconds += time.perf_counter() - ticked
        captions.append(text)
    if stats is not None:
        stats.seconds += time.perf_counter() - began
        # the eos step counts as a generated token; a caption cut at the limit has none
        stats.tokens += sum(len(t) + (len(t) < max_new_tokens) for t in token_lists)
        stats.filter_seconds += filter_seconds
    return captions


def filtered_full_captions(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pixel_values: torch.Tensor,
    stack: FilterStack | None = None,
    domains: Sequence[Domain] = DOMAINS,
    *,
    max_new_tokens: int = 40,
    stats: GenerationStats | None = None,
) -> list[str]:
    """The full caption per image (domain views joined, as learner.evaluation.report
    scores them), every view generated with `stack`."""
    vocab = tokenizer.get_vocab()
    prompts = [DOMAIN_PROMPTS[Domain(d)] for d in domains]
    missing = [p for p in prompts if p not in vocab]
    if missing:
        raise ConfigError(f"the tokenizer lacks the domain prompts {missing}; not a captioner")
    views = [
        filtered_captions(
            model, tokenizer, pixel_values, p, stack, max_new_tokens=max_new_tokens, stats=stats
        )
        for p in prompts
    ]
    return [FULL_CAPTION_SEPARATOR.join(parts) for parts in zip(*views, strict=True)]


@dataclass(frozen=True)
class StackUtility:
    """One stack's utility on the test set, against the unfiltered run of the same call."""

    name: str
    mean_recall: float
    recall_by_domain: dict[str, float]
    precision_by_domain: dict[str, float]
    captions_changed: float
    """Share of full captions that differ from the unfiltered ones."""
    ms_per_token: float
    added_ms_per_token: float
    """ms_per_token minus the unfiltered run's (wall clock: reported, never asserted)."""
    filter_ms_per_token: float
    """Time inside the stack's processors and redactor per generated token (see
    GenerationStats for why this is the less confounded latency figure)."""
    bans: int
    """Tokens the stack's processors banned (summed over rows and steps)."""
    captions: tuple[str, ...] = field(default=(), repr=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "mean_recall": self.mean_recall,
            "recall_by_domain": dict(self.recall_by_domain),
            "precision_by_domain": dict(self.precision_by_domain),
            "captions_changed": self.captions_changed,
            "ms_per_token": self.ms_per_token,
            "added_ms_per_token": self.added_ms_per_token,
            "filter_ms_per_token": self.filter_ms_per_token,
            "bans": self.bans,
        }


def _bans(stack: FilterStack) -> int:
    return sum(int(getattr(p, "bans", 0)) for p in stack.processors)


def filter_utility_reports(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    image_processor: object,
    test_set: Sequence[SceneExample],
    stacks: Mapping[str, FilterStack],
    *,
    pixel_values: torch.Tensor | None = None,
    domains: Sequence[Domain] = DOMAINS,
    max_new_tokens: int = 40,
    threads: int | None = 1,
    warmup: int = 8,
) -> dict[str, StackUtility]:
    """Per stack (and "none" first): concept recall, captions changed, latency.

    Every stack decodes the same images in the same order; a short unfiltered warm-up on
    `warmup` images runs first so the baseline's time does not carry first-call costs
    (allocator, kernel selection) that would make every filter look free.
    """
    if not test_set:
        raise ConfigError("the test set is empty")
    if NONE in stacks:
        raise ConfigError(f"{NONE!r} is the unfiltered baseline; name the stack otherwise")
    if pixel_values is None:
        pixel_values = encode_images(image_processor, [s.image for s in test_set])
    truths = [s.concepts for s in test_set]
    runs: dict[str, FilterStack | None] = {NONE: None, **stacks}
    out: dict[str, StackUtility] = {}
    baseline: list[str] = []
    base_ms = float("nan")
    with cpu_threads(threads):
        if warmup > 0:
            filtered_full_captions(
                model, tokenizer, pixel_values[:warmup], None, domains, max_new_tokens=4
            )
        for name, stack in runs.items():
            bans_before = _bans(stack) if stack is not None else 0
            stats = GenerationStats()
            captions = filtered_full_captions(
                model,
                tokenizer,
                pixel_values,
                stack,
                domains,
                max_new_tokens=max_new_tokens,
                stats=stats,
            )
            if stack is None:
                baseline, base_ms = captions, stats.ms_per_token
            scores = concept_scores(captions, truths, domains)
            changed = sum(a != b for a, b in zip(baseline, captions, strict=True))
            out[name] = StackUtility(
                name=name,
                mean_recall=scores.mean_recall,
                recall_by_domain=scores.recall_by_domain,
                precision_by_domain=scores.precision_by_domain,
                captions_changed=changed / len(captions),
                ms_per_token=stats.ms_per_token,
                added_ms_per_token=stats.ms_per_token - base_ms,
                filter_ms_per_token=stats.filter_ms_per_token,
                bans=(_bans(stack) - bans_before) if stack is not None else 0,
                captions=tuple(captions),
            )
    return out


def filter_utility(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    image_processor: object,
    test_set: Sequence[SceneExample],
    stacks: Mapping[str, FilterStack],
    **kwargs: Any,
) -> dict[str, dict[str, object]]:
    """JSON-ready filter_utility_reports: {stack: {mean_recall, recall_by_domain,
    precision_by_domain, captions_changed, ms_per_token, added_ms_per_token,
    filter_ms_per_token, bans}}."""
    reports = filter_utility_reports(model, tokenizer, image_processor, test_set, stacks, **kwargs)
    return {name: report.as_dict() for name, report in reports.items()}
