"""Update leakage per protection, both directions, on the real rounds (fedveil.runners.aggregators).

What must hold: a single plain update gives its caption tokens (and a LeNet image) away,
while a SecAgg+ mean of many clients, client-level DP and DP-SGD at strong noise do
not; the DP-SGD client is the Opacus computation (per-example gradients, clip, noise);
bad settings are refused with the bad value named.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedveil.attacks.measure.observe import chance_multiset_accuracy, observe
from fedveil.attacks.measure.records import LeakRecord
from fedveil.attacks.measure.update_leakage import (
    UpdateLeakageSettings,
    captioner_records,
    label_leak_records,
    text_recovery_records,
)
from fedveil.attacks.protections import Aggregators, DPSettings
from fedveil.attacks.targets.captioner import captioner_target
from fedveil.attacks.targets.lenet import lenet_target
from fedveil.attacks.targets.shapes import shape_images
from fedveil.attacks.update.base import Truth, UpdateKind
from fedveil.attacks.update.dlg import DLG, DLGConfig
from fedveil.attacks.update.gradient_matching import torch_threads
from fedveil.attacks.update.local_training import (
    client_update,
    dp_sgd_update,
    per_example_gradients,
)
from fedveil.attacks.update.run import run_attack
from fedveil.errors import ConfigError
from fedveil.runners.aggregators import real_aggregators

STRONG = DPSettings(clip_norm=1.0, noise_multiplier=2.0)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models: extra OpenMP threads only spin-wait on a shared machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def aggregators() -> Aggregators:
    return real_aggregators()


def _value(rows: list[LeakRecord], metric: str, attack: str | None = None) -> tuple[float, float]:
    for row in rows:
        if row.metric == metric and (attack is None or row.attack == attack):
            return row.value, row.baseline_value
    raise AssertionError(f"no {metric} row for {attack}")


def test_caption_tokens_leak_from_one_plain_update(aggregators: Aggregators) -> None:
    rows = captioner_records("none", UpdateLeakageSettings(), aggregators)
    value, baseline = _value(rows, "token_f1", "dager_span")
    assert value >= 0.95 and value > baseline + 0.3
    assert _value(rows, "exact_seq", "dager_span")[0] >= 0.95
    assert {r.n_clients for r in rows} == {1}
    assert {r.target for r in rows} == {
        "captioner-caption-r16",
        "captioner-vit-gpt2",
        "captioner-caption-ffa-gradient",
        "captioner-caption-ffa-sgd",
        "captioner-caption-ffa-adam",
    }
    # the real adapter (FFA-LoRA, B only): one SGD gradient still gives short captions
    # away; the Adam delta (the real recipe) gives less than that
    ffa_sgd = _value([r for r in rows if r.target == "captioner-caption-ffa-gradient"],
                     "token_f1", "dager_b_span")  # fmt: skip
    assert ffa_sgd[0] >= 0.95 and ffa_sgd[0] > ffa_sgd[1] + 0.3
    adam = [r for r in rows if r.target == "captioner-caption-ffa-adam"]
    for attack in ("dager_b_span", "dager_b_rank"):
        assert _value(adam, "token_f1", attack)[0] < ffa_sgd[0]


@pytest.mark.parametrize(
    ("protection", "settings"),
    [
        ("secagg", UpdateLeakageSettings(n_clients=10)),
        ("secagg+client-dp", UpdateLeakageSettings(n_clients=10, dp=STRONG)),
        ("dp-sgd", UpdateLeakageSettings(dp=STRONG)),
    ],
)
def test_caption_tokens_do_not_leak_from_protected_views(
    protection: str, settings: UpdateLeakageSettings, aggregators: Aggregators
) -> None:
    rows = captioner_records(protection, settings, aggregators)
    for attack in ("dager_span", "dager_rank"):
        value, baseline = _value(rows, "token_f1", attack)
        assert value <= baseline, (attack, value, baseline)
        assert _value(rows, "exact_seq", attack)[0] == 0.0
    if protection != "secagg":
        params = next(r.params for r in rows if r.metric == "token_f1")
        assert params["sigma"] == pytest.approx(2.0) and params["clip_norm"] == 1.0
        assert params["snr"] < 0.1 and params["epsilon"] > 0


def test_dp_views_give_no_better_than_grey_while_plain_leaks(aggregators: Aggregators) -> None:
    target = lenet_target()
    x, y = shape_images(3, seed=11)
    clients = [(x[i : i + 1], y[i : i + 1]) for i in range(3)]
    dlg = DLG(DLGConfig(iterations=40, num_examples=1))
    plain = observe("none", target, clients[:1], UpdateLeakageSettings(), aggregators)
    leak = run_attack(dlg, plain.observed, target, truth=Truth(inputs=x[:1], labels=y[:1]))
    assert leak.metrics["psnr"] > leak.metrics["psnr_baseline"] + 10
    settings = UpdateLeakageSettings(n_clients=3, dp=STRONG)
    for protection, data in (("dp-sgd", clients[:1]), ("secagg+client-dp", clients)):
        view = observe(protection, target, data, settings, aggregators)
        assert view.params["sigma"] == pytest.approx(2.0) and view.params["snr"] < 0.05
        truth = Truth(inputs=x[: len(data)], labels=y[: len(data)])
        result = run_attack(dlg, view.observed, target, truth=truth)
        assert result.metrics["psnr"] < result.metrics["psnr_baseline"] + 1.0, protection


def test_dp_sgd_is_clipped_per_example_gradients_plus_noise() -> None:
    target = lenet_target()
    x, y = shape_images(4, seed=12)
    grads = per_example_gradients(target, x, y)
    # the per-example rows are the gradients of each example alone; their mean is the batch's
    for i in range(4):
        alone = client_update(target, x[i : i + 1], y[i : i + 1])
        torch.testing.assert_close(grads[i], alone, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads.mean(dim=0), client_update(target, x, y), rtol=1e-4, atol=1e-6)
    clip = 0.5 * float(grads.norm(dim=1).min())  # every example is clipped
    update, report = dp_sgd_update(target, x, y, clip_norm=clip, noise_multiplier=0.0)
    expected = (grads * (clip / grads.norm(dim=1))[:, None]).sum(dim=0) / 4
    torch.testing.assert_close(update, expected, rtol=1e-6, atol=1e-9)
    assert report.clipped == 1.0 and report.batch_size == 4
    noisy, noisy_report = dp_sgd_update(target, x, y, clip_norm=clip, noise_multiplier=3.0, seed=1)
    spread = float((noisy - expected).std()) * 4  # noise std on the sum, before / batch
    assert spread == pytest.approx(3.0 * clip, rel=0.05)
    assert noisy_report.sigma == pytest.approx(3.0 * clip)


@pytest.mark.filterwarnings("ignore:Full backward hook")  # Opacus' hooks on an input-free graph
def test_per_example_gradients_match_opacus() -> None:
    """Opacus' grad_sample (its hooks, the DP-SGD the clients run) gives the same rows."""
    import copy

    from opacus import GradSampleModule

    target = lenet_target()
    x, y = shape_images(3, seed=14)
    model = GradSampleModule(copy.deepcopy(target.model), loss_reduction="mean")
    model.train()  # Opacus records activations in training mode only (LeNet has no dropout)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opacus_rows = torch.cat(
        [p.grad_sample.reshape(3, -1) for p in model._module.parameters()], dim=1
    ).to(torch.float64)
    torch.testing.assert_close(
        per_example_gradients(target, x, y), opacus_rows, rtol=1e-4, atol=1e-6
    )


