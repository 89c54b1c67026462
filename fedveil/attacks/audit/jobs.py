"""The audit's units of work: what to compute for a cell, and how.

Why jobs are not cells: the four output attacks of a protection all probe one released
model, which takes most of the time to train, so they are one job; each update attack
of a protection is its own job, once per seed (SEEDS: the interval of an update cell is
over seeds; one release per protection, its records carry bootstrap intervals, because
several releases would not fit the quick profile). A job returns typed records
(attacks.measure.records, the attack suites' own), which attacks/audit/evaluate.py turns
into cells.

Jobs run in worker processes (the two cores: one lane trains and probes the released
models, the other runs the update attacks), so everything a job needs travels as
plain data plus an importable aggregators factory (attacks/ may not import fedveil/).

A user update target (`[target] records`) changes what the text column's jobs measure,
not the plan: text_recovery runs on the team's model and records
(attacks.measure.user_update), the built-in captioner job gives no records (USER_JOBS),
and the target's files are part of every job's fingerprint.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedveil.attacks.audit.canary_job import canary_record
from fedveil.attacks.audit.config import AuditConfig, OutputDP
from fedveil.attacks.audit.matrix import (
    CANARY_JOB,
    OUTPUT_JOB,
    SINGLE_RUN_JOBS,
    applies,
    jobs_of,
)
from fedveil.attacks.measure.records import (
    FederationInfo,
    JobResult,
    JSONObject,
    JSONValue,
    OutputRecord,
    Record,
)
from fedveil.attacks.protections import Aggregators, DPSettings, Protection
from fedveil.attacks.targets.user_update import UpdateTargetSpec
from fedveil.secagg.modes import DPKind

if TYPE_CHECKING:  # imported lazily: the measurements load torch models
    from fedveil.attacks.measure.observe import UpdateLeakageSettings

AggregatorsFactory = Callable[[], Aggregators]

SEEDS: dict[str, int] = {"quick": 4, "full": 6}
"""How many seeds each update measurement runs for, per profile: the first selects a cell's
strongest attack run, the others (fresh draws of the private data) confirm it."""


def seeds_of(profile: str) -> int:
    """The number of seeds an update cell's interval is computed over."""
    return SEEDS.get(profile, 1)


@dataclass(frozen=True)
class Job:
    """One unit of work: an update attack on one protection's view, or the release of
    one protection's model with every output attack on it."""

    protection: Protection
    family: str  # a measurement of attacks.measure.update_leakage.RECORD_FUNCTIONS, or "output"
    seed: int = 0  # the seed's index: the job runs with the audit's seed + this

    @property
    def key(self) -> str:
        # the first seed keeps the key it always had, so stored jobs stay reusable
        suffix = f"__seed{self.seed}" if self.seed else ""
        return f"{self.protection.value}__{self.family}{suffix}"

    @property
    def lane(self) -> str:
        return "output" if self.family == OUTPUT_JOB else "update"


def plan(config: AuditConfig) -> list[Job]:
    """Every job the configured matrix needs, output jobs first (they are the longest),
    then each update measurement for every seed (seed-major, so an interrupted audit
    has whole first seeds)."""
    needed = {
        (p, f)
        for a in config.attacks
        for p in config.protections
        if applies(p, a)
        for f in jobs_of(a)
    }
    families = list(dict.fromkeys(f for a in config.attacks for f in jobs_of(a)))
    families.sort(key=lambda f: f != OUTPUT_JOB)
    once = [f for f in families if f in SINGLE_RUN_JOBS]
    jobs = [Job(p, f) for f in once for p in config.protections if (p, f) in needed]
    update = [f for f in families if f not in SINGLE_RUN_JOBS]
    for seed in range(seeds_of(config.profile)):
        jobs += [Job(p, f, seed) for f in update for p in config.protections if (p, f) in needed]
    return jobs


def seeds_for(config: AuditConfig, protection: Protection, family: str) -> list[Job]:
    """The jobs of one (protection, measurement), one per seed (output: one release)."""
    count = 1 if family in SINGLE_RUN_JOBS else seeds_of(config.profile)
    return [Job(protection, family, seed) for seed in range(count)]


@dataclass(frozen=True)
class JobContext:
    """What a worker needs to run any job (plain, picklable data)."""

    quick: bool
    seed: int
    clients: int
    parties: int
    rounds: int | None
    model_dir: Path | None
    texts: Path | None
    canaries: int | None
    dp: DPSettings
    dp_output: OutputDP
    figures: Path
    aggregators_factory: AggregatorsFactory
    update_target: UpdateTargetSpec | None = None
    """[target] model + records: the text column's update cells run on it (USER_JOBS)."""
    reference_models: int | None = None
    """[audit] reference_models: RMIA / LiRA's reference models (None: the profile's)."""

    @classmethod
    def of(cls, config: AuditConfig, out_dir: Path, factory: AggregatorsFactory) -> JobContext:
        return cls(
            quick=config.profile == "quick",
            seed=config.seed,
            clients=config.clients,
            parties=config.parties,
            rounds=config.rounds,
            model_dir=config.model_dir,
            texts=config.texts,
            canaries=config.canaries,
            dp=config.dp,
            dp_output=config.dp_output,
            figures=out_dir / "figures",
            aggregators_factory=factory,
            update_target=config.update_target,
            reference_models=config.reference_models,
        )

    def settings(self) -> JSONObject:
        """What a job's result depends on (the store's fingerprint)."""
        settings: JSONObject = {
            "quick": self.quick,
            "seed": self.seed,
            "clients": self.clients,
            "parties": self.parties,
            "rounds": self.rounds,
            "target": _target_identity(self.model_dir, self.texts, self.canaries),
            "dp": [self.dp.clip_norm, self.dp.noise_multiplier, self.dp.delta],
            "dp_output": [
                [d.clip_norm, d.noise_multiplier, d.delta]
                for d in (self.dp_output.client, self.dp_output.sgd)
            ],
            "schema": 1,
        }
        if self.update_target is not None:  # absent otherwise: stored jobs stay reusable
            settings["update_target"] = self.update_target.identity()
        if self.reference_models is not None:  # absent: the profile's K
            settings["reference_models"] = self.reference_models
        return settings


