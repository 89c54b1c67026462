"""The deployment demo's child processes: a failure names the process and shows its log;
a running child stops on SIGINT, as `fedveil server` does."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from fedveil.demo.processes import Child, ProcessFailed, run_once, wait_for_line


def test_a_failing_command_is_named_with_its_last_log_lines(tmp_path: Path) -> None:
    log = tmp_path / "setup.log"
    run_once(["sh", "-c", "echo fine"], tmp_path, log, "`fine`", 30)
    with pytest.raises(ProcessFailed) as info:
        run_once(["sh", "-c", "echo boom; exit 3"], tmp_path, log, "`boom`", 30)
    assert "`boom` exited with status 3" in str(info.value) and str(log) in str(info.value)
    assert info.value.tail.splitlines()[-1] == "boom"
    assert "$ sh -c 'echo fine'" in log.read_text(), "each command is logged as typed"


def test_a_child_that_exits_before_its_line_fails_and_one_that_runs_stops_on_sigint(
    tmp_path: Path,
) -> None:
    early = Child.start("early", ["sh", "-c", "echo starting; exit 4"], tmp_path, tmp_path / "a")
    with pytest.raises(ProcessFailed, match="early exited with status 4"):
        wait_for_line(early, "listening", 30)
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *_: sys.exit(0))\n"
        "print('listening on 1', flush=True)\n"
        "time.sleep(60)\n"
    )
    server = Child.start("server", [sys.executable, "-c", script], tmp_path, tmp_path / "b")
    assert wait_for_line(server, "listening", 30) == "listening on 1"
    started = time.monotonic()
    assert server.stop(grace_s=10) == 0 and time.monotonic() - started < 10
