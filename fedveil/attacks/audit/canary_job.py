"""The audit's `epsilon` column: white-box canaries against a DP row's own mechanism.

Why beside the text-canary bound: 48 canaries planted in one training run certify at most
about 1.7, so that check can never refute the 6-18 epsilons the DP rows claim. Here the
auditor controls the mechanism's input (a Dirac canary gradient in a real DP-SGD step, a
canary client in the real client-DP round) and repeats it over thousands of independent
trials, so a broken mechanism (noise switched off, the claim kept) is refuted
(attacks.output.gradient_canaries). The claim is for exactly what is tested: the quick
profile, one step (one round) at sensitivity C; the full profile, FULL_MULTISTEP_STEPS
steps (rounds) with the canary in every one and the auditor summing every step's canary
coordinate, against the accountant's composition of those steps. Neither is the
federation's composed epsilon over all its rounds (too many steps for any trial budget).
"""

from __future__ import annotations

import time

from fedveil.attacks.measure.records import LeakRecord
from fedveil.attacks.output.gradient_canaries import (
    FULL_MULTISTEP_STEPS,
    FULL_MULTISTEP_TRIALS,
    QUICK_CLIENT_DP_TRIALS,
    QUICK_DP_SGD_TRIALS,
    CanaryAudit,
    client_dp_canary_audit,
    dp_sgd_canary_audit,
)
from fedveil.attacks.protections import Aggregators, DPSettings, Protection
from fedveil.errors import ConfigError
from fedveil.secagg.modes import DPKind

METRIC = "epsilon_lower_bound"
TARGET = "dirac-canaries"


def canary_audit(
    protection: Protection, dp: DPSettings, aggregators: Aggregators, quick: bool
) -> CanaryAudit:
    """Run the canary audit of `protection`'s mechanism at the audit's DP settings: one
    step (quick), or FULL_MULTISTEP_STEPS composed steps (full)."""
    kind = protection.spec.dp
    steps = 1 if quick else FULL_MULTISTEP_STEPS
    if kind is DPKind.SAMPLE:
        trials = QUICK_DP_SGD_TRIALS if quick else FULL_MULTISTEP_TRIALS
        return dp_sgd_canary_audit(dp, trials=trials, steps=steps)
    if kind is DPKind.CLIENT:
        trials = QUICK_CLIENT_DP_TRIALS if quick else FULL_MULTISTEP_TRIALS
        return client_dp_canary_audit(dp, aggregators, trials=trials, steps=steps)
    raise ConfigError(f"protection {protection.value!r} makes no DP claim to audit")


def canary_record(
    protection: Protection, dp: DPSettings, aggregators: Aggregators, quick: bool
) -> LeakRecord:
    """The canary audit as the one record its cell is judged on: value = the lower bound,
    params = the claim, what a perfect attack could certify, the confusion counts."""
    start = time.perf_counter()
    audit = canary_audit(protection, dp, aggregators, quick)
    return LeakRecord(
        TARGET,
        protection.value,
        1,
        METRIC,
        float(audit.lower_bound),
        0.0,
        time.perf_counter() - start,
        {
            "mechanism": audit.mechanism,
            "claim": float(audit.claim),
            "certifiable": float(audit.certifiable),
            "delta": float(audit.delta),
            "alpha": float(audit.alpha),
            "trials": int(audit.trials),
            "steps": int(audit.steps),
            "threshold": float(audit.threshold),
            "tpr": float(audit.tpr),
            "fpr": float(audit.fpr),
            "verdict": audit.verdict.value,
        },
    )
