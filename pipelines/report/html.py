"""The bulletin as one self-contained HTML page: inline CSS and SVG, no script, no external
font, image or stylesheet, so it opens offline, mails as one file and prints as it shows.

Numbers are formatted here, and every count passes through
:func:`pipelines.report.suppress.count_label`. Dates are ISO (2026-02-01) so a day of the
month never reads as a small count.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from html import escape
from itertools import groupby

from pipelines.report.data import CURVE_WEEKS, MAX_ALERTS, AlertRow, Bulletin, ScoreRow
from pipelines.report.suppress import count_label, is_small, rate_label
from pipelines.report.svg import EpiWeek, MapArea, choropleth, epi_curve, polygons_of

# 7-1-7 (Frieden et al. 2021): detect within 7 days, notify within 1, respond within 7.
TARGETS_717 = {"detect": 7, "notify": 1, "respond": 7}
AMBER_SHARE = 0.1
"""A value within 10 % of its target (on the wrong side) is amber, further off red."""

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#d9e2ec; --band:#f5f7fa; --brand:#0b4f6c;
  --good:#2f855a; --good-bg:#e3f4ea; --warn:#975a16; --warn-bg:#fdf1dc; --bad:#b83232;
  --bad-bg:#fbe4e4; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.45 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif;
  color: var(--ink); background: #fff; }
main { max-width: 1080px; margin: 0 auto; padding: 0 24px 32px; }
header.masthead { background: var(--brand); color: #fff; padding: 20px 24px 16px; }
header.masthead .inner { max-width: 1032px; margin: 0 auto; }
header.masthead h1 { margin: 0; font-size: 24px; letter-spacing: .2px; }
header.masthead p { margin: 4px 0 0; opacity: .9; }
.kpis { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; margin: 18px 0 6px; }
.kpi { border: 1px solid var(--line); border-left: 4px solid var(--brand); padding: 10px 12px;
  border-radius: 4px; background: var(--band); }
.kpi b { display: block; font-size: 22px; }
.kpi span { color: var(--muted); font-size: 12px; }
h2 { font-size: 17px; color: var(--brand); border-bottom: 2px solid var(--brand);
  padding-bottom: 4px; margin: 28px 0 10px; }
h3 { font-size: 13px; margin: 0 0 4px; }
p.note, .caption { color: var(--muted); font-size: 11.5px; margin: 4px 0 10px; }
table { border-collapse: collapse; width: 100%; font-size: 12px; }
th, td { padding: 5px 7px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 10px; font-size: 11px;
  font-weight: 600; white-space: nowrap; }
.good { background: var(--good-bg); color: var(--good); }
.warn { background: var(--warn-bg); color: var(--warn); }
.bad { background: var(--bad-bg); color: var(--bad); }
.neutral { background: #edf0f3; color: var(--muted); }
.grid { display: grid; grid-template-columns: repeat(3, 1fr); gap: 14px 18px; }
.grid.maps { grid-template-columns: repeat(2, 1fr); }
figure { margin: 0; break-inside: avoid; }
figure svg { width: 100%; height: auto; display: block; }
.legend-inline { display: flex; gap: 16px; font-size: 11.5px; color: var(--muted);
  margin: 2px 0 10px; flex-wrap: wrap; }
.swatch { display: inline-block; width: 12px; height: 10px; margin-right: 5px;
  vertical-align: -1px; }
.scorecard td.cell { text-align: center; font-variant-numeric: tabular-nums; font-size: 11px;
  padding: 4px 2px; }
.scorecard th.ou { writing-mode: vertical-rl; transform: rotate(180deg); font-size: 10.5px;
  font-weight: 600; padding: 6px 2px; text-align: left; height: 110px; }
.scorecard td.domain { background: #e6eef3; font-weight: 700; color: var(--brand);
  text-transform: capitalize; }
.empty { color: var(--muted); font-style: italic; }
table.alerts td:nth-child(3), table.alerts td:nth-child(6) { white-space: nowrap; }
footer { margin-top: 28px; border-top: 1px solid var(--line); padding-top: 8px;
  color: var(--muted); font-size: 11px; }
@page { size: A4; margin: 12mm 10mm; }
@media print {
  body { font-size: 11px; }
  main { max-width: none; padding: 0; }
  header.masthead { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  .kpi, th, td, .badge, .scorecard td { -webkit-print-color-adjust: exact;
    print-color-adjust: exact; }
  h2 { break-after: avoid; margin-top: 18px; }
  table { font-size: 9.5px; }
  th, td { padding: 3px 4px; }
  .caption, p.note { font-size: 9.5px; }
  section { break-inside: auto; }
  tr, figure { break-inside: avoid; }
  .grid { grid-template-columns: repeat(3, 1fr); }
}
"""


