"""The two running phases: the federation (server + one `fedveil train` per party), then
each party's `fedveil train --alone` baseline; both watched from the outside.

Why progress from the metrics files: each party appends one line to its metrics.jsonl
when it has applied and scored a round, so tailing those files shows every party-round
as it finishes, with the figure the party itself computed, without parsing logs or
touching the processes.

Why the server is stopped last and gently: it ends by itself after the plan's rounds;
if it has not (a party failed, or Ctrl-C), it gets SIGINT, which `fedveil server`
handles by stopping cleanly, and only then SIGTERM and SIGKILL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from fedveil.demo.deployment import LISTENING, Deployment
from fedveil.demo.metrics_files import MetricsTail, Record, record_round
from fedveil.demo.processes import Child, ProcessFailed, stop_all, wait_for_line
from fedveil.learner.federation.heldout import METRICS_FILE

LISTEN_TIMEOUT_S = 120.0
SERVER_EXIT_S = 30.0
POLL_S = 0.5

Say = Callable[[str], None]


def progress_line(name: str, kind: str, record: Record, total: int, elapsed: float) -> str:
    number = record_round(record)
    what = "base adapter" if number == 0 else f"round {number:>2}/{total}"
    recall, bleu = record.get("mean_recall"), record.get("bleu")
    figures = (
        f"mean concept recall {recall:.3f}, BLEU {bleu:.1f}"
        if isinstance(recall, float) and isinstance(bleu, float)
        else "evaluated"
    )
    return f"  [{elapsed:5.0f} s] {name:<12} {kind:<9} {what}: {figures}"


def watch(
    children: Mapping[str, Child],
    outs: Mapping[str, Path],
    kind: str,
    total: int,
    say: Say,
    server: Child | None = None,
) -> None:
    """Until every child exits: print each new metrics line; ProcessFailed for the first
    child (or the server) that exits non-zero."""
    tails = {name: MetricsTail(out / METRICS_FILE) for name, out in outs.items()}
    started, pending = time.monotonic(), set(children)
    while pending:
        for name in sorted(pending):
            code = children[name].returncode  # read before the tail: no line is missed
            for record in tails[name].new_records():
                say(progress_line(name, kind, record, total, time.monotonic() - started))
            if code is not None:
                if code != 0:
                    raise children[name].failure(code)
                pending.discard(name)
        if server is not None and server.returncode not in (None, 0):
            raise server.failure(server.returncode or 0)
        if pending:
            time.sleep(POLL_S)


def federate(deployment: Deployment, port: int, say: Say) -> float:
    """Start the server, wait for it to listen, run every party at once; seconds taken
    (from the server's start to the last party's exit)."""
    d, root = deployment, deployment.workdir
    started = time.perf_counter()
    server = Child.start("the server (`fedveil server`)", d.server(port), root, root / d.server_log)
    parties: dict[str, Child] = {}
    try:
        line = wait_for_line(server, LISTENING, LISTEN_TIMEOUT_S)
        say(f"  operator     {line.strip()} (log: {d.server_log})")
        for name in d.parties:
            label = f"party {name} (`fedveil train`)"
            parties[name] = Child.start(label, d.train(name), root, root / d.train_log(name))
        say(
            f"  {len(parties)} parties training at once "
            f"(logs: {', '.join(str(d.train_log(n)) for n in d.parties)})"
        )
        outs = {name: root / d.out_dir(name) for name in d.parties}
        watch(parties, outs, "federated", d.rounds, say, server)
        seconds = time.perf_counter() - started
        code = _finish_server(server)
        if code != 0:
            raise server.failure(code)
        return seconds
    except BaseException:
        stop_all(list(parties.values()))
        server.stop(grace_s=5.0)
        raise


def _finish_server(server: Child) -> int:
    """The server's exit status: it ends by itself after the rounds; else SIGINT."""
    deadline = time.monotonic() + SERVER_EXIT_S
    while server.returncode is None and time.monotonic() < deadline:
        time.sleep(POLL_S)
    code = server.returncode
    if code is None:
        code = server.stop()
        # -SIGINT / 0: stopped as asked; anything else is a failure
        return 0 if code in (0, -2, 130) else code
    return code


def run_alone(deployment: Deployment, say: Say) -> float:
    """Every party's `fedveil train --alone` at once; seconds taken."""
    d, root = deployment, deployment.workdir
    started = time.perf_counter()
    children: dict[str, Child] = {}
    try:
        for name in d.parties:
            label = f"party {name} (`fedveil train --alone`)"
            children[name] = Child.start(label, d.train_alone(name), root, root / d.alone_log(name))
        outs = {name: root / d.alone_dir(name) for name in d.parties}
        watch(children, outs, "alone", d.rounds, say)
    except BaseException:
        stop_all(list(children.values()))
        raise
    return time.perf_counter() - started


__all__ = ["ProcessFailed", "federate", "run_alone", "watch"]
