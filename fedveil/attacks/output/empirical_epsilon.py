"""Empirical epsilon: a statistical lower bound on the privacy a training run really gave.

Why: an accountant's epsilon is an upper bound proved for the algorithm as specified; a
bug (noise not added, clipping skipped, canaries leaking through a side channel) does not
change it. An audit turns an attack's guesses on randomly included canaries into a
lower bound that holds with confidence 1 - alpha; a lower bound above the claimed
epsilon means the claim is false (a failed audit). A bound below it proves nothing
about tightness -- with tens of canaries and one run it is necessarily small.

Two bounds:
- One-run audit (Steinke, Nasr, Jagielski, NeurIPS 2023, "Privacy auditing with one (1)
  training run"): each of m canaries is included by an independent fair coin; the
  auditor guesses "in" on k+ canaries, "out" on k- and abstains on the rest. For an
  (eps, delta)-DP run, the number W of correct guesses among r = k+ + k- satisfies
  (their main theorem; for delta = 0 it is plain Binomial(r, q) domination)
      P[W >= v] <= beta + 2 m delta * max_{i=1..v} (P[Bin(r, q) >= v - i] - beta) / i,
      beta = P[Bin(r, q) >= v],  q = e^eps / (1 + e^eps).
  The bound is the largest eps whose p-value is still <= alpha. Valid in one run.
- Clopper-Pearson (Jagielski et al. 2020; Nasr et al. 2021): an (eps, delta)-DP test has
  TPR <= e^eps FPR + delta (and TNR <= e^eps FNR + delta); with CP intervals on TPR and
  FPR, eps >= log((TPR_low - delta) / FPR_high). It treats the canaries as independent
  trials, which strictly needs one training run per trial; in one run it is the
  heuristic many papers report, shown next to the one-run bound for comparison.

Choosing k+ / k- or a threshold after looking at the scores spends confidence: the
`best_*` functions search a grid and pay for it with a Bonferroni correction.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from fedveil.errors import ConfigError

EPS_MAX = 50.0
"""Bounds are searched in [0, EPS_MAX]; above it (e^50) every claim is meaningless."""


def _check_alpha_delta(alpha: float, delta: float) -> None:
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha (1 - confidence) must be in (0, 1), got {alpha!r}")
    if not 0 <= delta < 1:
        raise ConfigError(f"delta must be in [0, 1), got {delta!r}")


# --- one run (Steinke, Nasr, Jagielski 2023) ---------------------------------------------


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[>= v correct of r guesses] bound for an (epsilon, delta)-DP run with m canaries."""
    if not 0 <= v <= r <= m:
        raise ConfigError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    q = float(special.expit(epsilon))
    beta = float(stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(beta, 1.0)
    i = np.arange(1, v + 1)
    gaps = stats.binom.sf(v - i - 1, r, q) - beta
    alpha_term = float(np.max(gaps / i))
    return min(beta + 2 * m * delta * alpha_term, 1.0)


def one_run_epsilon(m: int, r: int, v: int, *, delta: float, alpha: float = 0.05) -> float:
    """The largest epsilon an (epsilon, delta) claim can have and still be rejected at
    level alpha by v correct guesses out of r (0 if none is rejected)."""
    _check_alpha_delta(alpha, delta)

    def excess(eps: float) -> float:
        return alpha - one_run_p_value(m, r, v, eps, delta)

    if excess(0.0) <= 0:
        return 0.0
    if excess(EPS_MAX) > 0:
        return EPS_MAX
    return float(optimize.brentq(excess, 0.0, EPS_MAX, xtol=1e-6))


@dataclass(frozen=True)
class OneRunResult:
    epsilon: float
    m: int
    guesses: int
    correct: int
    k_pos: int
    k_neg: int


def one_run_audit(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    *,
    k_pos: int,
    k_neg: int = 0,
    delta: float,
    alpha: float = 0.05,
) -> OneRunResult:
    """Guess "in" for the k_pos highest scores and "out" for the k_neg lowest; abstain on
    the rest; bound epsilon from the number of correct guesses. k_pos, k_neg must be fixed
    before seeing the scores for the bound to hold at level alpha."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    m = s.size
    if y.shape != s.shape:
        raise ConfigError(f"scores {s.shape} and labels {y.shape} differ in shape")
    if k_pos < 0 or k_neg < 0 or k_pos + k_neg > m or k_pos + k_neg == 0:
        raise ConfigError(f"need 0 < k_pos + k_neg <= m={m}, got k_pos={k_pos}, k_neg={k_neg}")
    order = np.argsort(-s, kind="stable")
    correct = int(y[order[:k_pos]].sum()) + int((~y[order[m - k_neg :]]).sum() if k_neg else 0)
    eps = one_run_epsilon(m, k_pos + k_neg, correct, delta=delta, alpha=alpha)
    return OneRunResult(eps, m, k_pos + k_neg, correct, k_pos, k_neg)


def _one_run_grid(m: int, grid: Sequence[tuple[int, int]] | None) -> list[tuple[int, int]]:
    """The (k_pos, k_neg) grid searched; default: k_pos = k_neg in {1, 2, 4, ...} up to
    m/2 plus k_pos alone over the same sizes (one-sided guesses)."""
    if grid is None:
        sizes = [1 << i for i in range(int(math.log2(max(m // 2, 1))) + 1)]
        grid = [(k, k) for k in sizes] + [(k, 0) for k in sizes]
    feasible = [(a, b) for a, b in grid if 0 < a + b <= m]
    if not feasible:
        raise ConfigError("the (k_pos, k_neg) grid has no feasible entry")
    return feasible


def certifiable_epsilon(
    m: int,
    *,
    delta: float,
    alpha: float = 0.05,
    grid: Sequence[tuple[int, int]] | None = None,
) -> float:
    """The largest one-run lower bound this design can ever certify: a perfect attack
    (every guess correct) on m canaries, searched over the same grid at the same
    Bonferroni-corrected level as `best_one_run_audit`.

    Why it matters: an audit whose best possible bound is below the claimed epsilon cannot
    refute the claim whatever the attack does, so "the bound stayed under the claim" says
    nothing. Computed before the attack runs; a claim above it makes the check
    inconclusive, not a pass."""
    _check_alpha_delta(alpha, delta)
    return _certifiable(m, delta, alpha, None if grid is None else tuple(grid))


@functools.lru_cache(maxsize=256)
def _certifiable(
    m: int, delta: float, alpha: float, grid: tuple[tuple[int, int], ...] | None
) -> float:
    """certifiable_epsilon, cached: a pure function of the design, asked once per attack."""
    feasible = _one_run_grid(m, grid)
    corrected = alpha / len(feasible)
    return max(one_run_epsilon(m, a + b, a + b, delta=delta, alpha=corrected) for a, b in feasible)


def best_one_run_audit(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    alpha: float = 0.05,
    grid: Sequence[tuple[int, int]] | None = None,
) -> OneRunResult:
    """The best bound over a grid of (k_pos, k_neg) (see _one_run_grid), at level
    alpha / len(grid)."""
    m = int(np.asarray(scores).size)
    grid = _one_run_grid(m, grid)
    corrected = alpha / len(grid)
    results = [
        one_run_audit(scores, labels, k_pos=a, k_neg=b, delta=delta, alpha=corrected)
        for a, b in grid
    ]
    return max(results, key=lambda r: (r.epsilon, r.correct))


# --- Clopper-Pearson -------------------------------------------------------------------


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Two one-sided (1 - alpha) bounds (low, high) on a binomial proportion."""
    if not 0 <= successes <= trials or trials < 1:
        raise ConfigError(f"need 0 <= successes <= trials, trials >= 1; got {successes}/{trials}")
    low = 0.0 if successes == 0 else float(stats.beta.ppf(alpha, successes, trials - successes + 1))
    high = (
        1.0
        if successes == trials
        else float(stats.beta.ppf(1 - alpha, successes + 1, trials - successes))
    )
    return low, high


def clopper_pearson_epsilon(
    tp: int, fn: int, fp: int, tn: int, *, delta: float, alpha: float = 0.05
) -> float:
    """eps lower bound from one confusion matrix: max of log((TPR_lo - delta) / FPR_hi) and
    log((TNR_lo - delta) / FNR_hi), each rate bounded at alpha / 2 (both hold w.p. 1 - alpha)."""
    _check_alpha_delta(alpha, delta)
    tpr_low, tpr_high = clopper_pearson(tp, tp + fn, alpha / 2)
    fpr_low, fpr_high = clopper_pearson(fp, fp + tn, alpha / 2)
    candidates = [0.0]
    if tpr_low - delta > 0:
        candidates.append(math.log((tpr_low - delta) / fpr_high))
    if (1 - fpr_high) - delta > 0:
        candidates.append(math.log(((1 - fpr_high) - delta) / (1 - tpr_low)))
    return min(max(candidates), EPS_MAX)


@dataclass(frozen=True)
class ThresholdResult:
    epsilon: float
    threshold: float
    tp: int
    fn: int
    fp: int
    tn: int


def _clopper_pearson_epsilons(
    tp: np.ndarray, fn: np.ndarray, fp: np.ndarray, tn: np.ndarray, delta: float, alpha: float
) -> np.ndarray:
    """`clopper_pearson_epsilon` of many confusion matrices at once (one per threshold).

    Why vectorised: the audit bounds every attack at every observed threshold, and the
    multiplicity tests (tests/attacks/audit/test_epsilon_multiplicity.py) run it over
    thousands of null draws; one beta quantile call per array keeps that in seconds."""
    half = alpha / 2
    tpr_low = np.where(tp > 0, stats.beta.ppf(half, np.maximum(tp, 1), fn + 1), 0.0)
    fpr_high = np.where(tn > 0, stats.beta.ppf(1 - half, fp + 1, np.maximum(tn, 1)), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        forward = np.where(tpr_low - delta > 0, np.log((tpr_low - delta) / fpr_high), 0.0)
        backward = np.where(
            (1 - fpr_high) - delta > 0, np.log(((1 - fpr_high) - delta) / (1 - tpr_low)), 0.0
        )
    return np.minimum(np.maximum(np.maximum(forward, backward), 0.0), EPS_MAX)


def _best_threshold(
    s: np.ndarray, y: np.ndarray, thresholds: np.ndarray, *, delta: float, alpha: float
) -> ThresholdResult:
    """The first of `thresholds` ("member if score >= t") with the largest CP bound at
    level alpha (no correction here: the callers divide alpha)."""
    guess = s[None, :] >= thresholds[:, None]
    tp = (guess & y).sum(axis=1)
    fp = (guess & ~y).sum(axis=1)
    fn, tn = int(y.sum()) - tp, int((~y).sum()) - fp
    eps = _clopper_pearson_epsilons(tp, fn, fp, tn, delta, alpha)
    i = int(np.argmax(eps))
    if not eps[i] > 0:
        return ThresholdResult(0.0, float("inf"), 0, int(y.sum()), 0, int((~y).sum()))
    return ThresholdResult(
        float(eps[i]), float(thresholds[i]), int(tp[i]), int(fn[i]), int(fp[i]), int(tn[i])
    )


def best_clopper_pearson(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    alpha: float = 0.05,
) -> ThresholdResult:
    """The best CP bound over every threshold "member if score >= t", at level alpha
    divided by the number of thresholds (Bonferroni)."""
    _check_alpha_delta(alpha, delta)
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or not y.any() or y.all():
        raise ConfigError("need scores and labels of one shape, with members and non-members")
    thresholds = np.unique(s)
    return _best_threshold(s, y, thresholds, delta=delta, alpha=alpha / thresholds.size)


# --- verdict ---------------------------------------------------------------------------


def group_privacy(epsilon: float, delta: float, k: int) -> tuple[float, float]:
    """(k eps, k e^{(k-1) eps} delta): what an (eps, delta) claim says about k copies of a
    record (a canary planted k times)."""
    if k < 1:
        raise ConfigError(f"group size must be >= 1, got {k}")
    if math.isinf(epsilon):
        return math.inf, delta
    return k * epsilon, min(1.0, k * math.exp((k - 1) * epsilon) * delta)


@dataclass(frozen=True)
class AuditVerdict:
    """The audit's bounds next to the claim. passed: no lower bound exceeds the claim;
    conclusive: the design could have refuted the claim (its certifiable bound, a perfect
    attack's, exceeds the claim), so a pass means something."""

    epsilon_claimed: float
    delta: float
    alpha: float
    one_run: OneRunResult
    clopper_pearson: ThresholdResult
    certifiable: float = EPS_MAX

    @property
    def conclusive(self) -> bool:
        return self.certifiable > self.epsilon_claimed

    @property
    def epsilon_lower_bound(self) -> float:
        """The one-run bound (the one valid in a single run)."""
        return self.one_run.epsilon

    @property
    def passed(self) -> bool:
        return max(self.one_run.epsilon, self.clopper_pearson.epsilon) <= self.epsilon_claimed

    def summary(self) -> str:
        if not self.passed:
            verdict = "FAIL: the claimed epsilon is refuted"
        elif not self.conclusive:
            verdict = (
                f"INCONCLUSIVE: with m={self.one_run.m} canaries the one-run audit certifies "
                f"at most {self.certifiable:.3f} < the claim"
            )
        else:
            verdict = "PASS"
        return (
            f"epsilon claimed {self.epsilon_claimed:.3g} (delta {self.delta:g}) | empirical "
            f"lower bounds at {1 - self.alpha:.0%}: one-run {self.one_run.epsilon:.3f} "
            f"({self.one_run.correct}/{self.one_run.guesses} correct of m={self.one_run.m}), "
            f"Clopper-Pearson {self.clopper_pearson.epsilon:.3f} | {verdict}"
        )


def audit(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    *,
    epsilon_claimed: float,
    delta: float,
    alpha: float = 0.05,
) -> AuditVerdict:
    """Both lower bounds (each with its own search, Bonferroni-corrected) against the claim."""
    if not epsilon_claimed >= 0:
        raise ConfigError(f"epsilon_claimed must be >= 0 (inf: no DP), got {epsilon_claimed!r}")
    m = int(np.asarray(scores).size)
    return AuditVerdict(
        epsilon_claimed,
        delta,
        alpha,
        best_one_run_audit(scores, labels, delta=delta, alpha=alpha),
        best_clopper_pearson(scores, labels, delta=delta, alpha=alpha),
        certifiable_epsilon(m, delta=delta, alpha=alpha),
    )


# --- fixed thresholds over independent trials --------------------------------------------


def threshold_grid_clopper_pearson(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    thresholds: Sequence[float],
    *,
    delta: float,
    alpha: float = 0.05,
) -> ThresholdResult:
    """The best CP bound over a few thresholds fixed before the scores are seen, at level
    alpha / len(thresholds) (Bonferroni).

    Why not `best_clopper_pearson`: searching every observed score pays a correction of
    the number of trials, which costs about log(trials) in the bound; an audit that knows
    the mechanism (a canary of known size under noise of known scale) can name a handful
    of thresholds in advance and keep most of its power."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or not y.any() or y.all():
        raise ConfigError("need scores and labels of one shape, with members and non-members")
    if not thresholds:
        raise ConfigError("need at least one threshold")
    corrected = alpha / len(thresholds)
    best = ThresholdResult(0.0, float("inf"), 0, int(y.sum()), 0, int((~y).sum()))
    for t in thresholds:
        guess = s >= t
        tp, fp = int((guess & y).sum()), int((guess & ~y).sum())
        fn, tn = int(y.sum()) - tp, int((~y).sum()) - fp
        eps = clopper_pearson_epsilon(tp, fn, fp, tn, delta=delta, alpha=corrected)
        if eps > best.epsilon:
            best = ThresholdResult(eps, float(t), tp, fn, fp, tn)
    return best


def certifiable_clopper_pearson(
    members: int, non_members: int, *, tests: int = 1, delta: float, alpha: float = 0.05
) -> float:
    """The CP bound of a perfect attack (every member above, every non-member below the
    threshold) with this many trials of each kind, at level alpha / tests.

    Why: like `certifiable_epsilon` for one run, it is known before the audit runs; a
    claim at or above it cannot be refuted by this budget whatever the attack does."""
    if members < 1 or non_members < 1 or tests < 1:
        raise ConfigError(
            f"need members, non_members, tests >= 1; got {members}, {non_members}, {tests}"
        )
    return clopper_pearson_epsilon(members, 0, 0, non_members, delta=delta, alpha=alpha / tests)