def _badge(text: str, tone: str) -> str:
    return f'<span class="badge {tone}">{escape(text)}</span>'


def _days(value: int | None, target: int) -> str:
    """A 7-1-7 interval: met (green), missed (red) or still pending."""
    if value is None:
        return _badge("pending", "neutral")
    return _badge(f"{value}d", "good" if value <= target else "bad")


STATUS_TONE = {
    "triggered": "bad",
    "verified": "warn",
    "responding": "warn",
    "monitoring": "neutral",
    "closed": "good",
    "discarded": "neutral",
}


def _alerts_section(alerts: list[AlertRow]) -> str:
    if not alerts:
        return '<p class="empty">No alert signalled in the four weeks to this one.</p>'
    rows = []
    for a in alerts[:MAX_ALERTS]:
        weeks = (
            a.first_week if a.first_week == a.last_week else f"{a.first_week} \u2013 {a.last_week}"
        )
        rows.append(
            "<tr>"
            f"<td><b>{escape(a.disease)}</b><br><span class='caption'>{escape(a.alert_id)}</span></td>"
            f"<td>{escape(a.org_unit)}</td><td>{escape(weeks)}</td>"
            f'<td class="num count">{count_label(a.total_cases)}</td>'
            f"<td>{_badge(a.severity, 'bad' if a.severity == 'epidemic' else 'warn')}</td>"
            f"<td>{escape(a.rule.replace('_', ' '))}</td>"
            f"<td>{_badge(a.status, STATUS_TONE.get(a.status, 'neutral'))}</td>"
            f"<td>{_days(a.days_to_detect, TARGETS_717['detect'])}</td>"
            f"<td>{_days(a.days_to_notify, TARGETS_717['notify'])}</td>"
            f"<td>{_days(a.days_to_respond, TARGETS_717['respond'])}</td>"
            "</tr>"
        )
    hidden = len(alerts) - MAX_ALERTS
    more = (
        f'<p class="note">And <span class="count">{count_label(hidden)}</span> more: '
        "<code>healthpipe alerts list</code>.</p>"
        if hidden > 0
        else ""
    )
    return (
        '<table class="alerts"><thead><tr><th>Disease</th><th>District</th><th>Weeks</th>'
        '<th class="num">Cases</th><th>Severity</th><th>Rule</th><th>Status</th>'
        "<th>Detect (≤7d)</th><th>Notify (≤1d)</th><th>Respond (≤7d)</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        '<p class="note">7-1-7 timeliness: days from emergence to detection, from detection to '
        "notification and from detection to response; green met, red missed.</p>" + more
    )


def _curve_total(cases: list[float | None]) -> str:
    """The curve's cases over its weeks. With a "<5" week among them the exact total would
    give that week back (total minus the weeks shown), so only the shown weeks are added up,
    and the caption says so."""
    shown = sum(c for c in cases if c is not None and not is_small(c))
    if any(is_small(c) for c in cases):
        return (
            f'{CURVE_WEEKS} weeks: <span class="count">{count_label(shown)}</span> cases in weeks '
            "shown; weeks with fewer than five cases withheld."
        )
    return f'{CURVE_WEEKS} weeks: <span class="count">{count_label(shown)}</span> cases.'


def _curves_section(bulletin: Bulletin) -> str:
    if not bulletin.curves:
        return '<p class="empty">No case reported in the last 26 weeks.</p>'
    figures = []
    for curve in bulletin.curves:
        weeks = [
            EpiWeek(p, c, t, p in curve.alert_weeks)
            for p, c, t in zip(curve.weeks, curve.cases, curve.threshold, strict=True)
        ]
        svg = epi_curve(f"{curve.name}: weekly cases, national", weeks)
        figures.append(
            f'<figure data-disease="{escape(curve.disease)}"><h3>{escape(curve.name)}</h3>'
            f'{svg}<figcaption class="caption">{_curve_total(curve.cases)} '
            f"Threshold: {escape(curve.threshold_note)}.</figcaption></figure>"
        )
    legend = (
        '<div class="legend-inline">'
        '<span><i class="swatch" style="background:#3e7cb1"></i>weekly cases</span>'
        '<span><i class="swatch" style="background:#d64545"></i>week with a district alert</span>'
        '<span><i class="swatch" style="border-top:2px dashed #b7791f;height:0"></i>'
        "alert threshold</span>"
        '<span><i class="swatch" style="background:repeating-linear-gradient(45deg,#7b8794 0 2px,'
        '#f0f4f8 2px 5px)"></i>fewer than five cases (suppressed; red: alert week)</span></div>'
    )
    return legend + f'<div class="grid curves">{"".join(figures)}</div>'


