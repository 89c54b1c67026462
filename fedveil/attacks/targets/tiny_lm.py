"""Target (c): a tiny GPT-2 with a word-level vocabulary, fine-tuned with LoRA via peft.

Why a toy this small is still the real thing: DAGER-style recovery depends only on the
structure of the first adapted layer (its input is ln_1(token + position embedding),
and a LoRA A-gradient's rows are combinations of those inputs), not on model size; a
64-wide, 2-layer GPT-2 built from a `GPT2Config` exercises exactly the transformers and
peft code paths the real clients use, offline, in milliseconds. Sentences are drawn
from city-safety templates so the words resemble the captions the clients will train on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from torch import Tensor, nn
from transformers import GPT2Config, GPT2LMHeadModel

from fedveil.attacks.update.base import TokenTarget
from fedveil.errors import ConfigError

PAD, EOS = "<pad>", "<eos>"

_WORDS: dict[str, tuple[str, ...]] = {
    "det": ("the", "a", "one", "another"),
    "adj": (
        "rusty",
        "broken",
        "wet",
        "red",
        "old",
        "new",
        "small",
        "large",
        "dark",
        "bright",
        "leaking",
        "quiet",
        "busy",
        "empty",
    ),
    "noun": (
        "pipeline",
        "meter",
        "gate",
        "parcel",
        "resident",
        "cover",
        "car",
        "bike",
        "vendor",
        "lamp",
        "sign",
        "truck",
        "cable",
        "valve",
        "door",
        "dog",
    ),
    "verb": ("stands", "leans", "waits", "lies", "blocks", "sits", "moves", "falls"),
    "prep": ("near", "beside", "behind", "under", "across", "along"),
    "place": (
        "street",
        "corner",
        "lane",
        "wall",
        "entrance",
        "sidewalk",
        "square",
        "bridge",
        "station",
        "yard",
    ),
    "conj": ("and", "while"),
}

_TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("det", "noun", "verb", "prep", "det", "place"),
    ("det", "adj", "noun", "verb", "prep", "det", "place"),
    ("det", "noun", "verb", "prep", "det", "adj", "place"),
    ("det", "adj", "noun", "conj", "det", "noun", "verb", "prep", "det", "place"),
    ("det", "adj", "adj", "noun", "verb", "prep", "det", "adj", "place"),
)


@dataclass(frozen=True)
class WordVocab:
    """A word-level vocabulary: id 0 is padding, id 1 end-of-sequence."""

    words: tuple[str, ...]

    @classmethod
    def default(cls) -> WordVocab:
        seen: dict[str, None] = {PAD: None, EOS: None}
        for group in _WORDS.values():
            seen.update(dict.fromkeys(group))
        return cls(tuple(seen))

    @property
    def pad_id(self) -> int:
        return self.words.index(PAD)

    @property
    def eos_id(self) -> int:
        return self.words.index(EOS)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, sentence: str) -> list[int]:
        index = {w: i for i, w in enumerate(self.words)}
        try:
            return [index[w] for w in sentence.split()] + [self.eos_id]
        except KeyError as exc:
            raise ConfigError(f"word {exc.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.words[i] for i in ids)

    def pad(self, sequences: Sequence[Sequence[int]]) -> Tensor:
        """(B, L) ids, right-padded with the pad id."""
        length = max(len(s) for s in sequences)
        out = torch.full((len(sequences), length), self.pad_id, dtype=torch.long)
        for row, seq in enumerate(sequences):
            out[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        return out


def sentences(count: int, seed: int = 0) -> list[str]:
    """`count` template sentences (6 to 10 words before the end token), deterministic."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
        out.append(
            " ".join(_WORDS[slot][int(rng.integers(len(_WORDS[slot])))] for slot in template)
        )
    return out


def lm_loss(model_call: Callable[..., Any], inputs: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy; padding (id 0) is masked out of attention and loss."""
    mask = inputs != 0
    return model_call(
        input_ids=inputs, attention_mask=mask.long(), labels=labels.masked_fill(~mask, -100)
    ).loss


def gpt2_block0_inputs(
    transformer: nn.Module, token_ids: Tensor, max_length: int
) -> tuple[Tensor, Tensor]:
    """ln_1(wte[t] + wpe[p]) for every candidate token t and position p < max_length.

    This is exactly what block 0's attention projection (c_attn) reads, since GPT-2
    adds token and position embeddings and normalises each token on its own.
    """
    wte: nn.Embedding = transformer.get_submodule("wte")  # type: ignore[assignment]
    wpe: nn.Embedding = transformer.get_submodule("wpe")  # type: ignore[assignment]
    ln: nn.Module = transformer.get_submodule("h.0.ln_1")
    positions = torch.arange(max_length)
    with torch.no_grad():
        summed = wte.weight[token_ids][:, None, :] + wpe.weight[positions][None, :, :]
        inputs = ln(summed).reshape(-1, summed.shape[-1])
    ids = torch.stack(torch.meshgrid(token_ids, positions, indexing="ij"), dim=-1).reshape(-1, 2)
    return inputs.to(torch.float64), ids


def build_gpt2(
    vocab: WordVocab,
    *,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    max_length: int = 16,
    seed: int = 0,
) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 (the shared open base model, in miniature)."""
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=max_length,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=vocab.eos_id,
        eos_token_id=vocab.eos_id,
        pad_token_id=vocab.pad_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"  # GPT2LMHeadModel's name matches no loss; say which
    return model.eval()


def tiny_lm_target(
    rank: int = 16,
    *,
    vocab: WordVocab | None = None,
    max_length: int = 16,
    n_embd: int = 64,
    n_layer: int = 2,
    adapter: str = "warm",
    target_modules: tuple[str, ...] = ("c_attn",),
    seed: int = 0,
) -> tuple[TokenTarget, WordVocab]:
    """The LoRA-adapted tiny LM as the server knows it, and its vocabulary.

    adapter="warm": lora_B is non-zero, as in any round after the first (peft starts
    with B = 0, where the A-gradient vanishes and only the B-gradient carries the
    inputs, projected by A); adapter="fresh": peft's initialisation.
    """
    if adapter not in ("warm", "fresh"):
        raise ConfigError(f"adapter must be 'warm' or 'fresh', got {adapter!r}")
    vocab = vocab or WordVocab.default()
    base = build_gpt2(vocab, n_embd=n_embd, n_layer=n_layer, max_length=max_length, seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        with warnings.catch_warnings():  # peft asks transformers a deprecated question
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            lora = LoraConfig(
                r=rank,
                lora_alpha=rank,
                target_modules=list(target_modules),
                lora_dropout=0.0,
                fan_in_fan_out=True,
            )
            model = get_peft_model(base, lora)
        if adapter == "warm":
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0.0, 0.02)
    model.eval()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    lora_a = next(n for n in names if "lora_A" in n)
    lora_b = lora_a.replace("lora_A", "lora_B")
    transformer = model.get_submodule("base_model.model.transformer")
    token_ids = torch.tensor([i for i in range(len(vocab)) if i != vocab.pad_id])

    def candidates() -> tuple[Tensor, Tensor]:
        return gpt2_block0_inputs(transformer, token_ids, max_length)

    target = TokenTarget(
        name=f"tiny-gpt2-lora-r{rank}",
        model=model,
        loss=lm_loss,
        lora_a=lora_a,
        lora_b=lora_b,
        candidates=candidates,
        max_length=max_length,
        eos_id=vocab.eos_id,
        pad_id=vocab.pad_id,
    )
    return target, vocab
