"""The in-process federation with heterogeneous ranks and text-only parties.

Why a rank-max reference party: the global adapter lives at the federation's maximum rank
with every side, which no single party may hold; the reference holds it (it never
trains), scores it and saves it. Each round every member loads the global adapter cut to
its own rank and sides (learner.lora.hetero_layout.truncate, plus the sides it holds but
does not train), trains, and sends its delta extended to the rank-max layout with its
indicator; the aggregate (any `Aggregator`: plaintext, the gRPC service, in-process
SecAgg+) is decoded per group and added to the global adapter.

Why a text-only party sees a blank image: the captioner's decoder always cross-attends to
an encoder output; a constant mid-grey image (0 after the processor's normalisation)
gives it one that carries no scene, so what the party learns is the captions' language,
and its image-side adapters stay frozen and out of its update.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from fedveil.clients.result import AggregateResult
from fedveil.errors import ConfigError
from fedveil.learner.data.datasets import PartyDataset, SceneExample
from fedveil.learner.evaluation.report import evaluate_captioner
from fedveil.learner.federated_local import (
    CaptionerRecipe,
    Comparison,
    FederatedRun,
    RoundRecord,
)
from fedveil.learner.lora.aggregation import Aggregator, weighted_mean
from fedveil.learner.lora.codec import adapter_layout
from fedveil.learner.lora.hetero_config import HeteroConfig
from fedveil.learner.lora.hetero_layout import HeteroLayout, PartyShape, Side
from fedveil.learner.lora.hetero_party import (
    align_to_reference,
    freeze_side,
    load_held,
    mask_gradients,
    party_settings,
)
from fedveil.learner.models.loading import LoadedModel, load_model
from fedveil.learner.training.batches import encode_images
from fedveil.learner.training.party import Party, captioner_party

BLANK_LEVEL = 128
"""The text-only party's image: every pixel mid-grey (0 after normalisation)."""


def text_only_dataset(dataset: PartyDataset) -> PartyDataset:
    """The dataset's captions and prompts with every image replaced by the blank one."""
    blank = np.full_like(dataset.examples[0].image, BLANK_LEVEL)
    examples = tuple(dataclasses.replace(e, image=blank) for e in dataset.examples)
    return PartyDataset(dataset.name, dataset.domain, examples)


@dataclass(eq=False)
class HeteroCohort:
    """The members, the rank-max reference that holds the global adapter, the layout."""

    layout: HeteroLayout
    reference: Party
    members: list[Party]
    shapes: dict[str, PartyShape] = dataclasses.field(default_factory=dict)
    """What each member trains when its layout holds more (HeteroConfig.hold_global)."""
    weighting: str = "group"
    """HeteroLayout.decode's weighting (HeteroConfig.weighting)."""

    @property
    def global_vector(self) -> np.ndarray:
        return self.reference.global_vector


def make_hetero_cohort(
    base: LoadedModel,
    datasets: dict[str, PartyDataset],
    recipe: CaptionerRecipe,
    hetero: HeteroConfig,
    *,
    alone: bool = False,
) -> HeteroCohort:
    """One party per dataset at its rank, text-only ones on blank images and text-side
    adapters only; `alone`: a cohort of one (a baseline), text-only allowed."""
    if not datasets:
        raise ConfigError("a federation needs at least one party")
    first = next(iter(datasets.values()))
    reference = captioner_party(first, base, recipe.lora, recipe.train)
    layout = HeteroLayout(reference.layout, recipe.lora.rank)
    if not alone:
        hetero.check_parties(list(datasets), has_vision=Side.VISION in layout.sides)
    if hetero.hold_global and recipe.dp is not None:
        raise ConfigError("hold_global masks gradients, which DP-SGD's per-sample gradients bypass")
    members, shapes = [], {}
    for name, data in datasets.items():
        text_only = name in hetero.text_only
        rank = hetero.rank_of(name)
        held = recipe.lora.rank if hetero.hold_global else rank
        settings = party_settings(recipe.lora, held)
        party = captioner_party(
            text_only_dataset(data) if text_only else data, base, settings, recipe.train, recipe.dp
        )
        align_to_reference(party.model, reference.model)
        if text_only and not freeze_side(party.model, Side.VISION):
            raise ConfigError(f"party {name!r} is text-only, but the model has no image adapters")
        if hetero.hold_global:
            mask_gradients(party.model, rank)
            sides = (Side.TEXT,) if text_only else layout.sides
            shapes[name] = PartyShape({side: rank for side in sides})
        party.layout = adapter_layout(party.model, party.base_hash, recipe.lora.variant)
        party.global_vector = layout.truncate(party.layout, reference.global_vector)
        members.append(party)
    return HeteroCohort(layout, reference, members, shapes, hetero.weighting)


