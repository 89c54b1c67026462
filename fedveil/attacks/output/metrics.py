"""How well membership scores separate members from non-members, and canary exposure.

Why these metrics: AUC summarises the whole ROC curve but says little about the
attacks that matter, which confidently identify a *few* members (Carlini et al. 2022,
"Membership inference from first principles"); so TPR at 1% and 0.1% FPR are reported
too, each with a stratified bootstrap interval, because with tens of canaries the
sampling error is as large as the differences being compared.

Finite-sample honesty: with N non-members the smallest non-zero FPR is 1/N, so below it
"TPR at FPR <= x" is the TPR at zero false positives (`MIAMetrics.min_fpr` says where
that begins); it is never interpolated upwards.

Exposure (Carlini et al. 2019, "The secret sharer"): log2 |R| - log2 rank, where rank is
the secret's position among all |R| candidates of its format ordered by model
likelihood. Exact when R can be enumerated; otherwise estimated from uniform samples
of R (see `exposure_sampled`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from fedveil.errors import ConfigError

ArrayLike = Sequence[float] | np.ndarray


def _split(members: ArrayLike, non_members: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(members, dtype=np.float64).ravel()
    n = np.asarray(non_members, dtype=np.float64).ravel()
    if m.size == 0 or n.size == 0:
        raise ConfigError(f"need members and non-members, got {m.size} and {n.size}")
    if not (np.isfinite(m).all() and np.isfinite(n).all()):
        raise ConfigError("membership scores must be finite")
    return m, n


def scores_by_label(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(member scores, non-member scores) from one score array and boolean labels."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape:
        raise ConfigError(f"scores {s.shape} and labels {y.shape} differ in shape")
    return s[y], s[~y]


def _auc_rows(members: np.ndarray, non_members: np.ndarray) -> np.ndarray:
    """AUC of each row (Mann-Whitney U with ties counted 1/2), vectorised over rows."""
    both = np.concatenate([members, non_members], axis=-1)
    ranks = stats.rankdata(both, axis=-1)
    n_m, n_n = members.shape[-1], non_members.shape[-1]
    u = ranks[..., :n_m].sum(axis=-1) - n_m * (n_m + 1) / 2
    return np.asarray(u / (n_m * n_n))


def roc_auc(members: ArrayLike, non_members: ArrayLike) -> float:
    """P(score of a random member > score of a random non-member), ties 1/2."""
    m, n = _split(members, non_members)
    return float(_auc_rows(m[None], n[None])[0])


def _tpr_rows(members: np.ndarray, non_members: np.ndarray, fpr: float) -> np.ndarray:
    allowed = math.floor(fpr * non_members.shape[-1] + 1e-9)
    if allowed >= non_members.shape[-1]:
        return np.ones(members.shape[:-1])
    # Threshold at the (allowed+1)-th largest non-member score; strictly above it are
    # at most `allowed` false positives. Members tied with it count as negatives.
    threshold = -np.sort(-non_members, axis=-1)[..., allowed]
    return np.asarray((members > threshold[..., None]).mean(axis=-1))


def tpr_at_fpr(members: ArrayLike, non_members: ArrayLike, fpr: float) -> float:
    """The highest TPR of a threshold rule "member if score > t" with FPR <= `fpr`."""
    if not 0 <= fpr <= 1:
        raise ConfigError(f"fpr must be in [0, 1], got {fpr}")
    m, n = _split(members, non_members)
    return float(_tpr_rows(m[None], n[None], fpr)[0])


def roc_curve(members: ArrayLike, non_members: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of "member if score >= t" at every distinct score, from (0,0) to (1,1)."""
    m, n = _split(members, non_members)
    thresholds = np.unique(np.concatenate([m, n]))[::-1]
    tpr = np.array([0.0, *[(m >= t).mean() for t in thresholds]])
    fpr = np.array([0.0, *[(n >= t).mean() for t in thresholds]])
    return fpr, tpr


@dataclass(frozen=True)
class BootstrapConfig:
    """Stratified bootstrap: members and non-members resampled separately, with replacement."""

    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_resamples < 10:
            raise ConfigError(f"n_resamples must be >= 10, got {self.n_resamples}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1), got {self.confidence}")


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap percentile interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class MIAMetrics:
    auc: Interval
    tpr_at_1pct_fpr: Interval
    tpr_at_01pct_fpr: Interval
    n_members: int
    n_non_members: int

    @property
    def min_fpr(self) -> float:
        """Below this FPR every reported TPR is the TPR at zero false positives."""
        return 1 / self.n_non_members

    def to_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "n_members": self.n_members,
            "n_non_members": self.n_non_members,
        }
        for name in ("auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr"):
            iv: Interval = getattr(self, name)
            out.update({name: iv.value, f"{name}_low": iv.low, f"{name}_high": iv.high})
        return out


