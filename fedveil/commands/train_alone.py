"""`fedveil train --alone`: the same party, the same rounds, no federation.

Why a baseline a party runs itself: an organisation deciding whether to join wants to
know what it gains, and the honest comparison is its own data with the same model, the
same adapter, the same recipe and the same number of rounds, only without the other
parties. So this loop builds the party exactly as `fedveil train` does
(commands.train_party) and runs each round through the in-process driver with a cohort of
one (learner.federated_local.run_round with the plaintext weighted mean), which is how
`fedveil demo --in-process` trains its "alone" rows: same round indices (0-based, so the
same per-round data order and seeds), same optimiser reset each round.

Unlike a federated party, an alone run cannot adopt the adapter or the rounds from the
plan the server serves: its party.toml must give [lora] and [party] rounds.

Nothing here touches the network or the credentials' keys: the party's name (only a
label in the log and the metrics) is the client id of [party] credentials when that
folder holds an enrolment, else the name of the out folder.

With [eval], the adapter is scored before round 1 ("round": 0, the base model) and after
every round, one line each in OUT/metrics.jsonl marked "alone": true. The file is
started afresh: an alone run does not resume (it is minutes, and a stale line from
another run would be read as this one's). At the end OUT/adapter holds the adapter in
peft's format.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fedveil.commands.party_settings import PartySettings
from fedveil.commands.train_party import build_heldout, build_party, load_heldout_texts
from fedveil.commands.train_rounds import ADAPTER_DIR  # the same place in OUT
from fedveil.errors import ConfigError, FedveilError
from fedveil.learner.federated_local import run_round
from fedveil.learner.federation.heldout import METRICS_FILE, HeldOut, append_metrics
from fedveil.learner.lora.aggregation import weighted_mean
from fedveil.learner.training.party import Party

logger = logging.getLogger("fedveil.train")


@dataclass(eq=False)
class AloneRun:
    """One prepared local-only party."""

    settings: PartySettings
    name: str
    party: Party
    heldout: HeldOut | None
    rounds: int

    @property
    def metrics_path(self) -> Path:
        return self.settings.party.out / METRICS_FILE


def party_name(settings: PartySettings) -> str:
    """The enrolled client id when [party] credentials holds an enrolment, else the out
    folder's name (a party may run alone before it ever asks to join)."""
    folder = settings.party.credentials
    if folder.is_dir():
        from fedveil.clients.credentials import ClientCredentials

        try:
            return ClientCredentials.load(folder).client_id
        except (FedveilError, OSError):
            pass  # not enrolled yet: only the label changes
    return settings.party.out.resolve().name


def _check_local_settings(settings: PartySettings) -> int:
    """What a federated party may adopt from the served plan, an alone run must be given."""
    missing = [
        what
        for what, given in (
            ("[lora] (the plan's [federation.lora] values)", settings.lora is not None),
            ("[party] rounds (or --rounds)", settings.party.rounds is not None),
        )
        if not given
    ]
    if settings.dp is not None:
        raise ConfigError(
            "--alone trains the non-private baseline a party compares the federation with; "
            "leave out [dp] for it (a private run alone is not implemented)"
        )
    if missing:
        raise ConfigError(
            f"--alone trains without the service, so it cannot adopt the served plan: give "
            f"{' and '.join(missing)}"
        )
    assert settings.party.rounds is not None
    return settings.party.rounds


def prepare_alone(settings: PartySettings) -> AloneRun:
    """Model + LoRA + data (+ held-out data), as `fedveil train` builds them."""
    rounds = _check_local_settings(settings)
    name = party_name(settings)
    heldout_texts = load_heldout_texts(settings)  # a malformed line: before the model
    party = build_party(name, settings)
    heldout = build_heldout(settings, party, heldout_texts)
    logger.info(
        "%s alone: %s from %s, %d examples, adapter of %d values (%s), no service",
        name,
        party.loaded.kind.value,
        party.loaded.path,
        party.weight,
        party.layout.size,
        party.layout.variant.value,
    )
    return AloneRun(settings, name, party, heldout, rounds)


def _evaluate(run: AloneRun, number: int, tag: str) -> None:
    if run.heldout is None:
        return
    result = run.heldout.evaluate(run.party)
    logger.info("%s: %s", tag, result.summary())
    record = {"round": number, "alone": True, "client_id": run.name, **result.as_dict()}
    append_metrics(run.metrics_path, record)


def run_alone(run: AloneRun) -> Path:
    """Round 0's score, then `rounds` local rounds (each scored); returns the adapter's
    folder."""
    total = run.rounds
    run.metrics_path.unlink(missing_ok=True)  # a fresh run (see the module docstring)
    _evaluate(run, 0, f"{run.name} alone round 0/{total}")
    for number in range(1, total + 1):
        tag = f"{run.name} alone round {number}/{total}"
        # index number - 1: run_federated's rounds are 0-based, and the index seeds the round
        record = run_round([run.party], number - 1, weighted_mean)
        logger.info(
            "%s: trained on %d examples, mean loss %.4f (%.1fs)",
            tag,
            run.party.weight,
            record.losses[run.party.name],
            record.seconds,
        )
        _evaluate(run, number, tag)
    target = run.party.save_adapter(run.settings.party.out / ADAPTER_DIR)
    logger.info("%s alone: adapter after %d rounds saved to %s", run.name, total, target)
    return target
