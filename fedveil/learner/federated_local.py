"""The in-process federated driver: rounds of local training and a pluggable aggregate.

Why in-process and plaintext by default: it verifies the learning side (does FedAvg of
LoRA deltas give the joint model?) without sockets or cryptography, in seconds. The
aggregation step is an argument, `aggregate(list of (update, weight)) -> weighted mean`,
so the gRPC secure aggregation (which computes the same function without seeing any
single update) drops in where `weighted_mean` is.

A local-only baseline is the same loop with a cohort of one: the same rounds, epochs,
seeds and optimiser resets, only without the other parties.

The recipe (`CaptionerRecipe`) is what was measured to work on two CPU cores: FFA-LoRA,
many short rounds (one local epoch, 8 steps, per round), Adam at 1e-2. The federation
beats every party alone (a party alone can only ever describe its own domain: at most 1/3
mean concept recall). With the same data and budget, FedAvg of A and B instead of
FFA-LoRA, or a few rounds of several local epochs instead of many of one, learn far less
(each party's long local run learns to ignore the prompt, and the average of three such
models mixes every domain's words after every prompt). Figures: the README's demo
section and benchmarks/README.md ("Recipe choices").
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fedveil.errors import ConfigError
from fedveil.learner.data.datasets import CityDataConfig, PartyDataset, SceneExample
from fedveil.learner.evaluation.report import EvaluationReport, evaluate_captioner
from fedveil.learner.lora.aggregation import Aggregator, weighted_mean
from fedveil.learner.lora.codec import AdapterLayout, AdapterMismatchError
from fedveil.learner.lora.config import AggregationVariant, LoraSettings
from fedveil.learner.lora.hetero_config import HeteroConfig
from fedveil.learner.models.loading import LoadedModel, load_model
from fedveil.learner.training.batches import EncodedCaptions, encode_captions, encode_images
from fedveil.learner.training.dp_loop import DPTrainConfig
from fedveil.learner.training.loop import TrainConfig
from fedveil.learner.training.party import Party, PartyUpdate, captioner_party


@dataclass(frozen=True)
class RoundRecord:
    """One round's bookkeeping: who contributed with what weight, losses, update sizes."""

    round_index: int
    weights: dict[str, int]
    losses: dict[str, float]
    update_norms: dict[str, float]
    aggregate_norm: float
    seconds: float

    @classmethod
    def of(
        cls, round_index: int, updates: Sequence[PartyUpdate], step: np.ndarray, started: float
    ) -> RoundRecord:
        """The record of a round whose parties sent `updates` and applied `step`, begun at
        `started` (time.perf_counter)."""
        return cls(
            round_index=round_index,
            weights={u.party: u.weight for u in updates},
            losses={u.party: u.stats.mean_loss for u in updates},
            update_norms={u.party: float(np.linalg.norm(u.vector)) for u in updates},
            aggregate_norm=float(np.linalg.norm(step)),
            seconds=time.perf_counter() - started,
        )


@dataclass(frozen=True, eq=False)
class FederatedRun:
    """The final global adapter (every party holds it) and the rounds that made it."""

    global_vector: np.ndarray = field(repr=False)
    layout: AdapterLayout = field(repr=False)
    rounds: tuple[RoundRecord, ...]
    seconds: float


def check_cohort(parties: Sequence[Party]) -> AdapterLayout:
    """Refuse a cohort whose parties do not share base model, layout and start adapter."""
    if not parties:
        raise ConfigError("a federation needs at least one party")
    names = [p.name for p in parties]
    if len(set(names)) != len(names):
        raise ConfigError(f"party names must be unique, got {names}")
    first = parties[0]
    for party in parties[1:]:
        if party.layout.fingerprint() != first.layout.fingerprint():
            raise AdapterMismatchError(
                f"party {party.name!r} has another adapter layout, frozen A or base model "
                f"than {first.name!r}; all parties must load the same base and LoraSettings"
            )
        if not np.array_equal(party.global_vector, first.global_vector):
            raise AdapterMismatchError(
                f"party {party.name!r} starts from another adapter than {first.name!r}; "
                "use the same LoraSettings.seed everywhere"
            )
    return first.layout


def run_round(
    parties: Sequence[Party], round_index: int, aggregate: Aggregator = weighted_mean
) -> RoundRecord:
    """Every party trains, the aggregate is computed, every party applies it."""
    started = time.perf_counter()
    updates: list[PartyUpdate] = [party.train_round(round_index) for party in parties]
    mean = np.asarray(aggregate([(u.vector, u.weight) for u in updates]), dtype=np.float64)
    for party in parties:
        party.apply_aggregate(mean)
    return RoundRecord.of(round_index, updates, mean, started)


