"""Per-example scores with the current global model: each example's own caption loss.

Why the loss under the current *global* adapter: after a few rounds the global model has
learnt what most parties' captions say about their images, so an example whose caption
does not fit its image (or is in another domain's words) gets a high loss; and every
party holds that adapter anyway, so scoring sends nothing. Why the per-token mean and
not the sum: captions name 0 to 5 concepts, and a longer correct caption must not look
like an outlier for its length.

separation_auc is how the tests and the benchmark judge a scorer: the probability that a
random corrupted example scores above a random clean one (0.5: chance).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from enum import StrEnum

import numpy as np
import torch
import torch.nn.functional as F

from fedveil.errors import ConfigError
from fedveil.learner.evaluation.generation import greedy_token_ids
from fedveil.learner.lora.codec import load_adapter_vector
from fedveil.learner.training.batches import (
    IGNORE_INDEX,
    EncodedCaptions,
    EncodedText,
    prompt_ids,
)
from fedveil.learner.training.loop import torch_threads
from fedveil.learner.training.party import Party


@torch.no_grad()
def example_losses(
    model: torch.nn.Module,
    data: EncodedCaptions | EncodedText,
    batch_size: int = 64,
    threads: int | None = 1,
) -> np.ndarray:
    """Mean token cross-entropy of every example (row order), in eval mode (no dropout)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if len(data) == 0:
        raise ConfigError("no examples to score")
    was_training = model.training
    model.eval()
    scores = np.empty(len(data), dtype=np.float64)
    with torch_threads(threads):
        for start in range(0, len(data), batch_size):
            index = torch.arange(start, min(start + batch_size, len(data)))
            batch = data.rows(index)
            labels = batch["labels"]
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            if "input_ids" in batch:  # causal LM: position t predicts token t + 1
                logits, labels = logits[:, :-1], labels[:, 1:]
            tokens = F.cross_entropy(
                logits.transpose(1, 2).float(), labels, ignore_index=IGNORE_INDEX, reduction="none"
            )
            counts = (labels != IGNORE_INDEX).sum(dim=1).clamp(min=1)
            scores[start : start + len(index)] = (tokens.sum(dim=1) / counts).numpy()
    model.train(was_training)
    return scores


def party_losses(party: Party, data: EncodedCaptions | EncodedText | None = None) -> np.ndarray:
    """Every example's loss under the party's current global adapter (its own data by
    default). Local only: the party's model and data, nothing sent."""
    load_adapter_vector(party.model, party.layout, party.global_vector)
    return example_losses(party.model, party.data if data is None else data)


def separation_auc(scores: np.ndarray, corrupted: np.ndarray) -> float:
    """P(score of a corrupted example > score of a clean one), ties counting one half
    (the Mann-Whitney AUC)."""
    scores = np.asarray(scores, dtype=np.float64)
    flags = np.asarray(corrupted, dtype=bool)
    if scores.shape != flags.shape or scores.ndim != 1:
        raise ConfigError(f"{scores.shape} scores for {flags.shape} flags")
    bad, good = scores[flags], scores[~flags]
    if not len(bad) or not len(good):
        raise ConfigError("separation needs both corrupted and clean examples")
    above = (bad[:, None] > good[None, :]).sum() + 0.5 * (bad[:, None] == good[None, :]).sum()
    return float(above / (len(bad) * len(good)))


def _label_tokens(data: EncodedCaptions, row: int, eos: int | None) -> tuple[list[int], set[int]]:
    """(prompt ids after bos, the caption's token set without eos) of one encoded row."""
    labels = data.labels[row]
    valid = labels != IGNORE_INDEX
    first = int(valid.nonzero()[0, 0]) if bool(valid.any()) else int(data.attention_mask[row].sum())
    prompt = [int(t) for t in data.input_ids[row, 1 : first + 1]]
    words = {int(t) for t in labels[valid]} - ({eos} if eos is not None else set())
    return prompt, words


