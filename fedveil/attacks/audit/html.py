"""report.html: the audit as a person reads it, in one offline file.

Why self-contained: a security team archives and mails the report; it must open
without a network or the audit directory, so styles are inline, charts are inline SVG
and reconstruction grids are embedded as base64 PNG.

Sections (their ids are what the render test looks for): summary, matrix, epsilon,
filters, roc, records (each membership and extraction cell's most exposed records),
reconstructions, checks.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from html import escape
from pathlib import Path

from fedveil.attacks.audit.evaluate import Cell, Check
from fedveil.attacks.audit.output_cells import exposure_of
from fedveil.attacks.audit.report import AuditReport
from fedveil.attacks.audit.svg import roc_loglog
from fedveil.attacks.families import Family
from fedveil.attacks.measure.records import JSONValue, finite_json

STATUS_COLOURS = {
    "pass": "#c8e6c9",
    "breach": "#ef9a9a",
    "inconclusive": "#fff59d",
    "vacuous": "#d1c4e9",
    "leaks": "#ffe0b2",
    "no leak measured": "#e8f5e9",
    "not run": "#eeeeee",
}

ACTIVE_COLOURS: Mapping[str, str] = {
    "refused": "ok",
    "detected": "ok",
    "held": "ok",
    "inconclusive": "warn",
    "error": "bad",
}
"""An active or observer row's observed value -> its cell's class; "open" stays plain (an
expected-open row reports, a claimed one that is open is a breach and turns red)."""

HEADLINE: Mapping[Family, tuple[str, str]] = {
    Family.INVERSION: ("psnr", "PSNR {v:.1f} dB (grey {b:.1f})"),
    Family.LABELS: ("label_attribution_acc", "who-had-which {v:.2f} (chance {b:.2f})"),
    Family.TEXT: ("token_f1", "F1 {v:.2f} (prior {b:.2f})"),
    Family.LIKELIHOOD: ("auc", "AUC {v:.2f} (0.50)"),
    Family.GENERATION: ("auc", "AUC {v:.2f} (0.50)"),
    Family.EXTRACTION: ("extraction_rate", "extracted {v:.0%}"),
    Family.EXTRACTION_FILTERED: ("extraction_rate_filtered", "extracted {v:.0%}"),
    Family.EPSILON: ("epsilon_lower_bound", "epsilon >= {v:.2f}"),
}

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{margin-bottom:4px} table{border-collapse:collapse;margin:8px 0 18px}
td,th{border:1px solid #bbb;padding:4px 8px;font-size:13px;vertical-align:top}
th{background:#f3f3f3} .banner{padding:10px 14px;font-weight:600;margin:10px 0}
.ok{background:#c8e6c9} .bad{background:#ef9a9a} .warn{background:#fff59d}
.muted{color:#666;font-size:12px}
.grid img{max-width:1100px;min-height:128px;image-rendering:pixelated;
  border:1px solid #ccc;margin:4px}
.charts svg{margin:4px}
"""


def _shown(x: float | None) -> str:
    """A number as report.json writes it (6 digits, "inf")."""
    return "None" if x is None else str(finite_json(round(float(x), 6)))


def _cell_text(cell: Cell) -> str:
    metric, template = HEADLINE[cell.attack]
    if metric not in cell.metrics:
        error = cell.details.error
        return escape(error if error is not None else cell.status)
    value = cell.metrics[metric]
    base = cell.baselines.get(metric, 0.0)
    parts = [escape(template.format(v=value, b=base))]
    head = cell.headline
    if head is not None and head.ci_low is not None and head.ci_high is not None:
        level = f"{head.level:.4g} " if head.level is not None else ""
        parts.append(
            f"<span class='muted'>{escape(head.metric)}: {level}CI "
            f"{head.ci_low:.3g} to {head.ci_high:.3g} (threshold {head.threshold:.3g}; "
            f"{cell.seeds} seed{'s' if cell.seeds != 1 else ''}, k = {cell.comparisons})</span>"
        )
    if cell.utility is not None:
        u = cell.utility
        parts.append(
            f"<span class='muted'>utility: held-out loss {u.heldout_loss:.3f} "
            f"(base {u.base_heldout_loss:.3f})</span>"
        )
    if cell.positive_control is not None or (cell.claimed and cell.protection != "none"):
        control = {True: "leaks on none", False: "FAILED", None: "not checked"}
        parts.append(
            f"<span class='muted'>positive control: {control[cell.positive_control]}</span>"
        )
    if cell.reason:
        parts.append(f"<span class='muted'>{escape(cell.reason)}</span>")
    return "<br>".join(parts)


