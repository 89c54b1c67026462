"""federation.toml as `fedveil plan` writes it: the [federation] plan and a [round] table.

Why written by hand: the file holds strings, ints, floats and lists of strings only, and
the standard library reads TOML but does not write it; a dozen lines here spare the
server a dependency. `fedveil server --config federation.toml` reads it back
(server.federation_settings), and the operator may add [round] and [server] keys.
"""

from __future__ import annotations

import json

from fedveil.secagg.modes import AggregationMode
from fedveil.secagg.protocol.plan import FederationPlan

Value = str | int | float | tuple[str, ...]


def _value(value: Value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, bool):
        raise TypeError("no booleans in a plan")
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _table(name: str, values: dict[str, Value]) -> list[str]:
    return [f"[{name}]", *(f"{key} = {_value(value)}" for key, value in values.items()), ""]


def render_plan(plan: FederationPlan, mode: AggregationMode) -> str:
    """The TOML text of federation.toml for `plan`, aggregated in `mode`."""
    lora = plan.lora
    lines = [
        "# Written by `fedveil plan`. The [federation] plan is what every party must hold:",
        "# edit it only by running `fedveil plan` again. Add [round] keys (e.g.",
        "# stage_timeout_s, min_cohort, dp) and a [server] table as you need.",
        "",
        *_table(
            "federation",
            {
                "name": plan.name,
                "base_model": plan.base_model,
                "base_model_hash": plan.base_model_hash.hex(),
                "rounds": plan.rounds,
                "dimension": plan.dimension,
                "layout_sha256": plan.layout_sha256.hex(),
            },
        ),
        *_table(
            "federation.lora",
            {
                "rank": lora.rank,
                "alpha": lora.alpha,
                "target_modules": lora.target_modules,
                "variant": lora.variant,
                "seed": lora.seed,
            },
        ),
        *_table("round", {"mode": mode.value}),
    ]
    return "\n".join(lines)
