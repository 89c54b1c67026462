"""The deployment demo's folders and the exact `fedveil` commands run in them.

Why spelled out as data: the demo must be something a person can repeat by hand. Every
step is one `fedveil` command line (an argv tuple here, run from the work folder with
paths relative to it), so the orchestrator runs them, the scripts it writes list them,
and the README can say "running these gives the same result". The layout keeps each
role's material apart, as on separate machines::

    WORKDIR/operator/   ca/ (the CA key: offline), server/ (the server's folder),
                        state/, federation.toml (`fedveil plan`), server.log, setup.log
    WORKDIR/parties/NAME/   keys/ (its own `keys request`, plus client.pem, ca.pem
                        from the operator), roster.json (handed over), party.toml,
                        out/ (the federated run), alone/ (`train --alone`),
                        train.log, alone.log, setup.log
    WORKDIR/commands.sh every step in the order the demo ran it, runnable by hand
                        (demo.deployment_script)
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from fedveil.learner.federated_local import CaptionerRecipe
from fedveil.secagg.modes import AggregationMode

HOSTS = ("localhost", "127.0.0.1")
SERVER_HOST = "localhost"
FEDERATION_NAME = "fedveil-demo"
OPERATOR = Path("operator")
PARTIES = Path("parties")
LISTENING = "fedveil server listening on"
"""The line `fedveil server` prints once it accepts connections (commands.server)."""


def fedveil_program() -> tuple[str, ...]:
    """How to run `fedveil` with this interpreter's installation: the console script
    beside it when there is one, else `python -m fedveil.cli`."""
    script = Path(sys.executable).parent / "fedveil"
    if script.is_file():
        return (str(script),)
    found = shutil.which("fedveil")
    if found is not None and Path(found).parent == Path(sys.executable).parent:
        return (found,)
    return (sys.executable, "-m", "fedveil.cli")


@dataclass(frozen=True)
class ServerRound:
    """The [round] settings the operator adds to the plan, as `fedveil server` flags.

    Why these values: `fedveil demo --in-process` runs the same service with 48-bit
    elements and max_weight 10 000 (runners.service_aggregator: a quantisation error
    near 1e-10 on LoRA deltas of ~1e-3), so both demos release the same means; a stage
    waits up to `stage_timeout_s` because every party trains and evaluates a round on
    shared cores before it uploads."""

    stage_timeout_s: float = 300.0
    bits: int = 48
    max_weight: int = 10_000

    def flags(self, cohort: int) -> tuple[str, ...]:
        return (
            "--min-cohort",
            str(cohort),
            "--stage-timeout-s",
            f"{self.stage_timeout_s:g}",
            "--bits",
            str(self.bits),
            "--max-weight",
            str(self.max_weight),
        )


@dataclass(frozen=True)
class Deployment:
    """One deployment demo: who takes part, what they train, and where."""

    workdir: Path
    model_dir: Path
    domains: tuple[str, ...]
    """One party per city domain; the party's name (client id and folder) is the domain's."""
    rounds: int
    mode: AggregationMode
    recipe: CaptionerRecipe
    program: tuple[str, ...]
    test_samples: int = 90
    join_timeout_s: float = 600.0
    server_round: ServerRound = ServerRound()

    @property
    def parties(self) -> tuple[str, ...]:
        return self.domains

    # --- where things are (relative to workdir) -----------------------------------------

    @property
    def ca_dir(self) -> Path:
        return OPERATOR / "ca"

    @property
    def server_dir(self) -> Path:
        return OPERATOR / "server"

    @property
    def state_dir(self) -> Path:
        return OPERATOR / "state"

    @property
    def plan_file(self) -> Path:
        return OPERATOR / "federation.toml"

    @property
    def server_config(self) -> Path:
        return self.plan_file

    @property
    def server_log(self) -> Path:
        return OPERATOR / "server.log"

    def party_dir(self, name: str) -> Path:
        return PARTIES / name

    def keys_dir(self, name: str) -> Path:
        return self.party_dir(name) / "keys"

    def roster_copy(self, name: str) -> Path:
        return self.party_dir(name) / "roster.json"

    def party_toml(self, name: str) -> Path:
        return self.party_dir(name) / "party.toml"

    def out_dir(self, name: str) -> Path:
        return self.party_dir(name) / "out"

    def alone_dir(self, name: str) -> Path:
        return self.party_dir(name) / "alone"

    def train_log(self, name: str) -> Path:
        return self.party_dir(name) / "train.log"

    def alone_log(self, name: str) -> Path:
        return self.party_dir(name) / "alone.log"

    def setup_log(self, name: str | None = None) -> Path:
        return (OPERATOR if name is None else self.party_dir(name)) / "setup.log"

    # --- the commands ------------------------------------------------------------------

    def keys_init(self) -> tuple[str, ...]:
        return (
            *self.program,
            "keys",
            "init",
            "--ca-dir",
            str(self.ca_dir),
            "--server-dir",
            str(self.server_dir),
            "--hosts",
            ",".join(HOSTS),
        )

    def keys_request(self, name: str) -> tuple[str, ...]:
        return (
            *self.program,
            "keys",
            "request",
            "--client-id",
            name,
            "--dir",
            str(self.keys_dir(name)),
        )

    def keys_enrol(self, name: str) -> tuple[str, ...]:
        return (
            *self.program,
            "keys",
            "enrol",
            str(self.keys_dir(name) / "request.json"),
            "--ca-dir",
            str(self.ca_dir),
            "--server-dir",
            str(self.server_dir),
        )

    def plan(self) -> tuple[str, ...]:
        lora = self.recipe.lora
        targets = (
            ()
            if lora.target_modules is None
            else ("--target-modules", ",".join(lora.target_modules))
        )
        return (
            *self.program,
            "plan",
            "--model-dir",
            str(self.model_dir),
            "--out",
            str(self.plan_file),
            "--name",
            FEDERATION_NAME,
            "--rounds",
            str(self.rounds),
            "--mode",
            self.mode.value,
            "--rank",
            str(lora.rank),
            "--alpha",
            f"{lora.alpha:g}",
            *targets,
            "--variant",
            lora.variant.value,
            "--lora-seed",
            str(lora.seed),
        )

    def server(self, port: int) -> tuple[str, ...]:
        return (
            *self.program,
            "server",
            "--config",
            str(self.server_config),
            "--keys-dir",
            str(self.server_dir),
            "--state-dir",
            str(self.state_dir),
            "--port",
            str(port),
            *self.server_round.flags(len(self.parties)),
        )

    def train(self, name: str) -> tuple[str, ...]:
        return (*self.program, "train", "--config", str(self.party_toml(name)))

    def train_alone(self, name: str) -> tuple[str, ...]:
        return (*self.train(name), "--alone", "--out", str(self.alone_dir(name)))
