"""Target for the output attacks built from a USER's causal LM and texts, not the built-in one.

Why: `fedveil audit` must answer "what would the federation's released model reveal
about party 0's records" for the model and data a deployment actually uses. The user's
model directory is the open base model (and the reference model of the reference
attack); the user's JSONL texts are split, deterministically from the seed, into
held-out texts (benign prompts, held-out loss), party 0's private texts (with canaries
planted by fair coins, as in the built-in scenario) and a pool the other parties' texts
are taken from. The result is an ordinary `CanaryScenario`, so
attacks.targets.canary_federation.release and attacks.measure.output_leakage work unchanged
for every protection.

Everything is refused early with a `ConfigError` that says what to fix: a directory
that is missing, a Hub name, a captioner, a tokenizer without character offsets or one
that cannot spell the canaries, a malformed JSONL line, too few texts, texts longer
than the model's context.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from transformers.pytorch_utils import Conv1D

from fedveil.attacks.output.canaries import CanaryConfig, CanaryRegistry, plant_canaries
from fedveil.attacks.targets.canary_lm import CanaryLMConfig, CanaryScenario, special_ids
from fedveil.errors import ConfigError
from fedveil.learner.data.text import load_jsonl_texts
from fedveil.learner.lora.config import default_target_modules
from fedveil.learner.models.loading import (
    LoadedModel,
    ModelKind,
    ModelLoadError,
    load_model,
    model_kind,
)

MIN_TEXTS = 20
"""Fewest distinct texts: held-out, party 0 and the other parties each need several."""
HELDOUT_SHARE = 0.2
"""Share of the texts held out; the rest is a third for party 0, two thirds for the
others (equal shares in the default three-party federation)."""
PRIVATE_SHARE = 1 / 3


def user_scenario(
    model_dir: Path,
    texts: Path,
    *,
    n_canaries: int = 48,
    seed: int = 0,
    max_length: int | None = None,
) -> CanaryScenario:
    """The canary scenario of the causal LM in `model_dir` fine-tuned on `texts`.

    model_dir: a local directory saved with `save_pretrained` (config.json, weights and
    a fast tokenizer); never a Hub name. texts: JSONL, one {"text": ...} object per line.
    n_canaries: canaries drawn (each planted in party 0's texts by a fair coin).
    max_length: tokens per training sequence, bos and eos included (None: the longest
    text's, canaries included); it must fit the model's context.

    The training hyper-parameters are CanaryLMConfig's defaults (used by
    `CanaryScenario.released`); the federation's come from FederationSettings.
    """
    loaded = _load_causal_lm(Path(model_dir))
    tokenizer = _prepare_tokenizer(loaded)
    corpus = _read_texts(Path(texts))
    heldout, private, pool = split_texts(corpus, seed)
    canaries = CanaryConfig(n_canaries=n_canaries, seed=seed)
    planted, registry = plant_canaries(private, canaries)
    _check_canaries(tokenizer, registry)
    length = _sequence_length(
        loaded, [*planted, *pool, *heldout, *(c.text for c in registry)], max_length
    )
    targets = default_target_modules(loaded.model)
    config = CanaryLMConfig(
        canaries=canaries,
        n_private=len(private),
        max_length=length,
        lora_targets=targets,
        seed=seed,
    )
    return CanaryScenario(
        config,
        tokenizer,
        registry,
        public_texts=[],
        private_texts=planted,
        heldout_texts=heldout,
        base=loaded.model,  # type: ignore[arg-type]
        lora_targets=targets,
        fan_in_fan_out=_fan_in_fan_out(loaded.model, targets),
        party_pool=tuple(pool),
        origin=f"{loaded.path} ({type(loaded.model).__name__}) on {texts}",
    )


def split_texts(corpus: Sequence[str], seed: int) -> tuple[list[str], list[str], list[str]]:
    """(held out, party 0's private, the other parties' pool): disjoint, from one seeded
    permutation, so the same texts and seed always give the same split."""
    if len(corpus) < MIN_TEXTS:
        raise ConfigError(
            f"{len(corpus)} distinct non-empty texts is too few to audit; give at least "
            f"{MIN_TEXTS} (held-out texts, party 0's texts and the other parties' texts are "
            "split from them)"
        )
    order = np.random.default_rng([seed, 0x05E4]).permutation(len(corpus))
    shuffled = [corpus[int(i)] for i in order]
    n_heldout = max(2, int(round(HELDOUT_SHARE * len(corpus))))
    n_private = max(2, int(math.floor(PRIVATE_SHARE * (len(corpus) - n_heldout))))
    heldout = shuffled[:n_heldout]
    private = shuffled[n_heldout : n_heldout + n_private]
    pool = shuffled[n_heldout + n_private :]
    return heldout, private, pool


def _load_causal_lm(directory: Path) -> LoadedModel:
    if not directory.is_dir():
        raise ConfigError(
            f"{str(directory)!r} is not a local model directory. fedveil never downloads "
            "models: save a Hub model to a directory first (save_pretrained) and pass that "
            "directory, which must hold config.json, the weights and the tokenizer"
        )
    try:
        kind = model_kind(directory)
    except ModelLoadError as exc:
        raise ConfigError(f"cannot audit {directory}: {exc}") from None
    if kind is not ModelKind.CAUSAL_LM:
        raise ConfigError(
            f"{directory} holds a {kind.value} model; the output audit needs a causal "
            "language model directory (config.json architectures ending in ForCausalLM "
            "or LMHeadModel)"
        )
    try:
        return load_model(directory)
    except ModelLoadError as exc:
        raise ConfigError(f"cannot audit {directory}: {exc}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"cannot load the causal LM and its tokenizer from {directory} ({exc}); save "
            "both there with save_pretrained"
        ) from None


def _prepare_tokenizer(loaded: LoadedModel) -> Any:
    """The loaded tokenizer, checked, with bos falling back to eos (as GPT-2 does).

    Why set bos on the tokenizer rather than only where the canary code encodes: the
    scorers, generators and n-gram filter read `bos_token_id` themselves, and all of
    them must start a text exactly as training did.
    """
    tokenizer = loaded.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"the tokenizer in {loaded.path} is not a fast tokenizer; the canary attacks need "
            "character offsets, so save a tokenizer.json (a PreTrainedTokenizerFast) with it"
        )
    if tokenizer.eos_token is None:
        raise ConfigError(f"the tokenizer in {loaded.path} has no eos token; set eos_token")
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
    special_ids(tokenizer)  # raises if anything is still missing
    embeddings = loaded.model.get_input_embeddings()  # type: ignore[operator]
    rows = int(embeddings.weight.shape[0])
    if len(tokenizer) > rows:
        raise ConfigError(
            f"the tokenizer in {loaded.path} has {len(tokenizer)} tokens but the model's "
            f"embedding only {rows}; save the tokenizer the model was trained with"
        )
    return tokenizer


def _read_texts(path: Path) -> list[str]:
    """The JSONL's texts, distinct and in file order; an empty text is an error.

    Why distinct: the split must be disjoint, and a text both trained on and held out
    would blur the held-out measurements. Why refuse empty texts: they have nothing to
    score, and silently dropping a record changes a party's weight.
    """
    texts = load_jsonl_texts(path)
    lines = [n for n, line in enumerate(_lines(path), start=1) if line.strip()]
    for index, text in enumerate(texts):
        if not text.strip():
            raise ConfigError(f'{path}:{lines[index]}: "text" is empty')
    return list(dict.fromkeys(texts))


def _lines(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return handle.readlines()


def _check_canaries(tokenizer: Any, registry: CanaryRegistry) -> None:
    """Every canary must be spelt without the unknown token, or its secret could be
    neither memorised nor extracted faithfully (the audit would report false safety)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return
    for canary in registry:
        if int(unk) in tokenizer.encode(canary.text, add_special_tokens=False):
            raise ConfigError(
                f"the tokenizer maps part of the canary {canary.text!r} to its unknown token "
                f"{tokenizer.unk_token!r}; the audit needs a tokenizer that can spell "
                "lower-case words and digits"
            )


def _context(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _sequence_length(loaded: LoadedModel, texts: Sequence[str], max_length: int | None) -> int:
    """max_length, or the longest text's token count (bos and eos included), checked
    against the model's context so that no text is ever truncated."""
    encoded = loaded.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    lengths = [len(ids) + 2 for ids in encoded]
    longest = max(lengths)
    context = _context(loaded.model)
    if max_length is None:
        length = longest
    else:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3:
            raise ConfigError(f"max_length must be an int >= 3, got {max_length!r}")
        too_long = sum(n > max_length for n in lengths)
        if too_long:
            raise ConfigError(
                f"{too_long} texts exceed max_length={max_length} tokens (the longest has "
                f"{longest}, bos and eos included); raise max_length or shorten those texts"
            )
        length = max_length
    if context is not None and length > context:
        raise ConfigError(
            f"sequences of {length} tokens (bos and eos included) exceed the model's context "
            f"of {context}; shorten the texts (or lower max_length)"
        )
    return length


def _fan_in_fan_out(model: nn.Module, targets: Sequence[str]) -> bool:
    """True when the targets are GPT-2's Conv1D (weight stored as (in, out)), False for
    nn.Linear; peft needs to know, and a mix cannot be adapted with one LoraConfig."""
    kinds = {
        isinstance(module, Conv1D)
        for name, module in model.named_modules()
        if name and name.rsplit(".", 1)[-1] in targets
    }
    if len(kinds) > 1:
        raise ConfigError(
            f"LoRA targets {list(targets)} mix Conv1D and Linear layers; one adapter config "
            "cannot serve both"
        )
    return kinds == {True}


def write_jsonl(path: Path, texts: Sequence[str]) -> None:
    """Write `texts` as the JSONL user_scenario reads (for tests and examples)."""
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
