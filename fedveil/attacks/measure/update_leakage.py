"""What one round's update leaks, per (target, protection): the code behind the leakage
benchmark and `fedveil audit`, so that both report the very same measurement.

Each function takes a protection name (attacks.protections.PROTECTIONS), the settings
and the injected real rounds, and returns records (target, protection, n_clients,
metric, value, baseline_value, seconds, params): the attack's score on exactly the
view that protection leaves, next to a data-free guess's score. params names the
attack and, for the DP protections, sigma, C, z, SNR, epsilon and delta.

- image_inversion_records: (a) LeNet on 32x32 images, the profile's inversion attacks
  (attacks.measure.inversion_budget: batch inversion, one dummy image per example the
  view reveals; DLG and Inverting Gradients with restarts too in the full profile),
  judged on the best-recovered client: a breach of an aggregate is one client's image
  recovered, and a cohort average would hide it (params["psnr_cohort_mean"] keeps it).
- label_leak_records: analytic label recovery from the head gradient (iDLG, counts).
- text_recovery_records / captioner_records: see attacks.measure.text_leakage.
- on a team's own model and records (audit.toml's `[target] records`), the text
  column's measurement is attacks.measure.user_update.user_text_records instead (the
  audit's jobs dispatch to it; it needs the target's files, so it is not in
  RECORD_FUNCTIONS).

Labels and secure aggregation, stated plainly: the head gradient of an aggregate still
gives the cohort's label *counts* (LLG+), so the label multiset is part of what SecAgg
reveals and `label_multiset_acc` stays high under secagg and ckks. What SecAgg hides is
who had which label: `label_attribution_acc` is the best the observer can do at naming
each client's label; from an aggregate the best strategy is to give every client the
most frequent recovered label, so its excess over chance is the multiset's base rate
(params["multiset_only"]: the same strategy fed the true multiset), not per-client leakage.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import torch

from fedveil.attacks.measure.inversion_budget import inversion_attacks
from fedveil.attacks.measure.observe import (
    UpdateLeakageSettings,
    chance_multiset_accuracy,
    cohort_size,
    leak_record,
    observe,
)
from fedveil.attacks.measure.records import JSONObject, LeakRecord
from fedveil.attacks.measure.text_leakage import captioner_records, text_recovery_records
from fedveil.attacks.protections import Aggregators
from fedveil.attacks.targets.lenet import lenet_target
from fedveil.attacks.targets.shapes import shape_images
from fedveil.attacks.update.base import Truth
from fedveil.attacks.update.batch_inversion import best_client_metrics
from fedveil.attacks.update.label_leakage import LabelLeakage
from fedveil.attacks.update.metrics import label_accuracy, save_grid
from fedveil.attacks.update.run import run_attack

Records = list[LeakRecord]


def _figure(settings: UpdateLeakageSettings, name: str, rows: list[torch.Tensor]) -> str | None:
    if settings.figures is None:
        return None
    return str(save_grid(settings.figures / f"{name}.png", rows))


def image_inversion_records(
    protection: str, settings: UpdateLeakageSettings, aggregators: Aggregators
) -> Records:
    """PSNR and SSIM of the best-recovered client (baseline: a mid-grey image of that
    client) and label_acc (baseline: a uniform guess) of the profile's inversion attacks
    (attacks.measure.inversion_budget) on LeNet's gradient under `protection`."""
    n = cohort_size(protection, settings)
    target = lenet_target()
    classes = target.num_classes or 10
    x, y = shape_images(n, seed=settings.data_seed(100 + n))
    view = observe(
        protection, target, [(x[i : i + 1], y[i : i + 1]) for i in range(n)], settings, aggregators
    )
    truth = Truth(inputs=x, labels=y)
    rows: Records = []
    for attack, budget in inversion_attacks(settings.quick):
        result = run_attack(attack, view.observed, target, truth=truth, scorer=best_client_metrics)
        m = result.metrics
        params: JSONObject = {
            **budget,
            "scored": "best client",
            "psnr_cohort_mean": round(m["psnr"], 4),
            **view.params,
        }
        assert result.inputs is not None
        figure = _figure(
            settings, f"{target.name}-{protection}-n{n}-{attack.name}", [x, result.inputs]
        )
        if figure is not None:
            params["figure"] = figure
        chance = chance_multiset_accuracy(int(result.inputs.shape[0]), y.tolist(), classes)
        for metric, value, baseline in (
            ("psnr", m["psnr_best"], m["psnr_best_baseline"]),
            ("ssim", m["ssim_best"], m["ssim_best_baseline"]),
            ("label_acc", m["label_acc"], chance),
        ):
            rows.append(
                leak_record(
                    target.name, protection, n, metric, value, baseline, result.seconds, **params
                )
            )
    return rows


