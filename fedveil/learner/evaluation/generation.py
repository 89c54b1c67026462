"""Greedy caption generation for vision-encoder-decoder models.

Why not `model.generate`: the captions are a handful of tokens, greedy is what the metric
needs, and a twenty-line loop behaves the same on every transformers version and through
the peft wrapper. The encoder runs once per image batch; the decoder reruns on the
growing prefix (no KV cache: at this length recomputation is cheaper than cache
bookkeeping).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from fedveil.errors import ConfigError
from fedveil.learner.training.batches import prompt_ids
from fedveil.learner.training.loop import torch_threads


def _encoder(model: torch.nn.Module) -> torch.nn.Module:
    get = getattr(model, "get_encoder", None)
    if get is None:
        raise ConfigError(f"{type(model).__name__} has no encoder; is it a captioner?")
    encoder: torch.nn.Module = get()
    return encoder


LogitsHook = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(decoder ids so far, this step's logits) -> logits, like a transformers LogitsProcessor:
how output filters (attacks/measure/captioner_filters.py) act on the captioner's decoding."""


@torch.no_grad()
def greedy_captions(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pixel_values: torch.Tensor,
    prompt: str,
    max_new_tokens: int = 40,
    batch_size: int = 128,
    threads: int | None = 1,
) -> list[str]:
    """One caption per image, generated after `<bos> prompt`; special tokens dropped."""
    return [
        str(tokenizer.decode(tokens, skip_special_tokens=True)).strip()
        for tokens in greedy_token_ids(
            model, tokenizer, pixel_values, prompt, max_new_tokens, batch_size, threads
        )
    ]


@torch.no_grad()
def greedy_token_ids(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pixel_values: torch.Tensor,
    prompt: str,
    max_new_tokens: int = 40,
    batch_size: int = 128,
    threads: int | None = 1,
    logits_hook: LogitsHook | None = None,
) -> list[list[int]]:
    """The generated token ids of each caption (eos and what follows dropped);
    `logits_hook` may rewrite every step's logits before the argmax."""
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    eos = tokenizer.eos_token_id
    start = torch.tensor(prompt_ids(tokenizer, prompt), dtype=torch.long)
    limit = getattr(getattr(getattr(model, "config", None), "decoder", None), "n_positions", None)
    steps = max_new_tokens if limit is None else min(max_new_tokens, int(limit) - len(start))
    was_training = model.training
    model.eval()
    captions: list[list[int]] = []
    with torch_threads(threads):
        for lo in range(0, pixel_values.shape[0], batch_size):
            images = pixel_values[lo : lo + batch_size]
            encoded = BaseModelOutput(last_hidden_state=_encoder(model)(pixel_values=images)[0])
            ids = start.repeat(images.shape[0], 1)
            done = torch.zeros(images.shape[0], dtype=torch.bool)
            for _ in range(max(steps, 0)):
                logits = model(encoder_outputs=encoded, decoder_input_ids=ids).logits[:, -1]
                if logits_hook is not None:
                    logits = logits_hook(ids, logits)
                token = logits.argmax(dim=-1)
                if eos is not None:
                    token = token.masked_fill(done, int(eos))
                    done |= token == eos
                ids = torch.cat([ids, token[:, None]], dim=1)
                if bool(done.all()):
                    break
            for row in ids[:, len(start) :]:
                tokens = row.tolist()
                if eos is not None and eos in tokens:
                    tokens = tokens[: tokens.index(eos)]
                captions.append(tokens)
    model.train(was_training)
    return captions