def _matrix(report: AuditReport) -> str:
    attacks = report.settings.attacks
    by_key = {(c.protection, c.attack): c for c in report.cells}
    rows = ["<tr><th>protection</th>" + "".join(f"<th>{escape(a)}</th>" for a in attacks)]
    for protection in report.settings.protections:
        tds = []
        for attack in attacks:
            cell = by_key[(protection, attack)]
            claim = "claimed" if cell.claimed else "not claimed"
            tds.append(
                f'<td style="background:{STATUS_COLOURS[cell.status]}">'
                f"<b>{escape(cell.status)}</b><br>{_cell_text(cell)}"
                f'<br><span class="muted">{claim}</span></td>'
            )
        rows.append(f"<tr><th>{escape(protection)}</th>{''.join(tds)}</tr>")
    legend = " ".join(
        f'<span style="background:{c};padding:2px 6px">{escape(s)}</span>'
        for s, c in STATUS_COLOURS.items()
    )
    return f"<table>{''.join(rows)}</table><p class='muted'>{legend}</p>"


def active_table(report: AuditReport) -> str:
    """The active and observer rows as an HTML table, each observed value coloured."""
    if not report.active:
        return "<p class='muted'>No active-adversary row ran.</p>"
    rows = [
        "<tr><th>row</th><th>attack</th><th>expected</th><th>observed</th><th>leak</th>"
        "<th>detail</th></tr>"
    ]
    for r in report.active:
        colour = ACTIVE_COLOURS.get(r.observed, "")
        if r.breached:
            colour = "bad"
        leak = "-" if r.leak is None else f"{r.leak:.2f}"
        rows.append(
            f"<tr><td>{escape(r.name)}</td><td>{escape(r.attack)}</td>"
            f"<td>{escape(r.expected)}</td><td class='{colour}'>{escape(r.observed)}</td>"
            f"<td>{leak}</td><td>{escape(r.detail)}</td></tr>"
        )
    return f"<table>{''.join(rows)}</table>"


def _epsilon(report: AuditReport) -> str:
    rows = [
        "<tr><th>protection</th><th>attack family</th><th>claimed epsilon</th>"
        "<th>empirical lower bound</th><th>certifiable at most</th><th>verdict</th></tr>"
    ]
    for cell in report.cells:
        if not cell.attack.membership:
            continue
        m = cell.metrics
        if "epsilon_lower_bound" not in m:
            continue
        claimed, lower = m["epsilon_claimed"], m["epsilon_lower_bound"]
        certifiable = m.get("epsilon_certifiable")
        if not (math.isinf(claimed) or lower <= claimed):
            verdict = "LOWER BOUND ABOVE CLAIM"
        elif math.isinf(claimed):
            verdict = "no claim"
        elif certifiable is not None and certifiable <= claimed:
            verdict = "inconclusive: the canaries cannot certify the claim"
        else:
            verdict = "consistent"
        shown = "-" if certifiable is None else f"{certifiable:.3f}"
        rows.append(
            f"<tr><td>{escape(cell.protection)}</td><td>{escape(cell.attack)}</td>"
            f"<td>{escape(_shown(claimed))}</td><td>{lower:.3f}</td><td>{shown}</td>"
            f"<td>{escape(verdict)}</td></tr>"
        )
    return f"<table>{''.join(rows)}</table>"


def _rate(report: Mapping[str, JSONValue], key: str) -> float:
    value = report.get(key, 0)
    return float(value) if isinstance(value, int | float | str) else 0.0


def _filters(report: AuditReport) -> str:
    rows = [
        "<tr><th>protection</th><th>extraction, no filter</th><th>with filters</th>"
        "<th>benign prompts changed</th><th>per filter</th></tr>"
    ]
    for cell in report.cells:
        if cell.attack is not Family.EXTRACTION_FILTERED or not cell.metrics:
            continue
        m = cell.metrics
        per = cell.details.filters or {}
        detail = "; ".join(
            f"{escape(name)}: {_rate(f, 'extraction_rate_after'):.0%} extracted, "
            f"FPR {_rate(f, 'benign_fpr'):.0%}"
            for name, f in per.items()
            if isinstance(f, Mapping)
        )
        rows.append(
            f"<tr><td>{escape(cell.protection)}</td>"
            f"<td>{m.get('extraction_rate', 0):.0%}</td>"
            f"<td>{m['extraction_rate_filtered']:.0%}</td>"
            f"<td>{m.get('filter_fpr', 0):.0%}</td><td>{detail}</td></tr>"
        )
    return f"<table>{''.join(rows)}</table>"


