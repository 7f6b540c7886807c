"""Static SVG for the bulletin, drawn by our own code: an HTML file with inline SVG needs no
script, no font or tile server and prints as vectors.

Every number a chart prints goes through :mod:`pipelines.report.suppress`; a week with 1 to
4 cases is drawn as a hatched "<5" band rather than a bar of its true height.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from pipelines.report.suppress import SMALL_CELL_MAX, SUPPRESSED, count_label, is_small

INK = "#1f2933"
MUTED = "#616e7c"
GRID = "#d9e2ec"
BAR = "#3e7cb1"
ALERT_BAR = "#d64545"
THRESHOLD = "#b7791f"
# Sequential scale for the choropleth (light to dark), readable in greyscale print.
SCALE = ("#fff5eb", "#fdd0a2", "#fd8d3c", "#d94801", "#7f2704")
NO_DATA = "#e4e7eb"
SUPPRESSED_FILL = "url(#hp-hatch)"
WITHHELD = "suppressed"
"""Label of a map district whose count is not small but is withheld with a small one."""

HATCH_DEFS = (
    '<defs><pattern id="hp-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f0f4f8"/>'
    '<line x1="0" y1="0" x2="0" y2="6" stroke="#7b8794" stroke-width="2"/></pattern>'
    '<pattern id="hp-hatch-alert" width="6" height="6" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fbe4e4"/>'
    f'<line x1="0" y1="0" x2="0" y2="6" stroke="{ALERT_BAR}" stroke-width="2"/></pattern></defs>'
)


def _text(x: float, y: float, text: str, **attrs: Any) -> str:
    """An SVG <text>; keyword attributes with _ for - (text_anchor), class_ for class."""
    extra = " ".join(
        f'{k.rstrip("_").replace("_", "-")}="{escape(str(v))}"' for k, v in attrs.items()
    )
    return f'<text x="{x:.1f}" y="{y:.1f}" {extra}>{escape(text)}</text>'


def nice_ticks(maximum: float) -> list[int]:
    """Axis ticks from 0 with a step of 5, 10, 20, 25, 50 ... so that no tick label is a
    number from 1 to 4 (which would read like a small count)."""
    top = max(maximum, float(SMALL_CELL_MAX + 1))
    magnitude = 1
    while True:
        for base in (5, 10, 20, 25, 50):
            step = base * magnitude
            if math.ceil(top / step) <= 5:
                return list(range(0, math.ceil(top / step) * step + 1, step))
        magnitude *= 10


@dataclass(frozen=True)
class EpiWeek:
    period_id: str
    cases: float | None
    threshold: float | None
    alert: bool


def epi_curve(title: str, weeks: Sequence[EpiWeek], width: int = 340, height: int = 190) -> str:
    """Weekly cases as bars (red in weeks with an alert), the alert threshold as a dashed
    line, y axis from 0."""
    left, right, top, bottom = 40, 8, 8, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    highest = max([w.cases or 0.0 for w in weeks] + [w.threshold or 0.0 for w in weeks] + [1.0])
    ticks = nice_ticks(highest)
    y_max = float(ticks[-1])

    def y(value: float) -> float:
        return top + plot_h - plot_h * value / y_max

    slot = plot_w / max(len(weeks), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart epi-curve" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f"<title>{escape(title)}</title>",
        HATCH_DEFS,
    ]
    for tick in ticks:
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
        parts.append(
            _text(left - 5, y(tick) + 3.5, f"{tick:,}", text_anchor="end", font_size=10,
                  fill=MUTED, class_="tick")
        )  # fmt: skip
    for i, week in enumerate(weeks):
        if week.cases is None or week.cases <= 0:
            continue
        x = left + i * slot + slot * 0.12
        bar_w = slot * 0.76
        label = f"{week.period_id}: {count_label(week.cases)} cases" + (
            " (alert)" if week.alert else ""
        )
        if is_small(week.cases):
            height_value = float(SMALL_CELL_MAX + 1)
            fill = "url(#hp-hatch-alert)" if week.alert else SUPPRESSED_FILL
        else:
            height_value, fill = week.cases, ALERT_BAR if week.alert else BAR
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y(height_value):.1f}" width="{bar_w:.1f}" '
            f'height="{y(0) - y(height_value):.1f}" fill="{fill}"><title>{escape(label)}'
            "</title></rect>"
        )
    segments: list[list[str]] = [[]]
    for i, week in enumerate(weeks):
        if week.threshold is None or math.isnan(week.threshold):
            segments.append([])
            continue
        segments[-1].append(f"{left + (i + 0.5) * slot:.1f},{y(week.threshold):.1f}")
    for points in segments:
        if len(points) > 1:
            parts.append(
                f'<polyline class="threshold" points="{" ".join(points)}" fill="none" '
                f'stroke="{THRESHOLD}" stroke-width="1.6" stroke-dasharray="4 3"/>'
            )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" '
        f'stroke="{INK}" stroke-width="1"/>'
    )
    if weeks:
        for i in sorted({0, len(weeks) // 2, len(weeks) - 1}):
            anchor = "start" if i == 0 else "end" if i == len(weeks) - 1 else "middle"
            x = left + (i + 0.5) * slot if anchor == "middle" else left + (i + (i > 0)) * slot
            parts.append(
                _text(x, height - bottom + 14, weeks[i].period_id, text_anchor=anchor,
                      font_size=10, fill=MUTED, class_="week")
            )  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------
# Choropleth
# ---------------------------------------------------------------------------------------

Ring = list[tuple[float, float]]


def polygons_of(geometry: dict[str, Any]) -> list[list[Ring]]:
    """GeoJSON Polygon or MultiPolygon as a list of polygons (outer ring, holes)."""
    kind, coordinates = geometry.get("type"), geometry.get("coordinates") or []
    if kind == "Polygon":
        coordinates = [coordinates]
    elif kind != "MultiPolygon":
        return []
    return [
        [[(float(p[0]), float(p[1])) for p in ring] for ring in polygon] for polygon in coordinates
    ]


@dataclass(frozen=True)
class MapArea:
    name: str
    polygons: list[list[Ring]]
    cases: float | None
    rate: float | None
    """Incidence per 100,000 (None: no report)."""
    withheld: bool = False
    """Drawn and labelled as suppressed although its count is not small: the complement
    that keeps a small district from being worked out from the total."""

    @property
    def hidden(self) -> bool:
        """Neither its count nor its rate may show, in colour, label or tooltip."""
        return self.withheld or is_small(self.cases)


def class_breaks(rates: Sequence[float], classes: int = len(SCALE) - 1) -> list[float]:
    """Upper bounds of equal-count classes over the positive rates (the first colour is
    kept for zero)."""
    positive = sorted(r for r in rates if r > 0)
    if not positive:
        return []
    breaks: list[float] = []
    for k in range(1, classes + 1):
        value = positive[min(len(positive) - 1, math.ceil(k * len(positive) / classes) - 1)]
        if not breaks or value > breaks[-1]:
            breaks.append(value)
    return breaks


def _fill(area: MapArea, breaks: Sequence[float]) -> str:
    if area.hidden:
        return SUPPRESSED_FILL
    if area.cases is None or area.rate is None:
        return NO_DATA
    if area.rate <= 0:
        return SCALE[0]
    for k, bound in enumerate(breaks):
        if area.rate <= bound:
            return SCALE[k + 1]
    return SCALE[-1]


def _centroid(ring: Ring) -> tuple[float, float, float]:
    """Area-weighted centroid of a ring (shoelace), with its absolute area."""
    area = cx = cy = 0.0
    for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1], strict=True):
        cross = x0 * y1 - x1 * y0
        area += cross
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    if abs(area) < 1e-12:
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        return sum(xs) / len(xs), sum(ys) / len(ys), 0.0
    return cx / (3 * area), cy / (3 * area), abs(area) / 2


def choropleth(title: str, areas: Sequence[MapArea], width: int = 460, height: int = 340) -> str:
    """District polygons coloured by incidence per 100,000, labelled with the rate (or
    "<5 cases", or "suppressed" for a complement withheld with one), with a legend.
    Equirectangular projection scaled by the cosine of the middle latitude: right for a
    country-sized extent."""
    points = [p for a in areas for poly in a.polygons for ring in poly for p in ring]
    legend_h = 44
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart choropleth" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f"<title>{escape(title)}</title>",
        HATCH_DEFS,
    ]
    if not points:
        parts.append(_text(width / 2, height / 2, "no district boundaries in dim_org_unit",
                           text_anchor="middle", fill=MUTED))  # fmt: skip
        return "".join([*parts, "</svg>"])
    lon0, lon1 = min(p[0] for p in points), max(p[0] for p in points)
    lat0, lat1 = min(p[1] for p in points), max(p[1] for p in points)
    squash = math.cos(math.radians((lat0 + lat1) / 2))
    pad = 6
    box_w, box_h = width - 2 * pad, height - legend_h - 2 * pad
    scale = min(box_w / max((lon1 - lon0) * squash, 1e-9), box_h / max(lat1 - lat0, 1e-9))
    off_x = pad + (box_w - (lon1 - lon0) * squash * scale) / 2
    off_y = pad + (box_h - (lat1 - lat0) * scale) / 2

    def project(p: tuple[float, float]) -> tuple[float, float]:
        return off_x + (p[0] - lon0) * squash * scale, off_y + (lat1 - p[1]) * scale

    breaks = class_breaks([a.rate for a in areas if a.rate is not None and not a.hidden])
    labels = []
    for area in areas:
        d = " ".join(
            "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in map(project, ring)) + " Z"
            for polygon in area.polygons
            for ring in polygon
        )
        if is_small(area.cases):
            value = f"{SUPPRESSED} cases"
        elif area.withheld:
            value = WITHHELD
        elif area.rate is None:
            value = "no report"
        else:
            value = f"{area.rate:,.1f}"
        parts.append(
            f'<path class="area" d="{d}" fill="{_fill(area, breaks)}" fill-rule="evenodd" '
            f'stroke="#ffffff" stroke-width="1.2"><title>{escape(area.name)}: {escape(value)}'
            "</title></path>"
        )
        outer = max((poly[0] for poly in area.polygons), key=lambda r: _centroid(r)[2])
        cx, cy, _ = _centroid(outer)
        x, y = project((cx, cy))
        short = area.name.removesuffix(" District")
        # White type on the two darkest classes, ink on the rest: readable without halos.
        ink = "#ffffff" if _fill(area, breaks) in SCALE[-2:] else INK
        labels.append(_text(x, y - 2, short, text_anchor="middle", font_size=10, fill=ink,
                            font_weight="600", class_="map-label"))  # fmt: skip
        labels.append(_text(x, y + 10, value, text_anchor="middle", font_size=10, fill=ink,
                            class_="map-value"))  # fmt: skip
    parts.append('<g class="labels">' + "".join(labels) + "</g>")
    parts.append(_legend(breaks, width, height - legend_h + 8))
    parts.append("</svg>")
    return "".join(parts)


def _legend(breaks: Sequence[float], width: int, top: float) -> str:
    entries: list[tuple[str, str]] = [(SCALE[0], "0")]
    low = 0.0
    for k, bound in enumerate(breaks):
        span = f"up to {bound:,.1f}" if k == 0 else f"{low:,.1f}\u2013{bound:,.1f}"
        entries.append((SCALE[k + 1], span))
        low = bound
    entries += [(SUPPRESSED_FILL, WITHHELD), (NO_DATA, "no report")]
    slot = width / len(entries)
    parts = ['<g class="legend">']
    for i, (fill, label) in enumerate(entries):
        x = i * slot + 4
        parts.append(
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{slot - 8:.1f}" height="10" fill="{fill}" '
            'stroke="#9aa5b1" stroke-width="0.5"/>'
        )
        parts.append(_text(x, top + 23, label, font_size=9, fill=MUTED))
    parts.append("</g>")
    return "".join(parts)