def run_federated(
    parties: Sequence[Party],
    rounds: int,
    aggregate: Aggregator = weighted_mean,
    progress: bool = True,
) -> FederatedRun:
    """`rounds` rounds of FedAvg over `parties` (a cohort of one: local-only training)."""
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be a positive int, got {rounds!r}")
    layout = check_cohort(parties)
    started = time.perf_counter()
    records = []
    label = "federated" if len(parties) > 1 else f"{parties[0].name} alone"
    for r in tqdm(range(rounds), desc=f"{label} rounds", disable=not progress):
        records.append(run_round(parties, r, aggregate))
    return FederatedRun(
        global_vector=parties[0].global_vector.copy(),
        layout=layout,
        rounds=tuple(records),
        seconds=time.perf_counter() - started,
    )


# --- the whole comparison, in process ------------------------------------------------------


@dataclass(frozen=True)
class CaptionerRecipe:
    """Rounds, adapter, local training and data of a captioner federation."""

    rounds: int = 20
    lora: LoraSettings = field(default_factory=lambda: LoraSettings(variant=AggregationVariant.FFA))
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=1, batch_size=32, learning_rate=1e-2)
    )
    data: CityDataConfig = field(default_factory=CityDataConfig)
    dp: DPTrainConfig | None = None
    """Sample-level DP-SGD for the federation's parties (the local-only baselines of
    compare_local_and_federated stay non-private)."""
    hetero: HeteroConfig | None = None
    """Per-party ranks (<= lora.rank, the federation's maximum) and text-only parties
    (learner.lora.hetero_cohort); None: every party trains lora as it is."""

    def __post_init__(self) -> None:
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise ConfigError(f"rounds must be a positive int, got {self.rounds!r}")
        if self.hetero is not None and self.hetero.max_rank != self.lora.rank:
            raise ConfigError(
                f"the heterogeneous federation's maximum rank {self.hetero.max_rank} must be "
                f"the adapter's rank {self.lora.rank}"
            )


@dataclass(frozen=True)
class Comparison:
    """Base model, each party alone and the federation, scored on one test set."""

    base: EvaluationReport
    local: dict[str, EvaluationReport]
    federated: EvaluationReport
    run: FederatedRun
    privacy: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per federated party under sample-level DP: epsilon spent, delta, noise_multiplier,
    clip_norm, sample_rate, steps (empty without DP)."""

    @property
    def best_local_mean_recall(self) -> float:
        return max(report.mean_recall for report in self.local.values())

    def as_dict(self) -> dict[str, object]:
        """The demo report's fields: base, local: {party: ...}, federated, rounds."""
        return {
            "base": self.base.as_dict(),
            "local": {name: report.as_dict() for name, report in self.local.items()},
            "federated": self.federated.as_dict(),
            "rounds": len(self.run.rounds),
        }


def make_parties(
    base: LoadedModel | str | Path, datasets: dict[str, PartyDataset], recipe: CaptionerRecipe
) -> list[Party]:
    """One captioner party per dataset, each with its own copy of the base model."""
    return [
        captioner_party(data, base, recipe.lora, recipe.train, recipe.dp)
        for data in datasets.values()
    ]


def make_client_parties(
    base: LoadedModel | str | Path, datasets: dict[str, PartyDataset], recipe: CaptionerRecipe
) -> list[Party]:
    """One captioner party per client, all sharing ONE copy of the base model.

    Why shared: a cohort of hundreds of branch offices cannot hold hundreds of model
    copies, and need not: run_round trains the parties one after another, and each
    `train_round` first loads its own round-start adapter into the model, so a party
    only needs the model while it trains. Each view has its own name (its round seed),
    data and global vector. Not for sample-level DP (one DP-SGD session per model)."""
    if recipe.dp is not None:
        raise ConfigError("clients sharing one model cannot run sample-level DP-SGD")
    items = list(datasets.values())
    if not items:
        raise ConfigError("a federation needs at least one party")
    train = office_train_config(recipe, min(len(d) for d in items))
    lead = captioner_party(items[0], base, recipe.lora, train)
    parties = [lead]
    for dataset in items[1:]:
        view = copy.copy(lead)
        view.name = dataset.name
        view.data = _encode_like(lead, dataset)
        view.global_vector = lead.global_vector.copy()
        parties.append(view)
    return parties


