"""The learner side of `fedveil train`: the party's model, data and recipe from its settings.

Why a module of its own: it is the only part of the command that needs torch, so
`commands.train` imports it inside `run`, and `fedveil server` starts without the training
stack. It reuses the in-process federation's party (learner.training.party): the same
LoRA initialisation from the shared seed, the same encoding and the same training loop,
so a party run by `fedveil train` trains exactly as one inside `fedveil demo`.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from fedveil.commands.party_settings import (
    DEFAULT_CITY_TEST_SAMPLES,
    DataTable,
    DpTable,
    LoraTable,
    PartySettings,
)
from fedveil.errors import ConfigError
from fedveil.learner.data.concepts import Domain
from fedveil.learner.data.datasets import CityDataConfig, make_party_dataset, make_test_set
from fedveil.learner.data.image_captions import ImageCaption, RgbImages, load_image_captions
from fedveil.learner.data.text import load_jsonl_texts
from fedveil.learner.federation.heldout import (
    CaptionHeldOut,
    HeldOut,
    ImageCaptionHeldOut,
    TextHeldOut,
)
from fedveil.learner.lora.config import AggregationVariant, LoraSettings
from fedveil.learner.models.loading import LoadedModel, ModelKind, load_model
from fedveil.learner.training.dp_loop import DPTrainConfig
from fedveil.learner.training.loop import TrainConfig
from fedveil.learner.training.party import (
    Party,
    captioner_party,
    image_caption_party,
    text_party,
)
from fedveil.secagg.dp import PrivacyLedger
from fedveil.secagg.protocol.plan import FederationPlan

_LOAD_LOCK = threading.Lock()
"""`from_pretrained` builds the model on a process-global meta device, so two loads in
one process at once (parties run as threads, e.g. in tests) see each other's meta
tensors; one load at a time. Separate processes are unaffected."""


def lora_settings(settings: PartySettings, plan: FederationPlan | None = None) -> LoraSettings:
    """The party's [lora] table; without one, the served plan's adapter (or the defaults
    when the server serves no plan). A [lora] that differs from the plan is reported
    field by field once the model is built (learner.federation.plan_local)."""
    table = settings.lora
    if table is None and plan is not None:
        served = plan.lora
        return LoraSettings(
            rank=served.rank,
            alpha=served.alpha,
            target_modules=served.target_modules,
            variant=AggregationVariant(served.variant),
            seed=served.seed,
        )
    if table is None:
        table = LoraTable()
    return LoraSettings(
        rank=table.rank,
        alpha=float(table.alpha),
        dropout=float(table.dropout),
        target_modules=table.target_modules,
        variant=AggregationVariant(table.variant),
        seed=table.seed,
    )


def stored_lora(fingerprint: dict[str, object]) -> LoraSettings:
    """The adapter a checkpoint's run was started with (settings_fingerprint's "lora")."""
    table = fingerprint.get("lora")
    if not isinstance(table, dict):
        raise ConfigError("the checkpoint records no adapter settings; remove it to start over")
    targets = table.get("target_modules")
    return LoraSettings(
        rank=int(table["rank"]),
        alpha=float(table["alpha"]),
        dropout=float(table["dropout"]),
        target_modules=None if targets is None else tuple(targets),
        variant=AggregationVariant(table["variant"]),
        seed=int(table["seed"]),
    )


def train_config(settings: PartySettings) -> TrainConfig:
    """The local recipe; a progress bar only when stderr is a terminal."""
    table = settings.recipe
    return TrainConfig(
        epochs=table.epochs,
        max_steps=table.max_steps,
        batch_size=table.batch_size,
        learning_rate=float(table.learning_rate),
        weight_decay=float(table.weight_decay),
        max_grad_norm=None if table.max_grad_norm is None else float(table.max_grad_norm),
        schedule=table.schedule,
        seed=table.seed,
        threads=table.threads,
        progress=sys.stderr.isatty(),
    )


def sample_dp_config(settings: PartySettings, rounds: int) -> DPTrainConfig | None:
    """DP-SGD's settings for a [dp] kind = "sample" party (None otherwise).

    `rounds` is the run's total (resumed rounds included): the noise is calibrated so the
    whole run fits the budget, the same z on every run of it, not stretched over what is
    left after a restart."""
    dp = settings.dp
    if dp is None or dp.kind != "sample":
        return None
    return DPTrainConfig(
        clip_norm=1.0 if dp.clip_norm is None else float(dp.clip_norm),
        epsilon=float(dp.epsilon),
        delta=float(dp.delta),
        rounds=rounds,
        noise_multiplier=None if dp.noise_multiplier is None else float(dp.noise_multiplier),
        accountant=dp.accountant,
        batch_size=dp.batch_size,
        learning_rate=None if dp.learning_rate is None else float(dp.learning_rate),
    )


def build_party(
    name: str,
    settings: PartySettings,
    lora: LoraSettings | None = None,
    dp: DPTrainConfig | None = None,
    dp_ledger: PrivacyLedger | None = None,
) -> Party:
    """Base model + LoRA (`lora`, default: the party's [lora]) over this party's data;
    with `dp`, DP-SGD charging `dp_ledger`. ConfigError naming what to fix (a model of
    the wrong kind for the data, a malformed JSONL line with its number)."""
    data = settings.data
    lora = lora if lora is not None else lora_settings(settings)
    recipe = train_config(settings)
    # every line (and every image) is checked before the model is loaded
    texts = None if data.texts is None else load_jsonl_texts(data.texts)
    pairs = None if data.captions is None else load_image_captions(data.captions)
    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()  # a log file gets our lines, not tqdm's
    with _LOAD_LOCK:
        loaded = load_model(settings.party.model_dir)
    if texts is not None:
        if loaded.kind is not ModelKind.CAUSAL_LM:
            raise ConfigError(
                f"data.texts is a text corpus, but {loaded.path} is a {loaded.kind.value}; "
                "use data.captions or data.city_domain for the captioner, or a causal LM "
                "model_dir"
            )
        return text_party(
            name, texts, loaded, lora, recipe, data.max_length, dp=dp, dp_ledger=dp_ledger
        )
    if pairs is not None:
        _require_captioner(loaded, "data.captions is image captions")
        check_caption_words(pairs, loaded.tokenizer)
        images, captions = RgbImages(pairs), [p.caption for p in pairs]
        return image_caption_party(
            name, images, captions, loaded, lora, recipe, dp=dp, dp_ledger=dp_ledger
        )
    _require_captioner(loaded, "data.city_domain is captioner data")
    config = CityDataConfig(seed=data.city_seed, samples_per_party=data.city_samples)
    dataset = make_party_dataset(config, Domain(str(data.city_domain)))
    return captioner_party(dataset, loaded, lora, recipe, dp=dp, dp_ledger=dp_ledger)


def _require_captioner(loaded: LoadedModel, what: str) -> None:
    """Captioner data on a causal LM is refused in one line that says what fits."""
    if loaded.kind is not ModelKind.CAPTIONER:
        raise ConfigError(
            f"{what}, but {loaded.path} is a {loaded.kind.value}; use a captioner "
            '(vision-encoder-decoder) model_dir, or data.texts (a JSONL of {"text": ...} '
            "lines) for a causal LM"
        )


def check_caption_words(pairs: Sequence[ImageCaption], tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse a caption with a word the tokenizer does not know, naming its line.

    Why: a closed-vocabulary tokenizer (the built-in captioner's is word level) maps an
    unknown word to its unk token, and the party would silently learn to say "<unk>".
    A subword tokenizer never produces unk, so this costs such a model nothing."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return
    for pair in pairs:
        if unk not in tokenizer(pair.caption, add_special_tokens=False)["input_ids"]:
            continue
        unknown = [
            word
            for word in pair.caption.split()
            if unk in tokenizer(word, add_special_tokens=False)["input_ids"]
        ]
        raise ConfigError(
            f"{pair.where}: caption words {unknown or [pair.caption]} are not in the "
            "model's vocabulary; use the model's words (its tokenizer) or another model"
        )


def load_heldout_texts(settings: PartySettings) -> list[str] | None:
    """eval.texts, validated line by line like data.texts (before any model is loaded).

    eval.captions is validated here too, for the same reason (every line and image
    checked before the model loads), and read again by build_heldout, whose signature
    the callers share: a second pass over a held-out file costs little next to a model."""
    held_out = settings.eval
    if held_out is None:
        return None
    if held_out.captions is not None:
        load_heldout_captions(settings)
    if held_out.texts is None:
        return None
    return load_jsonl_texts(held_out.texts)


def load_heldout_captions(settings: PartySettings) -> list[ImageCaption] | None:
    """eval.captions, validated line by line like data.captions (None without it)."""
    held_out = settings.eval
    if held_out is None or held_out.captions is None:
        return None
    return load_image_captions(held_out.captions)


def build_heldout(settings: PartySettings, party: Party, texts: list[str] | None) -> HeldOut | None:
    """The party's held-out evaluation ([eval]), or None without one. The captioner's
    scenes come from make_test_set (never trained on: another stream of the same seed)."""
    held_out = settings.eval
    if held_out is None:
        return None
    batch_size = settings.recipe.batch_size
    if texts is not None:
        return TextHeldOut.from_texts(party, texts, settings.data.max_length, batch_size)
    pairs = load_heldout_captions(settings)
    if pairs is not None:
        check_caption_words(pairs, party.loaded.tokenizer)
        captions = [p.caption for p in pairs]
        return ImageCaptionHeldOut.from_pairs(party, RgbImages(pairs), captions, batch_size)
    samples = held_out.city_test_samples or DEFAULT_CITY_TEST_SAMPLES
    config = CityDataConfig(seed=settings.data.city_seed, test_samples=samples)
    return CaptionHeldOut.from_scenes(party, make_test_set(config))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _data_identity(data: DataTable) -> dict[str, object]:
    fields = data.model_dump(mode="json")
    if data.texts is not None:
        fields["texts"] = _file_sha256(data.texts)  # the content: the file may move
    if data.captions is not None:
        # the JSONL's content (image paths and captions); the image files are named by it,
        # not hashed: a folder of photos would be read again at every start
        fields["captions"] = _file_sha256(data.captions)
    return fields


def _dp_identity(dp: DpTable | None) -> dict[str, object] | None:
    """[dp] as it shapes the run; the ledger's path may move (the file binds itself)."""
    if dp is None:
        return None
    fields = dp.model_dump(mode="json")
    fields.pop("ledger")
    return fields


def settings_fingerprint(
    settings: PartySettings,
    party: Party,
    client_id: str,
    lora: LoraSettings,
    plan: FederationPlan | None = None,
) -> dict[str, object]:
    """What a checkpoint must have been written with to be resumed: the party, the base
    model, the adapter (`lora` as applied) and its layout, the federation plan, the data
    (its content, not only its path), the recipe and the [dp] table. Rounds, out, server
    address, logging and the ledger's path may change between runs."""
    recipe = settings.recipe.model_dump(mode="json")
    recipe.pop("threads")  # how fast, not what is trained
    return {
        "client_id": client_id,
        "base_model_hash": party.base_hash.hex(),
        "adapter_layout": party.layout.fingerprint().hex(),
        "lora": {
            "rank": lora.rank,
            "alpha": lora.alpha,
            "dropout": lora.dropout,
            "target_modules": None if lora.target_modules is None else list(lora.target_modules),
            "variant": lora.variant.value,
            "seed": lora.seed,
        },
        "plan": None if plan is None else plan.digest().hex(),
        "recipe": recipe,
        "data": _data_identity(settings.data),
        "dp": _dp_identity(settings.dp),
    }
