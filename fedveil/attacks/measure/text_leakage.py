"""Token recovery from LoRA updates, and the captioner (target b), per protection.

Why the baseline is a prior draw and not zero: the texts come from public generators
(sentence templates, the city-scene captions), so an observer who only knows the data
distribution already guesses common tokens (<bos>, the domain prompt, "the"). Token
precision/recall/F1 and exact-sequence rate are therefore reported next to the same
metrics of sequences drawn from that generator without looking at any update.

- text_recovery_records: (c) the tiny GPT-2 with LoRA of a given rank, a 3-step FedAvg
  delta per client, DAGER's span check and its noise-robust ranking variant.
- captioner_records: (b) the ViT + GPT-2 captioner (attacks.targets.captioner): caption
  tokens from the decoder's first adapted layer, and the image by Inverting Gradients
  over the whole adapter gradient, given the true caption (the strongest attacker, so a
  failure is conservative). The image attack is weak even on a plain update: the
  adapter gradient of a ViT is matched to near-zero loss by images far from the
  original (many images give one gradient), which these records show as PSNR near the
  grey baseline; the caption, by contrast, comes out exactly.

- the same captions from the project's real adapter (FFA-LoRA: A frozen from the public
  seed, only B sent; rank 8 as CaptionerRecipe ships it), as targets
  captioner-caption-ffa-{gradient,sgd,adam}: one SGD gradient of B, an 8-step SGD delta,
  and the delta after the recipe's 8 AdamW steps (lr 1e-2, clip 1), attacked with the
  B-factor span check and gap ranking (attacks.update.text_recovery_ffa). The span property
  survives SGD, so short captions (fewer tokens than r) still come out exactly; Adam's
  per-coordinate normalisation fills all r directions, the exact check then keeps
  everything or nothing, and what the ranking finds falls to about the prior guess at
  rank 8 (at rank 16 a good part of the caption survives: the rank, not Adam alone,
  decides). The one-example client is the attacker's best case: a real party's round
  covers ~240 captions, far more tokens than any rank.

- token_bag rows (attacks.update.token_bag) on the same captioner views, FedAvg and FFA:
  the bag of distinct *target* tokens (caption words and eos, what the LM head is
  trained to emit) read off the LM head's LoRA B rows, scored against the view's
  clients' target bag and against the bag of as many captions drawn from the public
  generator. It has no rank bound, so it survives the secure mean that defeats DAGER.

Cohort size matters for tokens: the span check works while the tokens in the view are
fewer than the LoRA rank, so a secure mean of a few short captions (3 clients of 3-5
tokens, rank 16) still gives the cohort's tokens away, in a bag no sequence of which
is exact; with 10 clients it finds nothing. The records show both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from fedveil.attacks.measure.observe import (
    UpdateLeakageSettings,
    View,
    cohort_size,
    leak_record,
    observe,
)
from fedveil.attacks.measure.records import JSONObject, JSONValue, LeakRecord
from fedveil.attacks.protections import Aggregators, Protection, parse_protection
from fedveil.attacks.targets.captioner import (
    CaptionerTargets,
    captioner_target,
    prior_captions,
)
from fedveil.attacks.targets.tiny_lm import sentences, tiny_lm_target
from fedveil.attacks.update.base import (
    Attack,
    LocalTraining,
    Target,
    TokenTarget,
    Truth,
    UpdateKind,
)
from fedveil.attacks.update.gradient_matching import LabelStrategy
from fedveil.attacks.update.inverting_gradients import InvertingGradients, InvertingGradientsConfig
from fedveil.attacks.update.metrics import save_grid, token_metrics
from fedveil.attacks.update.run import run_attack
from fedveil.attacks.update.text_recovery import SpanCheck, SubspaceRanking
from fedveil.attacks.update.text_recovery_ffa import (
    AdamTraining,
    BSpanCheck,
    BSubspaceRanking,
    adam_delta,
)
from fedveil.attacks.update.token_bag import TokenBag
from fedveil.attacks.views import aggregate_view, plain_view
from fedveil.learner.training.batches import IGNORE_INDEX
from fedveil.secagg.modes import DPKind

Records = list[LeakRecord]
Prior = Callable[[int, int], list[list[int]]]
"""(count, draw index) -> `count` token sequences from the public generator."""

TEXT_TRAINING = LocalTraining(steps=3, lr=0.5)
"""The tiny LM clients' public recipe: 3 local SGD steps (SGD keeps the span property)."""