def office_train_config(recipe: CaptionerRecipe, client_samples: int) -> TrainConfig:
    """A branch office's local round: as many optimiser steps as its whole organisation
    takes in one (ceil(samples_per_party / batch_size), 8 in the recipe), in batches of
    at most its own size, over as many passes of its slice as that needs.

    Why: the recipe's round is one local epoch; an office holding 1/N of its
    organisation's data would take 1/N of the steps, and a cohort of many offices would
    then learn far less per round (measured: 24 samples per office, one Adam step a
    round, no concept learned in 20 rounds). Keeping the steps keeps the optimisation
    path of the three-organisation federation, so a cohort size changes only the data
    behind each step and the DP noise."""
    train = recipe.train
    steps = math.ceil(recipe.data.samples_per_party / train.batch_size) * train.epochs
    return dataclasses.replace(
        train, epochs=steps, max_steps=steps, batch_size=min(train.batch_size, client_samples)
    )


def _encode_like(party: Party, dataset: PartyDataset) -> EncodedCaptions:
    """`dataset` encoded as captioner_party encodes its party's data."""
    loaded = party.loaded
    decoder_config = getattr(getattr(loaded.model, "config", None), "decoder", None)
    return encode_captions(
        loaded.tokenizer,
        loaded.image_processor,
        [e.image for e in dataset],
        [e.prompt for e in dataset],
        [e.caption for e in dataset],
        max_length=int(getattr(decoder_config, "n_positions", 64)),
    )


def compare_local_and_federated(
    base: LoadedModel | str | Path,
    datasets: dict[str, PartyDataset],
    test_set: tuple[SceneExample, ...],
    recipe: CaptionerRecipe | None = None,
    aggregate: Aggregator = weighted_mean,
    progress: bool = True,
    alone: dict[str, PartyDataset] | None = None,
    federate: Callable[[list[Party]], FederatedRun] | None = None,
    alone_recipe: CaptionerRecipe | None = None,
) -> Comparison:
    """Score the base model, every party trained alone, and the federation.

    Every local-only run gets the federation's budget (same rounds, epochs and seeds),
    without DP: with `recipe.dp` this compares the private federation with non-private
    single parties.

    `alone`: when the federation's `datasets` are many clients (each organisation split
    into branch offices, datasets.split_party_dataset), the organisations' whole data,
    each trained alone as the baseline; the clients then share one model
    (make_client_parties) and train without per-client progress bars. None: every
    dataset is an organisation of its own.

    `federate`: how the parties federate (e.g. buffered rounds,
    learner.federation.buffered_local); default `recipe.rounds` synchronous rounds of
    `aggregate`.

    `alone_recipe`: the recipe each party alone trains with, when the federation's is
    tuned for what only a federation faces (e.g. a smaller adapter against client-level
    DP noise); None: the federation's recipe without DP. The bar a private federation
    must clear is each organisation with its own best (default) recipe.
    """
    recipe = recipe or CaptionerRecipe()
    recipe = dataclasses.replace(
        recipe, train=dataclasses.replace(recipe.train, progress=progress and recipe.train.progress)
    )
    loaded = base if isinstance(base, LoadedModel) else load_model(base)
    pixels = encode_images(loaded.image_processor, [scene.image for scene in test_set])
    base_report = evaluate_captioner(
        loaded.model, loaded.tokenizer, loaded.image_processor, test_set, pixel_values=pixels
    )
    if alone is None:
        parties = make_parties(loaded, datasets, recipe)
    else:
        quiet = dataclasses.replace(recipe.train, progress=False)
        parties = make_client_parties(loaded, datasets, dataclasses.replace(recipe, train=quiet))
    if federate is None:
        run = run_federated(parties, recipe.rounds, aggregate, progress)
    else:
        run = federate(parties)
        for party in parties:  # every party holds the final global adapter
            party.global_vector = run.global_vector.copy()
    federated = parties[0].evaluate(test_set, pixels)
    privacy = {}
    for party in parties:
        trainer = party.dp_trainer if party.dp is not None else None
        if trainer is not None:
            privacy[party.name] = {
                "epsilon": trainer.epsilon(),
                "delta": trainer.dp.delta,
                "noise_multiplier": trainer.noise_multiplier,
                "clip_norm": trainer.dp.clip_norm,
                "sample_rate": trainer.sample_rate,
                "steps": float(trainer.session.steps),
            }
    local = {}
    solo = dataclasses.replace(alone_recipe or recipe, dp=None)
    solo = dataclasses.replace(
        solo, train=dataclasses.replace(solo.train, progress=progress and solo.train.progress)
    )
    for name, data in (datasets if alone is None else alone).items():
        single = make_parties(loaded, {name: data}, solo)
        run_federated(single, solo.rounds, weighted_mean, progress)
        local[name] = single[0].evaluate(test_set, pixels)
    return Comparison(base_report, local, federated, run, privacy)
