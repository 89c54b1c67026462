"""Before any round: the work folder, enrolment, the plan and each party's settings.

Why the dealer-free order: each party makes its own keys (`fedveil keys request`, the
keys never leave its folder), the operator signs only the request and hands back the
certificate and the roster; the operator writes the plan from the base model. That is
the order two real organisations would follow, so it is the order the demo runs, one
`fedveil` process per step, each step's output in that role's setup.log.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedveil.demo.deployment import Deployment
from fedveil.demo.deployment_files import party_toml, read_plan
from fedveil.demo.deployment_script import write_script
from fedveil.demo.processes import run_once, shell_line
from fedveil.errors import ConfigError
from fedveil.server.keys_store import ROSTER_FILE, load_roster

MARKER = ".fedveil-demo"
SETUP_TIMEOUT_S = 600.0

Say = Callable[[str], None]


@dataclass(frozen=True)
class Prepared:
    """What the rounds need from the setup: the port the server will bind, the plan."""

    port: int
    plan: dict[str, object]

    @property
    def dimension(self) -> int:
        return int(str(self.plan["dimension"]))


def fresh_workdir(path: Path) -> Path:
    """An empty work folder (absolute). A folder from an earlier demo (it holds MARKER)
    is replaced; any other non-empty folder is refused, so nothing else is deleted."""
    path = path.resolve()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"--workdir {path} is a file; choose a folder")
        if any(path.iterdir()) and not (path / MARKER).is_file():
            raise ConfigError(
                f"--workdir {path} is not empty and was not made by `fedveil demo`; "
                "choose another folder or remove it"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by `fedveil demo`; the next run replaces this folder\n")
    return path


def free_port() -> int:
    """A port free on loopback now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def shown(deployment: Deployment, argv: tuple[str, ...]) -> str:
    """A command as the terminal shows it: `fedveil ...` (the scripts keep the path)."""
    return shell_line(("fedveil", *argv[len(deployment.program) :]))


def set_up(deployment: Deployment, say: Say) -> Prepared:
    """Keys, enrolment, roster hand-over, the plan, party.toml files and commands.sh."""
    d, root = deployment, deployment.workdir

    def step(argv: tuple[str, ...], who: str | None) -> None:
        say(f"  {who or 'operator':<12} $ {shown(d, argv)}")
        label = f"`{shown(d, argv[: len(d.program) + 2])}` ({who or 'operator'})"
        run_once(argv, root, root / d.setup_log(who), label, SETUP_TIMEOUT_S)

    step(d.keys_init(), None)
    for name in d.parties:
        step(d.keys_request(name), name)
        step(d.keys_enrol(name), None)
    for name in d.parties:  # the operator hands the final roster to every party
        shutil.copyfile(root / d.server_dir / ROSTER_FILE, root / d.roster_copy(name))
    roster_sha256 = load_roster(root / d.server_dir).sha256().hex()
    step(d.plan(), None)
    plan = read_plan(root / d.plan_file)
    port = free_port()
    for name in d.parties:
        text = party_toml(d, name, port, plan, roster_sha256)
        (root / d.party_toml(name)).write_text(text, encoding="utf-8")
    write_script(d, port, plan)
    return Prepared(port, plan)
