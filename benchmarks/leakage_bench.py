"""Leakage benchmark: what each protection lets an observer reconstruct, next to a blind guess.

Why this shape: a privacy claim is a pair of numbers, the attack's score on exactly the
view a protection leaves and the same score for a data-free guess. So every record is
(target, protection, n_clients, metric, value, baseline_value, seconds), and the
secure-aggregate views come from a real in-process SecAgg+ round (fedveil.simulation),
not from an ideal sum.

Usage: python benchmarks/leakage_bench.py --attack inversion|membership [--quick] [--json OUT]
(membership: the records of benchmarks/membership_bench.py)
       [--figures DIR]

Targets: (a) "lenet-32": the DLG LeNet (random init) on procedurally drawn 32x32 images;
(c) "tiny-gpt2-lora-rR": a GPT-2 (64 wide, 2 layers, word vocabulary) with peft LoRA of
rank R on c_attn, one sentence per client, 3 local SGD steps (a FedAvg delta). Target
(b), the vision-language captioner, and the DP protections (secagg+client-dp, dp-sgd)
join when clients/ and secagg/dp land; until then "noise" is an explicit N(0, sigma^2)
per element with sigma set by the signal-to-noise ratio snr = ||update|| / (sigma sqrt d).

Protections: none (one client's plain update), secagg (the weighted mean the server
decodes from n clients; images: the batch-1 attack "dlg" and the batch-n attack
"dlg-batch" that uses the total weight the server learns), noise.

Metrics: psnr/ssim (baseline: a mid-grey image), label_acc (baseline: 1/classes),
token_precision/recall/f1 and exact_seq (baseline: a sentence drawn from the same public
generator, i.e. what knowing the data distribution alone gives). Image metrics of an
aggregate view are per client: each client's image against its best-matching
reconstruction, averaged. `params` holds the attack, rank, snr, sigma, iterations.
--quick: one image per setting, DLG at 60 L-BFGS steps, IG at 300 Adam steps, 2 sentences
per rank (full: 3 images, 300 L-BFGS steps, 2000 Adam steps, 5 sentences); quick runs in
about a minute on 2 cores, full in about 15.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.base import LocalTraining, ObservedUpdate, Truth, UpdateKind, run_attack
from attacks.dlg import DLG, DLGConfig
from attacks.gradient_matching import torch_threads
from attacks.inverting_gradients import InvertingGradients, InvertingGradientsConfig
from attacks.local_training import client_update
from attacks.metrics import save_grid, token_metrics
from attacks.targets.lenet import lenet_target
from attacks.targets.shapes import shape_images
from attacks.targets.tiny_lm import sentences, tiny_lm_target
from attacks.text_recovery import SpanCheck, SubspaceRanking
from attacks.views import aggregate_view, gaussian_view, plain_view, sigma_for_snr
from fedveil.simulation import secure_mean

TEXT_TRAINING = LocalTraining(steps=3, lr=0.5)
IMAGE_DELTA = LocalTraining(steps=3, lr=0.1)


def record(
    target: str,
    protection: str,
    n: int,
    metric: str,
    value: float,
    baseline: float,
    seconds: float,
    **params: Any,
) -> dict[str, Any]:
    row = {
        "target": target,
        "protection": protection,
        "n_clients": n,
        "metric": metric,
        "value": round(float(value), 4),
        "baseline_value": round(float(baseline), 4),
        "seconds": round(float(seconds), 3),
        "params": params,
    }
    print(
        f"{target:<22} {protection:<8} n={n:<3} {metric:<16} {row['value']:>9.4f} "
        f"(baseline {row['baseline_value']:>8.4f}) {row['seconds']:>7.2f}s  {params}",
        flush=True,
    )
    return row


# --- (a) images --------------------------------------------------------------------------


def _image_rows(
    name: str,
    protection: str,
    n: int,
    result: Any,
    seconds: float,
    figures: Path | None,
    originals: torch.Tensor,
    **params: Any,
) -> list[dict[str, Any]]:
    m = result.metrics
    rows = [
        record(name, protection, n, "psnr", m["psnr"], m["psnr_baseline"], seconds, **params),
        record(name, protection, n, "ssim", m["ssim"], m["ssim_baseline"], seconds, **params),
    ]
    if "label_acc" in m:
        chance = 1.0 / 10  # lenet_target's 10 classes, guessed uniformly
        rows.append(
            record(name, protection, n, "label_acc", m["label_acc"], chance, seconds, **params)
        )
    if figures is not None:
        tag = "-".join([protection, f"n{n}", *(f"{k}{v}" for k, v in params.items())])
        save_grid(figures / f"{name}-{tag}.png", [originals, result.inputs])
    return rows


def image_records(quick: bool, figures: Path | None) -> list[dict[str, Any]]:
    target = lenet_target()
    name = target.name
    iterations = 60 if quick else 300
    images = 1 if quick else 3
    dlg = DLG(DLGConfig(iterations=iterations, num_examples=1))
    rows: list[dict[str, Any]] = []
    for k in range(images):  # plain updates and noise, one client at a time
        x, y = shape_images(1, seed=100 + k)
        plain = plain_view(client_update(target, x, y), target.layout)
        result = run_attack(dlg, plain, target, truth=Truth(inputs=x, labels=y))
        rows += _image_rows(
            name,
            "none",
            1,
            result,
            result.seconds,
            figures,
            x,
            attack="dlg",
            image=k,
            iterations=iterations,
        )
        for snr in (10.0, 1.0):
            noisy = gaussian_view(plain, sigma_for_snr(plain, snr), seed=k)
            result = run_attack(dlg, noisy, target, truth=Truth(inputs=x, labels=y))
            rows += _image_rows(
                name,
                "noise",
                1,
                result,
                result.seconds,
                figures,
                x,
                attack="dlg",
                image=k,
                snr=snr,
                sigma=float(noisy.notes["sigma"]),
                iterations=iterations,
            )
    for n in (3, 10):
        x, y = shape_images(n, seed=200 + n)
        updates = [client_update(target, x[i : i + 1], y[i : i + 1]).numpy() for i in range(n)]
        observed = aggregate_view(updates, [1] * n, target.layout, secure_mean)
        truth = Truth(inputs=x, labels=y)
        result = run_attack(dlg, observed, target, truth=truth)
        rows += _image_rows(
            name,
            "secagg",
            n,
            result,
            result.seconds,
            figures,
            x,
            attack="dlg",
            iterations=iterations,
        )
        batch = DLG(DLGConfig(iterations=iterations))  # reconstruct all n examples
        result = run_attack(batch, observed, target, truth=truth)
        rows += _image_rows(
            name,
            "secagg",
            n,
            result,
            result.seconds,
            figures,
            x,
            attack="dlg-batch",
            iterations=iterations,
        )
    # Inverting Gradients on a 3-step FedAvg delta, which the attacker unrolls
    ig_iterations = 300 if quick else 2000
    x, y = shape_images(1, seed=300)
    update = client_update(target, x, y, UpdateKind.DELTA, IMAGE_DELTA)
    delta = plain_view(update, target.layout, kind=UpdateKind.DELTA, training=IMAGE_DELTA)
    ig = InvertingGradients(InvertingGradientsConfig(iterations=ig_iterations))
    result = run_attack(ig, delta, target, truth=Truth(inputs=x, labels=y))
    rows += _image_rows(
        name,
        "none",
        1,
        result,
        result.seconds,
        figures,
        x,
        attack="inverting_gradients",
        local_steps=3,
        iterations=ig_iterations,
    )
    return rows


# --- (c) text ----------------------------------------------------------------------------


def _prior_baseline(truth: list[list[int]], encode: Any, draws: int = 20) -> dict[str, float]:
    """Token metrics of sentences drawn from the public generator (no access to the update)."""
    scores: dict[str, list[float]] = {}
    for d in range(draws):
        guess = [encode(s) for s in sentences(len(truth), seed=10_000 + d)]
        for key, value in token_metrics(guess, truth).items():
            scores.setdefault(key, []).append(value)
    return {key: float(np.mean(values)) for key, values in scores.items()}


def _text_rows(
    target_name: str,
    protection: str,
    n: int,
    observed: ObservedUpdate,
    target: Any,
    truth: list[list[int]],
    baseline: dict[str, float],
    **params: Any,
) -> list[dict[str, Any]]:
    rows = []
    for attack in (SpanCheck(), SubspaceRanking()):
        result = run_attack(attack, observed, target, truth=Truth(tokens=truth))
        for metric in ("token_precision", "token_recall", "token_f1", "exact_seq"):
            rows.append(
                record(
                    target_name,
                    protection,
                    n,
                    metric,
                    result.metrics[metric],
                    baseline[metric],
                    result.seconds,
                    attack=attack.name,
                    **params,
                )
            )
    return rows


def text_records(quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    clients = 2 if quick else 5
    for rank in (4, 8, 16, 32):
        target, vocab = tiny_lm_target(rank=rank)

        def delta(ids: list[int], target: Any = target, vocab: Any = vocab) -> np.ndarray:
            batch = vocab.pad([ids])
            return client_update(target, batch, batch, UpdateKind.DELTA, TEXT_TRAINING).numpy()

        for c in range(clients):  # one client's plain update, and under noise
            ids = [vocab.encode(sentences(1, seed=500 + c)[0])]
            baseline = _prior_baseline(ids, vocab.encode)
            plain = plain_view(
                delta(ids[0]), target.layout, kind=UpdateKind.DELTA, training=TEXT_TRAINING
            )
            rows += _text_rows(
                target.name,
                "none",
                1,
                plain,
                target,
                ids,
                baseline,
                rank=rank,
                client=c,
                tokens=len(ids[0]),
            )
            if rank == 16:
                for snr in (100.0, 10.0, 1.0):
                    noisy = gaussian_view(plain, sigma_for_snr(plain, snr), seed=c)
                    rows += _text_rows(
                        target.name,
                        "noise",
                        1,
                        noisy,
                        target,
                        ids,
                        baseline,
                        rank=rank,
                        client=c,
                        snr=snr,
                        sigma=float(noisy.notes["sigma"]),
                    )
        if rank == 16:
            for n in (3, 10):
                texts = [vocab.encode(s) for s in sentences(n, seed=600 + n)]
                observed = aggregate_view(
                    [delta(ids) for ids in texts],
                    [1] * n,
                    target.layout,
                    secure_mean,
                    kind=UpdateKind.DELTA,
                    training=TEXT_TRAINING,
                )
                rows += _text_rows(
                    target.name,
                    "secagg",
                    n,
                    observed,
                    target,
                    texts,
                    _prior_baseline(texts, vocab.encode),
                    rank=rank,
                    tokens=sum(len(t) for t in texts),
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--attack",
        choices=["inversion", "membership"],
        required=True,
        help="attack family (inversion: gradient inversion, labels, text; membership: "
        "membership inference, canary extraction, filters, empirical epsilon)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer images, shorter attacks")
    parser.add_argument("--json", type=Path, help="write the JSON list of records here")
    parser.add_argument("--figures", type=Path, help="write original/reconstruction PNGs here")
    args = parser.parse_args(argv)
    print(
        f"# leakage_bench --attack {args.attack}{' --quick' if args.quick else ''}: "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        "1 torch thread",
        flush=True,
    )
    start = time.perf_counter()
    with torch_threads(1):  # tiny models: more threads only spin-wait (see torch_threads)
        if args.attack == "membership":
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from membership_bench import run_membership

            records = run_membership(args.quick)
        else:
            records = text_records(args.quick) + image_records(args.quick, args.figures)
    print(f"# {len(records)} records in {time.perf_counter() - start:.1f}s", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