def _target_identity(
    model_dir: Path | None, texts: Path | None, canaries: int | None
) -> list[JSONValue]:
    """A user target's paths with the size and mtime of its files, so that a changed
    model or corpus is recomputed, never silently reused."""
    if model_dir is None or texts is None:
        return ["built-in", canaries]
    files = sorted(p for p in model_dir.iterdir() if p.is_file()) + [texts]
    stamps: list[JSONValue] = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return [str(model_dir.resolve()), stamps, canaries]


def _seed_everything(seed: int) -> None:
    # Attack initialisations and training order only; keys and masks never use these.
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - third-party code (peft, opacus) reads the global
    torch.manual_seed(seed)


def run_job(job: Job, context: JobContext) -> JobResult:
    """Run one job with one torch thread; (records, seconds)."""
    from fedveil.attacks.update.gradient_matching import torch_threads

    start = time.perf_counter()
    context = dataclasses.replace(context, seed=context.seed + job.seed)
    _seed_everything(context.seed)
    aggregators = context.aggregators_factory()
    with torch_threads(1):
        if job.family == OUTPUT_JOB:
            records: list[Record] = list(_output_records(job.protection, context, aggregators))
        elif job.family == CANARY_JOB:
            records = [canary_record(job.protection, context.dp, aggregators, context.quick)]
        else:
            from fedveil.attacks.measure.update_leakage import (
                RECORD_FUNCTIONS,
                UpdateLeakageSettings,
            )

            settings = UpdateLeakageSettings(
                quick=context.quick,
                n_clients=context.clients,
                dp=context.dp,
                figures=context.figures,
                seed=job.seed,
            )
            if context.update_target is not None and job.family in USER_JOBS:
                records = list(_user_update_records(job, context, settings, aggregators))
            else:
                records = list(RECORD_FUNCTIONS[job.family](job.protection, settings, aggregators))
    return JobResult(records, time.perf_counter() - start)


USER_JOBS = frozenset({"text_recovery", "captioner"})
"""The text column's measurements, which a user update target replaces: text_recovery
runs on the team's model and records; the built-in captioner gives no records (mixed in,
its caption rows would judge the team's cell on another model). The inversion and labels
columns do not apply to such a target (config.inapplicable), so no other job meets it."""


def _user_update_records(
    job: Job, context: JobContext, settings: UpdateLeakageSettings, aggregators: Aggregators
) -> list[Record]:
    if job.family != "text_recovery" or context.update_target is None:
        return []
    from fedveil.attacks.measure.user_update import user_text_records

    return list(
        user_text_records(job.protection.value, settings, aggregators, context.update_target)
    )


def _output_records(
    protection: Protection, context: JobContext, aggregators: Aggregators
) -> list[OutputRecord]:
    """Train the federation's released model under `protection` (party 0 holds the
    planted canaries) and run every output attack, with and without the filters."""
    from fedveil.attacks.measure.output_leakage import OutputLeakageSettings, output_leakage_records
    from fedveil.attacks.targets.canary_federation import (
        FederationSettings,
        federation_scenario,
        release,
    )

    federation = FederationSettings.quick() if context.quick else FederationSettings.full()
    federation = dataclasses.replace(
        federation,
        parties=context.parties,
        rounds=context.rounds or federation.rounds,
        seed=context.seed,
        client_dp=context.dp_output.client,  # [dp.output]: one source for the output rows
        dp_sgd=context.dp_output.sgd,
    )
    attack = OutputLeakageSettings.quick() if context.quick else OutputLeakageSettings.full()
    if context.reference_models is not None:  # [audit] reference_models (0: none)
        attack = dataclasses.replace(attack, reference_models=context.reference_models)
    if context.model_dir is not None and context.texts is not None:
        from fedveil.attacks.targets.user_lm import user_scenario

        scenario = user_scenario(
            context.model_dir, context.texts, n_canaries=context.canaries or 48, seed=context.seed
        )
    else:
        scenario = federation_scenario(context.quick, context.seed, context.canaries)
    trained = release(protection, scenario, aggregators, federation)
    records = output_leakage_records(scenario, trained, attack)
    noise = {
        DPKind.CLIENT: federation.client_dp,
        DPKind.SAMPLE: federation.dp_sgd,
    }.get(protection.spec.dp)
    info = FederationInfo(
        parties=federation.parties,
        rounds=federation.rounds,
        canaries=len(scenario.registry),
        clip_norm=None if noise is None else noise.clip_norm,
        noise_multiplier=None if noise is None else noise.noise_multiplier,
        train_seconds=trained.train_seconds,
    )
    return [dataclasses.replace(record, federation=info) for record in records]
