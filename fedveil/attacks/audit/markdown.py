"""`fedveil audit --summary FILE`: the audit as Markdown for a CI job summary.

Why Markdown: CI (GitHub's $GITHUB_STEP_SUMMARY, GitLab and others) renders it on the
job's page, so a reviewer sees the matrix and the breaches without downloading
report.html. Layout: the verdict, the matrix (protections as rows, attack families as
columns, each cell its verdict or status and headline metric), the BREACH lines, then
the cells that could not be judged with why. Cells are read through outcome.cell_outcome.
"""

from __future__ import annotations

from pathlib import Path

from fedveil.attacks.audit.evaluate import Cell
from fedveil.attacks.audit.outcome import cell_outcome
from fedveil.attacks.audit.output_cells import exposure_of
from fedveil.attacks.audit.report import AuditReport
from fedveil.attacks.measure.records import finite_json


def summary_markdown(report: AuditReport) -> str:
    outcomes = [(cell, cell_outcome(cell)) for cell in report.cells]
    failed = report.breaches or any(o.kind == "error" for _, o in outcomes)
    verdict = "**failed**: a claimed protection breached" if failed else "passed"
    lines = [
        "## fedveil audit",
        "",
        f"Profile {report.profile}, fedveil {report.fedveil_version}, "
        f"{report.seconds:.0f} s: {verdict}. Bold cells are claimed protected; "
        "the others are reported, never gate.",
        f"Intervals and bounds at a family-wise {report.settings.confidence:.0%} "
        f"({_escape(report.settings.multiplicity)}).",
        "",
        *_table(report),
    ]
    if report.active:
        lines += ["", "### Active adversaries", "", "| row | expected | observed | detail |"]
        lines += ["|---|---|---|---|"]
        lines += [
            f"| {r.name} | {r.expected} | {r.observed} | {_escape(r.detail)} |"
            for r in report.active
        ]
    if report.breaches:
        lines += ["", "### Breaches", "", "```", *report.breaches, "```"]
    lines += _exposed(report)
    unjudged = [(c, o) for c, o in outcomes if o.kind in ("skip", "error")]
    if unjudged:
        lines += ["", "### Not judged", ""]
        lines += [f"- {c.name}: {o.label}: {_escape(o.message)}" for c, o in unjudged]
    return "\n".join(lines) + "\n"


def _exposed(report: AuditReport) -> list[str]:
    """Per membership / extraction cell, its top-N records, most exposed first."""
    lines: list[str] = []
    for cell in report.cells:
        exposure = exposure_of(cell)
        if exposure is None:
            continue
        if not lines:
            lines += ["", "### Most exposed records"]
        lines += [
            "",
            f"{cell.name}, ranked by {_escape(exposure.ranked_by)} "
            f"(top {min(report.top_records, len(exposure.records))} of {len(exposure.records)}):",
            "",
            "| rank | record | member | score | extracted | above non-members |",
            "|---|---|---|---|---|---|",
        ]
        for r in exposure.records[: report.top_records]:
            score = r.get("score")
            shown = _number(score) if isinstance(score, int | float) else "-"
            above = r.get("above_non_members")
            share = f"{float(above):.0%}" if isinstance(above, int | float) else "-"
            lines.append(
                f"| {r['rank']} | {_escape(str(r['text']))} | {'yes' if r['member'] else 'no'} "
                f"| {shown} | {'yes' if r['extracted'] else 'no'} | {share} |"
            )
    return lines


def _table(report: AuditReport) -> list[str]:
    protections = list(dict.fromkeys(c.protection for c in report.cells))
    attacks = list(dict.fromkeys(c.attack for c in report.cells))
    by_key = {(c.protection, c.attack): c for c in report.cells}
    rows = [
        "| protection | " + " | ".join(a.value for a in attacks) + " |",
        "|---|" + "---|" * len(attacks),
    ]
    for protection in protections:
        cells = [by_key.get((protection, a)) for a in attacks]
        rows.append(f"| {protection.value} | " + " | ".join(_cell(c) for c in cells) + " |")
    return rows


def _cell(cell: Cell | None) -> str:
    if cell is None:
        return ""
    label = cell_outcome(cell).label
    word = f"**{label}**" if cell.claimed else label
    if not cell.metrics:
        return word
    metric, value = next(iter(cell.metrics.items()))  # the first metric is the headline
    return f"{word} {_escape(metric)} {_number(value)}"


def _number(value: float) -> str:
    written = finite_json(round(float(value), 6))
    return f"{written:.3g}" if isinstance(written, float) else str(written)


def _escape(text: str) -> str:
    """One table-safe line: pipes escaped, newlines folded."""
    return text.replace("|", "\\|").replace("\n", "; ")


def write_summary(report: AuditReport, path: Path, *, append: bool = False) -> None:
    """Write (or append, as $GITHUB_STEP_SUMMARY expects) the summary to `path`."""
    with path.open("a" if append else "w", encoding="utf-8") as f:
        f.write(summary_markdown(report))