def _roc(report: AuditReport) -> str:
    charts = []
    for cell in report.cells:
        roc = cell.details.roc
        if not roc:
            continue
        curves = {
            name: (list(points.fpr), list(points.tpr)) for name, points in roc.items() if points.fpr
        }
        if curves:
            charts.append(roc_loglog(curves, f"{cell.protection} / {cell.attack}"))
    if not charts:
        return "<p>No membership attack ran.</p>"
    return f"<div class='charts'>{''.join(charts)}</div>"


def _records(report: AuditReport) -> str:
    """Per membership / extraction cell, its top-N records, most exposed first."""
    blocks = []
    for cell in report.cells:
        exposure = exposure_of(cell)
        if exposure is None:
            continue
        rows = [
            "<tr><th>rank</th><th>record</th><th>member</th><th>score</th><th>extracted</th>"
            "<th>exposure</th><th>above non-members</th></tr>"
        ]
        for r in exposure.records[: report.top_records]:
            score = r.get("score")
            rows.append(
                f"<tr><td>{r['rank']}</td><td>{escape(str(r['text']))}</td>"
                f"<td>{'yes' if r['member'] else 'no'}</td>"
                f"<td>{escape(_shown(float(score)) if isinstance(score, float) else '-')}</td>"
                f"<td>{'yes' if r['extracted'] else 'no'}</td>"
                f"<td>{escape(_shown(_float(r['exposure'])))}</td>"
                f"<td>{_float(r['above_non_members']):.0%}</td></tr>"
            )
        baseline = ", ".join(
            f"{k} {v if isinstance(v, int) else escape(_shown(_float(v)))}"
            for k, v in exposure.baseline.items()
        )
        blocks.append(
            f"<h3>{escape(cell.protection)} / {escape(cell.attack)}</h3>"
            f"<p class='muted'>Ranked by {escape(exposure.ranked_by)}; the top "
            f"{min(report.top_records, len(exposure.records))} of {len(exposure.records)}. "
            f"Baseline (non-member canaries, never trained on): {baseline}.</p>"
            f"<table class='exposed'>{''.join(rows)}</table>"
        )
    if not blocks:
        return "<p>No membership or extraction cell recorded per-record scores.</p>"
    return "".join(blocks)


def _float(value: JSONValue) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def _figure_path(figure: str, out_dir: Path) -> Path | None:
    """Where a record's figure is: as written (absolute, or relative to the working
    directory the audit ran in, e.g. `--out audit-report`), under the audit directory, or
    in its figures/ folder (a moved audit directory)."""
    path = Path(figure)
    for candidate in (path, out_dir / path, out_dir / "figures" / path.name):
        if candidate.is_file():
            return candidate
    return None


def _reconstructions(report: AuditReport, out_dir: Path) -> str:
    blocks = []
    seen: set[Path] = set()
    for cell in report.cells:
        for figure in cell.details.figures or []:
            found = _figure_path(figure, out_dir)
            if found is None or found.resolve() in seen:
                continue
            seen.add(found.resolve())
            path = found
            data = base64.b64encode(path.read_bytes()).decode()
            blocks.append(
                f"<figure><img alt='{escape(path.name)}' src='data:image/png;base64,{data}'>"
                f"<figcaption class='muted'>{escape(cell.protection)}: {escape(path.stem)} "
                "(top: originals, bottom: reconstructions)</figcaption></figure>"
            )
    if not blocks:
        ran = [c.name for c in report.cells if c.attack is Family.INVERSION and c.metrics]
        if ran:
            return f"<p>Inversion cells ran ({escape(', '.join(ran))}) but wrote no figure.</p>"
        return "<p>No gradient inversion ran.</p>"
    return f"<div class='grid'>{''.join(blocks)}</div>"


