"""The round loop of `fedveil train`: train, check, send, apply, checkpoint; then save.

Why the adapter is loaded into the model before each round: the party trains from the
round-start (global) adapter, and SecureRound takes the delta against that same snapshot,
so the update is what the in-process federation would send. After the aggregate is
applied, every party holds the identical global adapter, and the checkpoint keeps it with
the client's model chain, so a re-run derives the next round's model hash and resumes.
With an [eval] table, that global adapter is scored on the party's held-out data after
each round (learner.federation.heldout): one log line, the checkpoint's metadata, and one
line of OUT/metrics.jsonl.

One log line per stage (`org-00 round 1/2: trained ...`); a progress bar while training
only when stderr is a terminal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.errors import TransportError
from fedveil.clients.privacy_ledger import PersistentPrivacyLedger
from fedveil.clients.transport import AggregationClient
from fedveil.commands.party_client import (
    build_client,
    fetch_served_plan,
    load_credentials,
    open_ledger,
)
from fedveil.commands.party_settings import PartySettings
from fedveil.commands.train_party import (
    build_heldout,
    build_party,
    load_heldout_texts,
    lora_settings,
    sample_dp_config,
    settings_fingerprint,
    stored_lora,
)
from fedveil.errors import ConfigError, PrivacyBudgetExceededError, PrivacyPolicyError
from fedveil.learner.federation.checkpoint import (
    CHECKPOINT_FILE,
    PartyCheckpoint,
    read_checkpoint,
    read_fingerprint,
    write_checkpoint,
)
from fedveil.learner.federation.heldout import METRICS_FILE, HeldOut, append_metrics
from fedveil.learner.federation.plan_local import local_plan
from fedveil.learner.federation.rejoin import catch_up_adapter_sync
from fedveil.learner.federation.secure_round import SecureRound
from fedveil.learner.lora.codec import load_adapter_vector
from fedveil.learner.lora.config import LoraSettings
from fedveil.learner.training.party import Party
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto.convert import spec_to_config
from fedveil.secagg.protocol.client import check_round_dp
from fedveil.secagg.protocol.model_chain import ModelChain
from fedveil.secagg.protocol.plan import FederationPlan, plan_mismatches

logger = logging.getLogger("fedveil.train")

ADAPTER_DIR = "adapter"


@dataclass(eq=False)
class PartyRun:
    """One prepared party: model, client and the round it resumes after."""

    settings: PartySettings
    party: Party
    client: AggregationClient
    secure_round: SecureRound
    fingerprint: dict[str, object]
    rounds_done: int
    rounds: int
    """Rounds in all: party.rounds, else the served plan's."""
    heldout: HeldOut | None = None
    ledger: PersistentPrivacyLedger | None = None
    """The [dp] privacy ledger: DP-SGD's (kind "sample") or the client's ("client")."""

    @property
    def checkpoint_path(self) -> Path:
        return self.settings.party.out / CHECKPOINT_FILE

    @property
    def metrics_path(self) -> Path:
        return self.settings.party.out / METRICS_FILE

    def close(self) -> None:
        self.client.close()
        _close_ledger(self.ledger)


def _check_same_settings(path: Path, stored: dict[str, object], now: dict[str, object]) -> None:
    differ = sorted(key for key in now.keys() | stored.keys() if stored.get(key) != now.get(key))
    if differ:
        raise ConfigError(
            f"the checkpoint {path} was written with other settings ({', '.join(differ)} "
            "differ); resume with the settings it was started with, or use another party.out"
        )


def prepare(settings: PartySettings) -> PartyRun:
    """Everything before the first round: credentials, the privacy ledger ([dp]), the
    served plan, model + LoRA, data, the checkpoint (if any, for these settings), the
    client. ConfigError names anything to fix, e.g. each field where this party's model or
    adapter is not the plan's, or a ledger of another federation.

    What can be refused locally is refused before the service is asked for its plan: a
    malformed data line, a ledger that cannot be used, a checkpoint of other settings."""
    credentials = load_credentials(settings.party)
    heldout_texts = load_heldout_texts(settings)  # a malformed line: before the model
    ledger = open_ledger(settings.party, settings.dp, credentials)
    try:
        return _prepare(settings, credentials, heldout_texts, ledger)
    except BaseException:
        _close_ledger(ledger)
        raise


