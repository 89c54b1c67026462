"""Target (b): the built-in vision-language captioner (ViT encoder + GPT-2 decoder), LoRA.

Why the real classes in miniature: the leakage of a LoRA update depends on where the
adapters sit (ViT query/value, every GPT-2 projection, the LM head: learner/lora's
defaults) and on what their inputs are, not on the model's width. So this builds the
same `VisionEncoderDecoderModel` (learner.models.build_captioner), the same word
tokenizer and the same peft adapters (learner.lora.apply_lora) as a party does, only
narrow, randomly initialised (the global model of an early round, as for LeNet) and
with 32x32 city scenes, so a gradient-matching step takes milliseconds on one core.

What an attacker gets from one model: an `InversionTarget` over the image (inputs in
[0, 1]; the public image processor's normalisation to [-1, 1] is part of the loss) whose
"labels" are the caption as side information, and a `TokenTarget` over the decoder's
first adapted layer (block 0's c_attn reads ln_1(wte[token] + wpe[position]), exactly
as in the tiny LM), for DAGER-style caption recovery. Both share one model, so an
update attacked for its caption is the very update attacked for its image.

Deliberate simplifications, stated so results are read right: by default the adapters
are FedAvg-LoRA (A and B trained) and warm (B != 0, as after the first round), and the
client update is one SGD gradient (FedSGD): the attacker's favourable case, an upper
bound on what the caption tokens leak. variant="ffa" builds the project's real adapter
(FFA-LoRA: A frozen from the shared seed, only B trained and sent), whose B rows live
in the rank-r space; attacks.measure.text_leakage measures it under SGD and under the
demo party's Adam steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fedveil.attacks.targets.tiny_lm import gpt2_block0_inputs
from fedveil.attacks.update.base import InversionTarget, TokenTarget
from fedveil.errors import ConfigError
from fedveil.learner.data.concepts import DOMAIN_PROMPTS, DOMAINS, GENERIC_PROMPTS, vocabulary_words
from fedveil.learner.data.datasets import CityDataConfig, make_party_dataset
from fedveil.learner.lora.adapter import apply_lora
from fedveil.learner.lora.config import AggregationVariant, LoraSettings
from fedveil.learner.models.captioner import CaptionerConfig, build_captioner, build_image_processor
from fedveil.learner.models.tokenizer import build_word_tokenizer
from fedveil.learner.training.batches import IGNORE_INDEX, encode_captions

CAPTIONER_SIZE = CaptionerConfig(
    image_size=32,
    patch_size=8,
    encoder_hidden=32,
    encoder_layers=1,
    encoder_heads=2,
    decoder_hidden=64,
    decoder_layers=1,
    decoder_heads=2,
    max_positions=16,
)
"""16 image patches, one layer each side; the decoder is 64 wide so that its first
layer's inputs (the candidates of the span check) live in a space wider than a caption."""


def caption_loss(model_call: Callable[..., Any], inputs: Tensor, labels: Tensor) -> Tensor:
    """Mean over examples of each caption's mean token cross-entropy.

    inputs: images in [0, 1], (B, 3, H, W); labels: (B, 2, L), row 0 the decoder input
    ids, row 1 the targets (IGNORE_INDEX where no loss). Per-example means, then the
    batch mean, so that a batch's gradient is exactly the mean of its examples'
    gradients (what an aggregate of one-example clients is) and per-example clipping
    (DP-SGD) sees each caption alone.
    """
    ids, targets = labels[:, 0].long(), labels[:, 1].long()
    pixel_values = inputs * 2.0 - 1.0  # the image processor's mean 0.5, std 0.5
    mask = (targets != IGNORE_INDEX) | (torch.arange(ids.shape[1]) == 0)
    out = model_call(
        pixel_values=pixel_values, decoder_input_ids=ids, decoder_attention_mask=mask.long()
    )
    logits = out.logits
    token_loss = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(targets.shape)
    valid = (targets != IGNORE_INDEX).to(token_loss.dtype)
    return ((token_loss * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1.0)).mean()


