"""Any HF causal LM as the likelihood attacks see it: per-token log-probabilities of texts.

Why an adaptor: LOSS, zlib, Min-K%, Min-K%++ and the reference attack all read the same
three numbers per token (log p of the actual token, and the mean and spread of log p
over the vocabulary at that position), and the canary attacks must restrict them to the
secret's tokens, which needs character offsets. This class computes them once per text,
for any `transformers` causal LM and tokenizer; the attacks are functions of the result
(attacks.output.likelihood), so the captioner's decoder plugs in by wrapping it the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedveil.errors import ConfigError


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat denormal floats as zero inside the block (restored to off afterwards).

    Why: softmax over padded or confident positions yields denormals, and on CPU an
    operation on a denormal is far slower, enough to dominate a tiny model's training
    step. Flushing them changes results only below 1e-38.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` intra-op threads (None: leave as is), then restore.

    Why: tiny models gain nothing from more threads, and on a shared machine the
    OpenMP workers spin-wait for busy cores, which slows every step.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True, eq=False)
class TokenScores:
    """One text's scored tokens (every token after the first, or after the bos).

    logprobs: log p(token_t | tokens_<t). mean / std: the mean and standard deviation of
    log p(z | tokens_<t) over z drawn from the model's own next-token distribution (what
    Min-K%++ standardises by). starts: the character offset where each token starts in
    `text` (-1 where the tokenizer gives no offsets).
    """

    text: str
    token_ids: np.ndarray
    logprobs: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    starts: np.ndarray

    def __len__(self) -> int:
        return int(self.logprobs.shape[0])

    def select(self, start_char: int, end_char: int | None = None) -> TokenScores:
        """The tokens starting in [start_char, end_char): e.g. a canary's secret."""
        if (self.starts < 0).any():
            raise ConfigError(
                "this tokenizer gives no character offsets; cannot select a span of tokens"
            )
        keep = self.starts >= start_char
        if end_char is not None:
            keep &= self.starts < end_char
        if not keep.any():
            raise ConfigError(f"no token starts in [{start_char}, {end_char}) of {self.text!r}")
        return TokenScores(
            self.text,
            self.token_ids[keep],
            self.logprobs[keep],
            self.mean[keep],
            self.std[keep],
            self.starts[keep],
        )

    @property
    def total(self) -> float:
        return float(self.logprobs.sum())


@dataclass(eq=False)
class LanguageModel:
    """A causal LM and its tokenizer, scored in batches without gradients.

    add_bos: prepend tokenizer.bos_token_id (so the first real token is scored too,
    matching how the model was trained); batch_size: texts per forward pass;
    threads: intra-op threads while scoring (None: leave torch's setting).
    """

    model: nn.Module
    tokenizer: Any
    add_bos: bool = True
    batch_size: int = 64
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.add_bos and self.tokenizer.bos_token_id is None:
            raise ConfigError("add_bos=True but the tokenizer has no bos_token_id")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, text: str) -> tuple[list[int], list[int]]:
        """(ids, start offsets) of `text`, with the bos (offset -1) if add_bos."""
        try:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = list(enc["input_ids"])
            starts = [int(a) for a, _ in enc["offset_mapping"]]
        except (NotImplementedError, TypeError, ValueError):
            ids = list(self.tokenizer.encode(text, add_special_tokens=False))
            starts = [-1] * len(ids)
        if self.add_bos:
            ids = [int(self.tokenizer.bos_token_id), *ids]
            starts = [-1, *starts]
        if len(ids) < 2:
            raise ConfigError(f"text {text!r} has fewer than two tokens to score")
        return ids, starts

    def score(self, texts: Sequence[str]) -> list[TokenScores]:
        """TokenScores of every text, in order."""
        encoded = [self.encode(t) for t in texts]
        pad = self.tokenizer.pad_token_id
        pad = 0 if pad is None else int(pad)
        out: list[TokenScores] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), cpu_threads(self.threads), flush_denormals():
                for begin in range(0, len(texts), self.batch_size):
                    chunk = encoded[begin : begin + self.batch_size]
                    out.extend(self._score_batch(texts[begin : begin + len(chunk)], chunk, pad))
        finally:
            self.model.train(was_training)
        return out

    def _score_batch(
        self, texts: Sequence[str], chunk: Sequence[tuple[list[int], list[int]]], pad: int
    ) -> list[TokenScores]:
        length = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), length), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), length), dtype=torch.long)
        for row, (seq, _) in enumerate(chunk):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
        logp = torch.log_softmax(logits.logits[:, :-1].float(), dim=-1).cpu()
        probs = logp.exp()
        mean = (probs * logp).sum(-1)
        var = (probs * logp.square()).sum(-1) - mean.square()
        std = var.clamp(min=1e-12).sqrt()
        actual = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        out = []
        for row, (seq, starts) in enumerate(chunk):
            n = len(seq) - 1
            out.append(
                TokenScores(
                    texts[row],
                    np.asarray(seq[1:], dtype=np.int64),
                    actual[row, :n].numpy().astype(np.float64),
                    mean[row, :n].numpy().astype(np.float64),
                    std[row, :n].numpy().astype(np.float64),
                    np.asarray(starts[1:], dtype=np.int64),
                )
            )
        return out

    def total_loglik(self, texts: Sequence[str]) -> np.ndarray:
        """Sum of token log-probabilities of each text (what exposure ranks by)."""
        return np.array([s.total for s in self.score(texts)])