def test_dp_sgd_delta_takes_the_recipes_steps() -> None:
    from fedveil.attacks.update.base import LocalTraining

    target = lenet_target()
    x, y = shape_images(2, seed=13)
    training = LocalTraining(steps=3, lr=0.1)
    delta, report = dp_sgd_update(
        target,
        x,
        y,
        clip_norm=1e3,
        noise_multiplier=0.0,
        kind=UpdateKind.DELTA,
        training=training,
    )
    torch.testing.assert_close(
        delta, client_update(target, x, y, UpdateKind.DELTA, training), rtol=1e-4, atol=1e-7
    )
    assert report.steps == 3 and report.clipped == 0.0


def test_secagg_reveals_the_label_multiset_not_who_had_which(aggregators: Aggregators) -> None:
    settings = UpdateLeakageSettings(n_clients=10)
    plain = label_leak_records("none", settings, aggregators)
    assert _value(plain, "label_attribution_acc") == (1.0, 0.1)
    secure = label_leak_records("secagg", settings, aggregators)
    attribution, chance = _value(secure, "label_attribution_acc")
    multiset_only = secure[0].params["multiset_only"]
    assert attribution <= multiset_only  # no better than knowing the multiset alone
    assert _value(secure, "label_multiset_acc")[0] == 1.0  # the aggregate's counts are exact