@dataclass(eq=False)
class CaptionerTargets:
    """One LoRA-adapted captioner seen two ways, and how to draw its clients' data.

    image: gradient matching over the pixels (captions passed as labels=);
    tokens: caption recovery from the decoder's first adapted layer.
    """

    image: InversionTarget
    tokens: TokenTarget
    tokenizer: Any
    image_processor: Any
    rank: int

    def examples(self, count: int, seed: int) -> tuple[Tensor, Tensor]:
        """`count` private examples (image in [0, 1], caption labels), one party domain each.

        Scenes and captions come from learner.data's city generator at this image size;
        domains rotate, so a cohort mixes the three parties' vocabularies.
        """
        if count < 1:
            raise ConfigError(f"need at least one example, got {count!r}")
        images, prompts, captions = [], [], []
        for i in range(count):
            domain = DOMAINS[(seed + i) % len(DOMAINS)]
            config = CityDataConfig(
                seed=seed + i, image_size=CAPTIONER_SIZE.image_size, samples_per_party=1
            )
            example = make_party_dataset(config, domain).examples[0]
            images.append(example.image)
            prompts.append(example.prompt)
            captions.append(example.caption)
        encoded = encode_captions(
            self.tokenizer,
            self.image_processor,
            images,
            prompts,
            captions,
            max_length=CAPTIONER_SIZE.max_positions,
        )
        labels = torch.stack([encoded.input_ids, encoded.labels], dim=1)
        return (encoded.pixel_values + 1.0) / 2.0, labels

    def caption_tokens(self, labels: Tensor) -> list[list[int]]:
        """The decoder input tokens of each caption (bos, prompt, words): what the first
        adapted layer reads, so what token recovery is scored against."""
        pad = int(self.tokenizer.pad_token_id)
        return [[int(t) for t in row[0] if int(t) != pad] for row in labels]

    def decode(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens))


def captioner_target(
    rank: int = 16, *, seed: int = 0, adapter: str = "warm", variant: str = "fedavg"
) -> CaptionerTargets:
    """The captioner as the server knows it: random base (seeded), peft LoRA of `rank`.

    adapter="warm": lora_B drawn N(0, 0.02^2), as in any round after the first (at peft's
    B = 0 the A-gradient vanishes); "fresh": peft's initialisation.
    variant="fedavg": A and B trained (the attacker's favourable case, A rows in the
    input space); "ffa": FFA-LoRA, the project's default recipe, A frozen at its
    seed-derived value (public: every party derives it) and only B in the update, so
    token recovery works in the rank-r space (attacks.update.text_recovery_ffa).
    """
    if adapter not in ("warm", "fresh"):
        raise ConfigError(f"adapter must be 'warm' or 'fresh', got {adapter!r}")
    try:
        aggregation = AggregationVariant(variant)
    except ValueError:
        raise ConfigError(f"variant must be 'fedavg' or 'ffa', got {variant!r}") from None
    prompts = [*GENERIC_PROMPTS, *DOMAIN_PROMPTS.values()]
    tokenizer = build_word_tokenizer(vocabulary_words(), prompts)
    processor = build_image_processor(CAPTIONER_SIZE)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = build_captioner(CAPTIONER_SIZE, tokenizer)
        # gradient matching differentiates the gradient: torch's fused CPU attention
        # kernel has no double backward, the eager attention does (same function)
        base.set_attn_implementation("eager")
        model = apply_lora(
            base,
            LoraSettings(rank=rank, alpha=float(rank), variant=aggregation, seed=seed),
        )
    if adapter == "warm":
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
    model.eval()
    names = [n for n, _ in model.named_parameters()]  # FFA's frozen A included
    lora_a = next(n for n in names if ".decoder." in n and "h.0.attn.c_attn.lora_A" in n)
    transformer = model.get_submodule("base_model.model.decoder.transformer")
    pad = int(tokenizer.pad_token_id)
    token_ids = torch.tensor([i for i in range(len(tokenizer)) if i != pad])
    max_length = CAPTIONER_SIZE.max_positions

    def candidates() -> tuple[Tensor, Tensor]:
        return gpt2_block0_inputs(transformer, token_ids, max_length)

    size = CAPTIONER_SIZE.image_size
    image = InversionTarget(
        name="captioner-vit-gpt2",
        model=model,
        loss=caption_loss,
        input_shape=(3, size, size),
        num_classes=None,
    )
    tokens = TokenTarget(
        name=f"captioner-caption-r{rank}"
        if aggregation is AggregationVariant.FEDAVG
        else f"captioner-caption-ffa-r{rank}",
        model=model,
        loss=caption_loss,
        lora_a=lora_a,
        lora_b=lora_a.replace("lora_A", "lora_B"),
        candidates=candidates,
        max_length=max_length,
        eos_id=None,  # the caption's eos is a target, never an input the layer reads
        pad_id=pad,
    )
    return CaptionerTargets(image, tokens, tokenizer, processor, rank)


def prior_captions(target: CaptionerTargets, count: int, seed: int) -> list[list[int]]:
    """Caption token sequences drawn from the public generator (no access to any update)."""
    _, labels = target.examples(count, seed)
    return target.caption_tokens(labels)


__all__ = [
    "CAPTIONER_SIZE",
    "CaptionerTargets",
    "caption_loss",
    "captioner_target",
    "prior_captions",
]
