"""The black-box attacker's only access: prompts in, sampled text out.

Why a plain callable: the generation-only attacks and the filter measurements must run
against anything that writes text -- a HF causal LM here, the vision-language captioner
later, a remote API one day. So they take a `GenerateFn`:

    generate(prompts, n_samples, greedy) -> list[list[str]]

one list per prompt of `n_samples` continuations (the text after the prompt only), or of
exactly one continuation when `greedy` is true. `HFGenerator` is that function for a
transformers model, with optional LogitsProcessors (the decode-time filters of
attacks.output.filters) and an optional post-processor postprocess(prompt, continuation) ->
continuation (the redactor).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from fedveil.attacks.output.language_model import cpu_threads, flush_denormals
from fedveil.errors import ConfigError

GenerateFn = Callable[[Sequence[str], int, bool], list[list[str]]]
"""generate(prompts, n_samples, greedy): per prompt, n_samples continuations (1 if greedy)."""


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings of the attacker's queries.

    top_k=0 samples from the full distribution (temperature 1: the model's own). seed:
    every call restarts torch's generator from it, so the same prompts give the same
    samples -- which is what lets a filter's effect be measured as "the output changed".
    """

    max_new_tokens: int = 12
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (0: off), got {self.top_k}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class GenerationStats:
    """Wall time and tokens generated so far (for latency per token; reported, not asserted)."""

    seconds: float = 0.0
    tokens: int = 0
    calls: int = 0

    @property
    def seconds_per_token(self) -> float:
        return self.seconds / self.tokens if self.tokens else float("nan")


@dataclass(eq=False)
class HFGenerator:
    """A `GenerateFn` over a transformers causal LM.

    Prompts are batched by token length, so no batch needs padding (left padding changes
    position ids in some models, and the filters then see pad tokens as context).
    processors: LogitsProcessors applied at every step (decode-time filters).
    postprocess(prompt, continuation): applied to each decoded continuation (a redactor).
    """

    model: nn.Module
    tokenizer: Any
    config: SamplingConfig = field(default_factory=SamplingConfig)
    processors: tuple[LogitsProcessor, ...] = ()
    postprocess: Callable[[str, str], str] | None = None
    add_bos: bool = True
    threads: int | None = 1
    stats: GenerationStats = field(default_factory=GenerationStats)

    def __post_init__(self) -> None:
        if self.tokenizer.eos_token_id is None:
            raise ConfigError("the tokenizer needs an eos token to end continuations")
        if self.add_bos and self.tokenizer.bos_token_id is None:
            raise ConfigError("add_bos=True but the tokenizer has no bos_token_id")

    def with_filters(
        self,
        processors: Sequence[LogitsProcessor] = (),
        postprocess: Callable[[str, str], str] | None = None,
    ) -> HFGenerator:
        """The same model and sampling with other filters (fresh stats)."""
        return replace(
            self, processors=tuple(processors), postprocess=postprocess, stats=GenerationStats()
        )

    def prompt_ids(self, prompt: str) -> list[int]:
        ids = list(self.tokenizer.encode(prompt, add_special_tokens=False))
        return [int(self.tokenizer.bos_token_id), *ids] if self.add_bos else ids

    def __call__(self, prompts: Sequence[str], n_samples: int, greedy: bool) -> list[list[str]]:
        if n_samples < 1:
            raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
        per_prompt = 1 if greedy else n_samples
        encoded = [self.prompt_ids(p) for p in prompts]
        if any(not ids for ids in encoded):
            raise ConfigError("an empty prompt needs add_bos=True")
        groups: dict[int, list[int]] = {}
        for index, ids in enumerate(encoded):
            groups.setdefault(len(ids), []).append(index)
        out: list[list[str]] = [[] for _ in prompts]
        chunk = max(1, self.config.batch_size // per_prompt)
        start = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        try:
            with (
                torch.random.fork_rng(),
                torch.no_grad(),
                cpu_threads(self.threads),
                flush_denormals(),
            ):
                torch.manual_seed(self.config.seed)
                for length in sorted(groups):
                    members = groups[length]
                    for begin in range(0, len(members), chunk):
                        rows = members[begin : begin + chunk]
                        texts = self._generate([encoded[i] for i in rows], per_prompt, greedy)
                        if self.postprocess is not None:
                            texts = [
                                self.postprocess(prompts[rows[j // per_prompt]], t)
                                for j, t in enumerate(texts)
                            ]
                        for j, i in enumerate(rows):
                            out[i] = texts[j * per_prompt : (j + 1) * per_prompt]
        finally:
            self.model.train(was_training)
        self.stats.seconds += time.perf_counter() - start
        self.stats.calls += 1
        return out

    def _generate(self, prompts: list[list[int]], per_prompt: int, greedy: bool) -> list[str]:
        ids = torch.tensor(prompts, dtype=torch.long, device=_device(self.model))
        eos = int(self.tokenizer.eos_token_id)
        pad = self.tokenizer.pad_token_id
        settings: dict[str, int | float | bool | None] = {
            "max_new_tokens": self.config.max_new_tokens,
            "do_sample": not greedy,
            "num_return_sequences": per_prompt,
            "eos_token_id": eos,
            "pad_token_id": eos if pad is None else int(pad),
        }
        if not greedy:
            settings.update(temperature=self.config.temperature, top_k=self.config.top_k or None)
        generated = self.model.generate(  # type: ignore[operator]
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            generation_config=GenerationConfig(**settings),
            logits_processor=LogitsProcessorList(self.processors),
        )
        texts = []
        for row in generated[:, ids.shape[1] :].tolist():
            if eos in row:
                row = row[: row.index(eos)]
                self.stats.tokens += len(row) + 1  # the step that chose eos counts
            else:
                self.stats.tokens += len(row)
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True))
        return texts


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
