"""Output filters: keep private strings out of what a released model generates.

Decode-time (transformers LogitsProcessors, pass them to `generate(logits_processor=...)`):
- `SequenceBanProcessor`: bans the token completing a listed token sequence (the
  registry's secrets in their tokenisations, `token_sequences`);
- `TextPatternProcessor`: bans a candidate whose decoded text completes a regex match
  (PII patterns, flexible literals);
- `NGramBanProcessor` over an `NGramBloom`: MemFree, no n-gram of the private data.
After decoding: `Redactor`. What each enforces, and what it misses, is in its module;
`evaluation` measures extraction before/after, benign false positives, latency and
evasions.
"""

from fedveil.attacks.output.filters.evaluation import (
    OUTPUT_EVASIONS,
    PROMPT_EVASIONS,
    Baseline,
    FilterReport,
    baseline,
    forced_emission_blocked,
    measure_filter,
    output_evasions,
    prompt_evasions,
)
from fedveil.attacks.output.filters.ngram_bloom import NGramBanProcessor, NGramBloom
from fedveil.attacks.output.filters.patterns import (
    PII_PATTERNS,
    BlockList,
    literal_pattern,
    new_match,
)
from fedveil.attacks.output.filters.redactor import REDACTION, Redactor
from fedveil.attacks.output.filters.sequence_ban import SequenceBanProcessor, token_sequences
from fedveil.attacks.output.filters.stack import FilterStack, standard_stacks
from fedveil.attacks.output.filters.text_ban import TextPatternProcessor

__all__ = [
    "OUTPUT_EVASIONS",
    "PII_PATTERNS",
    "PROMPT_EVASIONS",
    "REDACTION",
    "Baseline",
    "BlockList",
    "FilterReport",
    "FilterStack",
    "NGramBanProcessor",
    "NGramBloom",
    "Redactor",
    "SequenceBanProcessor",
    "TextPatternProcessor",
    "baseline",
    "forced_emission_blocked",
    "literal_pattern",
    "measure_filter",
    "new_match",
    "output_evasions",
    "prompt_evasions",
    "standard_stacks",
    "token_sequences",
]
