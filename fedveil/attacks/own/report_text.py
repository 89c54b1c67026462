"""report.md and report.html of `fedveil attack`: the same content as report.json for
people (Markdown for a CI job page, one offline HTML file to archive or mail).

Per view: what each attack recovered (or why it does not apply), then the given records
ranked by how much of each was recovered, with the data-free baseline on the same line
as the threshold, so a team sees which of its records are most exposed.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fedveil.attacks.audit.html import STYLE
from fedveil.attacks.own.per_record import RECOVERED_F1, RecordScore, baseline_summary
from fedveil.attacks.own.report import THREAT_MODEL, AttackReport
from fedveil.attacks.own.run import AttackOutcome, ViewResult


def _outcome_text(o: AttackOutcome) -> str:
    if not o.applies:
        return f"not applicable: {o.reason}"
    if o.saturated:
        return f"saturated: {o.reason}"
    if not o.sequences:
        return "nothing recovered"
    return " / ".join(o.sequences)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _records(view: ViewResult, top: int | None) -> list[RecordScore]:
    return list(view.records[:top] if top else view.records)


def _floor(view: ViewResult) -> str:
    base = baseline_summary(view.baseline)
    if not base.get("count"):
        return "no baseline"
    return (
        f"baseline: {int(base['count'])} records the delta never saw score mean "
        f"{base['mean']:.2f}, max {base['max']:.2f}"
    )


def render_markdown(report: AttackReport) -> str:
    verdict = (
        "no given record recovered"
        if report.passed
        else f"**{len(report.recovered_records)} record(s) recovered**"
    )
    lines = [
        "## fedveil attack",
        "",
        f"Model {report.model.get('dir')} ({report.model.get('kind')}), adapter "
        f"{report.adapter.get('variant')} rank {report.adapter.get('rank')}, delta "
        f"{report.delta.get('file')}: {verdict}.",
    ]
    for view in report.views:
        lines += ["", f"### {_md(view.label)}", "", "| attack | recovered |", "|---|---|"]
        lines += [f"| {o.attack} | {_md(_outcome_text(o))} |" for o in view.outcomes]
        records = _records(view, report.top)
        if records:
            lines += [
                "",
                f"Records ranked (recovered: F1 >= {RECOVERED_F1} and above the baseline; "
                f"{_floor(view)}):",
                "",
                "| rank | record | score | attack | recovered |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {r.rank} | {_md(r.record.text)} | {r.score:.2f} | {r.best_attack or '-'} "
                f"| {'yes' if r.recovered else 'no'} |"
                for r in records
            ]
    return "\n".join(lines) + "\n"


def render_html(report: AttackReport) -> str:
    banner = (
        "<div class='banner ok'>No given record was recovered.</div>"
        if report.passed
        else "<div class='banner bad'>Recovered:<br>"
        + "<br>".join(escape(line) for line in report.recovered_records)
        + "</div>"
    )
    views = "".join(_view_html(v, report.top) for v in report.views)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fedveil attack</title>
<style>{STYLE}</style></head><body>
<section id="summary"><h1>fedveil attack</h1>{banner}
<p>Model <b>{escape(str(report.model.get("dir")))}</b> ({escape(str(report.model.get("kind")))}),
adapter {escape(str(report.adapter.get("variant")))} rank {report.adapter.get("rank")}
({escape(str(report.adapter.get("origin")))}), delta
<b>{escape(str(report.delta.get("file")))}</b>, created {escape(report.created)},
{report.seconds} s.</p>
<p class="muted">Threat model: {escape(THREAT_MODEL)}.</p></section>
<section id="views">{views}</section>
</body></html>
"""


def _view_html(view: ViewResult, top: int | None) -> str:
    attacks = "".join(
        f"<tr><td>{escape(o.attack)}</td><td>{escape(_outcome_text(o))}</td></tr>"
        for o in view.outcomes
    )
    rows = "".join(
        f"<tr><td>{r.rank}</td><td>{escape(r.record.text)}</td><td>{r.score:.2f}</td>"
        f"<td>{escape(r.best_attack or '-')}</td>"
        + "".join(
            f"<td>{m.recall:.2f} / {m.precision:.2f} / {m.f1:.2f}</td>" for m in r.matches.values()
        )
        + f"<td>{'yes' if r.recovered else 'no'}</td></tr>"
        for r in _records(view, top)
    )
    names = [o.attack for o in view.outcomes if o.recovered is not None]
    head = "".join(f"<th>{escape(n)} recall / precision / F1</th>" for n in names)
    table = (
        f"<p class='muted'>A record is recovered when its best F1 is at least {RECOVERED_F1} and "
        f"above every reference record's; {escape(_floor(view))}.</p><table class='records'>"
        f"<tr><th>rank</th><th>record</th><th>score</th><th>best attack</th>{head}"
        f"<th>recovered</th></tr>{rows}</table>"
        if rows
        else "<p class='muted'>No --records given.</p>"
    )
    return (
        f"<h2>{escape(view.label)}</h2><table><tr><th>attack</th><th>recovered</th></tr>"
        f"{attacks}</table>{table}"
    )


def write_text_reports(report: AttackReport, out_dir: Path) -> tuple[Path, Path]:
    md, html = out_dir / "report.md", out_dir / "report.html"
    md.write_text(render_markdown(report))
    html.write_text(render_html(report))
    return md, html