def _prepare(
    settings: PartySettings,
    credentials: ClientCredentials,
    heldout_texts: list[str] | None,
    ledger: PersistentPrivacyLedger | None,
) -> PartyRun:
    path = settings.party.out / CHECKPOINT_FILE
    stored = read_fingerprint(path)
    lora, served = _adapter(settings, credentials, stored)
    if served is None and _sample_dp(settings) and settings.party.rounds is None:
        served = fetch_served_plan(settings.party, credentials)  # DP-SGD calibrates for its rounds
    dp = sample_dp_config(settings, _rounds(settings, served)) if _sample_dp(settings) else None
    party = build_party(
        credentials.client_id, settings, lora, dp, ledger if dp is not None else None
    )
    _start_dp_sgd(credentials.client_id, party)
    if stored is not None:
        local = settings_fingerprint(settings, party, credentials.client_id, lora)
        _check_same_settings(path, {**stored, "plan": None}, local)
    if served is None:
        served = fetch_served_plan(settings.party, credentials)
    plan = None if served is None else _own_plan(party, lora, served)
    rounds = _rounds(settings, plan)
    heldout = build_heldout(settings, party, heldout_texts)
    fingerprint = settings_fingerprint(settings, party, credentials.client_id, lora, plan)
    root = party.base_hash if plan is None else plan.digest()
    chain, rounds_done = _resume(
        credentials.client_id, party, path, fingerprint, ModelChain(root), ledger
    )
    client_budget = ledger if dp is None else None  # [dp] kind = "client"
    client = build_client(settings.party, credentials, chain, client_budget)
    try:
        secure_round = SecureRound(party.model, client, party.layout, plan=plan)
    except BaseException:
        client.close()
        raise
    logger.info(
        "%s: %s from %s, %d examples, adapter of %d values (%s), base model %s...%s",
        credentials.client_id,
        party.loaded.kind.value,
        party.loaded.path,
        party.weight,
        party.layout.size,
        party.layout.variant.value,
        party.base_hash.hex()[:16],
        "" if plan is None else f", federation {plan.name!r} plan matches",
    )
    return PartyRun(
        settings, party, client, secure_round, fingerprint, rounds_done, rounds, heldout, ledger
    )


def _start_dp_sgd(client_id: str, party: Party) -> None:
    """Build DP-SGD now (Opacus, the noise calibration: seconds), so that a party does not
    join its first round late, past the other parties' stage deadlines."""
    trainer = party.dp_trainer
    if trainer is None:
        return
    logger.info(
        "%s: DP-SGD: noise multiplier %.4g (%s), clip norm %g, %d step(s) per round at "
        "sample rate %.3g",
        client_id,
        trainer.noise_multiplier,
        "given"
        if trainer.dp.noise_multiplier is not None
        else f"calibrated for {trainer.dp.rounds} rounds",
        trainer.dp.clip_norm,
        trainer.steps_per_round,
        trainer.sample_rate,
    )


def _sample_dp(settings: PartySettings) -> bool:
    return settings.dp is not None and settings.dp.kind == "sample"


def _adapter(
    settings: PartySettings, credentials: ClientCredentials, stored: dict[str, object] | None
) -> tuple[LoraSettings, FederationPlan | None]:
    """The adapter to build: [lora], else the one the checkpoint's run adopted, else the
    served plan's (which is then returned too, so it is fetched once)."""
    if settings.lora is not None:
        return lora_settings(settings), None
    if stored is not None:
        return stored_lora(stored), None  # the adapter adopted when the run started
    served = fetch_served_plan(settings.party, credentials)
    return lora_settings(settings, served), served


