"""`fedveil audit --backend ray`: every job a Ray task on a local Ray, the same report.

The matrix is the audit command test's small one (labels on none and secagg, four seeds
of the quick profile): the same verdicts in both directions must come out of Ray tasks,
the store must be written by the driver, and a resumed run must reuse every job.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("ray")

from fedveil.attacks.audit.jobs import Job  # noqa: E402
from fedveil.attacks.audit.store import JobStore  # noqa: E402
from fedveil.attacks.protections import parse_protection  # noqa: E402
from fedveil.cli import main  # noqa: E402
from fedveil.runners.ray_audit import store_reply  # noqa: E402

CONFIG = """
[audit]
protections = ["none", "secagg"]
attacks = ["labels"]

[claims]
secagg = ["labels"]
"""


def _audit(tmp_path: Path, *extra: str) -> int:
    path = tmp_path / "audit.toml"
    path.write_text(CONFIG)
    return main(
        ["audit", "--config", str(path), "--out", str(tmp_path / "out"), "--no-progress", *extra]
    )


def test_the_audit_runs_its_jobs_as_ray_tasks_and_judges_both_directions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _audit(tmp_path, "--backend", "ray") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    cells = {(c["protection"], c["attack"]): c for c in report["cells"]}
    assert cells["none", "labels"]["status"] == "leaks"
    assert cells["none", "labels"]["metrics"]["label_attribution_acc"] == 1.0
    assert cells["secagg", "labels"]["status"] in ("pass", "inconclusive")
    assert cells["secagg", "labels"]["seeds"] == 4
    assert not report["errors"]
    stored = sorted(p.name for p in (tmp_path / "out" / "work").glob("*.json"))
    assert len(stored) == 8  # 2 protections x label_leak x 4 seeds, written by the driver
    assert "all claimed protections held" in capsys.readouterr().out

    assert _audit(tmp_path, "--backend", "ray") == 0  # resumed: nothing recomputed
    again = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(again["reused_jobs"]) == 8 and again["cells"] == report["cells"]


def test_a_reply_naming_a_figure_outside_the_audit_folder_is_refused(tmp_path: Path) -> None:
    figures = tmp_path / "out" / "figures"
    store = JobStore(tmp_path / "out")
    job = Job(parse_protection("none"), "label_leak", 0)
    outside = tmp_path / "elsewhere.png"
    reply = {"records": [], "seconds": 0.0, "figures": {str(outside): b"\x89PNG"}}
    with pytest.raises(ValueError, match="outside"):
        store_reply(reply, job, store, "fp", figures)
    assert not outside.exists()
    inside = figures / "ok.png"
    store_reply({**reply, "figures": {str(inside): b"\x89PNG"}}, job, store, "fp", figures)
    assert inside.read_bytes() == b"\x89PNG"
    assert store.load(job.key, "fp") is not None


def test_ray_address_without_the_ray_backend_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _audit(tmp_path, "--ray-address", "127.0.0.1:1") == 2
    assert "--ray-address needs --backend ray" in capsys.readouterr().err
    assert _audit(tmp_path, "--backend", "ray", "--ray-address", "127.0.0.1:1") == 2
    assert "no Ray cluster answers at 127.0.0.1:1" in capsys.readouterr().err
