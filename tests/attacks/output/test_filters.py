"""Output filters in isolation: what each bans, and what it lets through."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from fedveil.attacks.output.canaries import CanaryConfig, draw_registry
from fedveil.attacks.output.filters import (
    PII_PATTERNS,
    REDACTION,
    BlockList,
    FilterStack,
    NGramBanProcessor,
    NGramBloom,
    Redactor,
    SequenceBanProcessor,
    TextPatternProcessor,
    forced_emission_blocked,
    literal_pattern,
    new_match,
    token_sequences,
)
from fedveil.attacks.targets.canary_lm import build_tokenizer, vocabulary_words
from fedveil.errors import ConfigError

VOCAB = 12


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return build_tokenizer(vocabulary_words())


def _ids(tokenizer: object, text: str, bos: bool = True) -> list[int]:
    ids = list(tokenizer.encode(text, add_special_tokens=False))  # type: ignore[attr-defined]
    return [1, *ids] if bos else ids


def _banned(processor: object, context: list[int], vocab: int) -> set[int]:
    scores = processor(torch.tensor([context]), torch.zeros((1, vocab)))  # type: ignore[operator]
    return set(torch.nonzero(~torch.isfinite(scores[0])).flatten().tolist())


# --- token sequences -------------------------------------------------------------------


def test_sequence_ban_bans_only_the_completing_token() -> None:
    ban = SequenceBanProcessor([(5, 6, 7), (9,)], eos_token_id=1)
    assert _banned(ban, [2, 5, 6], VOCAB) == {7, 9}  # 7 would complete 5 6 7
    assert _banned(ban, [2, 5], VOCAB) == {9}  # writing the start of a secret is allowed
    assert _banned(ban, [6], VOCAB) == {9}  # contexts shorter than a sequence are fine


def test_sequence_ban_keeps_eos_when_everything_is_banned() -> None:
    ban = SequenceBanProcessor([(t,) for t in range(VOCAB)], eos_token_id=1)
    scores = ban(torch.tensor([[3]]), torch.zeros((1, VOCAB)))  # type: ignore[arg-type]
    assert torch.isfinite(scores[0]).tolist() == [i == 1 for i in range(VOCAB)]
    with pytest.raises(ConfigError):
        SequenceBanProcessor([])


def test_token_sequences_list_each_tokenisation(tokenizer: object) -> None:
    seqs = token_sequences(tokenizer, ["4719"])
    space = tokenizer.convert_tokens_to_ids("\u2581")  # type: ignore[attr-defined]
    digits = tuple(tokenizer.convert_tokens_to_ids(list("4719")))  # type: ignore[attr-defined]
    assert (space, *digits) in seqs  # after a space: "▁" then the digits
    assert digits in seqs  # after punctuation, e.g. "code:4719"
    ban = SequenceBanProcessor(seqs)
    context = _ids(tokenizer, "the code:471")
    assert digits[-1] in ban.banned_next(context)
    spaced = _ids(tokenizer, "the code 4 7 1")
    assert digits[-1] not in ban.banned_next(spaced)  # re-spaced: other tokens, not stopped


# --- text patterns ---------------------------------------------------------------------


def test_new_match_sees_overlapping_and_only_new_matches() -> None:
    phone = re.compile(PII_PATTERNS["phone"])
    text = "call 555-1234 or 234-5678"
    assert new_match(phone, text, len(text) - 1)
    assert not new_match(phone, text, len(text))  # nothing new
    # "555-1234-5678": the old match "555-1234" hides the overlapping "234-5678"
    hidden = re.compile(r"\d{3}-\d{4}")
    assert new_match(hidden, "555-1234-5678", len("555-1234-567"))


def test_literal_pattern_catches_spacing_and_casing() -> None:
    pattern = re.compile(literal_pattern("52 Poplar Street"))
    for variant in ("52 poplar street", "5 2 POPLAR street", "5-2 poplar.street"):
        assert pattern.search(variant), variant
    assert not pattern.search("53 poplar street")
    with pytest.raises(ConfigError):
        literal_pattern("   ")


def test_text_ban_bans_the_digit_completing_a_phone_number(tokenizer: object) -> None:
    processor = TextPatternProcessor(
        tokenizer, [re.compile(PII_PATTERNS["phone"])], top_k=None, eos_token_id=1
    )
    vocab = len(tokenizer)  # type: ignore[arg-type]
    context = _ids(tokenizer, "call anna on 555 013")
    banned = _banned(processor, context, vocab)
    digits = set(tokenizer.convert_tokens_to_ids(list("0123456789")))  # type: ignore[attr-defined]
    assert banned == digits  # any 7th digit completes a phone number
    assert not _banned(processor, _ids(tokenizer, "call anna on 555 01"), vocab)


def test_text_ban_top_k_removes_unchecked_tokens(tokenizer: object) -> None:
    processor = TextPatternProcessor(tokenizer, [re.compile("zzz")], top_k=3)
    scores = torch.arange(20.0)[None]
    out = processor(torch.tensor([[1, 5]]), scores)  # type: ignore[arg-type]
    assert torch.isfinite(out[0]).sum() == 3 and torch.isfinite(out[0, -3:]).all()


def test_block_list_validation_and_registry() -> None:
    with pytest.raises(ConfigError, match="empty string"):
        BlockList(patterns=(r"\d*",))
    with pytest.raises(ConfigError, match="bad regex"):
        BlockList(patterns=("(",))
    registry = draw_registry(CanaryConfig(n_canaries=10, seed=1))
    full = BlockList.from_registry(registry, pii=("phone",))
    assert set(full.literals) == {c.secret for c in registry}
    assert len(full.compiled()) == 1 + len(full.literals)
    members = BlockList.from_registry(registry, members_only=True)
    assert set(members.literals) == {c.secret for c in registry.members}
    with pytest.raises(ConfigError):
        BlockList.from_registry(registry, pii=("iban",))


# --- redactor --------------------------------------------------------------------------


def test_redactor_replaces_matches_in_the_continuation_only() -> None:
    redactor = Redactor(BlockList(patterns=tuple(PII_PATTERNS.values())).compiled())
    assert redactor.redact("call me at 555 0134 now") == f"call me at {REDACTION} now"
    # the pattern needs the prompt's "code" for context; the prompt itself is left alone
    prompt = "the gate code of anna berg is"
    assert redactor(prompt, "4719.") == f"{REDACTION}."
    assert redactor("my number is 555 0134 and", " that is all") == " that is all"
    assert redactor.redact("a quiet lane near the bridge") == "a quiet lane near the bridge"
    assert redactor.redact("write to anna.berg@mail.com") == f"write to {REDACTION}"
    assert redactor.redact("id 123-45-6789") == f"id {REDACTION}"


# --- n-gram Bloom filter ---------------------------------------------------------------


def test_bloom_has_no_false_negatives_and_few_false_positives() -> None:
    rng = np.random.default_rng(0)
    bloom = NGramBloom(3, expected_items=5000, false_positive_rate=0.01)
    seqs = [rng.integers(0, 1000, 30).tolist() for _ in range(180)]
    for s in seqs:
        bloom.add_sequence(s)
    stored = {tuple(s[i : i + 3]) for s in seqs for i in range(len(s) - 2)}
    assert all(g in bloom for g in stored)
    fresh = {tuple(rng.integers(1000, 2000, 3).tolist()) for _ in range(5000)}
    assert sum(g in bloom for g in fresh) / len(fresh) < 0.03
    with pytest.raises(ConfigError):
        NGramBloom(1, 10)


def test_ngram_ban_stops_the_completing_token(tokenizer: object) -> None:
    text = "the rusty meter leaks near the old gate"
    bloom = NGramBloom.from_texts([text], tokenizer, 4)
    ban = NGramBanProcessor(bloom, eos_token_id=1)
    vocab = len(tokenizer)  # type: ignore[arg-type]
    context = _ids(tokenizer, "the rusty meter")
    next_id = _ids(tokenizer, "the rusty meter leaks", bos=False)[-1]
    assert next_id in _banned(ban, context, vocab)
    assert not _banned(ban, _ids(tokenizer, "a rusty meter"), vocab)  # unseen 3-token context


def test_forced_emission_check(tokenizer: object) -> None:
    seq = SequenceBanProcessor(token_sequences(tokenizer, ["4719"]))
    stack = FilterStack("sequence-ban", (seq,))
    prompt = "the gate code of anna berg is"
    assert forced_emission_blocked(stack, tokenizer, prompt, " 4719") is True
    assert forced_emission_blocked(stack, tokenizer, prompt, " 4 7 1 9") is False
    assert forced_emission_blocked(stack, tokenizer, prompt, " 1234") is False
    assert forced_emission_blocked(stack, tokenizer, prompt, " qwerty") is None  # unknown words
