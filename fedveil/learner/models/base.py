"""The open general model: the built-in captioner, pretrained on generic scenes, cached.

Why pretrain at all: federated fine-tuning starts from a public base model that already
sees and names the generic world (street, house, tree, sky, road...) but has never been
told about gas pipelines, loitering or bike lanes. Those are what the parties' private
annotations add, and what the metric measures.

Why cached with a marker: the build is slow on two cores; it runs once. The
directory is written under a temporary name and renamed into place, and the marker
(`fedveil-base.json`, written last) records the build config, so a half-written or
differently-configured directory is never mistaken for the model asked for.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fedveil.errors import ConfigError
from fedveil.learner.data.concepts import (
    DOMAIN_PROMPT_INIT,
    DOMAIN_PROMPTS,
    GENERIC_PROMPTS,
    vocabulary_words,
)
from fedveil.learner.data.datasets import CityDataConfig, make_generic_dataset
from fedveil.learner.lora.hashing import base_model_hash
from fedveil.learner.models.captioner import CaptionerConfig, build_captioner, build_image_processor
from fedveil.learner.models.loading import LoadedModel, ModelLoadError, load_model
from fedveil.learner.models.tokenizer import build_word_tokenizer
from fedveil.learner.training.batches import encode_captions
from fedveil.learner.training.loop import TrainConfig, train

logger = logging.getLogger(__name__)

MARKER = "fedveil-base.json"
MODEL_NAME = "tiny-captioner"


@dataclass(frozen=True)
class BaseModelConfig:
    """How the open general model is built: architecture, generic data, pretraining."""

    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)
    samples: int = 1600
    data_seed: int = 1_000_003
    """Seed of the generic scenes; distinct from any party's data seed by default."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=5, batch_size=32, learning_rate=2e-3, schedule="cosine", seed=0
        )
    )

    def __post_init__(self) -> None:
        if not isinstance(self.samples, int) or self.samples < 8:
            raise ConfigError(f"samples must be an int of at least 8, got {self.samples!r}")
        if not isinstance(self.data_seed, int) or self.data_seed < 0:
            raise ConfigError(f"data_seed must be a non-negative int, got {self.data_seed!r}")

    def to_json(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["train"].pop("progress")
        data["train"].pop("threads")
        return data


def default_model_dir() -> Path:
    """`$FEDVEIL_HOME/models/tiny-captioner`, else `~/.cache/fedveil/models/tiny-captioner`."""
    home = os.environ.get("FEDVEIL_HOME")
    root = Path(home) if home else Path.home() / ".cache" / "fedveil"
    return root / "models" / MODEL_NAME


def is_built(directory: Path, config: BaseModelConfig | None = None) -> bool:
    """True when the directory holds a finished build (of `config`, when given)."""
    marker = directory / MARKER
    if not marker.is_file():
        return False
    if config is None:
        return True
    try:
        recorded = json.loads(marker.read_text()).get("config")
    except json.JSONDecodeError:
        return False
    return bool(recorded == json.loads(json.dumps(config.to_json())))


def _reserve_domain_prompts(model: torch.nn.Module, tokenizer: object) -> None:
    """Start each domain prompt's input embedding as a copy of a generic instruction's.

    Why: pretraining never shows the domain prompts, so their rows keep a random
    initialisation the decoder never learnt to read, and federated fine-tuning must first
    teach it to tell them apart. Copied from three distinct instructions, the prompts are
    told apart from the start: federated recall is higher with the copies, by far in
    recipes where the prompts otherwise never come apart (benchmarks/README.md, "Recipe
    choices"). The base model still knows nothing of the domains: after `<energy>` it
    describes the sky.
    """
    vocab = tokenizer.get_vocab()  # type: ignore[attr-defined]
    embeddings = model.get_decoder().get_input_embeddings().weight  # type: ignore[operator]
    with torch.no_grad():
        for domain, source in DOMAIN_PROMPT_INIT.items():
            embeddings[vocab[DOMAIN_PROMPTS[domain]]] = embeddings[vocab[source]]


def _pretrain(config: BaseModelConfig, progress: bool) -> tuple[object, object, object, float]:
    """(model, tokenizer, image processor, final loss) of a fresh pretraining run."""
    prompts = [*GENERIC_PROMPTS, *DOMAIN_PROMPTS.values()]
    tokenizer = build_word_tokenizer(vocabulary_words(), prompts)
    processor = build_image_processor(config.captioner)
    data_config = CityDataConfig(seed=config.data_seed, image_size=config.captioner.image_size)
    generic = make_generic_dataset(data_config, config.samples)
    encoded = encode_captions(
        tokenizer,
        processor,
        [e.image for e in generic],
        [e.prompt for e in generic],
        [e.caption for e in generic],
        max_length=config.captioner.max_positions,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = build_captioner(config.captioner, tokenizer)
    train_config = dataclasses.replace(config.train, progress=progress)
    stats = train(model, encoded, train_config, desc="pretrain base model")
    logger.info("base model pretrained: %d steps, final loss %.3f", stats.steps, stats.last_loss)
    _reserve_domain_prompts(model, tokenizer)
    model.eval()
    return model, tokenizer, processor, stats.last_loss


def build_base_model(
    directory: str | Path | None = None,
    config: BaseModelConfig | None = None,
    *,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Build, pretrain and save the open general model; reuse a finished build.

    Returns the directory, loadable with `load_model` (or plain `from_pretrained`). A
    finished build of another config is rebuilt (it is a cache); a directory that holds
    anything else is refused, so nothing that is not a fedveil build is ever replaced.
    """
    config = config or BaseModelConfig()
    target = Path(directory) if directory is not None else default_model_dir()
    if is_built(target, config) and not force:
        return target
    if target.exists() and not force:
        if (target / MARKER).is_file():
            logger.warning("%s holds a base model of another build config; rebuilding", target)
        elif any(target.iterdir()):
            raise ModelLoadError(
                f"{target} exists and is not a finished fedveil base-model build; remove it "
                "or choose another directory"
            )
    started = time.perf_counter()
    model, tokenizer, processor, loss = _pretrain(config, progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)  # type: ignore[attr-defined]
        tokenizer.save_pretrained(staging)  # type: ignore[attr-defined]
        processor.save_pretrained(staging)  # type: ignore[attr-defined]
        marker = {
            "config": config.to_json(),
            "final_loss": loss,
            "base_model_hash": base_model_hash(model).hex(),  # type: ignore[arg-type]
            "seconds": round(time.perf_counter() - started, 2),
        }
        (staging / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_base_model(
    directory: str | Path | None = None,
    config: BaseModelConfig | None = None,
    *,
    progress: bool = True,
) -> LoadedModel:
    """The open general model, built on first use (see `build_base_model`)."""
    return load_model(build_base_model(directory, config, progress=progress))
