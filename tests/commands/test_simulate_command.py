"""`fedveil simulate`: one round on the local or the Ray backend, a summary line and a JSON
report; bad arguments exit 2 with one line, never a traceback; the CLI starts without Ray.

The Ray cases share one local Ray started by a module fixture (the command reuses a Ray
that is already running and leaves it running), so Ray starts once for the module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedveil.cli import main


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    pytest.importorskip("ray")
    from fedveil.runners import ray_backend

    started = ray_backend.connect(num_cpus=2)
    yield
    if started:
        ray_backend.shutdown()


def _simulate(tmp_path: Path, backend: str, *flags: str) -> tuple[int, dict[str, object]]:
    out = tmp_path / f"{backend}.json"
    argv = ["simulate", "--backend", backend, "--clients", "10", "--dimension", "500"]
    status = main([*argv, "--drop", "0.2", "--seed", "3", *flags, "--json", str(out)])
    return status, json.loads(out.read_text())


def test_local_backend_round_is_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = _simulate(tmp_path, "local")
    assert status == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("round DONE (local)")
    assert report["backend"] == "local" and report["exact"] is True
    dropouts: dict[str, str] = report["dropouts"]  # type: ignore[assignment]
    assert len(dropouts) == 2
    # A client that leaves before unmasking has uploaded: it is still a survivor.
    assert report["survivors"] == 10 - sum(stage != "unmask" for stage in dropouts.values())
    assert report["server_peak_bytes"] is None


def test_ray_backend_round_is_exact_and_matches_the_local_schedule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], local_ray: None
) -> None:
    status, report = _simulate(tmp_path, "ray", "--workers", "2", "--no-progress")
    assert status == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("round DONE (ray)")
    assert "exact=True" in printed[0]
    assert report["backend"] == "ray" and report["exact"] is True
    assert report["workers"] == 2 and report["final_stage"] == "done"
    for key in ("server_seconds", "client_seconds", "upload_bytes", "download_bytes"):
        assert report[key]
    assert isinstance(report["server_peak_bytes"], int) and report["server_peak_bytes"] > 0
    _, local = _simulate(tmp_path, "local")
    assert report["dropouts"] == local["dropouts"]  # same seed, same schedule
    assert report["survivors"] == local["survivors"]


def test_a_round_that_fails_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--clients", "10", "--dimension", "100", "--drop", "0.2"]
    assert main([*argv, "--drop-stage", "consistency-check"]) == 1
    assert "round FAILED (local)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags",
    [
        ["--clients", "1"],
        ["--dimension", "0"],
        ["--drop", "1.0"],
        ["--clients", "10", "--neighbours", "10"],
        ["--workers", "2"],
        ["--backend", "ray", "--workers", "0"],
        ["--backend", "ray", "--ray-address", "not-an-address"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--dimension", "10", *flags]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedveil simulate: error:")
    assert "Traceback" not in captured.err and not captured.out


def test_unknown_drop_stage_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--drop-stage", "nowhere"])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_cli_and_the_local_backend_never_import_ray() -> None:
    script = (
        "import sys\n"
        "from fedveil.cli import main\n"
        "assert main(['simulate', '--clients', '4', '--dimension', '50']) == 0\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120, capture_output=True)