TOKEN_METRICS = ("token_precision", "token_recall", "token_f1", "exact_seq")

BAG_METRICS = ("token_precision", "token_recall", "token_f1")
"""A bag has no order, so the token-bag rows report no exact-sequence rate."""


def _views(
    protection: str,
    target: Target,
    clients: Sequence[tuple[Tensor, Tensor]],
    settings: UpdateLeakageSettings,
    aggregators: Aggregators,
    kind: UpdateKind,
    training: LocalTraining | None,
) -> list[tuple[View, list[int]]]:
    """Each view and the clients in it: one per client for single-client protections,
    one round of all clients otherwise."""
    context = (settings, aggregators)
    if cohort_size(protection, settings) == 1:
        return [
            (observe(protection, target, [c], *context, kind=kind, training=training, seed=i), [i])
            for i, c in enumerate(clients)
        ]
    view = observe(protection, target, clients, *context, kind=kind, training=training)
    return [(view, list(range(len(clients))))]


def _view_params(views: list[tuple[View, list[int]]]) -> JSONObject:
    """The mechanism's parameters, with the SNR averaged over the views."""
    params = dict(views[0][0].params)
    if "snr" in params:
        snrs = [float(v.params["snr"]) for v, _ in views]  # type: ignore[arg-type]
        params["snr"] = float(f"{np.mean(snrs):.4g}")
    return params


def prior_baseline(truth: list[list[int]], prior: Prior, draws: int = 20) -> dict[str, float]:
    """Token metrics of `draws` prior draws against `truth`, averaged."""
    scores: dict[str, list[float]] = {}
    for d in range(draws):
        for key, value in token_metrics(prior(len(truth), d), truth).items():
            scores.setdefault(key, []).append(value)
    return {key: float(np.mean(values)) for key, values in scores.items()}


def _prior_of_views(
    views: list[tuple[View, list[int]]], truths: list[list[int]], prior: Prior, draws: int
) -> dict[str, float]:
    """The prior baseline of each view's clients, averaged over the views."""
    baselines = [prior_baseline([truths[i] for i in idx], prior, draws) for _, idx in views]
    return {m: float(np.mean([b[m] for b in baselines])) for m in TOKEN_METRICS}


def _token_rows(
    target: TokenTarget,
    protection: str,
    views: list[tuple[View, list[int]]],
    truths: list[list[int]],
    prior: Prior,
    draws: int,
    *,
    attacks: Sequence[Attack[Any]] | None = None,
    baseline: dict[str, float] | None = None,
    name: str | None = None,
    **params: JSONValue,
) -> Records:
    """Span check and subspace ranking (or `attacks`) on every view, metrics averaged
    over the views; `baseline` reuses a prior baseline already drawn for these views,
    `name` overrides the records' target name."""
    if baseline is None:
        baseline = _prior_of_views(views, truths, prior, draws)
    n = views[0][0].observed.n_clients
    rows: Records = []
    for attack in attacks if attacks is not None else (SpanCheck(), SubspaceRanking()):
        scores: dict[str, list[float]] = {m: [] for m in TOKEN_METRICS}
        seconds = 0.0
        for view, idx in views:
            truth = Truth(tokens=[truths[i] for i in idx])
            result = run_attack(attack, view.observed, target, truth=truth)
            seconds += result.seconds
            for m in TOKEN_METRICS:
                scores[m].append(result.metrics[m])
        for m in TOKEN_METRICS:
            rows.append(
                leak_record(
                    name or target.name, protection, n, m, float(np.mean(scores[m])), baseline[m],
                    seconds / len(views), attack=attack.name, **params, **_view_params(views),
                )
            )  # fmt: skip
    return rows


