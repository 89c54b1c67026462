"""`fedveil demo --in-process` with per-party LoRA ranks and a text-only party (issue 20).

Why these checks: a bad rank list or party name must stop the run with one line before
the base model is built, and the recipe must put the global adapter at the largest rank
with the same alpha / rank scaling as the uniform recipe (learner.lora.hetero_party).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedveil.demo.choices import parse_rank_list
from fedveil.demo.options import DemoOptions
from fedveil.errors import ConfigError
from fedveil.learner.federated_local import CaptionerRecipe
from fedveil.secagg.modes import DPKind


def test_ranks_put_the_global_adapter_at_the_largest_with_the_default_scaling() -> None:
    options = DemoOptions(ranks=(4, 8, 16), text_only_party=("urban",))
    recipe = options.recipe()
    hetero = recipe.hetero
    assert hetero is not None and hetero.max_rank == 16
    assert {n: hetero.rank_of(n) for n in ("energy", "residential", "urban")} == {
        "energy": 4,
        "residential": 8,
        "urban": 16,
    }
    assert hetero.text_only == {"urban"}
    assert hetero.weighting == "tower" and hetero.hold_global  # what was measured best
    assert recipe.lora.rank == 16 and recipe.lora.scaling == CaptionerRecipe().lora.scaling


def test_without_the_flags_the_recipe_is_the_uniform_one() -> None:
    assert DemoOptions().recipe().hetero is None
    only_text = DemoOptions(text_only_party=("urban",)).recipe()
    assert only_text.hetero is not None and only_text.lora.rank == CaptionerRecipe().lora.rank


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"ranks": (4, 8)}, "one rank per party"),
        ({"ranks": (0, 8, 16)}, "rank must be an int >= 1"),
        ({"text_only_party": ("harbour",)}, "no party named harbour"),
        ({"parties": 2, "text_only_party": ("urban",)}, "no party named urban"),
        ({"text_only_party": ("energy", "residential", "urban")}, "every party is text-only"),
        ({"ranks": (4, 8, 16), "dp": DPKind.CLIENT}, "without --dp"),
        ({"text_only_party": ("urban",), "dp": DPKind.SAMPLE}, "without --dp"),
        ({"ranks": (4, 8, 16), "clients_per_party": 2}, "one client per party"),
    ],
)
def test_impossible_combinations_are_refused_in_one_line(kwargs: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        DemoOptions(**kwargs)
    assert "\n" not in str(caught.value)


def test_the_rank_list_parses_and_refuses_in_one_line() -> None:
    assert parse_rank_list("4, 8,16") == (4, 8, 16)
    for bad, says in (("4,x", "comma-separated ints"), ("4,-1", ">= 1"), ("", "comma")):
        with pytest.raises(ConfigError, match=says):
            parse_rank_list(bad)


@pytest.mark.slow
def test_the_demo_runs_with_mixed_ranks_and_a_text_only_party(tmp_path: Path) -> None:
    """Two rounds over the gRPC service: every round carries the extended vector."""
    from fedveil.demo.run import run_demo

    report = run_demo(
        DemoOptions(
            rounds=2,
            ranks=(2, 4, 4),
            text_only_party=("urban",),
            progress=False,
            adapter_dir=tmp_path / "adapter",
            json_out=tmp_path / "report.json",
        )
    )
    assert [len(r.survivors) for r in report.service_rounds] == [3, 3]
    assert report.hetero is not None and report.hetero.ranks["energy"] == 2
    assert report.hetero.text_only == ("urban",)
    assert '"text_only": [\n    "urban"\n  ]' in (tmp_path / "report.json").read_text()
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