def _resume(
    client_id: str,
    party: Party,
    path: Path,
    fingerprint: dict[str, object],
    chain: ModelChain,
    ledger: PersistentPrivacyLedger | None,
) -> tuple[ModelChain, int]:
    """The model chain and rounds done: `chain` and 0 without a checkpoint; else the
    checkpoint's, its adapter loaded into the party (same settings, same ledger spend)."""
    checkpoint = read_checkpoint(path, party.layout)
    if checkpoint is None:
        return chain, 0
    _check_same_settings(path, checkpoint.fingerprint, fingerprint)
    _check_ledger_kept(path, checkpoint, ledger)
    party.global_vector = checkpoint.adapter.copy()
    load_adapter_vector(party.model, party.layout, party.global_vector)
    logger.info(
        "%s: resuming from %s after round %d (service round %s)",
        client_id,
        path,
        checkpoint.rounds_done,
        checkpoint.chain.round_id,
    )
    return checkpoint.chain, checkpoint.rounds_done


def _check_ledger_kept(
    path: Path, checkpoint: PartyCheckpoint, ledger: PersistentPrivacyLedger | None
) -> None:
    """Refuse to resume with a ledger that holds less than the checkpoint recorded: it
    was replaced or started over, and the privacy already spent would be forgotten."""
    privacy = (checkpoint.metrics or {}).get("privacy")
    if ledger is None or not isinstance(privacy, dict):
        return
    recorded = float(privacy["epsilon"])
    if ledger.spent_epsilon < recorded * (1 - 1e-9):
        raise ConfigError(
            f"privacy ledger {ledger.path} holds epsilon {ledger.spent_epsilon:.4g}, but the "
            f"checkpoint {path} recorded {recorded:.4g} spent (ledger {privacy['ledger']}): "
            "the ledger was replaced or started over; restore it, the privacy already spent "
            "is not forgotten"
        )


def _close_ledger(ledger: PersistentPrivacyLedger | None) -> None:
    """Release the ledger file's lock (every charge is already on disk)."""
    if ledger is not None:
        ledger.close()


def _own_plan(party: Party, lora: LoraSettings, served: FederationPlan) -> FederationPlan:
    """The plan of what this party built; refused, field by field, unless it is the
    served one. Its digest roots the party's model chain (secagg.protocol.plan)."""
    mine = local_plan(
        party.model,
        party.layout,
        lora,
        name=served.name,
        base_model=served.base_model,
        rounds=served.rounds,
    )
    differ = plan_mismatches(served, mine)
    if differ:
        raise ConfigError(
            f"federation {served.name!r} needs another model or adapter than this party "
            f"holds: {'; '.join(differ)}. Use the plan's base model (base_model "
            f"{served.base_model!r}) and leave out [lora] to adopt its adapter"
        )
    return mine


def _rounds(settings: PartySettings, plan: FederationPlan | None) -> int:
    if settings.party.rounds is not None:
        return settings.party.rounds
    if plan is not None and plan.rounds > 0:
        return plan.rounds
    raise ConfigError(
        "party.rounds is required: the service serves no federation plan with a number of rounds"
    )


def _announced(run: PartyRun, tag: str) -> pb.RoundInfo | None:
    """The round open for joining, checked against this party's plan and adapter; None
    after catching up on rounds this party missed (their results are then applied,
    checkpointed and evaluated, and the caller starts over from the new global adapter)."""
    info = run.client.wait_for_round(timeout_s=run.settings.party.join_timeout_s)
    caught = catch_up_adapter_sync(run.secure_round, info)
    if caught:
        run.party.global_vector = run.secure_round.start
        run.rounds_done += len(caught)
        tag = f"{run.client.client_id} round {run.rounds_done}/{run.rounds}"
        logger.info(
            "%s: caught up on %d missed round(s) (service rounds %s): their results applied",
            tag,
            len(caught),
            ", ".join(str(r.round_id) for r in caught),
        )
        _save_round(run, run.rounds_done, tag)
        return None
    spec = info.spec
    run.client.model_chain.check(int(spec.round_id), bytes(spec.model_hash))
    logger.info(
        "%s: plan checked: service round %d, dimension %d, model hash %s... matches",
        tag,
        spec.round_id,
        spec.dimension,
        bytes(spec.model_hash).hex()[:16],
    )
    return info