def label_leak_records(
    protection: str, settings: UpdateLeakageSettings, aggregators: Aggregators
) -> Records:
    """Who had which label (label_attribution_acc, baseline 1/classes) and which labels the
    cohort had (label_multiset_acc, baseline: as many uniform guesses), from LeNet's head.

    Single-client views (none, dp-sgd) are measured on n_clients clients one at a time
    (the observer knows whose upload it is, so attribution is recovery); aggregate views
    on one round of n_clients one-example clients.
    """
    target = lenet_target()
    classes = target.num_classes or 10
    n = settings.n_clients
    x, y = shape_images(n, seed=settings.data_seed(700 + n))
    clients = [(x[i : i + 1], y[i : i + 1]) for i in range(n)]
    start = time.perf_counter()
    params: JSONObject = {"attack": LabelLeakage.name, "clients": n}
    if cohort_size(protection, settings) == 1:
        found: list[int] = []
        for i, client in enumerate(clients):
            view = observe(protection, target, [client], settings, aggregators, seed=i)
            labels = LabelLeakage().reconstruct(view.observed, target).labels
            assert labels is not None
            found += labels.tolist()
            params.update(view.params)
        attribution = sum(int(a == b) for a, b in zip(found, y.tolist(), strict=True)) / n
        multiset = label_accuracy(torch.tensor(found), y)
        view_clients = 1
    else:
        view = observe(protection, target, clients, settings, aggregators)
        labels = LabelLeakage().reconstruct(view.observed, target).labels
        assert labels is not None
        multiset = label_accuracy(labels, y)
        attribution = _mode_attribution(labels.tolist(), y.tolist())
        params.update(view.params)
        params["multiset_only"] = round(_mode_attribution(y.tolist(), y.tolist()), 4)
        view_clients = n
    seconds = time.perf_counter() - start
    chance = chance_multiset_accuracy(n, y.tolist(), classes)
    return [
        leak_record(
            target.name, protection, view_clients, "label_attribution_acc", attribution,
            1.0 / classes, seconds, **params,
        ),
        leak_record(
            target.name, protection, view_clients, "label_multiset_acc", multiset, chance,
            seconds, **params,
        ),
    ]  # fmt: skip


def _mode_attribution(recovered: list[int], truth: list[int]) -> float:
    """Accuracy of naming the most frequent recovered label as every client's label: the
    best a client-symmetric view allows (it cannot tell clients apart)."""
    if not recovered:
        return 0.0
    mode = Counter(recovered).most_common(1)[0][0]
    return sum(int(t == mode) for t in truth) / len(truth)


RecordFunction = Callable[[str, UpdateLeakageSettings, Aggregators], Records]

RECORD_FUNCTIONS: dict[str, RecordFunction] = {
    "image_inversion": image_inversion_records,
    "label_leak": label_leak_records,
    "text_recovery": text_recovery_records,
    "captioner": captioner_records,
}
"""Every measurement, by name: what an audit runs for each protection."""


__all__ = [
    "RECORD_FUNCTIONS",
    "UpdateLeakageSettings",
    "captioner_records",
    "image_inversion_records",
    "label_leak_records",
    "text_recovery_records",
]
