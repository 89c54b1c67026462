"""RMIA and offline LiRA in the audit's likelihood cells, and `[audit] reference_models`.

The slow test runs a real audit (protections none and dp-sgd, the likelihood column,
the quick federation): both rows' cells carry RMIA and LiRA records next to the five
base-model attacks, the Bonferroni count follows them (2 metrics x 7 attacks), the
strongest attack leaks on `none`, RMIA is at least as strong as LOSS on that release,
and on the DP-SGD release, judged by the same attacks with the same reference models,
the calibrated attacks fall back towards chance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedveil.attacks.audit.config import AuditConfig, config_from_toml
from fedveil.attacks.audit.evaluate import BREACH, LEAKS, evaluate_cell
from fedveil.attacks.audit.runner import run_audit
from fedveil.attacks.measure.output_leakage import OutputLeakageSettings, output_leakage_records
from fedveil.attacks.measure.records import JobResult, OutputRecord, records_from_json
from fedveil.attacks.output.likelihood import LIKELIHOOD_ATTACKS
from fedveil.attacks.output.reference_mia import REFERENCE_MIA_ATTACKS
from fedveil.attacks.output.references import clear_cache
from fedveil.attacks.targets.canary_federation import (
    FederationSettings,
    federation_scenario,
    release,
)
from fedveil.errors import ConfigError
from fedveil.runners.aggregators import real_aggregators


def test_reference_models_key_is_validated_by_name() -> None:
    assert AuditConfig().reference_models is None  # the profile's (quick 2, full 4)
    assert config_from_toml({"audit": {"reference_models": 0}}).reference_models == 0
    assert config_from_toml({"audit": {"reference_models": 4}}).reference_models == 4
    for bad, why in ((-1, ">= 0"), (17, "<= 16"), ("2", "integer"), (True, "integer")):
        with pytest.raises(ConfigError, match=rf"\[audit\] reference_models: must be.*{why}"):
            config_from_toml({"audit": {"reference_models": bad}})
    with pytest.raises(ConfigError, match=r"\[audit\] reference_models"):
        AuditConfig(reference_models=-2)


def _stored(out: Path, key: str) -> dict[str, OutputRecord]:
    stored = json.loads((out / "work" / f"{key}.json").read_text())
    records = records_from_json(stored["records"])
    return {
        r.attack: r
        for r in records
        if isinstance(r, OutputRecord) and r.attack_family == "likelihood"
    }


@pytest.mark.slow
def test_the_likelihood_cells_run_rmia_and_lira_on_both_rows(tmp_path: Path) -> None:
    clear_cache()  # an earlier audit in this process may have trained the same references
    config = config_from_toml(
        {"audit": {"protections": ["none", "dp-sgd"], "attacks": ["likelihood"]}}
    )
    result = run_audit(config, tmp_path, real_aggregators, workers=1, progress=False)
    cells = {c.protection.value: c for c in result.cells}
    expected = (*LIKELIHOOD_ATTACKS, *REFERENCE_MIA_ATTACKS)
    none, dp = _stored(tmp_path, "none__output"), _stored(tmp_path, "dp-sgd__output")
    for row, records in (("none", none), ("dp-sgd", dp)):
        assert tuple(records) == expected, row
        assert cells[row].comparisons == 2 * len(expected)  # the registry's count, not 10
        assert set(cells[row].details.roc or {}) == set(expected)
        params = records["rmia"].details.params
        assert params["reference_models"] == 2 and params["reference_recipe"] == "federation"
    # trained once, in the first output job; the DP row reused them
    assert none["rmia"].details.params["reference_seconds"] > 0  # type: ignore[operator]
    assert dp["rmia"].details.params["reference_seconds"] == 0
    # Unprotected: the strongest attack leaks (its corrected interval clears the 0.75
    # threshold), and RMIA is at least as strong as LOSS on the same release.
    assert cells["none"].status == LEAKS and cells["none"].metrics["auc"] > 0.9
    for name in REFERENCE_MIA_ATTACKS:
        assert none[name].auc >= none["loss"].auc, (name, none[name].auc, none["loss"].auc)
        assert none[name].auc_low > 0.5 and none[name].tpr_at_1pct_fpr > 0.01  # baselines
    # DP-SGD, the same attacks and references: what RMIA found on `none` is gone (0.41-0.44
    # measured against 0.98; below chance is reference noise, not a leak), and the
    # claimed cell, now judged over 14 comparisons, does not breach.
    for name in REFERENCE_MIA_ATTACKS:
        assert dp[name].auc < none[name].auc - 0.2, (name, dp[name].auc, none[name].auc)
        assert dp[name].auc_low < 0.5  # no evidence of a leak: chance is not excluded
    assert cells["dp-sgd"].status != BREACH


def _tiny_release_records() -> list[OutputRecord]:
    """Real records of a one-round federation's release, one reference model."""
    scenario = federation_scenario(True)
    settings = FederationSettings(rounds=1, local_epochs=1)
    trained = release("none", scenario, real_aggregators(), settings)
    cheap = OutputLeakageSettings(
        n_samples=1,
        exposure_candidates=8,
        bootstrap=10,
        filters=False,
        evasions=False,
        reference_models=1,
    )
    records = output_leakage_records(scenario, trained, cheap)
    return [r for r in records if r.attack_family == "likelihood"]


def test_a_likelihood_cell_counts_every_attack_it_maximises_over() -> None:
    """The Bonferroni k of a membership cell is 2 x the records of its family, so two
    more registered attacks widen every interval of the cell (k 10 -> 14)."""
    config = config_from_toml({"audit": {"protections": ["none"], "attacks": ["likelihood"]}})
    template = _tiny_release_records()
    assert [r.attack for r in template] == [*LIKELIHOOD_ATTACKS, *REFERENCE_MIA_ATTACKS]
    five = [r for r in template if r.attack in LIKELIHOOD_ATTACKS]
    cell_five = evaluate_cell(config, "none", "likelihood", JobResult(five, 1.0))
    cell_seven = evaluate_cell(config, "none", "likelihood", JobResult(template, 1.0))
    assert (cell_five.comparisons, cell_seven.comparisons) == (10, 14)
    level_five = cell_five.checks[0].level
    level_seven = cell_seven.checks[0].level
    assert level_five is not None and level_seven is not None and level_seven > level_five
