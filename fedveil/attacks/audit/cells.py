"""A judged cell of the audit matrix and its checks (the data; evaluate.py fills it).

Why a check carries an interval: a claimed cell is judged on confidence, not on a point
estimate, so each check holds the interval of its metric (ci_low, ci_high, at the
Bonferroni-corrected `level`); a check without one (ci_low None) is exact: the
empirical-epsilon lower bound is already a one-sided confidence bound, and "no record
judged" is a fact. Verdicts of a claimed cell: pass, breach, inconclusive (with the
reason), vacuous (a DP model that learned nothing), not run; an unclaimed cell reports
leaks / no leak measured, never gates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedveil.attacks.families import Family
from fedveil.attacks.measure.records import FederationInfo, JSONObject, Roc, finite_json
from fedveil.attacks.protections import Protection

PASS, BREACH, LEAKS, CLEAN, NOT_RUN = "pass", "breach", "leaks", "no leak measured", "not run"
INCONCLUSIVE, VACUOUS = "inconclusive", "vacuous"


def finite(x: float) -> float | str:
    """A number as report.json writes it (6 digits, infinities as strings)."""
    return finite_json(round(float(x), 6))


@dataclass
class Check:
    """One metric of a cell against its threshold. inconclusive (with why): the check
    could not have failed here (e.g. an epsilon claim above what the canaries can ever
    certify); it is reported as such, never as evidence that the protection held.
    passed: the point value is within the threshold (reported); the verdict is `outcome`."""

    metric: str
    value: float
    threshold: float
    passed: bool
    baseline: float | None = None
    inconclusive: str | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    level: float | None = None

    @property
    def outcome(self) -> str:
        """breach when the interval's low end crosses the threshold, pass when its high
        end stays under, inconclusive between; an exact check by its value."""
        if self.ci_low is None or self.ci_high is None:
            if not self.passed:
                return BREACH
            return INCONCLUSIVE if self.inconclusive else PASS
        if self.ci_low > self.threshold:
            return BREACH
        if self.ci_high <= self.threshold:
            return INCONCLUSIVE if self.inconclusive else PASS
        return INCONCLUSIVE

    @property
    def leaked(self) -> bool:
        """The interval's low end crosses the threshold (what a positive control needs)."""
        return self.ci_low is not None and self.ci_low > self.threshold

    def to_dict(self) -> JSONObject:
        out: JSONObject = {
            "metric": self.metric,
            "value": finite(self.value),
            "threshold": finite(self.threshold),
            "baseline": None if self.baseline is None else finite(self.baseline),
            "passed": self.passed,
            "ci_low": None if self.ci_low is None else finite(self.ci_low),
            "ci_high": None if self.ci_high is None else finite(self.ci_high),
            "level": None if self.level is None else finite(self.level),
            "outcome": self.outcome,
        }
        if self.inconclusive is not None:
            out["verdict"] = INCONCLUSIVE
            out["why"] = self.inconclusive
        return out


@dataclass
class StrongestRun:
    """Which run reached a cell's headline metric (an update attack's record)."""

    target: str
    n_clients: int
    params: JSONObject

    def to_json(self) -> JSONObject:
        return {"target": self.target, "n_clients": self.n_clients, "params": self.params}