def run_round(run: PartyRun, number: int) -> bool:
    """One round: train from the global adapter, check, send, apply, checkpoint.

    False when the party found it had missed rounds instead (it caught up on them, and
    the local training of this attempt is dropped: it started from a stale adapter)."""
    party, secure_round, total = run.party, run.secure_round, run.rounds
    tag = f"{run.client.client_id} round {number}/{total}"
    _check_sample_budget(run, tag)  # before waiting for the round, before training
    info = _announced(run, tag)
    if info is None:
        return False
    _check_client_dp(run, info.spec, tag)
    load_adapter_vector(party.model, party.layout, party.global_vector)
    secure_round.begin()
    logger.info("%s: training on %d examples", tag, party.weight)
    stats = party.train_round(number - 1).stats  # 0-based, as the in-process federation
    logger.info(
        "%s: trained %d steps, mean loss %.4f (%.1fs)",
        tag,
        stats.steps,
        stats.mean_loss,
        stats.seconds,
    )
    if _announced(run, tag) is None:  # rounds ran without this party while it trained
        return False
    logger.info("%s: sending the adapter delta (weight %d)", tag, party.weight)
    result = secure_round.run_sync(party.weight, join_timeout_s=run.settings.party.join_timeout_s)
    party.global_vector = secure_round.start
    logger.info(
        "%s: aggregate applied: %d survivors, total weight %d, |mean delta| %.4g, error bound %.3g",
        tag,
        len(result.survivors),
        result.total_weight,
        result.delta_norm,
        result.error_bound,
    )
    run.rounds_done = number
    _save_round(run, number, tag)
    return True


def _check_sample_budget(run: PartyRun, tag: str) -> None:
    """[dp] kind = "sample": refuse a round that would overspend before it trains."""
    trainer = run.party.dp_trainer
    if trainer is None:
        return
    try:
        trainer.check_round()
    except PrivacyBudgetExceededError as exc:
        raise PrivacyBudgetExceededError(f"{tag}: {exc}") from None


def _check_client_dp(run: PartyRun, spec: pb.RoundSpec, tag: str) -> None:
    """[dp] kind = "client": refuse, before training, a round the client would refuse at
    upload: the session's own check (secagg.protocol.client.check_round_dp) on the
    announced round's terms. The client applies it again when the round starts."""
    ledger = run.client.privacy_ledger
    if ledger is None:
        return
    if int(spec.mode) != pb.AGGREGATION_MODE_SECAGG:  # only SecAgg rounds carry DP noise
        raise PrivacyPolicyError(
            f"{tag}: service round {spec.round_id} adds no client-level DP noise, but this "
            'party has a privacy budget ([dp] kind = "client"): refusing to send an '
            'un-noised update; ask the operator to run the server with dp = "client"'
        )
    try:
        check_round_dp(spec_to_config(spec), run.settings.party.policy(), ledger)
    except (PrivacyPolicyError, PrivacyBudgetExceededError) as exc:
        raise type(exc)(f"{tag}: {exc}") from None


def _save_round(run: PartyRun, number: int, tag: str) -> None:
    """Evaluate (with [eval]) and checkpoint the global adapter after `number` rounds,
    with the privacy spent so far (with [dp])."""
    metrics = _round_record(run, number, tag)
    checkpoint = PartyCheckpoint(
        number, run.party.global_vector, run.client.model_chain, run.fingerprint, metrics
    )
    write_checkpoint(run.checkpoint_path, run.party.layout, checkpoint)
    logger.info("%s: checkpoint written to %s", tag, run.checkpoint_path)
    if metrics is not None:
        append_metrics(run.metrics_path, metrics)


