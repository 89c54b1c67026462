"""Named filter configurations: which processors and which redactor, built once.

Why named stacks: the measurements compare "no filter" with each filter alone and all
together on the same prompts and the same random stream, and the benchmark reports
them by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import LogitsProcessor

from fedveil.attacks.output.filters.ngram_bloom import NGramBanProcessor, NGramBloom
from fedveil.attacks.output.filters.patterns import BlockList
from fedveil.attacks.output.filters.redactor import Redactor
from fedveil.attacks.output.filters.sequence_ban import SequenceBanProcessor, token_sequences
from fedveil.attacks.output.filters.text_ban import TextPatternProcessor
from fedveil.errors import ConfigError


@dataclass(frozen=True, eq=False)
class FilterStack:
    """Decode-time processors (applied in order) and an optional post-generation redactor."""

    name: str
    processors: tuple[LogitsProcessor, ...] = ()
    redactor: Redactor | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a filter stack needs a name")


def standard_stacks(
    tokenizer: Any,
    block_list: BlockList,
    *,
    private_texts: Sequence[str] = (),
    ngram: int = 6,
    bloom_fp_rate: float = 1e-3,
    text_top_k: int | None = 32,
    window: int = 48,
) -> dict[str, FilterStack]:
    """The stacks the measurements compare.

    "sequence-ban": the block list's literals as token sequences; "text-ban": its regexes
    and flexible literals checked on decoded text; "redactor": the same patterns after
    decoding; "ngram-bloom": the private texts' n-grams (only if `private_texts`);
    "all": every one of them together.
    """
    eos = tokenizer.eos_token_id
    stacks: dict[str, FilterStack] = {}
    decode_time: list[LogitsProcessor] = []
    redactor = None
    if block_list.literals:
        seq = SequenceBanProcessor(
            token_sequences(tokenizer, block_list.literals), eos_token_id=eos
        )
        stacks["sequence-ban"] = FilterStack("sequence-ban", (seq,))
        decode_time.append(seq)
    patterns = block_list.compiled()
    if patterns:
        text = TextPatternProcessor(
            tokenizer, patterns, top_k=text_top_k, window=window, eos_token_id=eos
        )
        stacks["text-ban"] = FilterStack("text-ban", (text,))
        decode_time.append(text)
        redactor = Redactor(patterns)
        stacks["redactor"] = FilterStack("redactor", (), redactor)
    if private_texts:
        bloom = NGramBloom.from_texts(
            private_texts, tokenizer, ngram, false_positive_rate=bloom_fp_rate
        )
        ngram_ban = NGramBanProcessor(bloom, eos_token_id=eos)
        stacks["ngram-bloom"] = FilterStack("ngram-bloom", (ngram_ban,))
        decode_time.append(ngram_ban)
    if not stacks:
        raise ConfigError("nothing to filter: the block list is empty and no private texts")
    stacks["all"] = FilterStack("all", tuple(decode_time), redactor)
    return stacks