def _maps_section(bulletin: Bulletin) -> str:
    if not bulletin.maps:
        return '<p class="empty">No case reported in the last four weeks.</p>'
    figures = []
    for incidence in bulletin.maps:
        areas = [
            MapArea(d.name, polygons_of(d.geometry or {}), d.cases, d.rate, d.withheld)
            for d in incidence.districts
        ]
        svg = choropleth(f"{incidence.name}: cases per 100,000, last four weeks", areas)
        figures.append(
            f'<figure data-disease="{escape(incidence.disease)}"><h3>{escape(incidence.name)}'
            f"</h3>{svg}</figure>"
        )
    return (
        '<p class="note">Cases per 100,000 population in the four weeks to the bulletin week, '
        "by district. Classes hold similar numbers of districts. Hatched: fewer than five "
        "cases (&lt;5), or suppressed with such a district so that its count cannot be worked "
        "out from the national total.</p>"
        f'<div class="grid maps">{"".join(figures)}</div>'
    )


def _score_tone(row: ScoreRow, value: float | None) -> str:
    if value is None or row.target is None or row.direction is None:
        return "neutral"
    higher = row.direction == "higher_is_better"
    gap = (value - row.target) if higher else (row.target - value)
    if gap >= 0:
        return "good"
    return "warn" if abs(gap) <= AMBER_SHARE * abs(row.target or 1) else "bad"


def _scorecard_section(bulletin: Bulletin) -> str:
    if not bulletin.scorecard:
        return '<p class="empty">No indicator values for periods ending by this week.</p>'
    heads = "".join(
        f'<th class="ou">{escape(name.removesuffix(" District"))}</th>'
        for _, name in bulletin.districts
    )
    columns = 4 + len(bulletin.districts)
    body = []
    for domain, rows in groupby(bulletin.scorecard, key=lambda r: r.domain):
        body.append(
            f'<tr><td class="domain" colspan="{columns}">{escape(domain.replace("_", " "))}'
            "</td></tr>"
        )
        for row in rows:
            target = "\u2013" if row.target is None else f"{row.target:g}"
            arrow = {"higher_is_better": "↑", "lower_is_better": "↓"}.get(row.direction or "", "")
            cells = "".join(
                f'<td class="cell {"neutral" if is_small(c.numerator) else _score_tone(row, c.value)}">'
                f"{escape(rate_label(c.value, c.numerator, suppressed='n<5'))}</td>"
                for c in row.cells
            )
            body.append(
                f"<tr><td>{escape(row.name)} <span class='caption'>({escape(row.unit)})</span>"
                f"</td><td>{escape(row.period_id)}</td><td class='num'>{target} {arrow}</td>"
                f"{cells}</tr>"
            )
    return (
        '<table class="scorecard"><thead><tr><th>Indicator</th><th>Period</th>'
        f'<th class="num">Target</th><th class="ou">National</th>{heads}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
        '<p class="note">Latest month (else quarter, else year) ending by the bulletin week. '
        "Green meets the target, amber within 10 % of it, red further off; grey has no target. "
        "n&lt;5: a value whose numerator is under five is withheld.</p>"
    )


def _pct(value: float | None) -> str:
    return "\u2013" if value is None else f"{value:.1f} %"


def _pct_tone(value: float | None, target: float = 80.0) -> str:
    if value is None:
        return "neutral"
    return "good" if value >= target else "warn" if value >= target - 10 else "bad"


