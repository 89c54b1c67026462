"""`fedveil attack`: the update attacks on a team's own captioner delta, and its records.

The victim: the built-in captioner (the tiny build the tests use, loaded from its
directory with from_pretrained), with the project's default adapter (FFA-LoRA, rank 8),
after one plain SGD step on one example: the delta a party would send. Both directions:
on that single-example delta the caption's tokens come back, and given the true caption
among decoys it ranks first, above every data-free reference caption; on the mean of ten
such deltas with different captions (what a SecAgg server decodes) the span check is
saturated and no caption comes back, while the LM head's token bag still shows the
cohort's words (README: "Not claimed"). Every figure is printed with its baseline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedveil.cli import main
from fedveil.learner.lora import AggregationVariant, LoraSettings
from tests.attacks.own.deltas import (
    Example,
    city_examples,
    mean_delta,
    save_delta,
    sgd_deltas,
    stacked,
)
from tests.helpers.captioner_fixtures import tiny_base_dir
from tests.helpers.tiny_gpt2 import save_tiny_gpt2

CLIENTS = 10
DECOYS = 5


@dataclass(frozen=True)
class Files:
    model_dir: Path
    victim: Example
    single: Path
    mean: Path
    stacked: Path
    records: Path
    decoys: list[Example]
    cohort: list[Example]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("attack")
    model_dir = tiny_base_dir()
    examples = city_examples(CLIENTS + DECOYS, seed=3)
    cohort, decoys = examples[:CLIENTS], examples[CLIENTS:]
    deltas = sgd_deltas(model_dir, LoraSettings(), cohort)
    records = root / "suspects.jsonl"
    lines = [{"caption": e.caption} for e in decoys[:2]]
    lines += [{"caption": cohort[0].caption}]
    lines += [{"caption": e.caption} for e in decoys[2:]]
    records.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return Files(
        model_dir=model_dir,
        victim=cohort[0],
        single=save_delta(root / "one.safetensors", deltas[0]),
        mean=save_delta(root / "mean.npz", mean_delta(deltas)),
        stacked=save_delta(root / "cohort.safetensors", stacked(deltas)),
        records=records,
        decoys=decoys,
        cohort=cohort,
    )


def _attack(files: Files, delta: Path, out: Path, *extra: str) -> dict[str, Any]:
    argv = ["attack", "--model-dir", str(files.model_dir), "--delta", str(delta)]
    argv += ["--records", str(files.records), "--out", str(out), *extra]
    assert main(argv) == 0
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    assert report["schema"] == "fedveil.attack/1"
    assert (out / "report.html").read_text().count("<table class='records'>") == len(
        report["views"]
    )
    return report


def _attack_of(view: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in view["attacks"] if a["attack"] == name)


def _record(view: dict[str, Any], text: str) -> dict[str, Any]:
    return next(r for r in view["records"] if r["text"] == text)


def test_single_example_delta_gives_back_its_caption_and_ranks_it_first(
    files: Files, tmp_path: Path
) -> None:
    report = _attack(files, files.single, tmp_path / "out")
    (view,) = report["views"]
    span = _attack_of(view, "dager_b_span")
    bag = _attack_of(view, "token_bag")
    truth = files.victim.caption
    print(f"victim {truth!r}: span recovered {span['recovered']}, bag {bag['recovered']}")
    print(f"baseline (public-generator captions): {view['baseline']}")
    assert not span["saturated"]
    assert truth in span["recovered"][0]  # the words, in order
    assert set(bag["recovered"][0].split()) == set(truth.split())
    top = view["records"][0]
    print("ranked:", [(r["text"], round(r["score"], 2), r["recovered"]) for r in view["records"]])
    assert top["text"] == truth and top["recovered"]
    assert top["attacks"]["dager_b_span"]["recall"] == 1.0
    assert top["score"] > view["baseline"]["max"]
    assert [r["text"] for r in view["records"] if r["recovered"]] == [truth]
    assert report["recovered_records"] and not report["passed"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"| 1 | {truth} |" in md


def test_mean_of_ten_clients_gives_back_no_caption_but_the_cohort_bag(
    files: Files, tmp_path: Path
) -> None:
    report = _attack(files, files.mean, tmp_path / "out")
    (view,) = report["views"]
    span = _attack_of(view, "dager_b_span")
    print(f"mean of {CLIENTS}: span {span['scores']}, note: {span.get('note')}")
    print(f"baseline (public-generator captions): {view['baseline']}")
    print("ranked:", [(r["text"], round(r["score"], 2), r["recovered"]) for r in view["records"]])
    assert span["saturated"] and span["recovered"] == []
    victim = _record(view, files.victim.caption)
    assert victim["attacks"]["dager_b_span"]["f1"] == 0.0
    assert not victim["recovered"]
    assert not any(r["recovered"] for r in view["records"])
    assert report["passed"] and report["recovered_records"] == []
    # not claimed: the secure mean still shows the cohort's bag of caption words
    bag = set(_attack_of(view, "token_bag")["recovered"][0].split())
    cohort_words = {w for e in files.cohort for w in e.caption.split()}
    assert victim["attacks"]["token_bag"]["recall"] == 1.0
    assert len(bag & cohort_words) >= 0.8 * len(cohort_words)


def test_a_file_of_uploads_is_attacked_per_client_and_as_their_mean(
    files: Files, tmp_path: Path
) -> None:
    report = _attack(files, files.stacked, tmp_path / "out", "--top", "3")
    labels = [v["label"] for v in report["views"]]
    assert labels[:CLIENTS] == [f"client {i}" for i in range(CLIENTS)]
    assert labels[-1].startswith(f"mean of {CLIENTS}")
    first, mean = report["views"][0], report["views"][-1]
    assert len(first["records"]) == 3 and first["records_total"] == DECOYS + 1
    assert first["records"][0]["text"] == files.victim.caption and first["records"][0]["recovered"]
    assert not any(r["recovered"] for r in mean["records"])
    assert report["delta"] == {
        "file": str(files.stacked),
        "stacked": True,
        "clients": CLIENTS,
        "weights": [1.0] * CLIENTS,
    }


def test_fail_on_leak_exits_1_only_when_a_record_is_recovered(files: Files, tmp_path: Path) -> None:
    base = ["attack", "--model-dir", str(files.model_dir), "--records", str(files.records)]
    assert (
        main([*base, "--delta", str(files.single), "--out", str(tmp_path / "a"), "--fail-on-leak"])
        == 1
    )
    assert (
        main([*base, "--delta", str(files.mean), "--out", str(tmp_path / "b"), "--fail-on-leak"])
        == 0
    )


def test_the_plan_file_gives_the_adapter_and_binds_the_model(files: Files, tmp_path: Path) -> None:
    plan = tmp_path / "federation.toml"
    assert main(["plan", "--model-dir", str(files.model_dir), "--out", str(plan)]) == 0
    report = _attack(files, files.single, tmp_path / "out", "--lora-config", str(plan))
    assert report["adapter"]["origin"] == f"plan {plan}"
    assert report["views"][0]["records"][0]["text"] == files.victim.caption


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert err.rstrip().endswith(line)  # one line, the last (above it: transformers' bars)
    return line


def test_bad_inputs_are_refused_in_one_line(
    files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--out", str(tmp_path / "out")]
    err = _error(["attack", "--model-dir", "gpt2", "--delta", str(files.single), *common], capsys)
    assert "not a local model directory" in err and "Hub" in err
    model = ["attack", "--model-dir", str(files.model_dir)]
    err = _error([*model, "--delta", str(files.single), "--rank", "4", *common], capsys)
    assert "has shape (" in err and "the model with rank 4 expects" in err
    err = _error([*model, "--delta", str(files.single), "--variant", "fedavg", *common], capsys)
    assert "missing" in err and "lora_A" in err
    fedavg = sgd_deltas(
        files.model_dir, LoraSettings(variant=AggregationVariant.FEDAVG), files.cohort[:1]
    )[0]
    path = save_delta(tmp_path / "fedavg.npz", fedavg)
    err = _error([*model, "--delta", str(path), *common], capsys)
    assert "freezes these" in err and "fedavg" in err
    pickled = tmp_path / "delta.npz"
    np.savez(pickled, bad=np.array([object()], dtype=object))
    err = _error([*model, "--delta", str(pickled), *common], capsys)
    assert "cannot be read" in err
    err = _error([*model, "--delta", str(tmp_path / "delta.pt"), *common], capsys)
    assert "does not exist" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"caption": "a street"}\n{"captions": "x"}\n')
    err = _error([*model, "--delta", str(files.single), "--records", str(bad), *common], capsys)
    assert f"{bad}:2" in err and "captions" in err
    plan = tmp_path / "lora.toml"
    plan.write_text("[lora]\nrank = 8\n")
    err = _error(
        [*model, "--delta", str(files.single), "--lora-config", str(plan), "--rank", "8", *common],
        capsys,
    )
    assert "not both" in err
    other = tmp_path / "other.toml"
    assert (
        main(["plan", "--model-dir", str(save_tiny_gpt2(tmp_path / "gpt2")), "--out", str(other)])
        == 0
    )
    err = _error(
        [*model, "--delta", str(files.single), "--lora-config", str(other), *common], capsys
    )
    assert "the plan" in err and "binds base model" in err
