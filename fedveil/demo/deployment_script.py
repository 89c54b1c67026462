"""WORKDIR/commands.sh: the whole deployment demo as one shell script a person can run.

Why a runnable script and not a list: "running the processes by hand gives the same
result" is only checkable if the hand-run is written down exactly. The script is built
from the same Deployment command lines the orchestrator runs, and writes the same
party.toml files (the roster's SHA-256 comes from `fedveil keys show` at run time, since
a fresh run makes fresh keys). Run in an empty folder, it repeats every step: the
operator's, each party's (as on its own machine; the server and the parties run in the
background, each logging to its file), then the alone baselines. The adapters and the
metrics files it produces are the demo's: training is seeded and the secure aggregate
does not depend on the random masks.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

from fedveil.demo.deployment import LISTENING, Deployment
from fedveil.demo.deployment_files import party_toml
from fedveil.demo.processes import shell_line
from fedveil.server.keys_store import ROSTER_FILE

SCRIPT = "commands.sh"


def _run(deployment: Deployment, argv: tuple[str, ...]) -> str:
    """One `fedveil` command line with the program as "$FEDVEIL"."""
    return '"$FEDVEIL" ' + shlex.join(argv[len(deployment.program) :])


def _file(path: Path, text: str) -> list[str]:
    """A here-document writing `text` to `path` ($VARIABLES in it are expanded)."""
    return [f"cat > {shlex.quote(str(path))} <<EOF", text.rstrip("\n"), "EOF"]


def _background(deployment: Deployment, argv: tuple[str, ...], log: Path, var: str) -> list[str]:
    return [f"{_run(deployment, argv)} > {shlex.quote(str(log))} 2>&1 &", f"{var}=$!"]


def script_text(deployment: Deployment, port: int, plan: Mapping[str, object]) -> str:
    """The script (POSIX sh); see the module docstring."""
    d = deployment
    server_dir = str(d.server_dir)
    lines = [
        "#!/bin/sh",
        f"# `fedveil demo`: {len(d.parties)} parties, {d.rounds} rounds ({d.mode.value}), every",
        "# step in the order the demo ran it. Run it in an empty folder:",
        f"#     mkdir elsewhere && cd elsewhere && sh {SCRIPT}",
        "# Written by `fedveil demo`.",
        "set -eu",
        f'FEDVEIL="${{FEDVEIL:-{shell_line(d.program)}}}"',
        "",
        "# operator: the federation's CA (keep operator/ca offline) and the server's folder",
        _run(d, d.keys_init()),
    ]
    for name in d.parties:
        lines += [
            f"# party {name}, on its own machine: its keys and an enrolment request",
            _run(d, d.keys_request(name)),
            f"# operator: enrols {name} (client.pem and ca.pem go back to it)",
            _run(d, d.keys_enrol(name)),
        ]
    show = (*d.program, "keys", "show", "--server-dir", server_dir)
    lines += [
        "# operator: hands the roster and its SHA-256 to every party",
        f"ROSTER_SHA256=$({_run(d, show)} | sed -n 's/^roster SHA-256 //p')",
    ]
    for name in d.parties:
        lines.append(f"cp {shlex.quote(str(d.server_dir / ROSTER_FILE))} {d.roster_copy(name)}")
    lines += ["# operator: the federation plan, from the base model", _run(d, d.plan())]
    for name in d.parties:
        lines += [f"# party {name}: its settings ([lora] as in the plan's [federation.lora])"]
        lines += _file(d.party_toml(name), party_toml(d, name, port, plan, "$ROSTER_SHA256"))
    lines += ["", "# operator: the service, until the plan's rounds are done"]
    lines += _background(d, d.server(port), d.server_log, "SERVER")
    lines += [
        f"until grep -q '^{LISTENING}' {d.server_log}; do",
        '    kill -0 "$SERVER"  # the server failed: see its log',
        "    sleep 1",
        "done",
        "# every party at once: the federation (each logs to its train.log)",
    ]
    for i, name in enumerate(d.parties):
        lines += _background(d, d.train(name), d.train_log(name), f"PARTY{i}")
    lines += [f'wait "$PARTY{i}"' for i in range(len(d.parties))]
    lines += ['wait "$SERVER"', "# every party at once: the same rounds alone"]
    for i, name in enumerate(d.parties):
        lines += _background(d, d.train_alone(name), d.alone_log(name), f"ALONE{i}")
    lines += [f'wait "$ALONE{i}"' for i in range(len(d.parties))]
    figures = ", ".join(f"{d.out_dir(n)}/metrics.jsonl" for n in d.parties[:1])
    lines += [f'echo "done: the figures are in {figures} and each party\'s alone/"', ""]
    return "\n".join(lines)


def write_script(deployment: Deployment, port: int, plan: Mapping[str, object]) -> Path:
    """WORKDIR/commands.sh, executable."""
    path = deployment.workdir / SCRIPT
    path.write_text(script_text(deployment, port, plan), encoding="utf-8")
    path.chmod(0o755)
    return path