def mia_metrics(
    members: ArrayLike, non_members: ArrayLike, config: BootstrapConfig | None = None
) -> MIAMetrics:
    """AUC and TPR at 1% / 0.1% FPR, each with a stratified bootstrap interval."""
    config = config or BootstrapConfig()
    m, n = _split(members, non_members)
    rng = np.random.default_rng(config.seed)
    bm = m[rng.integers(m.size, size=(config.n_resamples, m.size))]
    bn = n[rng.integers(n.size, size=(config.n_resamples, n.size))]
    tail = (1 - config.confidence) / 2

    def interval(point: float, values: np.ndarray) -> Interval:
        low, high = np.quantile(values, [tail, 1 - tail])
        return Interval(point, float(low), float(high))

    return MIAMetrics(
        auc=interval(roc_auc(m, n), _auc_rows(bm, bn)),
        tpr_at_1pct_fpr=interval(tpr_at_fpr(m, n, 0.01), _tpr_rows(bm, bn, 0.01)),
        tpr_at_01pct_fpr=interval(tpr_at_fpr(m, n, 0.001), _tpr_rows(bm, bn, 0.001)),
        n_members=int(m.size),
        n_non_members=int(n.size),
    )


# --- exposure --------------------------------------------------------------------------


@dataclass(frozen=True)
class Exposure:
    """exposure = log2|R| - log2 rank (max log2|R|: the secret is the most likely value).

    method: "exact" (rank over every candidate), "sampled" (rank estimated from uniform
    samples). exposure_low: a one-sided (1 - alpha) lower confidence bound (equal to
    `exposure` when exact). extrapolated: Carlini et al.'s skew-normal extrapolation of
    the candidates' log-likelihood distribution (resolves ranks below |R|/n_samples;
    a model-based estimate, not a bound; nan when exact).
    """

    exposure: float
    rank: float
    log2_space: float
    method: str
    n_candidates: int
    exposure_low: float
    extrapolated: float = float("nan")


def _rank_counts(secret_score: float, others: np.ndarray) -> float:
    """Candidates strictly more likely, plus half the ties (the secret's mid-rank - 1)."""
    return float((others > secret_score).sum() + 0.5 * (others == secret_score).sum())


def exposure_exact(secret_score: float, other_scores: ArrayLike) -> Exposure:
    """Exposure from the scores of *every other* value of the space (|R| - 1 of them)."""
    others = np.asarray(other_scores, dtype=np.float64).ravel()
    size = others.size + 1
    rank = 1 + _rank_counts(secret_score, others)
    value = math.log2(size) - math.log2(rank)
    return Exposure(value, rank, math.log2(size), "exact", int(others.size), value)


def exposure_sampled(
    secret_score: float, sampled_scores: ArrayLike, log2_space: float, *, alpha: float = 0.05
) -> Exposure:
    """Exposure estimated from n uniform samples of R (not containing the secret).

    How: the share p of R more likely than the secret is estimated by the share of samples
    that are (ties counted 1/2), so rank = 1 + (|R| - 1) p is unbiased; with k samples above
    the secret, the Clopper-Pearson upper bound on p gives `exposure_low`. The resolution
    is about log2 n bits below log2|R|: with no sample above the secret the point estimate
    says rank 1 (exposure log2|R|) but the bound only log2|R| - log2(|R| p_upper), roughly
    log2(n / 3) bits at 95%; `extrapolated` fits a skew-normal to the samples' scores and
    reads the secret's tail probability off it (Carlini et al. 2019, Sec. 4.2).
    """
    samples = np.asarray(sampled_scores, dtype=np.float64).ravel()
    if samples.size < 2:
        raise ConfigError("exposure_sampled needs at least two sampled candidates")
    size_minus_1 = 2.0**log2_space - 1
    above = _rank_counts(secret_score, samples)
    p = above / samples.size
    rank = 1 + size_minus_1 * p
    k = int(math.ceil(above))
    p_high = 1.0 if k >= samples.size else float(stats.beta.ppf(1 - alpha, k + 1, samples.size - k))
    rank_high = 1 + size_minus_1 * p_high
    with np.errstate(all="ignore"):
        shape, loc, scale = stats.skewnorm.fit(samples)
        tail = float(stats.skewnorm.sf(secret_score, shape, loc, scale))
    extrapolated = min(log2_space, -math.log2(tail)) if tail > 0 else log2_space
    return Exposure(
        log2_space - math.log2(rank),
        rank,
        log2_space,
        "sampled",
        int(samples.size),
        log2_space - math.log2(rank_high),
        extrapolated,
    )
