"""What `fedveil server` checks before it binds a port or writes a file.

Why: the coordinator refuses a round the roster cannot run (a threshold above the
cohort, a ring width out of range, a CKKS key holder that is not enrolled) only once
the state folder and the journal exist, and a missing roster surfaced as a traceback.
Here the same objects are built offline, from the settings and the roster alone, so a
bad configuration is one ConfigError line (exit 2) and nothing was bound or written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fedveil.errors import ConfigError, FedveilError
from fedveil.secagg.ckks.config import CkksRoundConfig
from fedveil.secagg.modes import AggregationMode, DPKind, parse_mode
from fedveil.server.dp_policy import dp_config, round_dp
from fedveil.server.keys_store import load_roster, load_server_credentials
from fedveil.server.round_modes import SecAggRounds, round_shape
from fedveil.server.settings import RoundSettings, ServerSettings


def check_startup(settings: ServerSettings) -> None:
    """ConfigError (one line, naming what to fix) for anything that would stop the server
    after it bound its port or created its state; reads files, writes none."""
    if settings.keys_dir is None:
        raise ConfigError(
            "--insecure still needs the federation's roster: give --keys-dir (the server's "
            "folder with roster.json); without TLS it is the only list of who may take part"
        )
    keys_dir = Path(settings.keys_dir)
    if not keys_dir.is_dir():
        raise ConfigError(
            f"keys_dir {keys_dir} is not a directory: give the server's folder (roster.json, "
            "server.pem, server.key, ca.pem)"
        )
    state_dir = Path(settings.state_dir)
    if state_dir.exists() and not state_dir.is_dir():
        raise ConfigError(f"state_dir {state_dir} exists and is not a directory")
    roster = load_roster(keys_dir)
    if not settings.insecure:
        load_server_credentials(keys_dir)
    ids = tuple(sorted(roster.identities()))
    try:
        check_round(settings.round, ids)
    except ConfigError:
        raise
    except FedveilError as exc:
        raise ConfigError(str(exc)) from exc


def check_round(settings: RoundSettings, ids: tuple[str, ...]) -> None:
    """Build round 1 as the coordinator would (without calibrating DP noise): the config
    objects refuse what the roster of `ids` cannot run."""
    n = len(ids)
    if n < settings.min_cohort:
        raise ConfigError(
            f"round.min_cohort {settings.min_cohort} is above the roster's {n} clients: "
            "enrol more clients or lower min_cohort"
        )
    mode = parse_mode(settings.mode, "round.mode")
    if mode is AggregationMode.PLAINTEXT:
        return  # the unprotected baseline: nothing more is built from the roster
    model_hash = settings.model_hash or hashlib.sha256(b"").digest()
    try:
        if mode is AggregationMode.CKKS:
            if settings.ckks_key_holder is not None and settings.ckks_key_holder not in ids:
                raise ConfigError(
                    f"round.ckks_key_holder {settings.ckks_key_holder!r} is not on the roster; "
                    f"pick one of {list(ids)} (default: the first)"
                )
            CkksRoundConfig(
                round_id=1,
                roster=ids,
                dimension=settings.dimension,
                preset_name=settings.ckks_preset,
                key_epoch=0,
                key_holder=settings.ckks_key_holder or ids[0],
                max_weight=settings.max_weight,
                value_bound=settings.clip,
                min_cohort=settings.min_cohort,
                model_hash=model_hash,
                key_fingerprint=b"",
            )
            return
        dp = None
        if settings.dp != DPKind.NONE:
            _, t = round_shape(settings, n)
            # the coordinator calibrates a target epsilon; any z checks the rest
            z = settings.dp_noise_multiplier or 1.0
            dp = round_dp(settings, dp_config(settings, cohort=n, threshold=t, noise_multiplier=z))
        SecAggRounds(settings, dp).config(1, ids, model_hash)
    except ConfigError as exc:
        raise ConfigError(f"the round does not fit the roster of {n} clients: {exc}") from exc