def _quality_section(bulletin: Bulletin) -> str:
    rows = []
    for q in bulletin.quality:
        reports = (
            "\u2013"
            if q.reports_expected is None
            else f"{count_label(q.reports_received)} of {count_label(q.reports_expected)}"
        )
        rows.append(
            f"<tr><td>{escape(q.district)}</td><td class='num count'>{reports}</td>"
            f"<td class='num'>{_badge(_pct(q.completeness), _pct_tone(q.completeness))}</td>"
            f"<td class='num'>{_badge(_pct(q.timeliness), _pct_tone(q.timeliness))}</td>"
            f"<td class='num count'>{count_label(q.quarantined)}</td></tr>"
        )
    outside = ""
    if bulletin.quarantine_outside_districts:
        outside = (
            f'<p class="note">Plus <span class="count">'
            f"{count_label(bulletin.quarantine_outside_districts)}</span> held records that name "
            "no known district (see <code>healthpipe quarantine list</code>).</p>"
        )
    return (
        '<table class="quality"><thead><tr><th>District</th><th class="num">IDSR reports '
        'received</th><th class="num">Completeness</th><th class="num">Timeliness</th>'
        '<th class="num">Records in quarantine</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>{outside}"
        '<p class="note">Completeness: weekly IDSR reports received over expected; timeliness: '
        "received on time over expected (target 80 %). Quarantine: records held back by "
        "validation and not yet released.</p>"
    )


def _kpis(bulletin: Bulletin) -> str:
    open_alerts = sum(1 for a in bulletin.alerts if a.status not in ("closed", "discarded"))
    new = sum(1 for a in bulletin.alerts if a.first_week == bulletin.period_id)
    expected = sum(q.reports_expected or 0 for q in bulletin.quality)
    received = sum(q.reports_received or 0 for q in bulletin.quality)
    completeness = _pct(100.0 * received / expected) if expected else "\u2013"
    # Each disease's week is on its curve: a total over a "<5" one would give it back (the
    # total minus the others), so only the diseases whose count is shown are added up.
    latest = [c.cases[-1] for c in bulletin.curves if c.weeks[-1] == bulletin.period_id]
    cases = sum(c for c in latest if c is not None and not is_small(c))
    cases_note = f"cases of priority diseases in {bulletin.period_id}" + (
        " (diseases with fewer than five left out)" if any(is_small(c) for c in latest) else ""
    )
    items: Iterable[tuple[str, str]] = (
        (count_label(open_alerts), "open alerts (last four weeks)"),
        (count_label(new), f"new alerts in {bulletin.period_id}"),
        (count_label(cases), cases_note),
        (completeness, "IDSR reporting completeness"),
    )
    return (
        '<div class="kpis">'
        + "".join(
            f'<div class="kpi"><b class="{"share" if "%" in v else "count"}">{escape(v)}</b>'
            f"<span>{escape(k)}</span></div>"
            for v, k in items
        )
        + "</div>"
    )


def render_html(bulletin: Bulletin, *, generated_at: datetime) -> str:
    title = f"Weekly epidemiological bulletin, {bulletin.country}, {bulletin.period_id}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{CSS}</style></head>
<body>
<header class="masthead"><div class="inner">
<h1>Weekly epidemiological bulletin · {escape(bulletin.country)}</h1>
<p>Epidemiological week {escape(bulletin.period_id)} ({bulletin.week_start.isoformat()} to
{bulletin.week_end.isoformat()}) · Integrated Disease Surveillance and Response</p>
</div></header>
<main>
{_kpis(bulletin)}
<section id="alerts"><h2>Alerts</h2>{_alerts_section(bulletin.alerts)}</section>
<section id="epidemic-curves"><h2>Epidemic curves, priority diseases</h2>
<p class="note">National weekly cases, last 26 weeks, against each disease's alert
threshold.</p>{_curves_section(bulletin)}</section>
<section id="map"><h2>Incidence by district</h2>{_maps_section(bulletin)}</section>
<section id="scorecard"><h2>Scorecard</h2>{_scorecard_section(bulletin)}</section>
<section id="data-quality"><h2>Data quality by district</h2>{_quality_section(bulletin)}
</section>
<footer>Generated by healthpipe on {generated_at.strftime("%Y-%m-%d %H:%M")} UTC from
<code>marts.fct_surveillance_weekly</code>, <code>marts.alerts</code>,
<code>marts.indicator_values</code> and <code>audit.quarantine</code>. Small cells: counts
below five are shown as &lt;5 in every table, chart and map, and rates resting on them are
withheld; no total is printed that would give one back by subtraction.</footer>
</main></body></html>
"""
