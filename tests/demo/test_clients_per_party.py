"""`fedveil demo --clients-per-party N`: organisations split into branch offices.

Why these checks: client-level DP protects each SecAgg client, so how an organisation's
data is cut into clients decides what the DP noise buys (benchmarks/dp_cohort_bench.py).
The split must keep exactly the organisation's samples, in slices of equal size (DP
means are unweighted), bad values must stop the run with one line before the model is
built, and the in-process rounds must carry the service's calibration and accounting.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedveil.cli import main
from fedveil.demo.options import MAX_CLIENTS_PER_PARTY, DemoOptions
from fedveil.errors import ConfigError
from fedveil.learner.data.concepts import DOMAINS
from fedveil.learner.data.datasets import (
    CityDataConfig,
    client_name,
    make_client_datasets,
    make_party_datasets,
    make_test_set,
    make_validation_set,
    split_party_dataset,
)
from fedveil.runners.aggregators import InProcessSecAgg, honest_floor
from fedveil.secagg.modes import AggregationMode, DPKind

SMALL = CityDataConfig(samples_per_party=10, test_samples=4, image_size=32)


def test_one_client_per_party_is_the_default() -> None:
    options = DemoOptions()
    assert options.clients_per_party == 1
    assert options.clients == 3


def test_many_clients_per_party_with_client_dp_is_accepted() -> None:
    options = DemoOptions(clients_per_party=30, dp=DPKind.CLIENT, epsilon=8.0)
    assert options.clients == 90


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"clients_per_party": 0}, "clients per party"),
        ({"clients_per_party": True}, "clients per party"),
        ({"clients_per_party": MAX_CLIENTS_PER_PARTY + 1}, "at least one"),
        ({"clients_per_party": 2, "mode": AggregationMode.CKKS}, "--mode secagg"),
        ({"clients_per_party": 2, "dp": DPKind.SAMPLE}, "--dp client or none"),
    ],
)
def test_bad_client_counts_are_refused_in_one_line(bad: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        DemoOptions(**bad)
    assert "\n" not in str(caught.value)


def test_the_split_gives_n_clients_per_party_of_equal_size() -> None:
    clients = make_client_datasets(SMALL, DOMAINS, clients_per_party=3)
    assert len(clients) == 3 * len(DOMAINS)
    for domain in DOMAINS:
        names = [client_name(domain.value, k, 3) for k in range(3)]
        sizes = [len(clients[name]) for name in names]
        assert sorted(sizes) == [3, 3, 4] and sum(sizes) == SMALL.samples_per_party
        assert all(clients[name].domain is domain for name in names)


def test_the_clients_together_hold_exactly_their_organisations_samples() -> None:
    """Same seeds: office k holds the organisation's samples of its slice, in order."""
    whole = make_party_datasets(SMALL, DOMAINS)
    clients = make_client_datasets(SMALL, DOMAINS, clients_per_party=4)
    for name, dataset in whole.items():
        joined = [e for k in range(4) for e in clients[client_name(name, k, 4)]]
        assert [e.caption for e in joined] == [e.caption for e in dataset]
        assert all(np.array_equal(a.image, b.image) for a, b in zip(joined, dataset, strict=True))


def test_one_client_per_party_is_the_party_itself() -> None:
    dataset = make_party_datasets(SMALL, DOMAINS[:1])[DOMAINS[0].value]
    assert split_party_dataset(dataset, 1) == {dataset.name: dataset}


def test_client_names_sort_in_index_order() -> None:
    names = [client_name("urban", k, 100) for k in range(100)]
    assert names == sorted(names) and names[7] == "urban-07"


def test_more_clients_than_samples_is_refused() -> None:
    dataset = make_party_datasets(SMALL, DOMAINS[:1])[DOMAINS[0].value]
    with pytest.raises(ConfigError, match="too few"):
        split_party_dataset(dataset, SMALL.samples_per_party + 1)


def test_the_validation_set_is_disjoint_from_the_test_set() -> None:
    test = make_test_set(SMALL)
    validation = make_validation_set(SMALL, 4)
    assert len(validation) == 4
    assert not any(np.array_equal(a.image, b.image) for a in test for b in validation)


def test_the_command_refuses_a_bad_count_in_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--in-process", "--clients-per-party", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "clients per party" in err and "\n" not in err


def test_the_deployment_refuses_many_clients_in_one_line(
    capsys: pytest.CaptureFixture,
) -> None:
    assert main(["demo", "--clients-per-party", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --clients-per-party > 1 runs only with --in-process"


def test_the_honest_floor_is_half_the_cohort_at_least_the_threshold() -> None:
    assert honest_floor(3, 2) == 2
    assert honest_floor(300, 10) == 150
    assert honest_floor(6, 4) == 4


def test_in_process_rounds_without_dp_give_the_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    updates = [(rng.normal(size=64) * 0.01, w) for w in (1, 2, 3, 4)]
    aggregate = InProcessSecAgg([f"c{i}" for i in range(4)], 64, rounds=1)
    mean = aggregate(updates)
    exact = sum(u * w for u, w in updates) / 10
    assert np.allclose(mean, exact, atol=1e-9)
    assert aggregate.results[0].total_weight == 10 and aggregate.results[0].privacy is None


def test_in_process_dp_rounds_spend_the_calibrated_budget_and_no_more() -> None:
    ids = [f"c{i}" for i in range(8)]
    aggregate = InProcessSecAgg(ids, 64, rounds=2, dp_epsilon=8.0, dp_delta=1e-5)
    assert aggregate.round_dp is not None
    assert aggregate.round_dp.config.min_clients == 5  # threshold 5 > half of 8
    updates = [(np.full(64, 0.01), 1) for _ in ids]
    aggregate(updates)
    aggregate(updates)
    report = aggregate.results[-1].privacy
    assert report is not None and report.rounds == 2 and report.contributors == 8
    assert 7.5 < report.epsilon <= 8.0
    with pytest.raises(ConfigError, match="planned rounds"):
        aggregate(updates)


@pytest.mark.slow
def test_the_demo_runs_with_branch_offices_and_client_dp(tmp_path) -> None:
    """Two rounds, 4 offices per organisation: 12 clients in every released round."""
    from fedveil.demo.run import run_demo

    report = run_demo(
        DemoOptions(
            rounds=2,
            clients_per_party=4,
            dp=DPKind.CLIENT,
            progress=False,
            adapter_dir=tmp_path / "adapter",
        )
    )
    assert [len(r.survivors) for r in report.service_rounds] == [12, 12]
    assert report.privacy is not None and report.privacy.epsilon <= 8.0
    assert {row.name for row in report.parties} == {d.value for d in DOMAINS}
