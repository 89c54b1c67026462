"""`fedveil demo`: three organisations fine-tune one captioner over the secure service.

Why this shape: it is the case study of the design. An open general model (built once,
offline) knows generic street scenes; the energy, residential and urban parties each
hold captions of their own domain only. Trained alone, a party's adapter describes its
own domain; trained together over the aggregation service (SecAgg+ by default, every
party a real mutual-TLS client), the shared adapter describes a scene from all three
viewpoints. The table puts the base model, each party alone (same rounds, same local
budget) and the federation side by side on the full-caption test set.

Which path aggregates: with one client per organisation (the default) every round goes
over the real gRPC service (runners.service_aggregator); with `--clients-per-party N`
> 1 each organisation's data is split into N branch offices, each its own SecAgg client,
and the rounds run in process (runners.aggregators.InProcessSecAgg: the same SecAgg+
protocol, client DP stages, calibration and accountant, without a TLS client per office,
which hundreds of offices in one process could not afford). The organisations-alone
rows are always each organisation's whole data, non-private.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedveil.clients.result import AggregateResult
from fedveil.demo.options import SAMPLE_DP_BATCH, SAMPLE_DP_LEARNING_RATE, DemoOptions
from fedveil.demo.report import (
    BufferedFacts,
    DemoReport,
    DemoTiming,
    HeteroFacts,
    PartyDP,
    PartyRow,
    RunPrivacy,
    ServiceRound,
)
from fedveil.demo.table import format_table
from fedveil.learner.data.datasets import (
    PartyDataset,
    SceneExample,
    make_party_datasets,
    make_test_set,
    split_party_dataset,
)
from fedveil.learner.federated_local import Comparison, compare_local_and_federated, make_parties
from fedveil.learner.federation.buffered_local import (
    BufferedConfig,
    BufferRecord,
    federate_buffered,
)
from fedveil.learner.lora.aggregation import Aggregator, WeightedUpdate
from fedveil.learner.lora.hetero_cohort import compare_hetero
from fedveil.learner.lora.hetero_layout import HeteroLayout
from fedveil.learner.models.base import build_base_model
from fedveil.learner.models.loading import LoadedModel, load_model
from fedveil.learner.training.party import Party
from fedveil.runners.aggregators import InProcessSecAgg
from fedveil.runners.service_aggregator import ServiceAggregator
from fedveil.secagg.modes import DPKind

# The demo's entry points, for the command and for callers that import them from here.
__all__ = ["DemoOptions", "DemoReport", "format_table", "run_demo"]


def run_demo(options: DemoOptions) -> DemoReport:
    """Build or load the base model, run the baselines and the federation, report."""
    started = time.perf_counter()
    recipe = options.recipe()
    base_dir = build_base_model(options.model_dir, progress=options.progress)
    loaded = load_model(base_dir)
    built = time.perf_counter() - started
    datasets = make_party_datasets(recipe.data, options.domains)
    test_set = make_test_set(recipe.data)
    names = list(datasets)
    # a party of its own holds the layout (the service's dimension) and saves the result;
    # with --ranks it is at the federation's maximum rank, where the global adapter lives
    keeper = make_parties(loaded, {names[0]: datasets[names[0]]}, recipe)[0]
    buffers: list[BufferRecord] = []
    if options.buffer is not None:
        comparison, results = _run_buffered(options, loaded, datasets, test_set, keeper, buffers)
    elif options.clients_per_party > 1:
        comparison, results = _run_offices(options, loaded, datasets, test_set, keeper)
    else:
        comparison, results = _run_service(options, loaded, datasets, test_set, keeper)
    keeper.apply_aggregate(comparison.run.global_vector - keeper.global_vector)
    adapter_path = keeper.save_adapter(options.adapter_dir)
    run_rounds = comparison.run.rounds
    report = DemoReport(
        mode=options.mode,
        variant=options.variant,
        dp=options.dp,
        base=comparison.base,
        parties=_party_rows(comparison),
        federated=comparison.federated,
        rounds=len(run_rounds),
        service_rounds=tuple(
            ServiceRound(r.round_id, tuple(r.survivors), r.total_weight, r.error_bound)
            for r in results
        ),
        adapter_path=Path(adapter_path),
        model_dir=Path(base_dir),
        adapter_size=keeper.layout.size,
        timing=DemoTiming(
            seconds=round(time.perf_counter() - started, 2),
            base_model_seconds=round(built, 2),
            federated_round_seconds=round(
                sum(r.seconds for r in run_rounds) / max(1, len(run_rounds)), 3
            ),
        ),
        privacy=_run_privacy(options, comparison, results),
        hetero=_hetero_facts(options),
        buffered=_buffered_facts(options, buffers),
    )
    if options.json_out is not None:
        report.write_json(options.json_out)
    return report


def _dp_epsilon(options: DemoOptions) -> float | None:
    return options.epsilon if options.dp is DPKind.CLIENT else None


def _hetero_facts(options: DemoOptions) -> HeteroFacts | None:
    hetero = options.hetero()
    if hetero is None:
        return None
    names = [d.value for d in options.domains]
    return HeteroFacts(
        {n: hetero.rank_of(n) for n in names},
        tuple(sorted(hetero.text_only)),
        tuple(hetero.lone_bands(names, ("text", "vision"))),
    )


def _dimension(options: DemoOptions, keeper: Party) -> int:
    """What every party sends: the adapter, or with --ranks / --text-only-party its
    rank-max padding, indicator and reference entry (learner.lora.hetero_layout)."""
    hetero = options.hetero()
    if hetero is None:
        return keeper.layout.size
    return HeteroLayout(keeper.layout, hetero.max_rank).size


def _run_service(
    options: DemoOptions,
    loaded: LoadedModel,
    datasets: dict[str, PartyDataset],
    test_set: tuple[SceneExample, ...],
    keeper: Party,
) -> tuple[Comparison, tuple[AggregateResult, ...]]:
    """One client per organisation, every round over the gRPC service."""
    with ServiceAggregator(
        list(datasets),
        _dimension(options, keeper),
        base_model_hash=keeper.base_hash,
        mode=options.mode,
        rounds=options.rounds,
        dp_epsilon=_dp_epsilon(options),
        dp_delta=options.delta,
        dp_clip_norm=options.dp_clip_norm,
        progress=options.progress,
    ) as service:
        recipe = options.recipe()
        compare = compare_local_and_federated if recipe.hetero is None else compare_hetero
        comparison = compare(loaded, datasets, test_set, recipe, service, options.progress)
        return comparison, tuple(service.results)


def _run_offices(
    options: DemoOptions,
    loaded: LoadedModel,
    datasets: dict[str, PartyDataset],
    test_set: tuple[SceneExample, ...],
    keeper: Party,
) -> tuple[Comparison, tuple[AggregateResult, ...]]:
    """Every organisation split into clients_per_party offices, rounds in process; the
    server's step (options.server_step()) applied to each released mean, and each
    organisation alone trained with its own recipe (options.alone_recipe())."""
    clients: dict[str, PartyDataset] = {}
    for dataset in datasets.values():
        clients.update(split_party_dataset(dataset, options.clients_per_party))
    aggregate = InProcessSecAgg(
        list(clients),
        keeper.layout.size,
        rounds=options.rounds,
        dp_epsilon=_dp_epsilon(options),
        dp_delta=options.delta,
        dp_clip_norm=options.dp_clip_norm,
    )
    comparison = compare_local_and_federated(
        loaded,
        clients,
        test_set,
        options.recipe(),
        options.server_step().around(aggregate),
        options.progress,
        alone=datasets,
        alone_recipe=options.alone_recipe(),
    )
    return comparison, tuple(aggregate.results)


def _run_buffered(
    options: DemoOptions,
    loaded: LoadedModel,
    datasets: dict[str, PartyDataset],
    test_set: tuple[SceneExample, ...],
    keeper: Party,
    buffers: list[BufferRecord],
) -> tuple[Comparison, tuple[AggregateResult, ...]]:
    """`options.rounds` buffers of K updates, each a real SecAgg+ round among its members
    (in process), on the simulated clock of `options.durations()`."""
    results: list[AggregateResult] = []

    def round_for(members: tuple[str, ...]) -> Aggregator:
        secure = InProcessSecAgg(list(members), keeper.layout.size, rounds=1)

        def aggregate(updates: Sequence[WeightedUpdate]) -> np.ndarray:
            mean = secure(updates)
            results.extend(secure.results)
            return mean

        return aggregate

    assert options.buffer is not None  # the caller's branch
    config = BufferedConfig(
        options.buffer, options.durations(), options.rounds, options.staleness_weight()
    )
    comparison = compare_local_and_federated(
        loaded,
        datasets,
        test_set,
        options.recipe(),
        progress=options.progress,
        federate=federate_buffered(config, round_for, buffers),
    )
    return comparison, tuple(results)


def _buffered_facts(options: DemoOptions, buffers: list[BufferRecord]) -> BufferedFacts | None:
    if options.buffer is None:
        return None
    contributions = {d.value: 0 for d in options.domains}
    for record in buffers:
        for name in record.members:
            contributions[name] += 1
    return BufferedFacts(
        buffer_size=options.buffer,
        slow_party=options.slow_party,
        slowdown=options.slowdown,
        staleness=options.staleness,
        simulated_time=buffers[-1].time if buffers else 0.0,
        contributions=contributions,
        max_staleness=max((t for r in buffers for t in r.staleness.values()), default=0),
    )


def _party_rows(comparison: Comparison) -> tuple[PartyRow, ...]:
    rows = []
    for name, alone in comparison.local.items():
        spent = comparison.privacy.get(name)
        dp = None
        if spent is not None:
            dp = PartyDP(
                epsilon=spent["epsilon"],
                noise_multiplier=spent["noise_multiplier"],
                sample_rate=spent["sample_rate"],
                steps=int(spent["steps"]),
            )
        rows.append(PartyRow(name, alone, dp))
    return tuple(rows)


def _run_privacy(
    options: DemoOptions, comparison: Comparison, results: Sequence[AggregateResult]
) -> RunPrivacy | None:
    """Client DP: the service's report of the last round; sample DP: the worst party's
    DP-SGD spend is the run's; None without DP."""
    served = results[-1].privacy if results else None
    if served is not None:
        return RunPrivacy(
            kind=DPKind.CLIENT,
            epsilon=served.epsilon,
            delta=served.delta,
            noise_multiplier=served.noise_multiplier,
            clip_norm=served.clip_norm,
            noise_std=served.noise_std,
        )
    per_party = comparison.privacy
    if not per_party:
        return None
    return RunPrivacy(
        kind=DPKind.SAMPLE,
        epsilon=max(p["epsilon"] for p in per_party.values()),
        delta=options.delta,
        noise_multiplier=max(p["noise_multiplier"] for p in per_party.values()),
        clip_norm=options.dp_clip_norm,
        epsilon_budget=options.epsilon,
        batch_size=SAMPLE_DP_BATCH,
        learning_rate=SAMPLE_DP_LEARNING_RATE,
    )
