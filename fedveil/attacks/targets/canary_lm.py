"""Target for the output attacks: a tiny GPT-2 that really memorised planted canaries.

Why this shape (a two-stage run, like the real clients): an "open base model" is first
trained on public text, which includes sentences in the canary formats with fresh
random secrets (a real base model knows what an address looks like); a party then
fine-tunes LoRA adapters on its private texts with the member canaries planted, either
plainly for several epochs (memorisation is real) or with DP-SGD through
learner/dp_sgd.py (Opacus). The base model is the reference model of the reference
attack; the fine-tuned model is what gets released.

The tokenizer is a HF `PreTrainedTokenizerFast` over a word-level vocabulary with a
SentencePiece-style word-start marker and single-digit tokens (as Llama's tokenizer
splits numbers), so decoding is faithful ("... is 4719.") and a secret has more than
one tokenisation depending on its context, as with a real subword tokenizer: exactly
what the output filters must cope with. Everything is built from configs, offline.
"""

from __future__ import annotations

import copy
import functools
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from peft import LoraConfig
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel, PreTrainedTokenizerFast

from fedveil.attacks.output.canaries import (
    FORMATS,
    CanaryConfig,
    CanaryRegistry,
    format_sentences,
    plant_canaries,
)
from fedveil.attacks.output.language_model import cpu_threads, flush_denormals
from fedveil.attacks.protections import Protection, parse_protection
from fedveil.attacks.targets.tiny_lm import WordVocab, sentences
from fedveil.errors import ConfigError
from fedveil.secagg.dp import GaussianEvent, PrivacyAccountant

PAD, EOS, UNK, SPACE = "<pad>", "<eos>", "<unk>", "\u2581"
PUNCTUATION = (".", ",", "-", ":", "@", "+", "(", ")", "/")


def build_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """Word-level tokens marked with a word-start "▁", single digits, punctuation.

    Ids: <pad>=0, <eos>=1 (also bos), <unk>=2, "▁"=3, then sorted words, digits,
    punctuation; lower-cased input.
    """
    bad = [w for w in words if not w or not w.isalpha() or w != w.lower()]
    if bad:
        raise ConfigError(f"tokenizer words must be lower-case letters only, got {bad[:5]}")
    ordered = [PAD, EOS, UNK, SPACE]
    ordered += [SPACE + w for w in sorted(set(words))]
    ordered += [*"0123456789", *PUNCTUATION]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(ordered)}, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Punctuation(),
        ]
    )
    backend.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=EOS,
        unk_token=UNK,
        model_max_length=64,
    )


def vocabulary_words() -> list[str]:
    """The public word list: the tiny-LM city sentences plus every canary format's words.

    All formats' words, whether or not a run plants them, so the vocabulary (part of the
    public base model) never depends on which canaries were drawn.
    """
    words = {w for w in WordVocab.default().words if w.isalpha()}
    for fmt in FORMATS.values():
        words |= {w for w in fmt.words() if w.isalpha()}
    return sorted(words)


