"""The built-in captioner's word-level tokenizer.

Why word level: the captions use a closed vocabulary of a hundred-odd words, so one token
per word keeps sequences short (fast on two CPU cores) and makes every concept a fixed,
readable token sequence. Prompt tokens (`<scene>`, `<energy>`, ...) are special tokens, so
they are never split and `skip_special_tokens` drops them from decoded captions.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from fedveil.errors import ConfigError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
CORE_SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK)


def build_word_tokenizer(words: Sequence[str], prompts: Sequence[str]) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over `words`, with pad/bos/eos/unk and the prompt tokens.

    Ids are assigned in a fixed order (core specials, prompts, then the sorted words), so
    the same vocabulary always gives the same ids: adapters trained by different parties
    index the same embedding rows.
    """
    clash = (set(words) & set(prompts)) | (set(words) & set(CORE_SPECIALS))
    if clash:
        raise ConfigError(f"words {sorted(clash)} collide with special tokens")
    if len(set(prompts)) != len(prompts):
        raise ConfigError(f"prompt tokens must be unique, got {list(prompts)}")
    if any(not w or any(ch.isspace() for ch in w) for w in words):
        raise ConfigError("tokenizer words must be non-empty and contain no whitespace")
    ordered = [*CORE_SPECIALS, *prompts, *sorted(set(words))]
    vocab = {token: index for index, token in enumerate(ordered)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=list(prompts),
        model_max_length=64,
    )
