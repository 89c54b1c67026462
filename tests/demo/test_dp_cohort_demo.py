"""The private office cohort's recipe: --dp-rank, --server-lr, --server-momentum.

Why these checks: under client-level DP the noise's share of a round's step grows with
the adapter's dimension and shrinks with the cohort (benchmarks/dp_cohort_bench.py), so
the demo lets the private federation train a smaller adapter and take a server step on
each released mean, while every organisation alone keeps its own recipe (the bar). The
server step must be pure post-processing (the accountant's epsilon does not move), the
options must stop a bad run in one line before any model is built, and the demo's
office path must run the federation with them and the organisations alone without.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedveil.cli import main
from fedveil.demo.options import DemoOptions
from fedveil.errors import ConfigError
from fedveil.learner import federated_local
from fedveil.learner.data.concepts import DOMAINS
from fedveil.learner.data.datasets import CityDataConfig, make_party_datasets, make_test_set
from fedveil.learner.federated_local import CaptionerRecipe
from fedveil.learner.federation.server_step import ServerStep
from fedveil.learner.lora.aggregation import WeightedUpdate, weighted_mean
from fedveil.runners.aggregators import InProcessSecAgg
from fedveil.secagg.modes import DPKind
from tests.helpers.captioner_fixtures import tiny_base

PRIVATE: dict[str, Any] = {"clients_per_party": 4, "dp": DPKind.CLIENT}


def _updates(seed: int) -> list[WeightedUpdate]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=16) * 0.01, 1.0) for _ in range(4)]


def test_the_server_step_scales_and_accumulates_the_mean() -> None:
    step = ServerStep(learning_rate=0.5, momentum=0.9).around(weighted_mean)
    first, second = _updates(0), _updates(1)
    m1, m2 = weighted_mean(first), weighted_mean(second)
    assert np.allclose(step(first), 0.5 * m1)
    assert np.allclose(step(second), 0.5 * (0.9 * m1 + m2))


def test_the_plain_server_step_is_the_aggregate_itself() -> None:
    assert ServerStep().around(weighted_mean) is weighted_mean
    assert ServerStep(1.0, 0.5).around(weighted_mean) is not weighted_mean


@pytest.mark.parametrize(
    ("lr", "momentum", "says"),
    [
        (0.0, 0.0, "learning rate"),
        (float("nan"), 0.0, "learning rate"),
        (1.0, 1.0, "momentum"),
        (1.0, -0.1, "momentum"),
    ],
)
def test_a_bad_server_step_is_refused_in_one_line(lr: float, momentum: float, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        ServerStep(lr, momentum)
    assert "\n" not in str(caught.value)


def test_the_server_step_spends_no_privacy() -> None:
    """The same DP rounds with and without a server step: the same epsilon; the step
    only transforms the released mean."""
    ids = [f"c{i}" for i in range(6)]
    plain = InProcessSecAgg(ids, 16, rounds=2, dp_epsilon=8.0)
    stepped_secagg = InProcessSecAgg(ids, 16, rounds=2, dp_epsilon=8.0)
    stepped = ServerStep(2.0, 0.5).around(stepped_secagg)
    outputs = []
    for seed in (0, 1):
        updates = [(u, 1.0) for u, _ in _updates(seed)] + [(np.zeros(16), 1.0)] * 2
        plain(updates)
        outputs.append(stepped(updates))
    spent = [a.results[-1].privacy for a in (plain, stepped_secagg)]
    assert all(p is not None for p in spent)
    assert spent[0].epsilon == spent[1].epsilon <= 8.0  # type: ignore[union-attr]
    released = [r.weighted_mean for r in stepped_secagg.results]
    assert np.allclose(outputs[0], 2.0 * released[0])
    assert np.allclose(outputs[1], 2.0 * (0.5 * released[0] + released[1]))


def test_a_private_cohort_trains_its_rank_and_the_organisations_keep_theirs() -> None:
    options = DemoOptions(**PRIVATE, dp_rank=2, server_lr=0.5, server_momentum=0.9)
    default = CaptionerRecipe().lora
    assert options.recipe().lora.rank == 2
    assert options.recipe().lora.scaling == default.scaling
    assert options.alone_recipe().lora == default
    assert options.server_step() == ServerStep(0.5, 0.9)


def test_without_the_flags_every_run_keeps_the_recipe() -> None:
    for options in (DemoOptions(), DemoOptions(clients_per_party=4), DemoOptions(**PRIVATE)):
        assert options.recipe().lora.rank == options.federation_rank()
        assert options.alone_recipe().lora == CaptionerRecipe().lora
    assert DemoOptions().server_step().is_plain


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"dp_rank": 0, **PRIVATE}, "--dp-rank must be"),
        ({"dp_rank": 9, **PRIVATE}, "--dp-rank must be"),
        ({"dp_rank": True, **PRIVATE}, "--dp-rank must be"),
        ({"dp_rank": 2, "clients_per_party": 4}, "--dp-rank is for --dp client"),
        ({"dp_rank": 2, "dp": DPKind.CLIENT}, "take --clients-per-party > 1"),
        ({"server_lr": 2.0}, "take --clients-per-party > 1"),
        ({"server_lr": -1.0, **PRIVATE}, "server learning rate"),
        ({"server_momentum": 1.0, **PRIVATE}, "server momentum"),
    ],
)
def test_bad_cohort_options_are_refused_in_one_line(bad: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        DemoOptions(**bad)
    assert "\n" not in str(caught.value)


def test_the_command_passes_the_cohort_flags_and_refuses_bad_ones(
    capsys: pytest.CaptureFixture,
) -> None:
    argv = ["demo", "--in-process", "--dp", "client", "--clients-per-party", "4"]
    assert main([*argv, "--dp-rank", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --dp-rank must be") and "\n" not in err
    assert main([*argv, "--server-momentum", "1", "--no-progress"]) == 2
    assert "server momentum" in capsys.readouterr().err


def test_the_office_path_runs_the_cohort_recipe_and_the_bar_its_own(monkeypatch) -> None:
    """One private round of two offices per organisation on the tiny model: the
    federation trains rank 1 and applies 0.5 x the released mean; each organisation
    alone trains the recipe's rank 8."""
    from fedveil.demo import run as demo_run

    options = DemoOptions(
        rounds=1,
        clients_per_party=2,
        dp=DPKind.CLIENT,
        dp_rank=1,
        server_lr=0.5,
        progress=False,
    )
    data = CityDataConfig(samples_per_party=4, test_samples=2, image_size=32)
    loaded = tiny_base()
    datasets = make_party_datasets(data, DOMAINS)
    keeper = federated_local.make_parties(
        loaded, {DOMAINS[0].value: datasets[DOMAINS[0].value]}, options.recipe()
    )[0]
    trained_ranks: list[int] = []
    real = federated_local.make_parties

    def recording(base, parties, recipe):  # the real builder, remembering each rank
        trained_ranks.append(recipe.lora.rank)
        return real(base, parties, recipe)

    monkeypatch.setattr(federated_local, "make_parties", recording)
    comparison, results = demo_run._run_offices(
        options, loaded, datasets, make_test_set(data), keeper
    )
    rank8 = real(loaded, {DOMAINS[0].value: datasets[DOMAINS[0].value]}, options.alone_recipe())
    assert 8 * comparison.run.layout.size == rank8[0].layout.size  # FFA: B is out x rank
    assert trained_ranks == [CaptionerRecipe().lora.rank] * len(DOMAINS)
    assert [len(r.survivors) for r in results] == [6]
    assert results[0].privacy is not None and results[0].privacy.epsilon <= 8.0
    moved = comparison.run.global_vector - keeper.global_vector
    assert np.allclose(moved, 0.5 * results[0].weighted_mean)
