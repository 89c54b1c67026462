"""The inversion column's positive control on the quick profile's own settings.

Both directions through the audit's verdict code (evaluate_cells: selection on the first
seed, a t interval over the held-out ones, then the positive controls), on the real
image-inversion measurement with benchmarks/audit.toml's thresholds, cohort, DP settings
and seed count: the unprotected update leaks with an interval whose low end is above the
breach threshold, so the control holds; the DP-SGD cell then passes with that control
behind it (not `inconclusive: control failed`), and on the real 10-client SecAgg+ round
the best-recovered client stays under the PSNR threshold with the control holding.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedveil.attacks.audit.config import AuditConfig, load_config
from fedveil.attacks.audit.evaluate import PASS, Cell, evaluate_cells
from fedveil.attacks.audit.jobs import seeds_of
from fedveil.attacks.families import Family
from fedveil.attacks.measure.records import JobResult
from fedveil.attacks.measure.update_leakage import UpdateLeakageSettings, image_inversion_records
from fedveil.attacks.protections import Protection
from fedveil.attacks.update.gradient_matching import torch_threads
from fedveil.runners.aggregators import real_aggregators

AUDIT_TOML = Path(__file__).resolve().parents[3] / "benchmarks" / "audit.toml"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models: extra OpenMP threads only spin-wait on a shared machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def config() -> AuditConfig:
    config = load_config(AUDIT_TOML)
    assert config.profile == "quick" and Family.INVERSION in config.attacks
    return config


def _seeds(config: AuditConfig, protection: str) -> list[JobResult]:
    """The image-inversion job of `protection`, once per seed of the profile, as the
    audit's jobs run it (data seed = the seed's index)."""
    aggregators = real_aggregators()
    results = []
    for seed in range(seeds_of(config.profile)):
        settings = UpdateLeakageSettings(
            quick=True, n_clients=config.clients, dp=config.dp, seed=seed
        )
        records = image_inversion_records(protection, settings, aggregators)
        results.append(JobResult(list(records), sum(r.seconds for r in records)))
    return results


PROTECTIONS = (Protection.NONE, Protection.DP_SGD, Protection.SECAGG)


@pytest.fixture(scope="module")
def cells(config: AuditConfig) -> dict[Protection, Cell]:
    jobs = [(p, Family.INVERSION, _seeds(config, p.value)) for p in PROTECTIONS]
    return {c.protection: c for c in evaluate_cells(config, jobs)}


@pytest.mark.slow
def test_the_unprotected_update_leaks_above_the_threshold(
    cells: dict[Protection, Cell], config: AuditConfig
) -> None:
    none = cells[Protection.NONE]
    assert none.seeds == seeds_of(config.profile) >= 3  # selected on one, judged on the rest
    (ssim,) = [c for c in none.checks if c.metric == "ssim_over_baseline"]
    assert ssim.leaked and ssim.ci_low is not None and ssim.ci_low > ssim.threshold, ssim
    assert none.details.strongest is not None
    assert none.details.strongest["ssim"].params["attack"] == "batch_inversion"


@pytest.mark.slow
def test_a_dp_sgd_cell_passes_with_its_control_holding(cells: dict[Protection, Cell]) -> None:
    dp_sgd = cells[Protection.DP_SGD]
    assert dp_sgd.claimed and dp_sgd.positive_control is True
    assert dp_sgd.status == PASS, (dp_sgd.reason, [c.to_dict() for c in dp_sgd.checks])
    for check in dp_sgd.checks:
        assert check.ci_high is not None and check.ci_high <= check.threshold


@pytest.mark.slow
def test_the_best_client_of_a_ten_client_secagg_round_stays_under_the_psnr_threshold(
    cells: dict[Protection, Cell], config: AuditConfig
) -> None:
    secagg = cells[Protection.SECAGG]
    assert secagg.claimed and secagg.positive_control is True
    (psnr,) = [c for c in secagg.checks if c.metric == "psnr_over_baseline"]
    assert psnr.ci_high is not None and psnr.ci_high <= psnr.threshold, psnr
    assert secagg.details.strongest is not None
    assert secagg.details.strongest["psnr"].n_clients == config.clients