def text_recovery_records(
    protection: str,
    settings: UpdateLeakageSettings,
    aggregators: Aggregators,
    *,
    rank: int = 16,
) -> Records:
    """Token metrics of DAGER on the tiny LM's LoRA delta (rank `rank`) under `protection`.

    Single-client views: 2 clients (quick) or 5, one sentence each, measured one at a
    time and averaged; aggregate views: one round of n_clients one-sentence clients.
    """
    target, vocab = tiny_lm_target(rank=rank)
    count = cohort_size(protection, settings)
    if count == 1:
        count = 2 if settings.quick else 5
    texts = [vocab.encode(s) for s in sentences(count, seed=settings.data_seed(500 + count))]
    clients = []
    for ids in texts:
        batch = vocab.pad([ids])
        clients.append((batch, batch))
    views = _views(
        protection, target, clients, settings, aggregators, UpdateKind.DELTA, TEXT_TRAINING
    )

    def prior(n: int, d: int) -> list[list[int]]:
        return [vocab.encode(s) for s in sentences(n, seed=10_000 + d)]

    return _token_rows(
        target, protection, views, texts, prior, 20, rank=rank, local_steps=TEXT_TRAINING.steps
    )


def captioner_records(
    protection: str, settings: UpdateLeakageSettings, aggregators: Aggregators
) -> Records:
    """Caption tokens (DAGER on the decoder's first c_attn LoRA) and image (Inverting
    Gradients, PSNR/SSIM against grey) from the captioner's one-step LoRA gradient.

    Clients hold one (scene, domain prompt, caption) each. Single-client views: 2 (quick)
    or 5 clients one at a time; the image attack runs on the first (quick) or on each.
    Aggregate views: one round of n_clients; the image attack reconstructs one image
    given the first client's caption, scored against every client's image.
    The same clients' FFA-LoRA updates follow (`_captioner_ffa_rows`), against the same
    prior baseline; their Adam rows exist for none, secagg and ckks only.
    """
    ct = captioner_target(rank=16)
    count = cohort_size(protection, settings)
    if count == 1:
        count = 2 if settings.quick else 5
    x, labels = ct.examples(count, seed=settings.data_seed(900 + count))
    truths = ct.caption_tokens(labels)
    clients = [(x[i : i + 1], labels[i : i + 1]) for i in range(count)]
    views = _views(protection, ct.image, clients, settings, aggregators, UpdateKind.GRADIENT, None)

    def prior(n: int, d: int) -> list[list[int]]:
        return prior_captions(ct, n, seed=50_000 + 97 * d)

    draws = 5 if settings.quick else 20
    baseline = _prior_of_views(views, truths, prior, draws)
    rows = _token_rows(
        ct.tokens, protection, views, truths, prior, draws, baseline=baseline, rank=ct.rank
    )
    bag_baseline = _bag_baseline(ct, views, labels, draws)
    rows += _token_bag_rows(ct.tokens, protection, views, labels, bag_baseline, rank=ct.rank)
    rows += _captioner_image_rows(ct.image, protection, views, x, labels, settings)
    return rows + _captioner_ffa_rows(
        protection, settings, aggregators, x, labels, truths, prior, baseline, bag_baseline
    )


def target_bag(labels: Tensor) -> list[int]:
    """The distinct target tokens of these captions (labels row 1, ignored positions
    dropped): what the LM head was trained to emit, so what its update can reveal."""
    return sorted({int(t) for t in labels[:, 1].flatten() if int(t) != IGNORE_INDEX})


def _bag_baseline(
    ct: CaptionerTargets, views: list[tuple[View, list[int]]], labels: Tensor, draws: int
) -> dict[str, float]:
    """Bag metrics of the target bag of as many public-generator captions as each view
    mixes (the prior draws of `captioner_records`), averaged over draws and views."""
    sizes = {len(idx) for _, idx in views}
    guesses = {
        k: [target_bag(ct.examples(k, seed=50_000 + 97 * d)[1]) for d in range(max(1, draws))]
        for k in sizes
    }
    per_view = []
    for _, idx in views:
        truth = [target_bag(labels[idx])]
        scores = [token_metrics([guess], truth) for guess in guesses[len(idx)]]
        per_view.append({m: float(np.mean([s[m] for s in scores])) for m in BAG_METRICS})
    return {m: float(np.mean([b[m] for b in per_view])) for m in BAG_METRICS}


