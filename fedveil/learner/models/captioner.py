"""The built-in tiny vision-language captioner: a ViT encoder and a GPT-2 decoder.

Why this shape: it is a plain transformers `VisionEncoderDecoderModel`, so it saves and
loads with `from_pretrained` like any captioner on the Hub, and peft's LoRA applies to
it unchanged. Why this small: the whole federated demo (pretraining included) has to run
in minutes on two CPU cores. A 64x64 image in 8x8 patches is 64 tokens; two layers of
width 96 on each side are enough for the closed-vocabulary captions.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import (
    GPT2Config,
    PreTrainedTokenizerFast,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTImageProcessorPil,
)

from fedveil.errors import ConfigError


@dataclass(frozen=True)
class CaptionerConfig:
    """Sizes of the tiny captioner; the defaults are what the demo uses."""

    image_size: int = 64
    patch_size: int = 8
    encoder_hidden: int = 96
    encoder_layers: int = 2
    encoder_heads: int = 4
    decoder_hidden: int = 96
    decoder_layers: int = 2
    decoder_heads: int = 4
    max_positions: int = 48

    def __post_init__(self) -> None:
        for name in (
            "image_size",
            "patch_size",
            "encoder_hidden",
            "encoder_layers",
            "encoder_heads",
            "decoder_hidden",
            "decoder_layers",
            "decoder_heads",
            "max_positions",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"
            )
        if self.encoder_hidden % self.encoder_heads:
            raise ConfigError(
                f"encoder_hidden {self.encoder_hidden} must be divisible by "
                f"encoder_heads {self.encoder_heads}"
            )
        if self.decoder_hidden % self.decoder_heads:
            raise ConfigError(
                f"decoder_hidden {self.decoder_hidden} must be divisible by "
                f"decoder_heads {self.decoder_heads}"
            )
        if self.max_positions < 8:
            raise ConfigError(f"max_positions must be at least 8, got {self.max_positions}")


def build_captioner(
    config: CaptionerConfig, tokenizer: PreTrainedTokenizerFast
) -> VisionEncoderDecoderModel:
    """A freshly initialised captioner whose decoder vocabulary is `tokenizer`'s."""
    encoder = ViTConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=3,
        hidden_size=config.encoder_hidden,
        num_hidden_layers=config.encoder_layers,
        num_attention_heads=config.encoder_heads,
        intermediate_size=4 * config.encoder_hidden,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    decoder = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.max_positions,
        n_embd=config.decoder_hidden,
        n_layer=config.decoder_layers,
        n_head=config.decoder_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        add_cross_attention=True,
        # Untied on purpose: with tied embeddings, every token pretraining never uses (the
        # domain prompts and words) is pushed by the softmax along the same direction, so
        # the three domain prompts would enter the decoder as almost the same vector
        # and no adapter could tell the domains apart. Untied, an
        # unused input row keeps its random initialisation: distinct for every prompt.
        tie_word_embeddings=False,
    )
    ved = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    ved.decoder_start_token_id = tokenizer.bos_token_id
    ved.pad_token_id = tokenizer.pad_token_id
    ved.eos_token_id = tokenizer.eos_token_id
    ved.bos_token_id = tokenizer.bos_token_id
    ved.vocab_size = len(tokenizer)
    model = VisionEncoderDecoderModel(config=ved)
    model.generation_config.decoder_start_token_id = tokenizer.bos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.max_length = config.max_positions
    return model


def build_image_processor(config: CaptionerConfig) -> ViTImageProcessorPil:
    """The processor saved with the model: scale to [-1, 1] at the model's image size."""
    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": config.image_size, "width": config.image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