def _error_bound(aggregate: Aggregator) -> float:
    """The last round's error bound when the aggregate reports its rounds (the service,
    in-process SecAgg+), else 0 (the plaintext mean is exact)."""
    results: Sequence[AggregateResult] | None = getattr(aggregate, "results", None)
    return float(results[-1].error_bound) if results else 0.0


def run_hetero_round(
    cohort: HeteroCohort, round_index: int, aggregate: Aggregator = weighted_mean
) -> RoundRecord:
    """Every member trains at its rank; the decoded per-group mean moves the global."""
    started = time.perf_counter()
    layout, start = cohort.layout, cohort.global_vector
    extended, records = [], []
    for party in cohort.members:
        party.global_vector = layout.truncate(party.layout, start)
        load_held(party.model, layout, start)
        update = party.train_round(round_index)
        shape = cohort.shapes.get(party.name)
        extended.append((layout.extend(party.layout, update.vector, shape), update.weight))
        records.append(update)
    mean = np.asarray(aggregate(extended), dtype=np.float64)
    step = layout.decode(mean, _error_bound(aggregate), cohort.weighting).values
    cohort.reference.apply_aggregate(step)
    for party in cohort.members:
        party.global_vector = layout.truncate(party.layout, cohort.global_vector)
    return RoundRecord.of(round_index, records, step, started)


def run_hetero_federated(
    cohort: HeteroCohort, rounds: int, aggregate: Aggregator = weighted_mean, progress: bool = True
) -> FederatedRun:
    """`rounds` heterogeneous rounds; the run's global vector is the rank-max adapter."""
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be a positive int, got {rounds!r}")
    started = time.perf_counter()
    label = "federated" if len(cohort.members) > 1 else f"{cohort.members[0].name} alone"
    records = [
        run_hetero_round(cohort, r, aggregate)
        for r in tqdm(range(rounds), desc=f"{label} rounds", disable=not progress)
    ]
    return FederatedRun(
        global_vector=cohort.global_vector.copy(),
        layout=cohort.layout.full,
        rounds=tuple(records),
        seconds=time.perf_counter() - started,
    )


def compare_hetero(
    base: LoadedModel | str,
    datasets: dict[str, PartyDataset],
    test_set: tuple[SceneExample, ...],
    recipe: CaptionerRecipe,
    aggregate: Aggregator = weighted_mean,
    progress: bool = True,
) -> Comparison:
    """compare_local_and_federated for a heterogeneous recipe: each party alone trains at
    its own rank and sides (a text-only party on blank images), the same budget."""
    hetero = recipe.hetero
    if hetero is None:
        raise ConfigError("compare_hetero needs a recipe with hetero settings")
    recipe = dataclasses.replace(
        recipe, train=dataclasses.replace(recipe.train, progress=progress and recipe.train.progress)
    )
    loaded = base if isinstance(base, LoadedModel) else load_model(base)
    pixels = encode_images(loaded.image_processor, [scene.image for scene in test_set])
    base_report = evaluate_captioner(
        loaded.model, loaded.tokenizer, loaded.image_processor, test_set, pixel_values=pixels
    )
    cohort = make_hetero_cohort(loaded, datasets, recipe, hetero)
    run = run_hetero_federated(cohort, recipe.rounds, aggregate, progress)
    federated = cohort.reference.evaluate(test_set, pixels)
    local = {}
    for name, data in datasets.items():
        single = make_hetero_cohort(
            loaded, {name: data}, dataclasses.replace(recipe, dp=None), hetero, alone=True
        )
        run_hetero_federated(single, recipe.rounds, weighted_mean, progress)
        local[name] = single.reference.evaluate(test_set, pixels)
    return Comparison(base_report, local, federated, run)


__all__ = [
    "HeteroCohort",
    "compare_hetero",
    "make_hetero_cohort",
    "run_hetero_federated",
    "run_hetero_round",
    "text_only_dataset",
]
