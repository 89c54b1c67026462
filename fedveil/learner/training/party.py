"""One organisation's learner: round-start adapter in, trained delta out, aggregate back in.

Why a party keeps the round-start adapter: the update it sends is a delta from it, and the
aggregate that comes back is a mean delta to add to it. Every party applies the same mean
to the same start, so all parties hold the identical global adapter after every round
without it ever being sent (the layout fingerprint and base hash guard that assumption).

Why the round seed is derived from (seed, party, round): a party's run is reproducible,
and two parties never share a data order or dropout mask by accident. With DP-SGD the
noise and Poisson batches are not seeded (OS CSPRNG, learner.dp_sgd): a private round
rerun with the same seed differs, so nobody can replay its noise from the config.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedveil.errors import ConfigError
from fedveil.learner.data.datasets import PartyDataset
from fedveil.learner.evaluation.report import (
    EvaluationReport,
    caption_loss_by_domain,
    evaluate_captioner,
)
from fedveil.learner.lora.adapter import apply_lora
from fedveil.learner.lora.codec import (
    AdapterLayout,
    adapter_delta,
    adapter_layout,
    adapter_vector,
    apply_mean_delta,
    load_adapter_vector,
)
from fedveil.learner.lora.config import LoraSettings
from fedveil.learner.lora.hashing import base_model_hash
from fedveil.learner.models.loading import LoadedModel, ModelKind, load_model
from fedveil.learner.training.batches import (
    EncodedCaptions,
    EncodedText,
    encode_captions,
    encode_images,
    encode_texts,
)
from fedveil.learner.training.dp_loop import DPTrainConfig, DPTrainer
from fedveil.learner.training.loop import TrainConfig, TrainStats, train
from fedveil.secagg.dp import PrivacyLedger


@dataclass(frozen=True, eq=False)
class PartyUpdate:
    """What one party contributes to one round: the delta, its weight and its layout."""

    party: str
    round_index: int
    vector: np.ndarray = field(repr=False)
    """float32 delta (trained adapter minus round-start adapter), `layout.size` long."""
    weight: int
    """The party's example count, its FedAvg weight."""
    layout: AdapterLayout = field(repr=False)
    stats: TrainStats