def test_text_recovery_plain_vs_secagg(aggregators: Aggregators) -> None:
    plain = text_recovery_records("none", UpdateLeakageSettings(), aggregators, rank=16)
    assert _value(plain, "token_f1", "dager_span")[0] == 1.0
    secure = text_recovery_records("ckks", UpdateLeakageSettings(n_clients=10), aggregators)
    value, baseline = _value(secure, "token_f1", "dager_span")
    assert value < baseline and {r.protection for r in secure} == {"ckks"}


def test_chance_multiset_accuracy_is_exact() -> None:
    assert chance_multiset_accuracy(1, [3], 10) == pytest.approx(0.1)
    # two guesses vs two equal labels: E[min(Binom(2, 1/2), 2)] / 2 = 1/2
    assert chance_multiset_accuracy(2, [0, 0], 2) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"n_clients": 1}, "n_clients"),
        ({"n_clients": True}, "n_clients"),
        ({"quick": "yes"}, "quick"),
        ({"dp": {"clip_norm": 1.0}}, "dp"),
        ({"figures": "/tmp/figs"}, "figures"),
    ],
)
def test_settings_name_the_bad_value(kwargs: dict, bad: str) -> None:
    with pytest.raises(ConfigError, match=bad):
        UpdateLeakageSettings(**kwargs)


def test_unknown_protection_and_wrong_cohorts_are_refused(aggregators: Aggregators) -> None:
    with pytest.raises(ConfigError, match="noise"):
        label_leak_records("noise", UpdateLeakageSettings(), aggregators)
    target = lenet_target()
    x, y = shape_images(2, seed=1)
    with pytest.raises(ConfigError, match="one client"):
        observe(
            "none", target, [(x[:1], y[:1]), (x[1:], y[1:])], UpdateLeakageSettings(), aggregators
        )
    with pytest.raises(ConfigError, match=">= 2 clients"):
        observe("secagg", target, [(x[:1], y[:1])], UpdateLeakageSettings(), aggregators)
    with pytest.raises(ConfigError, match="clip_norm"):
        dp_sgd_update(target, x, y, clip_norm=0.0, noise_multiplier=1.0)


def test_captioner_target_reads_the_decoders_first_layer() -> None:
    ct = captioner_target(rank=8)
    assert ".decoder." in ct.tokens.lora_a and "h.0.attn.c_attn" in ct.tokens.lora_a
    x, labels = ct.examples(2, seed=3)
    assert x.shape == (2, 3, 32, 32) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert all(tokens[0] == ct.tokenizer.bos_token_id for tokens in ct.caption_tokens(labels))
    with pytest.raises(ConfigError, match="adapter"):
        captioner_target(adapter="cold")


def test_figures_are_written_when_asked(tmp_path: Path, aggregators: Aggregators) -> None:
    rows = captioner_records("none", UpdateLeakageSettings(figures=tmp_path), aggregators)
    figures = {r.figure for r in rows if r.figure}
    assert len(figures) == 1 and Path(figures.pop()).is_file()