def _round_record(run: PartyRun, number: int, tag: str) -> dict[str, object] | None:
    """One line of OUT/metrics.jsonl (and the checkpoint's metrics): the held-out figures
    ([eval]) and the privacy spent ([dp]); None with neither."""
    evaluated = _evaluate(run, number, tag)
    privacy = _privacy(run, tag)
    if privacy is None:
        return evaluated
    return {**(evaluated or _record_head(run, number)), "privacy": privacy}


def _record_head(run: PartyRun, number: int) -> dict[str, object]:
    return {
        "round": number,
        "service_round": run.client.model_chain.round_id,
        "client_id": run.client.client_id,
    }


def _evaluate(run: PartyRun, number: int, tag: str) -> dict[str, object] | None:
    """The global adapter on this party's held-out data ([eval]), as one metrics record."""
    if run.heldout is None:
        return None
    result = run.heldout.evaluate(run.party)
    logger.info("%s: %s", tag, result.summary())
    return {**_record_head(run, number), **result.as_dict()}


def _privacy(run: PartyRun, tag: str) -> dict[str, object] | None:
    """The epsilon spent so far, as the ledger file holds it (the source of truth; this
    copy is for the reader of metrics.jsonl and the check on resume)."""
    ledger, dp = run.ledger, run.settings.dp
    if ledger is None or dp is None:
        return None
    spent = ledger.spent_epsilon
    logger.info(
        "%s: privacy spent: epsilon %.4g of budget %g at delta %g (%s DP, %d round(s) "
        "charged, ledger %s)",
        tag,
        spent,
        ledger.budget.epsilon,
        ledger.budget.delta,
        dp.kind,
        ledger.rounds,
        ledger.path,
    )
    return {
        "kind": dp.kind,
        "epsilon": spent,
        "delta": ledger.budget.delta,
        "budget_epsilon": ledger.budget.epsilon,
        "accountant": ledger.method.value,
        "rounds_charged": ledger.rounds,
        "ledger": str(ledger.path),
    }


def _start_metrics(run: PartyRun) -> None:
    """A fresh start: drop OUT/metrics.jsonl lines of a run that left no checkpoint; with
    [eval], score the starting adapter (round 0: the base model, LoRA starts with B = 0)."""
    if run.heldout is None and run.ledger is None:
        return
    run.metrics_path.unlink(missing_ok=True)
    if run.heldout is None:
        return
    metrics = _round_record(run, 0, f"{run.client.client_id} round 0/{run.rounds}")
    assert metrics is not None
    append_metrics(run.metrics_path, metrics)


def run_rounds(run: PartyRun) -> Path:
    """The rounds not yet done, then the adapter in peft's format; returns its folder.

    A fresh start with [eval] first scores the starting adapter (round 0 of
    OUT/metrics.jsonl: the base model, since LoRA starts with B = 0)."""
    total = run.rounds
    if run.rounds_done >= total:
        logger.info(
            "%s: the checkpoint already holds %d of %d rounds",
            run.client.client_id,
            run.rounds_done,
            total,
        )
    elif run.rounds_done == 0:
        _start_metrics(run)
    failures = 0
    while run.rounds_done < total:
        number = run.rounds_done + 1
        try:
            run_round(run, number)
        except TransportError as exc:
            # The round failed (too few parties, a stage deadline, a lost connection): the
            # global adapter and the chain are unchanged, so the next round is tried afresh.
            failures += 1
            if failures > run.settings.party.max_failed_rounds:
                raise
            logger.warning(
                "%s round %d/%d: the round failed (%s); trying the next one (%d of %d "
                "failures allowed)",
                run.client.client_id,
                number,
                total,
                exc,
                failures,
                run.settings.party.max_failed_rounds,
            )
    target = run.party.save_adapter(run.settings.party.out / ADAPTER_DIR)
    logger.info(
        "%s: adapter after %d rounds saved to %s (PeftModel.from_pretrained(base, %s))",
        run.client.client_id,
        run.rounds_done,
        target,
        target,
    )
    return target
