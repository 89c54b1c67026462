"""`fedveil attack`'s path for a causal LM (attacks.own.job.attack_files): a saved GPT-2
fine-tuned with the project's FFA-LoRA on c_attn, one SGD step on one text.

Both directions, each with its baseline: the single-text delta gives the text back in
order (but its last token, which gets no gradient) and it ranks first among records of
the same words; the mean of ten varied texts' deltas saturates the rank-8 span and
gives back none. And the limit of "none": ten texts of one template read fewer distinct
inputs than the rank, so their mean gives back the union of their tokens per position,
which scores a never-seen text of those words as high as a member. The LM head is not
adapted here, so the token bag says it does not apply, and why.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from fedveil.attacks.own.job import attack_files
from fedveil.attacks.own.lora_source import settings_from_flags
from fedveil.attacks.own.per_record import RECOVERED_F1
from fedveil.attacks.own.run import AttackOutcome, ViewResult
from fedveil.learner.lora import apply_lora, canonical_name
from fedveil.learner.models import load_model
from fedveil.learner.training.batches import encode_texts
from tests.helpers.tiny_gpt2 import save_tiny_gpt2

WORDS = ["the", "gate", "is", "open", "closed", "meter", "reads", "high", "low", "pipe"]
COHORT = [" ".join((WORDS[i:] + WORDS[:i])[:5]) for i in range(10)]
"""Ten five-word texts, every word at every position across the cohort (50 distinct
(token, position) inputs: far more than the rank)."""
SIMILAR = [
    "the gate is open",
    "the meter reads high",
    "the pipe is closed",
    "the meter reads low",
    "the gate is closed",
    "the pipe reads high",
    "the gate reads low",
    "the meter is open",
    "the pipe is open",
    "the gate reads high",
]
"""Ten texts of one template: six distinct inputs where the layer reads gradients
(the last token of a causal-LM text gets none), fewer than the rank."""
SOURCE = settings_from_flags(8, 16.0, ("c_attn",), "ffa", 0)


def _deltas(model_dir: Path, texts: list[str]) -> list[dict[str, np.ndarray]]:
    loaded = load_model(model_dir)
    model = apply_lora(loaded.model, SOURCE.settings)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    out = []
    for text in texts:
        encoded = encode_texts(loaded.tokenizer, [text])
        model.zero_grad(set_to_none=True)
        model(**encoded.rows(torch.arange(1))).loss.backward()
        out.append(
            {
                canonical_name(n): (-0.5 * p.grad).numpy().astype(np.float32)
                for n, p in trainable.items()
                if p.grad is not None
            }
        )
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lm")
    model_dir = save_tiny_gpt2(root / "model")
    out = {"model": model_dir}
    for name, texts in (("cohort", COHORT), ("similar", SIMILAR)):
        deltas = _deltas(model_dir, texts)
        out[f"{name}-one"] = root / f"{name}-one.safetensors"
        out[f"{name}-mean"] = root / f"{name}-mean.safetensors"
        save_file(deltas[0], str(out[f"{name}-one"]))
        save_file(
            {n: np.mean([d[n] for d in deltas], axis=0) for n in deltas[0]},
            str(out[f"{name}-mean"]),
        )
    victim = COHORT[0].split()
    decoys = [
        " ".join(reversed(victim)),
        " ".join([victim[0], victim[2], victim[1], *victim[3:]]),
        "the meter reads low pipe",
        "pipe high low the gate",
    ]
    out["records"] = root / "records.jsonl"
    _write(out["records"], [decoys[0], COHORT[0], *decoys[1:]])
    out["similar-records"] = root / "similar.jsonl"
    _write(out["similar-records"], [SIMILAR[0], "the gate is high"])  # member, never seen
    return out


def _write(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def _span(view: ViewResult) -> AttackOutcome:
    return next(o for o in view.outcomes if o.attack == "dager_b_span")


def _show(view: ViewResult) -> None:
    print("recovered", _span(view).sequences)
    print("ranked", [(r.record.text, round(r.score, 2), r.recovered) for r in view.records])
    print("baseline (uniform tokens) max", round(max(s.score for s in view.baseline), 2))


def test_a_single_text_comes_back_and_ranks_first(files: dict[str, Path]) -> None:
    report = attack_files(files["model"], files["cohort-one"], SOURCE, files["records"])
    (view,) = report.views
    _show(view)
    span = _span(view)
    prefix = " ".join(COHORT[0].split()[:4])  # the last token of a text gets no gradient
    assert not span.saturated and span.sequences[0] == prefix
    bag = next(o for o in view.outcomes if o.attack == "token_bag")
    assert not bag.applies and "lm_head" in bag.reason
    first = view.records[0]
    assert first.record.text == COHORT[0] and first.recovered
    assert first.score > max(s.score for s in view.baseline)
    assert [r.record.text for r in view.records if r.recovered] == [COHORT[0]]


def test_the_mean_of_ten_varied_texts_gives_none_back(files: dict[str, Path]) -> None:
    report = attack_files(files["model"], files["cohort-mean"], SOURCE, files["records"])
    (view,) = report.views
    _show(view)
    assert _span(view).saturated and _span(view).sequences == ()
    assert not any(r.recovered for r in view.records) and report.passed


def test_the_mean_of_few_distinct_inputs_gives_their_union_not_membership(
    files: dict[str, Path],
) -> None:
    """Fewer distinct inputs than the rank: the mean's span is exactly their union, so a
    text never trained on scores as high as a member made of the same words."""
    report = attack_files(files["model"], files["similar-mean"], SOURCE, files["similar-records"])
    (view,) = report.views
    _show(view)
    assert not _span(view).saturated
    by_text = {r.record.text: r for r in view.records}
    member, unseen = by_text[SIMILAR[0]], by_text["the gate is high"]
    assert member.recovered and unseen.recovered  # each counts as given back
    assert member.score >= RECOVERED_F1 and abs(member.score - unseen.score) <= 0.05
