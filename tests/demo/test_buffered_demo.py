"""`fedveil demo --in-process --buffer K --slow-party NAME` (issue 20): buffered rounds,
each a real SecAgg+ round among the first K parties to finish on the simulated clock."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fedveil.demo.options import DemoOptions
from fedveil.errors import ConfigError


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"buffer": 1}, "--buffer must be in [2, 3]"),
        ({"buffer": 4}, "--buffer must be in [2, 3]"),
        ({"buffer": 2, "slow_party": "harbour"}, "--slow-party 'harbour' is not one of"),
        ({"buffer": 2, "slowdown": 0.5}, "--slowdown must be a finite number >= 1"),
        ({"buffer": 2, "staleness": "linear"}, "staleness must be one of"),
        ({"buffer": 2, "clients_per_party": 2}, "--buffer takes no --dp"),
        ({"buffer": 2, "mode": "ckks"}, "--buffer runs SecAgg+ rounds in process"),
    ],
)
def test_impossible_buffered_demos_are_refused_in_one_line(kwargs: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        DemoOptions(**kwargs)


def test_the_slow_party_sets_its_own_pace_on_the_clock() -> None:
    options = DemoOptions(buffer=2, slow_party="urban", slowdown=5.0)
    assert options.durations() == {"energy": 1.0, "residential": 1.0, "urban": 5.0}
    assert options.staleness_weight().weight(100, 3) == 50  # 100 / sqrt(1 + 3)


@pytest.mark.slow
def test_a_buffered_demo_with_a_slow_party_runs_every_buffer_over_secagg(tmp_path: Path) -> None:
    from fedveil.demo.run import run_demo

    report = run_demo(
        DemoOptions(
            rounds=4,
            buffer=2,
            slow_party="urban",
            progress=False,
            adapter_dir=tmp_path / "adapter",
            json_out=tmp_path / "report.json",
        )
    )
    # every buffer is a real secure round of exactly K survivors
    assert [len(r.survivors) for r in report.service_rounds] == [2, 2, 2, 2]
    facts = report.buffered
    assert facts is not None and facts.buffer_size == 2
    # the fast parties fill the first buffers; the 5x slower party cannot join before t=5
    assert facts.contributions["urban"] == 0 and facts.simulated_time == 4.0
    assert json.loads((tmp_path / "report.json").read_text())["buffered"]["buffer_size"] == 2