def _round_seed(seed: int, party: str, round_index: int) -> int:
    digest = hashlib.sha256(f"fedveil-round:{seed}:{party}:{round_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _own_copy(base: LoadedModel | str | Path) -> LoadedModel:
    if isinstance(base, LoadedModel):
        return dataclasses.replace(base, model=copy.deepcopy(base.model))
    return load_model(base)


class Party:
    """A LoRA learner over one party's encoded data (captions or text).

    The party owns `loaded.model` (LoRA is injected into it in place): build parties with
    `captioner_party` / `text_party`, which give each its own copy of the base model.
    """

    def __init__(
        self,
        name: str,
        loaded: LoadedModel,
        data: EncodedCaptions | EncodedText,
        lora: LoraSettings,
        train_config: TrainConfig,
        dp: DPTrainConfig | None = None,
        dp_ledger: PrivacyLedger | None = None,
    ) -> None:
        """`dp_ledger`: where DP-SGD charges its rounds (e.g. a file that survives a
        restart); None, an in-memory ledger of `dp`'s budget (learner.training.dp_loop)."""
        if not name:
            raise ConfigError("a party needs a non-empty name")
        if len(data) == 0:
            raise ConfigError(f"party {name!r} has no training examples")
        self.name = name
        self.loaded = loaded
        self.lora = lora
        self.train_config = train_config
        self.data = data
        self.base_hash = base_model_hash(loaded.model)
        self.model = apply_lora(loaded.model, lora)
        self.layout = adapter_layout(self.model, self.base_hash, lora.variant)
        self.global_vector = adapter_vector(self.model, self.layout)
        self.dp = dp
        self.dp_ledger = dp_ledger
        self._dp_trainer: DPTrainer | None = None

    @property
    def dp_trainer(self) -> DPTrainer | None:
        """The party's DP-SGD session and ledger (built on first use; None without DP)."""
        if self.dp is not None and self._dp_trainer is None:
            self._dp_trainer = DPTrainer(
                self.model,
                self.data,
                self.train_config,
                self.dp,
                f"party {self.name!r}",
                ledger=self.dp_ledger,
            )
        return self._dp_trainer

    @property
    def weight(self) -> int:
        return len(self.data)

    def train_round(self, round_index: int) -> PartyUpdate:
        """Train from the round-start (global) adapter; return the delta to aggregate.

        With DP, a round that would overspend the party's budget is refused
        (PrivacyBudgetExceededError) before anything, the model included, is touched."""
        trainer = self.dp_trainer
        if trainer is not None:
            trainer.check_round()
        load_adapter_vector(self.model, self.layout, self.global_vector)
        config = dataclasses.replace(
            self.train_config, seed=_round_seed(self.train_config.seed, self.name, round_index)
        )
        desc = f"{self.name} round {round_index}"
        if trainer is None:
            stats = train(self.model, self.data, config, desc)
        else:
            stats = trainer.train_round(config, desc)
        delta = adapter_delta(self.model, self.layout, self.global_vector)
        return PartyUpdate(self.name, round_index, delta, self.weight, self.layout, stats)

    def apply_aggregate(self, mean_delta: np.ndarray) -> None:
        """Move to round-start + mean delta: the next round's global adapter."""
        self.global_vector = apply_mean_delta(
            self.model, self.layout, self.global_vector, mean_delta
        )

    def evaluate(
        self, test_set: object, pixel_values: torch.Tensor | None = None
    ) -> EvaluationReport:
        """Score the global adapter on the full-caption test set (captioners only)."""
        if self.loaded.kind is not ModelKind.CAPTIONER:
            raise ConfigError(f"party {self.name!r} holds a causal LM; it has no captions to score")
        load_adapter_vector(self.model, self.layout, self.global_vector)
        return evaluate_captioner(
            self.model,
            self.loaded.tokenizer,
            self.loaded.image_processor,
            test_set,  # type: ignore[arg-type]
            pixel_values=pixel_values,
        )

    def caption_losses(
        self, test_set: object, pixel_values: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Per-domain reference-caption loss of the global adapter (see the evaluation)."""
        load_adapter_vector(self.model, self.layout, self.global_vector)
        return caption_loss_by_domain(
            self.model,
            self.loaded.tokenizer,
            self.loaded.image_processor,
            test_set,  # type: ignore[arg-type]
            pixel_values=pixel_values,
        )

    def save_adapter(self, directory: str | Path) -> Path:
        """Save the global adapter in peft's format (loadable with PeftModel.from_pretrained)."""
        load_adapter_vector(self.model, self.layout, self.global_vector)
        target = Path(directory)
        self.model.save_pretrained(str(target))
        return target


def captioner_party(
    dataset: PartyDataset,
    base: LoadedModel | str | Path,
    lora: LoraSettings,
    train_config: TrainConfig,
    dp: DPTrainConfig | None = None,
    dp_ledger: PrivacyLedger | None = None,
) -> Party:
    """A party over a city-safety dataset (its captions after its domain prompt); with
    `dp`, it trains with sample-level DP-SGD (learner.training.dp_loop), charging
    `dp_ledger` when given."""
    loaded = _own_copy(base)
    data = encode_for_captioner(
        loaded,
        [e.image for e in dataset],
        [e.prompt for e in dataset],
        [e.caption for e in dataset],
    )
    return Party(dataset.name, loaded, data, lora, train_config, dp, dp_ledger)


IMAGE_CHUNK = 64
"""Images run through the image processor this many at a time (see encode_for_captioner)."""


def encode_for_captioner(
    loaded: LoadedModel,
    images: Sequence[np.ndarray],
    prompts: Sequence[str],
    captions: Sequence[str],
) -> EncodedCaptions:
    """Captioner rows as every captioner party trains on them: captions truncated to the
    decoder's positions, images encoded IMAGE_CHUNK at a time, so a lazily decoded
    sequence (learner.data.image_captions.RgbImages) never holds a whole folder decoded
    (the processor treats each image alone, so chunking changes no value)."""
    if loaded.kind is not ModelKind.CAPTIONER:
        raise ConfigError(f"{loaded.path} is a {loaded.kind.value}, not a captioner")
    decoder_config = getattr(getattr(loaded.model, "config", None), "decoder", None)
    max_positions = int(getattr(decoder_config, "n_positions", 64))
    pixels = [
        encode_images(loaded.image_processor, images[start : start + IMAGE_CHUNK])
        for start in range(0, len(images), IMAGE_CHUNK)
    ]
    return encode_captions(
        loaded.tokenizer,
        loaded.image_processor,
        images,
        prompts,
        captions,
        max_length=max_positions,
        pixel_values=torch.cat(pixels) if pixels else None,
    )


IMAGE_CAPTION_PROMPT = ""
"""An organisation's own captions are learnt after no prompt (the decoder starts at its
bos token): the city data's domain prompts name the built-in scenario's viewpoints, which
an organisation's captions do not have."""


def encode_image_captions(
    loaded: LoadedModel, images: Sequence[np.ndarray], captions: Sequence[str]
) -> EncodedCaptions:
    """(image, caption) pairs after IMAGE_CAPTION_PROMPT, for training and held-out
    scoring alike (one encoding, so the held-out loss is the training loss)."""
    return encode_for_captioner(loaded, images, [IMAGE_CAPTION_PROMPT] * len(captions), captions)


def image_caption_party(
    name: str,
    images: Sequence[np.ndarray],
    captions: Sequence[str],
    base: LoadedModel | str | Path,
    lora: LoraSettings,
    train_config: TrainConfig,
    dp: DPTrainConfig | None = None,
    dp_ledger: PrivacyLedger | None = None,
) -> Party:
    """A captioner party over an organisation's own (image, caption) pairs
    (`fedveil train` with data.captions); encoded as captioner_party encodes the city
    data, after IMAGE_CAPTION_PROMPT; `dp` and `dp_ledger` as for captioner_party."""
    loaded = _own_copy(base)
    data = encode_image_captions(loaded, images, captions)
    return Party(name, loaded, data, lora, train_config, dp, dp_ledger)


def text_party(
    name: str,
    texts: list[str],
    base: LoadedModel | str | Path,
    lora: LoraSettings,
    train_config: TrainConfig,
    max_length: int = 128,
    dp: DPTrainConfig | None = None,
    dp_ledger: PrivacyLedger | None = None,
) -> Party:
    """A party over a causal LM and a list of texts (see `learner.data.text`); `dp` and
    `dp_ledger` as for `captioner_party`."""
    loaded = _own_copy(base)
    if loaded.kind is not ModelKind.CAUSAL_LM:
        raise ConfigError(f"{loaded.path} is a {loaded.kind.value}, not a causal LM")
    data = encode_texts(loaded.tokenizer, texts, max_length)
    return Party(name, loaded, data, lora, train_config, dp, dp_ledger)
