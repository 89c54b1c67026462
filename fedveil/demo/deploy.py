"""`fedveil demo` as a real deployment on loopback: one server, one process per party.

Why: the in-process demo (run.py) proves the learning claim with every party a real
mutual-TLS client, but inside one Python process. Here the same federation runs the way
organisations would run it: the operator's `fedveil keys` and `fedveil plan`, a
`fedveil server` process, and one `fedveil train` process per party, each with its own
folder (keys from its own enrolment request, its data, its checkpoint), then each
party's `fedveil train --alone` baseline. The table is built from the parties' own
evaluations (deployment_report), and every command is written to scripts in the work
folder, so running them by hand gives the same result.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from fedveil.demo.deployment import Deployment, fedveil_program
from fedveil.demo.deployment_phases import federate, run_alone
from fedveil.demo.deployment_report import party_figures
from fedveil.demo.deployment_setup import fresh_workdir, set_up
from fedveil.demo.options import DemoOptions
from fedveil.demo.report import DemoReport, DemoTiming, DeploymentFacts
from fedveil.errors import ConfigError
from fedveil.learner.models.base import build_base_model
from fedveil.secagg.modes import AggregationMode, DPKind

Say = Callable[[str], None]


def check_deployable(options: DemoOptions) -> None:
    """What only the in-process demo runs; one line saying to add --in-process."""
    if options.dp is not DPKind.NONE:
        raise ConfigError(
            f"--dp {options.dp.value} runs in the in-process demo only: add --in-process"
        )
    if options.mode is AggregationMode.PLAINTEXT:
        raise ConfigError(
            "--mode plaintext runs in the in-process demo only (a `fedveil train` party "
            "never sends its update in the clear): add --in-process"
        )


def deployment_for(options: DemoOptions, workdir: Path, model_dir: Path) -> Deployment:
    """The deployment of these options: the demo's recipe, one party per domain."""
    return Deployment(
        workdir=workdir,
        model_dir=model_dir.resolve(),
        domains=tuple(domain.value for domain in options.domains),
        rounds=options.rounds,
        mode=options.mode,
        recipe=options.recipe(),
        program=fedveil_program(),
    )


def run_deployment(options: DemoOptions, say: Say = print) -> DemoReport:
    """Set up, federate, run the baselines, and report (ProcessFailed when a process
    fails; ConfigError for what to fix before anything runs)."""
    check_deployable(options)
    started = time.perf_counter()
    model_dir = build_base_model(options.model_dir, progress=options.progress)
    built = time.perf_counter() - started
    workdir = fresh_workdir(options.workdir)
    deployment = deployment_for(options, workdir, model_dir)
    say(f"fedveil demo: a deployment on loopback in {workdir}")
    say("setting up: the operator's CA and plan, each party's own keys and enrolment")
    prepared = set_up(deployment, say)
    setup_seconds = time.perf_counter() - started - built
    say(
        f"federating: 1 server + {len(deployment.parties)} `fedveil train` processes, "
        f"{deployment.rounds} rounds ({deployment.mode.value}), "
        f"{prepared.dimension} adapter values per update"
    )
    federated_seconds = federate(deployment, prepared.port, say)
    say("each party alone: `fedveil train --alone`, the same rounds without the service")
    alone_seconds = run_alone(deployment, say)
    figures = party_figures(deployment)
    first = deployment.parties[0]
    adapter = _copy_adapter(workdir / deployment.out_dir(first) / "adapter", options.adapter_dir)
    report = DemoReport(
        mode=options.mode,
        variant=options.variant,
        dp=options.dp,
        base=figures.base,
        parties=figures.parties,
        federated=figures.federated,
        rounds=deployment.rounds,
        service_rounds=figures.service_rounds,
        adapter_path=adapter,
        model_dir=Path(model_dir),
        adapter_size=prepared.dimension,
        timing=DemoTiming(
            seconds=round(time.perf_counter() - started, 2),
            base_model_seconds=round(built, 2),
            federated_round_seconds=round(federated_seconds / deployment.rounds, 3),
        ),
        deployment=DeploymentFacts(
            workdir=workdir,
            processes=1 + len(deployment.parties),
            setup_seconds=round(setup_seconds, 2),
            federated_seconds=round(federated_seconds, 2),
            alone_seconds=round(alone_seconds, 2),
            party_max_difference=figures.max_difference,
        ),
    )
    if options.json_out is not None:
        report.write_json(options.json_out)
    return report


def _copy_adapter(source: Path, target: Path) -> Path:
    """The federated adapter (every party holds the same) also at --adapter-out, where
    the in-process demo saves it."""
    if target.resolve() == source.resolve():
        return target
    shutil.copytree(source, target, dirs_exist_ok=True)  # files replaced, nothing removed
    return target