def _token_bag_rows(
    target: Target,
    protection: str,
    views: list[tuple[View, list[int]]],
    labels: Tensor,
    baseline: dict[str, float],
    name: str | None = None,
    **params: JSONValue,
) -> Records:
    """The token-bag attack on every view, scored against the view's clients' target bag
    (one union: an aggregate reveals the cohort's bag, not who wrote which token)."""
    attack = TokenBag()
    scores: dict[str, list[float]] = {m: [] for m in BAG_METRICS}
    seconds = 0.0
    for view, idx in views:
        truth = Truth(tokens=[target_bag(labels[idx])])
        result = run_attack(attack, view.observed, target, truth=truth)
        seconds += result.seconds
        for m in BAG_METRICS:
            scores[m].append(result.metrics[m])
    n = views[0][0].observed.n_clients
    return [
        leak_record(
            name or target.name, protection, n, m, float(np.mean(scores[m])), baseline[m],
            seconds / len(views), attack=attack.name, truth="target-token bag", **params,
            **_view_params(views),
        )
        for m in BAG_METRICS
    ]  # fmt: skip


FFA_RANK = 8
"""The real recipe's LoRA rank (LoraSettings' default, CaptionerRecipe's adapter)."""

FFA_ADAM = AdamTraining(steps=8, lr=1e-2, weight_decay=0.0, max_grad_norm=1.0)
"""The real recipe's local optimiser (AdamTraining.of_recipe() of the shipped
CaptionerRecipe: AdamW at 1e-2, clip 1, 240 examples / batch 32 = 8 steps a round),
restated so the records do not import the federation driver; a test checks they agree."""

FFA_SGD = LocalTraining(steps=FFA_ADAM.steps, lr=0.1)
"""The same number of local steps with plain SGD: what FFA would send without Adam."""


def _ffa_views(
    protection: Protection | str,
    target: Target,
    clients: Sequence[tuple[Tensor, Tensor]],
    settings: UpdateLeakageSettings,
    aggregators: Aggregators,
) -> list[tuple[View, list[int]]] | None:
    """The views of the clients' Adam deltas, like `_views`; None where the protection
    has no Adam form here (dp-sgd is an SGD mechanism; client-level DP over Adam deltas
    is not measured)."""
    training = FFA_ADAM.as_local_training()

    def delta(i: int) -> Tensor:
        x, y = clients[i]
        return adam_delta(target, x, y, FFA_ADAM)

    layout = target.layout
    spec = parse_protection(protection).spec
    if spec.dp is not DPKind.NONE:
        return None
    if spec.observed_alone:
        return [
            (
                View(plain_view(delta(i), layout, kind=UpdateKind.DELTA, training=training), {}),
                [i],
            )
            for i in range(len(clients))
        ]
    observed = aggregate_view(
        [delta(i) for i in range(len(clients))],
        [int(x.shape[0]) for x, _ in clients],
        layout,
        aggregators.secure(spec.aggregation),
        kind=UpdateKind.DELTA,
        training=training,
        protection=spec.protection,
    )
    return [(View(observed, {}), list(range(len(clients))))]