def _checks(report: AuditReport) -> str:
    rows = [
        "<tr><th>cell</th><th>claimed</th><th>metric</th><th>value</th><th>baseline</th>"
        "<th>threshold</th><th>interval</th><th>outcome</th></tr>"
    ]
    for cell in report.cells:
        for c in cell.checks:
            rows.append(
                f"<tr><td>{escape(cell.protection)}/{escape(cell.attack)}</td>"
                f"<td>{'yes' if cell.claimed else 'no'}</td>"
                f"<td>{escape(c.metric)}</td><td>{escape(_shown(c.value))}</td>"
                f"<td>{escape(_shown(c.baseline))}</td><td>{escape(_shown(c.threshold))}</td>"
                f"<td>{escape(_interval(c))}</td><td>{escape(c.outcome)}</td></tr>"
            )
    return f"<table>{''.join(rows)}</table>"


def _interval(check: Check) -> str:
    if check.ci_low is None or check.ci_high is None:
        # an exact check maximised over k bounds carries the level each was computed at
        return "exact" if check.level is None else f"exact, each bound at {check.level:.4g}"
    level = "" if check.level is None else f"{check.level:.4g}: "
    return f"{level}{_shown(check.ci_low)} to {_shown(check.ci_high)}"


def render_html(report: AuditReport, out_dir: Path) -> str:
    s = report.settings
    dp = s.dp
    verdict = (
        "<div class='banner ok'>All claimed protections held.</div>"
        if report.passed
        else "<div class='banner bad'>Breaches:<br>"
        + "<br>".join(escape(line) for line in report.breaches)
        + "</div>"
    )
    notes = report.notes()
    if notes:
        verdict += "<div class='banner' style='background:#fff59d'>Not judged a pass:<br>" + (
            "<br>".join(escape(line) for line in notes) + "</div>"
        )
    settings = (
        f"<p>Profile <b>{escape(report.profile)}</b>, created {escape(report.created)}, "
        f"fedveil {escape(report.fedveil_version)}, {report.seconds} s. "
        f"Secure aggregates over {s.clients} clients; released models from a federation of "
        f"{s.parties} parties; LoRA rank {s.lora_rank}. DP: clip C = {dp.clip_norm}, "
        f"noise multiplier z = {dp.noise_multiplier} (sigma = {dp.sigma}), "
        f"delta = {dp.delta}, epsilon of one release = {dp.epsilon_per_round:.2f}.</p>"
        f"<p>Verdicts: a claimed cell is a breach when its interval's low end crosses the "
        f"threshold, a pass when its high end stays under, inconclusive otherwise; intervals "
        f"at a family-wise {s.confidence:.0%} ({escape(s.multiplicity)}); update cells over "
        f"{s.seeds} seed(s); a protected pass needs the attack to leak on the unprotected row "
        f"(positive control); a DP model that does not beat the base model's held-out loss by "
        f"{s.utility_margin} nats is vacuous.</p>"
        f"<p class='muted'>Threat model: {escape(s.threat_model)}.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fedveil leakage audit</title>
<style>{STYLE}</style></head><body>
<section id="summary"><h1>fedveil leakage audit</h1>{verdict}{settings}</section>
<section id="matrix"><h2>Leakage matrix</h2>
<p class="muted">Each cell: the strongest attack's headline metric next to its data-free
baseline. Only claimed cells can breach; unclaimed cells show what leaks without that
protection.</p>{_matrix(report)}</section>
<section id="active"><h2>Active adversaries (real protocol)</h2>
<p class="muted">A malicious server, a colluding client, Sybils. Expected "refused" or
"detected" where fedveil has a defence, "open" where it has none; a defence that did not
act is a breach.</p>{active_table(report)}</section>
<section id="epsilon"><h2>Claimed vs empirical epsilon</h2>{_epsilon(report)}</section>
<section id="filters"><h2>Output filter effectiveness</h2>{_filters(report)}</section>
<section id="roc"><h2>Membership ROC curves (log-log)</h2>{_roc(report)}</section>
<section id="records"><h2>Most exposed records</h2>
<p class="muted">Which records an attack singles out, not only how well it does on
average: "above non-members" is the share of canaries the model never saw that score
below the record.</p>{_records(report)}</section>
<section id="reconstructions"><h2>Gradient inversion: originals vs reconstructions</h2>
{_reconstructions(report, out_dir)}</section>
<section id="checks"><h2>Every check</h2>{_checks(report)}</section>
</body></html>
"""


def write_html(report: AuditReport, path: Path, out_dir: Path) -> None:
    path.write_text(render_html(report, out_dir))