def party_disagreement(
    party: Party, data: EncodedCaptions | EncodedText | None = None
) -> np.ndarray:
    """Per example, 1 - Jaccard(words the global adapter generates for the image after
    the example's prompt, words of the example's caption): 1 when they share no word.

    Why next to the loss: it asks what the model would *say*, so a caption in another
    domain's words disagrees completely however easy its words are to predict once the
    model has seen them (which the per-token loss rewards)."""
    data = party.data if data is None else data
    if not isinstance(data, EncodedCaptions):
        raise ConfigError("disagreement scoring needs captioner data")
    load_adapter_vector(party.model, party.layout, party.global_vector)
    tokenizer = party.loaded.tokenizer
    eos = tokenizer.eos_token_id
    rows = [_label_tokens(data, i, eos) for i in range(len(data))]
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, (start, _) in enumerate(rows):
        by_prompt.setdefault(tuple(start), []).append(i)
    scores = np.empty(len(data), dtype=np.float64)
    for start_ids, members in by_prompt.items():
        text = str(tokenizer.decode(list(start_ids))).strip()
        generated = greedy_token_ids(
            party.model, tokenizer, data.pixel_values[members], text, max_new_tokens=24
        )
        for i, said in zip(members, generated, strict=True):
            label, words = rows[i][1], set(said)
            union = label | words
            scores[i] = 1.0 - (len(label & words) / len(union) if union else 1.0)
    return scores


def party_prompt_contrast(
    party: Party,
    other_prompts: Sequence[str],
    data: EncodedCaptions | EncodedText | None = None,
) -> np.ndarray:
    """Per example, its caption's loss after its own prompt minus the lowest loss of the
    same caption after any of `other_prompts` (per-token means): above 0 when another
    prompt explains the caption better.

    Why a contrast and not the loss alone: in a federation the other parties' captions
    are most of the training data, so a caption in another party's words is *easy* for
    the global model and its plain loss is low (measured: benchmarks/README.md); what
    marks it is that the model ties those words to another prompt, not to this party's.
    Needs single-token prompts (the built-in captioner's domain prompts are)."""
    data = party.data if data is None else data
    if not isinstance(data, EncodedCaptions):
        raise ConfigError("prompt-contrast scoring needs captioner data")
    if not other_prompts:
        raise ConfigError("prompt-contrast scoring needs at least one other prompt")
    tokenizer = party.loaded.tokenizer
    ids = []
    for prompt in other_prompts:
        tokens = prompt_ids(tokenizer, prompt)
        if len(tokens) != 2:
            raise ConfigError(f"prompt {prompt!r} is not a single token")
        ids.append(tokens[1])
    # a single-token prompt: <bos> P w1 ... has labels -100 w1 ..., so only position 0 is
    # ignored; a longer prompt ignores position 1 as well, no prompt predicts w1 at 0
    single = (data.labels[:, 0] == IGNORE_INDEX) & (data.labels[:, 1] != IGNORE_INDEX)
    if not bool(single.all()):
        raise ConfigError("prompt-contrast scoring needs every example after a one-token prompt")
    own = party_losses(party, data)
    others = []
    for token in ids:
        swapped = data.input_ids.clone()
        swapped[:, 1] = token
        others.append(example_losses(party.model, dataclasses.replace(data, input_ids=swapped)))
    return np.asarray(own - np.min(np.stack(others), axis=0), dtype=np.float64)


class Scorer(StrEnum):
    """Which per-example score a cleaning party computes (high: suspect)."""

    LOSS = "loss"
    DISAGREEMENT = "disagreement"
    PROMPT_CONTRAST = "prompt-contrast"


def score_examples(
    party: Party,
    scorer: Scorer | str,
    data: EncodedCaptions | EncodedText | None = None,
    other_prompts: Sequence[str] = (),
) -> np.ndarray:
    """`scorer`'s score of every example of `data` (the party's own by default);
    `other_prompts` for the prompt contrast."""
    try:
        kind = Scorer(scorer)
    except ValueError:
        raise ConfigError(
            f"scorer must be one of {[s.value for s in Scorer]}, got {scorer!r}"
        ) from None
    if kind is Scorer.LOSS:
        return party_losses(party, data)
    if kind is Scorer.PROMPT_CONTRAST:
        return party_prompt_contrast(party, other_prompts, data)
    if data is not None and not isinstance(data, EncodedCaptions):
        raise ConfigError("disagreement scoring needs captioner data")
    return party_disagreement(party, data)
