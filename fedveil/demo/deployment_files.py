"""The files the deployment demo writes besides what the `fedveil` commands write: each
party's party.toml and, when the server is not given the plan itself, the server's
settings taken from the plan.

Why each party's recipe is written out in full: a party's local training is its own
choice, and the demo's claim compares the federation with the in-process run of
`CaptionerRecipe`; writing every value (not relying on defaults that may drift) makes
the party files say exactly what was trained. The [lora] table is copied from the
operator's plan (federation.toml), as an organisation would copy it from the plan it
was sent.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

from fedveil.demo.deployment import SERVER_HOST, Deployment
from fedveil.errors import ConfigError
from fedveil.secagg.modes import AggregationMode

TomlValue = str | int | float | bool | Sequence[str]


def _value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, int | float):
        return repr(value)
    return "[" + ", ".join(json.dumps(v) for v in value) + "]"


def toml_text(tables: Mapping[str, Mapping[str, TomlValue | None]]) -> str:
    """Flat tables of strings, numbers, booleans and string lists (None: left out)."""
    lines: list[str] = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_value(v)}" for k, v in values.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def read_plan(path: Path) -> dict[str, object]:
    """The [federation] table of federation.toml (ConfigError when there is none)."""
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    plan = data.get("federation")
    if not isinstance(plan, dict) or not isinstance(plan.get("lora"), dict):
        raise ConfigError(f"{path} has no [federation] plan with a [federation.lora] table")
    return plan


def _plan_lora(plan: Mapping[str, object]) -> dict[str, TomlValue | None]:
    lora = plan["lora"]
    assert isinstance(lora, dict)
    return {k: lora[k] for k in ("rank", "alpha", "target_modules", "variant", "seed")}


def party_toml(
    deployment: Deployment, name: str, port: int, plan: Mapping[str, object], roster_sha256: str
) -> str:
    """party.toml for `name`: its enrolment, the server, its data, the plan's adapter,
    the recipe and the held-out evaluation (paths relative to the work folder)."""
    train, data = deployment.recipe.train, deployment.recipe.data
    allow = () if deployment.mode is AggregationMode.SECAGG else (deployment.mode.value,)
    return toml_text(
        {
            "party": {
                "credentials": str(deployment.keys_dir(name)),
                "roster": str(deployment.roster_copy(name)),
                "roster_sha256": roster_sha256,
                "server": f"{SERVER_HOST}:{port}",
                "model_dir": str(deployment.model_dir),
                "out": str(deployment.out_dir(name)),
                "rounds": deployment.rounds,
                "allow_mode": allow if allow else None,
                "min_cohort": len(deployment.parties),
                "join_timeout_s": deployment.join_timeout_s,
            },
            "data": {
                "city_domain": name,
                "city_samples": data.samples_per_party,
                "city_seed": data.seed,
            },
            "lora": _plan_lora(plan),
            "recipe": {
                "epochs": train.epochs,
                "max_steps": train.max_steps,
                "batch_size": train.batch_size,
                "learning_rate": train.learning_rate,
                "weight_decay": train.weight_decay,
                "max_grad_norm": train.max_grad_norm,
                "schedule": train.schedule,
                "seed": train.seed,
                "threads": train.threads,
            },
            "eval": {"city_test_samples": deployment.test_samples},
        }
    )
