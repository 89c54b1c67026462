"""The demo's child processes: one-shot commands, the server, the parties, and their logs.

Why real processes with their own log files: the deployment demo shows what an operator
and three organisations would run, so each `fedveil` command runs as its own process
exactly as typed (argv, working folder), writes to its own log file, and is watched from
the outside (its exit status, its log, the files it writes). Nothing is shared in memory.

Why a failure names one process: when a party or the server fails, the demo prints that
process's last log lines and one line naming it, stops the others (SIGINT first, as a
person would with Ctrl-C, then SIGTERM, then SIGKILL) and exits non-zero.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedveil.errors import FedveilError

TAIL_LINES = 20


class ProcessFailed(FedveilError):
    """A child process failed; `tail` holds its last log lines."""

    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail


def shell_line(argv: Sequence[str]) -> str:
    """The command as one would type it in a POSIX shell."""
    return shlex.join(argv)


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a log file ('' when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run_once(argv: Sequence[str], cwd: Path, log: Path, label: str, timeout_s: float) -> None:
    """Run a short command to completion (output appended to `log`); ProcessFailed if it
    exits non-zero or runs past `timeout_s`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {shell_line(argv)}\n")
        out.flush()
        try:
            code = subprocess.run(
                list(argv), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s
            ).returncode
        except subprocess.TimeoutExpired:
            raise ProcessFailed(
                f"{label} did not finish within {timeout_s:.0f} s (log: {log})", log_tail(log)
            ) from None
    if code != 0:
        raise ProcessFailed(f"{label} exited with status {code} (log: {log})", log_tail(log))


@dataclass(eq=False)
class Child:
    """A long-running child process whose output goes to `log`."""

    label: str
    argv: tuple[str, ...]
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @classmethod
    def start(cls, label: str, argv: Sequence[str], cwd: Path, log: Path) -> Child:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w", encoding="utf-8") as out:
            out.write(f"$ {shell_line(argv)}\n")
            out.flush()
            # its own process group: a Ctrl-C at the demo's terminal reaches the demo
            # only, which then stops each child in order (the server last)
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return cls(label, tuple(argv), log, process)

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def failure(self, code: int) -> ProcessFailed:
        return ProcessFailed(
            f"{self.label} exited with status {code} (log: {self.log})", log_tail(self.log)
        )

    def stop(self, grace_s: float = 15.0) -> int:
        """SIGINT, then SIGTERM, then SIGKILL, each after `grace_s` without an exit."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            code = self.process.poll()
            if code is not None:
                return code
            try:
                os.kill(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                return self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                continue
        return self.process.wait()


def wait_for_line(child: Child, marker: str, timeout_s: float) -> str:
    """The first line of `child`'s log that starts with `marker` (e.g. the server's
    "listening" line); ProcessFailed if the child exits or `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        for line in child.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(marker):
                return line
        code = child.returncode
        if code is not None:
            raise child.failure(code)
        if time.monotonic() > deadline:
            raise ProcessFailed(
                f"{child.label} printed no {marker!r} line within {timeout_s:.0f} s "
                f"(log: {child.log})",
                log_tail(child.log),
            )
        time.sleep(0.2)


def stop_all(children: Sequence[Child]) -> None:
    """Stop every child still running (used when something failed)."""
    for child in children:
        child.stop(grace_s=5.0)