@dataclass
class CellDetails:
    """What a cell's metrics came from, by cell kind (None: not part of this cell).

    Update cells: strongest (per metric, the run that reached it), figures
    (the inversion column's reconstruction PNGs). Membership cells: strongest_attack,
    federation (None outside the audit), roc (per attack), auc_ci. Filtered extraction:
    filters (per stack). Any cell: why (a job ran but measured nothing), error (a job
    failed).
    """

    strongest: dict[str, StrongestRun] | None = None
    figures: list[str] | None = None
    strongest_attack: str | None = None
    federation: FederationInfo | None = None
    roc: dict[str, Roc] | None = None
    auc_ci: tuple[float, float] | None = None
    filters: JSONObject | None = None
    why: str | None = None
    error: str | None = None

    def to_json(self) -> JSONObject:
        out: JSONObject = {}
        if self.strongest is not None:
            out["strongest"] = {m: r.to_json() for m, r in self.strongest.items()}
        if self.figures is not None:
            out["figures"] = list(self.figures)
        if self.strongest_attack is not None:  # a membership cell: all four, federation too
            out["strongest_attack"] = self.strongest_attack
            out["federation"] = None if self.federation is None else self.federation.to_json()
            out["roc"] = {a: r.to_json() for a, r in (self.roc or {}).items()}
            out["auc_ci"] = None if self.auc_ci is None else list(self.auc_ci)
        if self.filters is not None:
            out["filters"] = self.filters
        if self.why is not None:
            out["why"] = self.why
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class Utility:
    """What the released model learned: held-out loss (canary-free) vs the base model's.
    learned: it beat the base model by at least `margin` (nats per token)."""

    heldout_loss: float
    base_heldout_loss: float
    margin: float

    @property
    def improvement(self) -> float:
        return self.base_heldout_loss - self.heldout_loss

    @property
    def learned(self) -> bool:
        return self.improvement >= self.margin

    def to_json(self) -> JSONObject:
        return {
            "heldout_loss": finite(self.heldout_loss),
            "base_heldout_loss": finite(self.base_heldout_loss),
            "improvement": finite(self.improvement),
            "margin": finite(self.margin),
            "learned": self.learned,
        }


@dataclass
class Cell:
    """One (protection, attack family) of the matrix. status is the verdict (pass,
    breach, inconclusive, vacuous, not run for a claimed cell; leaks, no leak measured
    for an unclaimed one); reason says why a claimed cell is inconclusive or vacuous;
    ci_low/ci_high: the interval of the check that decided it; seeds: how many seeds its
    records came from; comparisons: the k of its Bonferroni correction;
    positive_control: whether the same attack leaked on the unprotected row (None: not
    checked, or this cell is the reference)."""

    protection: Protection
    attack: Family
    claimed: bool
    status: str = NOT_RUN
    metrics: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    details: CellDetails = field(default_factory=CellDetails)
    seconds: float = 0.0
    seeds: int = 0
    comparisons: int = 0
    positive_control: bool | None = None
    reason: str | None = None
    utility: Utility | None = None

    @property
    def name(self) -> str:
        return f"{self.protection}/{self.attack}"

    @property
    def verdict(self) -> str:
        return self.status

    @property
    def headline(self) -> Check | None:
        """The check whose interval the cell shows: the first breaching one, else the
        first inconclusive one, else the first with an interval."""
        with_ci = [c for c in self.checks if c.ci_low is not None]
        for wanted in (BREACH, INCONCLUSIVE):
            for check in with_ci:
                if check.outcome == wanted:
                    return check
        return with_ci[0] if with_ci else None

    @property
    def ci_low(self) -> float | None:
        head = self.headline
        return None if head is None else head.ci_low

    @property
    def ci_high(self) -> float | None:
        head = self.headline
        return None if head is None else head.ci_high

    def breaches(self) -> list[Check]:
        """The conclusively breached checks of a claimed cell judged a breach."""
        if not self.claimed or self.status != BREACH:
            return []
        return [c for c in self.checks if c.outcome == BREACH]

    def to_dict(self) -> JSONObject:
        head = self.headline
        low, high = self.ci_low, self.ci_high
        return {
            "protection": self.protection.value,
            "attack": self.attack.value,
            "claimed_protected": self.claimed,
            "status": self.status,
            "verdict": self.verdict,
            "reason": self.reason,
            "ci_metric": None if head is None else head.metric,
            "ci_low": None if low is None else finite(low),
            "ci_high": None if high is None else finite(high),
            "seeds": self.seeds,
            "comparisons": self.comparisons,
            "positive_control": self.positive_control,
            "utility": None if self.utility is None else self.utility.to_json(),
            "metrics": {k: finite(v) for k, v in self.metrics.items()},
            "baselines": {k: finite(v) for k, v in self.baselines.items()},
            "checks": [c.to_dict() for c in self.checks],
            "seconds": round(self.seconds, 3),
            "details": self.details.to_json(),
        }