@dataclass(frozen=True)
class CanaryLMConfig:
    """The whole scenario: corpora, canaries, model size and both training stages.

    Defaults run in a few seconds per stage on one core. `finetune_epochs` non-DP epochs
    (learning rate decayed linearly to zero) make most single-copy canaries memorised;
    the DP run uses the same data with Opacus: Poisson batches of expected size
    `dp_batch_size`, per-sample clipping `dp_clip`, noise multiplier `dp_noise`,
    `dp_epochs` epochs (about epsilon 6 at delta 1e-5 with the defaults; the accountant
    gives the exact value). threads: torch intra-op threads while training (None: as is).
    """

    canaries: CanaryConfig = field(default_factory=CanaryConfig)
    n_public: int = 600
    n_private: int = 64
    public_format_share: float = 0.4
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    max_length: int = 32
    base_epochs: int = 12
    base_lr: float = 3e-3
    finetune_epochs: int = 150
    finetune_lr: float = 1e-2
    batch_size: int = 32
    lora_rank: int = 16
    lora_targets: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")
    dp_epochs: int = 30
    dp_batch_size: int = 16
    dp_lr: float = 3e-3
    dp_clip: float = 1.0
    dp_noise: float = 2.0
    dp_delta: float = 1e-5
    threads: int | None = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_public", "n_private", "n_embd", "n_layer", "n_head", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"CanaryLMConfig.{name} must be an int >= 1, got {value!r}")
        for name in (
            "base_epochs",
            "finetune_epochs",
            "batch_size",
            "lora_rank",
            "dp_epochs",
            "dp_batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"CanaryLMConfig.{name} must be an int >= 1, got {value!r}")
        for name in ("base_lr", "finetune_lr", "dp_lr", "dp_clip"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"CanaryLMConfig.{name} must be a finite number > 0, got {value!r}"
                )
        if not (math.isfinite(self.dp_noise) and self.dp_noise > 0):
            raise ConfigError(f"dp_noise must be a finite number > 0, got {self.dp_noise!r}")
        if not 0 <= self.public_format_share < 1:
            raise ConfigError(
                f"public_format_share must be in [0, 1), got {self.public_format_share!r}"
            )
        if not 0 < self.dp_delta < 1:
            raise ConfigError(f"dp_delta must be in (0, 1), got {self.dp_delta!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")


def special_ids(tokenizer: Any) -> tuple[int, int, int]:
    """(bos, eos, pad) ids as the canary code trains with them.

    Why fallbacks: the built-in tokenizer has all three (<eos> doubles as bos), but a
    user's tokenizer may lack a bos (then eos starts a text, as GPT-2 does) or a pad
    (then eos pads; padding is never read, the attention mask excludes it).
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("the tokenizer has no eos token; a text's end cannot be trained")
    bos = eos if tokenizer.bos_token_id is None else tokenizer.bos_token_id
    pad = eos if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    return int(bos), int(eos), int(pad)


def encode_masked(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[Tensor, Tensor]:
    """(ids, mask), both (N, max_length): bos, the text, eos, right-padded with pad.

    mask is True on the real tokens (bos to eos). Why a mask and not `ids != pad`: a
    tokenizer whose pad is its eos (GPT-2's, as loaded) would otherwise mask out every
    text's bos and final eos. Longer texts raise: a truncated canary would silently
    lose its secret.
    """
    bos, eos, pad = special_ids(tokenizer)
    out = torch.full((len(texts), max_length), pad, dtype=torch.long)
    mask = torch.zeros((len(texts), max_length), dtype=torch.bool)
    for row, text in enumerate(texts):
        ids = [bos, *tokenizer.encode(text, add_special_tokens=False), eos]
        if len(ids) > max_length:
            raise ConfigError(
                f"text of {len(ids)} tokens exceeds max_length={max_length}: {text!r}"
            )
        out[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = True
    return out, mask


def encode_batch(
    tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], max_length: int
) -> Tensor:
    """(N, max_length) ids: bos, the text, eos, right-padded with pad (see encode_masked,
    which also returns the mask a tokenizer with pad == eos needs)."""
    return encode_masked(tokenizer, texts, max_length)[0]


def _ids_and_mask(batch: Any) -> tuple[Tensor, Tensor]:
    """A batch is (ids,) or (ids, mask). Without a mask the pad id is taken to be 0, the
    built-in word-level tokenizer's <pad> (kept for callers that pass ids alone)."""
    if len(batch) == 1:
        (ids,) = batch
        return ids, ids != 0
    ids, mask = batch
    return ids, mask.bool()


def per_sample_lm_loss(model: nn.Module, batch: Any) -> Tensor:
    """Mean next-token loss of each sequence on its own (what DP-SGD needs), shape (B,).

    batch: (ids,) with pad id 0, or (ids, mask) from encode_masked for any tokenizer.
    """
    ids, mask = _ids_and_mask(batch)
    ids = trim_padding(ids, mask)
    mask = mask[:, : ids.shape[1]]
    logits = model(input_ids=ids, attention_mask=mask.long()).logits[:, :-1]
    targets = ids[:, 1:]
    keep = mask[:, 1:].to(logits.dtype)
    losses = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).view(targets.shape)
    return (losses * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


def trim_padding(ids: Tensor, mask: Tensor | None = None) -> Tensor:
    """Drop the all-padding columns on the right (less work, fewer denormals).

    mask: True on real tokens (right padding); None: pad id 0 (the built-in tokenizer).
    """
    keep = ids != 0 if mask is None else mask.bool()
    length = int(keep.sum(dim=1).max()) if ids.numel() else 0
    return ids[:, : max(length, 1)]


def train_lm(
    model: nn.Module,
    data: Tensor,
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
    threads: int | None,
    *,
    lr_end: float = 0.0,
    mask: Tensor | None = None,
) -> None:
    """AdamW over near-equal shuffled batches, lr decayed linearly from lr to lr_end.

    mask: data's attention mask (encode_masked); None: pad id 0 (built-in tokenizer).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    total = epochs * math.ceil(data.shape[0] / batch)
    # Linear decay to zero: a constant step size keeps oscillating around the minimum
    # instead of settling into it, which is exactly where memorisation happens. lr_end:
    # where this call's decay stops (a federation's round continues a run-wide decay).
    drop = 1 - lr_end / lr
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - drop * step / total)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with flush_denormals(), cpu_threads(threads):
        for _ in range(epochs):
            # Near-equal batches: a leftover batch of one or two texts every epoch (97 texts
            # in batches of 32) took Adam steps as large as a full batch's from a single
            # sample's gradient and kept the whole run from memorising anything.
            order = torch.randperm(data.shape[0], generator=gen)
            for index in torch.tensor_split(order, math.ceil(data.shape[0] / batch)):
                optimizer.zero_grad(set_to_none=True)
                rows = (data[index],) if mask is None else (data[index], mask[index])
                per_sample_lm_loss(model, rows).mean().backward()
                optimizer.step()
                schedule.step()
    model.eval()


def build_base_model(tokenizer: PreTrainedTokenizerFast, config: CanaryLMConfig) -> GPT2LMHeadModel:
    gpt = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.max_length,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = GPT2LMHeadModel(gpt)
    model.loss_type = "ForCausalLM"
    return model.eval()


def lora_model(
    model: nn.Module,
    config: CanaryLMConfig,
    *,
    targets: Sequence[str] | None = None,
    fan_in_fan_out: bool = True,
) -> nn.Module:
    """peft LoRA, built as clients/ builds it (device first).

    targets: module-name suffixes (None: config.lora_targets, the built-in GPT-2's);
    fan_in_fan_out: True for GPT-2's Conv1D layers (weights stored transposed), False
    for nn.Linear (LLaMA-style). A scenario records both (`adapted_base`).
    """
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=2 * config.lora_rank,
        target_modules=list(config.lora_targets if targets is None else targets),
        lora_dropout=0.0,
        fan_in_fan_out=fan_in_fan_out,
    )
    with warnings.catch_warnings():  # peft asks transformers a deprecated question
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        from fedveil.learner.dp_sgd import prepare_lora_model

        return prepare_lora_model(model, lora, "cpu")


@dataclass(eq=False)
class TrainedModel:
    """A released model and what its training claims (epsilon inf without DP)."""

    protection: Protection
    model: nn.Module
    epsilon: float
    delta: float
    events: tuple[GaussianEvent, ...] = ()
    final_loss: float = float("nan")
    train_seconds: float = float("nan")


@dataclass(eq=False)
class CanaryScenario:
    """Everything a membership audit of one party needs.

    Built from one config (`build_scenario`, the built-in tiny GPT-2) or from a user's
    model directory and texts (attacks.targets.user_lm.user_scenario). The fields after
    `federated` say how the two differ, with the built-in values as defaults:
    lora_targets / fan_in_fan_out: the adapter layers (None: config.lora_targets);
    party_pool: the other parties' texts (None: fresh tiny-LM city sentences are drawn,
    see attacks.targets.canary_federation.party_texts); origin: what was audited.
    """

    config: CanaryLMConfig
    tokenizer: PreTrainedTokenizerFast
    registry: CanaryRegistry
    public_texts: list[str]
    private_texts: list[str]
    heldout_texts: list[str]
    base: PreTrainedModel
    _released: dict[Protection, TrainedModel] = field(default_factory=dict)
    # The federations' releases, keyed by (protection, settings); owned by
    # attacks.targets.canary_federation.release, kept here so they live and die with
    # the scenario whose models they were trained from.
    federated: dict[tuple[Protection, Any], TrainedModel] = field(default_factory=dict, repr=False)
    lora_targets: tuple[str, ...] | None = None
    fan_in_fan_out: bool = True
    party_pool: tuple[str, ...] | None = None
    origin: str = "built-in tiny GPT-2"

    def released(self, protection: Protection | str) -> TrainedModel:
        """The fine-tuned model for "none" (plain LoRA) or "dp-sgd" (Opacus), cached:
        one party trains alone, so only the protections without an aggregation apply."""
        protection = parse_protection(protection)
        if protection not in self._released:
            if protection is Protection.NONE:
                self._released[protection] = finetune_plain(self)
            elif protection is Protection.DP_SGD:
                self._released[protection] = finetune_dp(self)
            else:
                raise ConfigError(
                    f"protection must be 'none' or 'dp-sgd', got {protection.value!r}"
                )
        return self._released[protection]

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(ids, mask) of `texts` at the scenario's max_length (encode_masked)."""
        return encode_masked(self.tokenizer, texts, self.config.max_length)


def copy_base(scenario: CanaryScenario) -> PreTrainedModel:
    """A fresh copy of the shared base model (the cached one must never be trained).

    A deep copy, so any architecture works; the gradients left from the base's own
    training are dropped (the copy is adapted, never trained as it is).
    """
    model = copy.deepcopy(scenario.base)
    for param in model.parameters():
        param.grad = None
    return model


def adapted_base(scenario: CanaryScenario) -> nn.Module:
    """A copy of the base with fresh LoRA adapters on the scenario's targets."""
    return lora_model(
        copy_base(scenario),
        scenario.config,
        targets=scenario.lora_targets,
        fan_in_fan_out=scenario.fan_in_fan_out,
    )


def finetune_plain(scenario: CanaryScenario) -> TrainedModel:
    """LoRA fine-tuning without DP: several epochs, so the planted canaries are memorised."""
    config = scenario.config
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(config.seed + 2)
        model = adapted_base(scenario)
        data, mask = scenario.encode(scenario.private_texts)
        train_lm(
            model,
            data,
            config.finetune_epochs,
            config.finetune_lr,
            config.batch_size,
            config.seed + 3,
            config.threads,
            mask=mask,
        )
        with torch.no_grad(), flush_denormals():
            loss = float(per_sample_lm_loss(model, (data, mask)).mean())
    seconds = time.perf_counter() - start
    return TrainedModel(
        Protection.NONE,
        model.eval(),
        math.inf,
        config.dp_delta,
        final_loss=loss,
        train_seconds=seconds,
    )


def finetune_dp(scenario: CanaryScenario) -> TrainedModel:
    """The same fine-tuning with Opacus DP-SGD (per-sample clipping, Gaussian noise,
    Poisson sampling); epsilon from secagg.dp's accountant over the session's events."""
    from fedveil.learner.dp_sgd import DPSGDConfig, make_private

    config = scenario.config
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(config.seed + 4)
        model = adapted_base(scenario)
        data, mask = scenario.encode(scenario.private_texts)
        loader = DataLoader(TensorDataset(data, mask), batch_size=config.dp_batch_size)
        optimizer = torch.optim.Adam(
            [p for p in model.parameters() if p.requires_grad], lr=config.dp_lr
        )
        dp = DPSGDConfig(max_grad_norm=config.dp_clip, noise_multiplier=config.dp_noise)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            session = make_private(model, optimizer, loader, dp)
            with flush_denormals(), cpu_threads(config.threads):
                for _ in range(config.dp_epochs):
                    session.train_epoch(per_sample_lm_loss)
        events = session.events()
        wrapped: Any = session.model
        # The released model is the plain peft model: Opacus' hooks and grad samples off.
        released: nn.Module = (
            wrapped.to_standard_module() if hasattr(wrapped, "to_standard_module") else wrapped
        )
        released.eval()
        with torch.no_grad(), flush_denormals():
            loss = float(per_sample_lm_loss(released, (data, mask)).mean())
    accountant = PrivacyAccountant("prv")
    for event in events:
        accountant.compose(event)
    epsilon = accountant.epsilon(config.dp_delta)
    seconds = time.perf_counter() - start
    return TrainedModel(
        Protection.DP_SGD, released, epsilon, config.dp_delta, events, loss, seconds
    )


def build_scenario(config: CanaryLMConfig) -> CanaryScenario:
    """Corpora, canaries, tokenizer and the trained base model (fine-tuning is lazy)."""
    rng = np.random.default_rng([config.seed, 0x1A])
    tokenizer = build_tokenizer(vocabulary_words())
    n_format = int(round(config.n_public * config.public_format_share))
    # Three disjoint draws of city sentences: public (base model), private, held out.
    city = sentences(config.n_public - n_format + 2 * config.n_private, seed=config.seed)
    public_city = city[: config.n_public - n_format]
    private_city = city[len(public_city) : len(public_city) + config.n_private]
    heldout = city[len(public_city) + config.n_private :]
    planted, registry = plant_canaries(private_city, config.canaries)
    subjects = [c.subject for c in registry]
    public = public_city + format_sentences(
        config.canaries.formats, n_format, config.seed, exclude=subjects
    )
    public = [public[i] for i in rng.permutation(len(public))]
    with torch.random.fork_rng():
        torch.manual_seed(config.seed + 1)
        base = build_base_model(tokenizer, config)
        data = encode_batch(tokenizer, public, config.max_length)
        train_lm(
            base,
            data,
            config.base_epochs,
            config.base_lr,
            config.batch_size,
            config.seed + 5,
            config.threads,
        )
    return CanaryScenario(config, tokenizer, registry, public, planted, heldout, base.eval())


@functools.lru_cache(maxsize=4)
def canary_scenario(config: CanaryLMConfig) -> CanaryScenario:
    """`build_scenario`, memoised per config so tests and benchmarks train once per
    process. The models are shared: never train them further."""
    return build_scenario(config)