def _captioner_ffa_rows(
    protection: str,
    settings: UpdateLeakageSettings,
    aggregators: Aggregators,
    x: Tensor,
    labels: Tensor,
    truths: list[list[int]],
    prior: Prior,
    baseline: dict[str, float],
    bag_baseline: dict[str, float],
) -> Records:
    """Caption tokens from the real adapter (FFA-LoRA, rank FFA_RANK, B only) under three
    update kinds: one SGD gradient, an FFA_SGD delta, and the FFA_ADAM delta (the real
    recipe); B-factor span check and gap-ranking (attacks.update.text_recovery_ffa), and
    the token bag from the same adapter's LM head."""
    ct = captioner_target(rank=FFA_RANK, variant="ffa")
    clients = [(x[i : i + 1], labels[i : i + 1]) for i in range(x.shape[0])]
    attacks: list[Attack[Any]] = [BSpanCheck(), BSubspaceRanking()]
    tokens = float(np.mean([len(t) for t in truths]))
    common: JSONObject = {"rank": FFA_RANK, "variant": "ffa", "tokens": tokens}
    kinds: list[tuple[str, list[tuple[View, list[int]]] | None, JSONObject]] = [
        (
            "gradient",
            _views(protection, ct.image, clients, settings, aggregators, UpdateKind.GRADIENT, None),
            {"update": "sgd-gradient"},
        ),
        (
            "sgd",
            _views(protection, ct.image, clients, settings, aggregators, UpdateKind.DELTA, FFA_SGD),
            {"update": "sgd-delta", "local_steps": FFA_SGD.steps, "lr": FFA_SGD.lr},
        ),
        (
            "adam",
            _ffa_views(protection, ct.image, clients, settings, aggregators),
            {"update": "adam-delta", "local_steps": FFA_ADAM.steps, "lr": FFA_ADAM.lr},
        ),
    ]
    rows: Records = []
    for label, views, params in kinds:
        if views is None:
            continue
        rows += _token_rows(
            ct.tokens, protection, views, truths, prior, 0, attacks=attacks,
            baseline=baseline, name=f"captioner-caption-ffa-{label}", **common, **params,
        )  # fmt: skip
        rows += _token_bag_rows(
            ct.tokens, protection, views, labels, bag_baseline,
            name=f"captioner-caption-ffa-{label}", **common, **params,
        )  # fmt: skip
    return rows


def _captioner_image_rows(
    target: Any,
    protection: str,
    views: list[tuple[View, list[int]]],
    x: Tensor,
    labels: Tensor,
    settings: UpdateLeakageSettings,
) -> Records:
    steps = 200 if settings.quick else 1000
    attack: Attack[Any] = InvertingGradients(
        InvertingGradientsConfig(
            iterations=steps, num_examples=1, label_strategy=LabelStrategy.GIVEN
        )
    )
    chosen = views[:1] if settings.quick else views
    scores: dict[str, list[float]] = {}
    seconds = 0.0
    figure: str | None = None
    for view, idx in chosen:
        first = idx[0]
        truth = Truth(inputs=x[idx])
        result = run_attack(
            attack, view.observed, target, truth=truth, labels=labels[first : first + 1]
        )
        seconds += result.seconds
        for key in ("psnr", "psnr_baseline", "ssim", "ssim_baseline"):
            scores.setdefault(key, []).append(result.metrics[key])
        if settings.figures is not None and figure is None and result.inputs is not None:
            name = f"{target.name}-{protection}-n{view.observed.n_clients}-{attack.name}.png"
            figure = str(save_grid(settings.figures / name, [x[idx], result.inputs]))
    params: JSONObject = {
        "attack": attack.name,
        "iterations": steps,
        "labels": "given (true caption)",
        **_view_params(chosen),
    }
    if figure is not None:
        params["figure"] = figure
    n = chosen[0][0].observed.n_clients
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    return [
        leak_record(target.name, protection, n, metric, mean[metric], mean[f"{metric}_baseline"],
                    seconds / len(chosen), **params)
        for metric in ("psnr", "ssim")
    ]  # fmt: skip


__all__ = [
    "FFA_ADAM",
    "FFA_RANK",
    "FFA_SGD",
    "TEXT_TRAINING",
    "captioner_records",
    "client_views",
    "prior_baseline",
    "target_bag",
    "text_recovery_records",
    "view_params",
]


client_views = _views
"""Each protection's views of these clients' updates (one per client for single-client
protections, one round otherwise): public for the user target's text rows
(attacks.measure.user_update), which build the same views of a team's own model."""

view_params = _view_params
"""The views' mechanism parameters, SNR averaged (see client_views)."""
