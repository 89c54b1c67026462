"""`fedveil simulate-secagg` runs a round end to end and reports it; bad flags exit 2.

Also the CLI's shape: one dispatch table, `--version`, the shared logging flags, and the
old flag spellings kept as hidden aliases."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest

from fedveil import cli
from fedveil.cli import main


def test_simulate_secagg_reports_every_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    status = main(
        ["simulate-secagg", "--clients", "8", "--dim", "2000", "--drop", "0.25", "--json", str(out)]
    )
    assert status == 0
    printed = capsys.readouterr().out
    for stage in ("advertise-keys", "share-keys", "masked-input", "consistency-check", "unmask"):
        assert stage in printed
    assert "round DONE" in printed
    report = json.loads(out.read_text())
    assert report["final_stage"] == "done"
    assert len(report["dropouts"]) == 2
    assert report["max_abs_error"] <= report["error_bound"]


def test_simulate_secagg_below_threshold_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "simulate-secagg",
            "--clients",
            "5",
            "--dim",
            "100",
            "--drop",
            "0.8",
            "--drop-stage",
            "share-keys",
        ]
    )
    assert status == 1
    assert "round FAILED at share-keys" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--clients", "1"], "--clients must be at least 2"),
        (["--drop", "1.5"], "--drop must be in [0, 1)"),
        (["--bits", "4"], "bits"),
        (["--neighbours", "3", "--threshold", "2", "--clients", "10"], "strict majority"),
    ],
)
def test_bad_flags_exit_2_with_a_reason(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate-secagg", "--dim", "10", *flags]) == 2
    assert message in capsys.readouterr().err


def test_unknown_stage_is_rejected() -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate-secagg", "--drop-stage", "nowhere"])
    assert info.value.code == 2


# --- the command table, --version, the shared logging flags ------------------------------


def test_version_is_the_installed_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fedveil {version('fedveil')}"


def test_every_command_is_one_row_of_the_dispatch_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [command.name for command in cli.COMMANDS]
    assert len(names) == len(set(names))
    subparsers = next(
        a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    assert list(subparsers.choices) == names
    seen: list[str] = []

    def stub(name: str) -> Callable[[argparse.Namespace], int]:
        def run(args: argparse.Namespace) -> int:
            seen.append(args.command)
            return 40 + names.index(name)

        return run

    monkeypatch.setattr(
        cli, "COMMANDS", tuple(dataclasses.replace(c, run=stub(c.name)) for c in cli.COMMANDS)
    )
    assert main(["model-hash", "somewhere"]) == 40 + names.index("model-hash")
    assert main(["keys", "show", "--server-dir", "x"]) == 40 + names.index("keys")
    assert seen == ["model-hash", "keys"]


@pytest.mark.parametrize(
    "argv",
    [["server"], ["client"], ["demo"], ["audit", "--out", "report"]],
    ids=lambda argv: argv[0],
)
def test_long_running_commands_share_the_logging_flags(argv: list[str]) -> None:
    args = cli.build_parser().parse_args([*argv, "--log-level", "debug", "--log-format", "json"])
    assert (args.log_level, args.log_format) == ("DEBUG", "json")
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args([*argv, "--log-level", "chatty"])
    assert info.value.code == 2


def test_log_format_json_is_one_object_per_line() -> None:
    script = (
        "import logging\n"
        "from fedveil.commands.logs import configure_logging\n"
        "configure_logging('INFO', 'json')\n"
        "log = logging.getLogger('fedveil.test')\n"
        "log.debug('not shown')\n"
        "log.info('two\\nlines %d', 2)\n"
        "try:\n"
        "    raise ValueError('boom')\n"
        "except ValueError:\n"
        "    log.exception('failed')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stderr.splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [
        ("INFO", "fedveil.test", "two\nlines 2"),
        ("ERROR", "fedveil.test", "failed"),
    ]
    assert "ValueError: boom" in records[1]["exception"]
    assert all("time" in r for r in records)


def test_old_flag_spellings_parse_but_are_not_advertised(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["simulate-secagg", "--dim", "7"]).dimension == 7
    assert parser.parse_args(["simulate-secagg", "--dimension", "7"]).dimension == 7
    assert parser.parse_args(["simulate-secagg"]).dimension == 1_000_000
    demo = parser.parse_args(["demo", "--epsilon", "3", "--delta", "1e-6"])
    assert (demo.dp_target_epsilon, demo.dp_delta) == (3.0, 1e-6)
    assert parser.parse_args(["demo"]).dp_target_epsilon == 8.0
    for command in ("simulate-secagg", "demo"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        text = capsys.readouterr().out
        assert "--dim " not in text and "--epsilon" not in text and "--delta" not in text


def test_the_client_names_its_json_report_json() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["client", "--json", "s.json"]).summary_json == Path("s.json")
    assert parser.parse_args(["client", "--summary-json", "s.json"]).summary_json == Path("s.json")
    assert parser.parse_args(["client"]).summary_json is None
