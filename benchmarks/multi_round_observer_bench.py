"""Multi-round observer: token leakage of a SecAgg+ cohort as the server keeps more rounds.

Why a benchmark of its own: every cell of leakage_bench and the audit is one round; an
honest-but-curious server keeps them all. Here a cohort of n one-sentence clients (the
tiny GPT-2 of attacks.targets.tiny_lm, LoRA rank R on block 0's c_attn, block 1's c_attn
and the LM head, 3 local SGD steps of lr 0.5 a round) runs T real in-process SecAgg+
rounds (runners.aggregators.InProcessSecAgg, one federation of n enrolled clients, the
mean it decodes moving the global adapter), and attacks.update.multi_round_observer
runs DAGER's span check on the first T aggregates stacked. FedAvg-LoRA (A and B train)
and FFA-LoRA (A frozen, fedveil's default) run the same clients. Token
precision/recall/F1 (multisets of the position-ordered guesses) and exact_seq are
against the clients' sentences; bag_* score the distinct tokens found against the
cohort's distinct tokens. Baselines: the same metrics for n sentences drawn from the
public generator (20 draws), as in leakage_bench. Each row is the mean over --seeds
draws of the cohort's data. The LM head is adapted as the clients' adapters have it;
its token bag is not used as a filter here: on this 62-word vocabulary most words are
in a cohort's text, so the bag's median floor is itself a target row (see token_bag).

Usage: python benchmarks/multi_round_observer_bench.py [--clients 5 10] [--rounds 1 3 5 7]
       [--rank 16] [--seeds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedveil.attacks.measure.text_leakage import TEXT_TRAINING, TOKEN_METRICS, prior_baseline
from fedveil.attacks.protections import Aggregator
from fedveil.attacks.targets.tiny_lm import WordVocab, sentences, tiny_lm_target
from fedveil.attacks.update.base import TokenTarget, Truth
from fedveil.attacks.update.fedavg_rounds import fedavg_rounds, ffa_variant
from fedveil.attacks.update.gradient_matching import torch_threads
from fedveil.attacks.update.metrics import score, token_metrics
from fedveil.attacks.update.multi_round_observer import MultiRoundObserver
from fedveil.runners.aggregators import InProcessSecAgg

BAG_METRICS = ("bag_precision", "bag_recall", "bag_f1")
"""The distinct tokens found against the cohort's distinct tokens: what the span check can
tell once it holds every token and position (see multi_round_observer: the pairing of
tokens and positions is lost in the span's closure)."""

TARGET_MODULES = ("c_attn", "lm_head")
"""c_attn of both blocks (block 0's carries the layer-0 inputs) and the LM head."""


def secagg_rounds(n: int, dimension: int, rounds: int) -> Aggregator:
    """One enrolled cohort of n clients running `rounds` real SecAgg+ rounds, as an
    attacks.protections.Aggregator (the weighted mean it decodes and the total weight)."""
    secure = InProcessSecAgg([f"client-{i}" for i in range(n)], dimension, rounds=rounds)

    def aggregate(updates: Sequence[np.ndarray], weights: Sequence[int]) -> tuple[np.ndarray, int]:
        mean = secure(list(zip(updates, (float(w) for w in weights), strict=True)))
        return mean, int(secure.results[-1].total_weight)

    return aggregate


def distinct(sequences: Sequence[Sequence[int]]) -> list[list[int]]:
    """The distinct tokens of these sequences, as one sequence (a bag without counts)."""
    return [sorted({t for seq in sequences for t in seq})]


def bag_scores(
    predicted: Sequence[Sequence[int]], truth: Sequence[Sequence[int]]
) -> dict[str, float]:
    """Precision/recall/F1 of the distinct tokens predicted against the distinct true ones."""
    metrics = token_metrics(distinct(predicted), distinct(truth))
    return {f"bag_{m}": metrics[f"token_{m}"] for m in ("precision", "recall", "f1")}


def prior_bag(truth: Sequence[Sequence[int]], prior: Any, draws: int = 20) -> dict[str, float]:
    """bag_scores of `draws` prior draws of as many sentences, averaged."""
    scores = [bag_scores(prior(len(truth), d), truth) for d in range(draws)]
    return {f"{k}_baseline": float(np.mean([s[k] for s in scores])) for k in scores[0]}


def cohort_rows(
    vocab: WordVocab, target: TokenTarget, n: int, rounds: Sequence[int], seed: int
) -> list[dict[str, Any]]:
    """One cohort's rows: per variant and T, the token metrics and the distinct-token bag's."""
    texts = [vocab.encode(s) for s in sentences(n, seed=seed)]
    clients = [(vocab.pad([ids]), vocab.pad([ids])) for ids in texts]
    truth = Truth(tokens=texts)

    def prior(k: int, d: int) -> list[list[int]]:
        return [vocab.encode(s) for s in sentences(k, seed=10_000 + d)]

    baseline = prior_baseline(texts, prior, 20)
    bag_baseline = prior_bag(texts, prior, 20)
    rows: list[dict[str, Any]] = []
    for variant, attacked in (("fedavg-lora", target), ("ffa-lora", ffa_variant(target))):
        aggregate = secagg_rounds(n, attacked.layout.size, max(rounds))
        start = time.perf_counter()
        views = fedavg_rounds(attacked, clients, max(rounds), aggregate, TEXT_TRAINING)
        federation_s = time.perf_counter() - start
        for t in rounds:
            start = time.perf_counter()
            result = MultiRoundObserver().reconstruct(views[:t], attacked)
            metrics = score(result, truth)
            assert result.tokens is not None
            metrics.update(bag_scores(result.tokens, texts))
            rows.append(
                {
                    "variant": variant, "n_clients": n, "rounds": t, "seed": seed,
                    **{m: metrics[m] for m in TOKEN_METRICS},
                    **{f"{m}_baseline": baseline[m] for m in TOKEN_METRICS},
                    **{m: metrics[m] for m in BAG_METRICS}, **bag_baseline,
                    "rank": result.scores["rank"], "kept": result.scores["kept"],
                    "saturated": result.scores["saturated"],
                    "attack_s": time.perf_counter() - start, "federation_s": federation_s,
                }
            )  # fmt: skip
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean (and min, max) of each metric over seeds, per (variant, n, T)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["n_clients"], row["rounds"]), []).append(row)
    out = []
    for (variant, n, t), group in groups.items():
        entry: dict[str, Any] = {"variant": variant, "n_clients": n, "rounds": t}
        entry["seeds"] = len(group)
        for metric in (
            *TOKEN_METRICS, "token_f1_baseline", "token_recall_baseline", *BAG_METRICS,
            "bag_f1_baseline", "bag_recall_baseline", "rank",
        ):  # fmt: skip
            values = [float(r[metric]) for r in group]
            entry[metric] = float(np.mean(values))
            entry[f"{metric}_range"] = [min(values), max(values)]
        entry["saturated"] = float(np.mean([r["saturated"] for r in group]))
        out.append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 3, 5, 7])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write rows and summary here")
    args = parser.parse_args(argv)
    print(
        f"# multi_round_observer_bench: Python {platform.python_version()}, "
        f"torch {torch.__version__}, 1 torch thread, rank {args.rank}",
        flush=True,
    )
    start = time.perf_counter()
    target, vocab = tiny_lm_target(rank=args.rank, target_modules=TARGET_MODULES)
    rows: list[dict[str, Any]] = []
    with torch_threads(1):
        for n in args.clients:
            for s in range(args.seeds):
                rows += cohort_rows(vocab, target, n, sorted(args.rounds), seed=700 + 31 * s + n)
    summary = summarise(rows)
    for e in summary:
        print(
            f"{e['variant']:<12} n={e['n_clients']:<3} T={e['rounds']:<2} "
            f"F1 {e['token_f1']:.3f} "
            f"[{e['token_f1_range'][0]:.2f}, {e['token_f1_range'][1]:.2f}] "
            f"P {e['token_precision']:.3f} R {e['token_recall']:.3f} "
            f"exact {e['exact_seq']:.2f} (baseline F1 {e['token_f1_baseline']:.3f}) "
            f"| bag F1 {e['bag_f1']:.3f} [{e['bag_f1_range'][0]:.2f}, {e['bag_f1_range'][1]:.2f}] "
            f"P {e['bag_precision']:.3f} R {e['bag_recall']:.3f} "
            f"(baseline {e['bag_f1_baseline']:.3f}) "
            f"rank {e['rank']:.1f} saturated {e['saturated']:.2f}",
            flush=True,
        )
    seconds = time.perf_counter() - start
    print(f"# {len(rows)} rows in {seconds:.1f}s", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"rank": args.rank, "seconds": seconds, "summary": summary, "rows": rows}
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
