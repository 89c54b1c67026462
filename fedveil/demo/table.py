"""The demo's table: per-domain concept recall, mean recall and BLEU of each model.

Why its own module: the command prints it without the training stack having to know
how it is laid out, and its tests build a report by hand without running the demo.
"""

from __future__ import annotations

from fedveil.demo.report import DemoReport
from fedveil.learner.data.concepts import DOMAINS
from fedveil.learner.evaluation.report import EvaluationReport
from fedveil.secagg.modes import DPKind


def format_table(report: DemoReport) -> str:
    """The base model, each party alone and the federation, and the federation's margin."""
    domains = [d.value for d in DOMAINS]
    privacy = report.privacy
    plain = " (no DP)" if privacy is not None and privacy.kind is DPKind.SAMPLE else ""
    rows: list[tuple[str, EvaluationReport]] = [("base model", report.base)]
    rows += [(f"{row.name} alone{plain}", row.alone) for row in report.parties]
    dp = f", {privacy.kind.value} DP eps={privacy.epsilon:.2f}" if privacy is not None else ""
    rows.append((f"federated ({report.mode.value}{dp})", report.federated))
    header = f"{'model':<40}" + "".join(f"{d:>13}" for d in domains) + f"{'mean':>8}{'BLEU':>8}"
    lines = [
        "concept recall on the full-caption test set",
        header,
        "-" * len(header),
    ]
    for label, r in rows:
        recalls = "".join(f"{r.recall_by_domain.get(d, 0.0):>13.3f}" for d in domains)
        lines.append(f"{label:<40}{recalls}{r.mean_recall:>8.3f}{r.bleu:>8.1f}")
    margin = report.federated.mean_recall - report.best_local_mean_recall
    timing = report.timing
    lines.append(
        f"federated - best single party: {margin:+.3f} "
        f"mean recall; {report.rounds} rounds; {timing.seconds:.0f} s in all "
        f"(base model {timing.base_model_seconds:.0f} s)"
    )
    buffered = report.buffered
    if buffered is not None:
        slow = (
            f"; {buffered.slow_party} {buffered.slowdown:g}x slower" if buffered.slow_party else ""
        )
        per_party = ", ".join(f"{n} {c}" for n, c in buffered.contributions.items())
        lines.append(
            f"buffered rounds of K = {buffered.buffer_size}{slow}: {buffered.simulated_time:g} "
            f"simulated units (a fast party's local run), updates per party: {per_party}; "
            f"staleness {buffered.staleness}, at most {buffered.max_staleness} rounds"
        )
    facts = report.deployment
    if facts is not None:
        lines.append(
            f"deployment on loopback in {facts.workdir}: {facts.processes} processes; "
            f"setup {facts.setup_seconds:.0f} s, federated {facts.federated_seconds:.0f} s, "
            f"alone {facts.alone_seconds:.0f} s; the parties' own scores of the federated "
            f"adapter differ by at most {facts.party_max_difference:.2g}"
        )
    return "\n".join(lines)
