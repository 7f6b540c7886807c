"""An attacker of the public layer (marts.pub_*): recover masked counts by subtracting published
cells from published totals, the independent side of the suppression tests.

The attacker reads what a reader of the published tables has, plus the exact totals a
reader could find elsewhere, and builds the equations "total = sum of parts" from the
org-unit hierarchy (``dim_org_unit``) and the period calendar (``dim_period``) alone, not
from the warehouse's own equation table:

- org units: a parent and its children, per series and period (a parent's own reported value
  is a part of its total);
- periods: a period and the periods of one finer type that fall in it (a week by its fourth
  day, DHIS2's rule; others whole), per series and org unit, for every pair of types;
- disaggregations: a data element's values over its category and attribute option combos.

Where a total is not a cell of the same table, the attacker is given it exactly (it is
published elsewhere, or can be). It is generous: every equation is taken to hold exactly,
so a group with one masked cell gives that cell away. It then peels: a recovered cell is
known, and may leave another group with one unknown. ``recover`` returns what it got back.

Outside this attack: one count printed in two tables (a facility's weekly malaria cases in
pub_surveillance_weekly and as the numerator of malaria incidence in pub_indicator_values)
is masked by each table's own equations, so a cell masked as a complement in one may be
printed by the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.config import HealthpipeConfig
from pipelines.warehouse import Warehouse

# Each public table, its exact mart, the measures it masks and the columns naming a series.
PUBLIC_TABLES = {
    "pub_surveillance_weekly": (
        "fct_surveillance_weekly",
        {"cases": "is_cases_suppressed", "deaths": "is_deaths_suppressed"},
        ["disease"],
    ),
    "pub_indicator_values": (
        "indicator_values",
        {"numerator": "is_numerator_suppressed", "denominator": "is_denominator_suppressed"},
        ["indicator_id"],
    ),
    "pub_data_values": (
        "fct_data_values",
        {"value": "is_suppressed"},
        ["source", "data_element_id", "category_option_combo_id", "attribute_option_combo_id"],
    ),
}
SMALL_CELL_THRESHOLD = 5  # dbt var healthpipe_small_cell_threshold's default
# Weekly-type periods fall into the coarser period holding their fourth day.
WEEK_ANCHOR_DAYS = 3


@dataclass
class Published:
    """Every cell of the public tables: its place, its exact value and whether it is masked."""

    cells: (
        pd.DataFrame
    )  # table, measure, series, org_unit_id, parent_id, period_id, period_type, exact, masked
    parts_of: pd.DataFrame  # period_id -> coarser target_period_id (every coarser type)


def _frame(warehouse: Warehouse, sql: str, columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(warehouse.fetchall(sql), columns=columns)


def read_published(config: HealthpipeConfig) -> Published:
    frames = []
    with Warehouse.open(config.warehouse) as warehouse:
        for table, (exact_table, measures, series) in PUBLIC_TABLES.items():
            keys = [*series, "org_unit_id", "period_id"]
            join = " and ".join(
                f"coalesce(p.{k}, '') = coalesce(e.{k}, '')" if k in series else f"p.{k} = e.{k}"
                for k in keys
            )
            for measure, flag in measures.items():
                period_type = "'Weekly'" if table == "pub_surveillance_weekly" else "e.period_type"
                sql = (
                    f"select {', '.join('e.' + k for k in keys)}, {period_type}, o.parent_id, "
                    f"cast(e.{measure} as double precision), p.{measure} is null and p.{flag} "
                    f"from marts.{table} as p join marts.{exact_table} as e on {join} "
                    f"join marts.dim_org_unit as o on o.org_unit_id = e.org_unit_id "
                    f"where e.{measure} is not null"
                )
                cells = _frame(
                    warehouse, sql, [*keys, "period_type", "parent_id", "exact", "masked"]
                )
                cells["series"] = cells[series].fillna("").astype(str).agg("|".join, axis=1)
                cells["element"] = cells[series[:2]].fillna("").astype(str).agg("|".join, axis=1)
                cells["table"], cells["measure"] = table, measure
                frames.append(cells.drop(columns=series))
        calendar = _frame(
            warehouse,
            "select period_id, period_type, start_date, end_date, frequency_order, is_weekly "
            "from marts.dim_period",
            ["period_id", "period_type", "start_date", "end_date", "frequency_order", "is_weekly"],
        )
    cells = pd.concat(frames, ignore_index=True)
    cells["masked"] = cells["masked"].astype(bool)
    return Published(cells, _period_nesting(calendar, set(cells["period_id"])))


def _period_nesting(calendar: pd.DataFrame, used: set[str]) -> pd.DataFrame:
    """Each used period and every coarser period it falls in, found from the dates."""
    for column in ("start_date", "end_date"):
        calendar[column] = pd.to_datetime(calendar[column]).astype("datetime64[ns]")
    periods = calendar[calendar["period_id"].isin(used)].copy()
    periods["end"] = periods["end_date"]
    periods["anchor"] = periods["start_date"] + pd.to_timedelta(
        np.where(periods["is_weekly"], WEEK_ANCHOR_DAYS, 0), unit="D"
    )
    pairs = []
    for target_type, targets in calendar.groupby("period_type"):
        targets = targets.sort_values("start_date")
        order, weekly = targets["frequency_order"].iloc[0], bool(targets["is_weekly"].iloc[0])
        finer = periods[periods["frequency_order"] < order]
        if weekly:  # weeks only into ISO bi-weeks; other weekly flavours nest in nothing weekly
            finer = finer[(finer["period_type"] == "Weekly") & (target_type == "BiWeekly")]
        if finer.empty:
            continue
        found = pd.merge_asof(
            finer.sort_values("anchor")[["period_id", "anchor", "end", "is_weekly"]],
            targets[["period_id", "start_date", "end_date"]].rename(
                columns={"period_id": "target_period_id"}
            ),
            left_on="anchor",
            right_on="start_date",
        )
        # a week by its fourth day; any other period only into a period holding all of it
        inside = found["anchor"] <= found["end_date"]
        found = found[inside & (found["is_weekly"] | (found["end"] <= found["end_date"]))]
        pairs.append(found[["period_id", "target_period_id"]])
    return pd.concat(pairs, ignore_index=True)


def _equations(published: Published) -> pd.DataFrame:
    """One row per (group, cell): the groups each cell belongs to."""
    cells = published.cells.assign(cell=np.arange(len(published.cells)))
    same = ["table", "measure", "series"]
    # The anchor's own cell, where the table has one (the parent, or the coarser period).
    own = cells[[*same, "org_unit_id", "period_id", "cell"]]

    by_parent = cells.dropna(subset=["parent_id"])
    org_parts = by_parent[[*same, "parent_id", "period_id", "cell"]].rename(
        columns={"parent_id": "anchor_org", "period_id": "anchor_period"}
    )
    org_parts["kind"] = "org"

    nested = cells.merge(published.parts_of, on="period_id")
    period_parts = nested[[*same, "org_unit_id", "target_period_id", "period_type", "cell"]]
    period_parts = period_parts.rename(
        columns={"org_unit_id": "anchor_org", "target_period_id": "anchor_period"}
    )
    period_parts["kind"] = "period:" + period_parts.pop("period_type")

    values = cells[cells["table"] == "pub_data_values"]
    combo_parts = values[["table", "measure", "element", "org_unit_id", "period_id", "cell"]]
    combo_parts = combo_parts.rename(
        columns={"element": "series", "org_unit_id": "anchor_org", "period_id": "anchor_period"}
    )
    combo_parts["kind"] = "combo"

    parts = pd.concat([org_parts, period_parts], ignore_index=True)
    group_keys = ["kind", *same, "anchor_org", "anchor_period"]
    totals = (
        parts[group_keys]
        .drop_duplicates()
        .merge(
            own.rename(columns={"org_unit_id": "anchor_org", "period_id": "anchor_period"}),
            on=[*same, "anchor_org", "anchor_period"],
        )
    )
    totals["is_total"] = True
    members = pd.concat([parts, totals, combo_parts], ignore_index=True)
    members["is_total"] = members["is_total"].fillna(False).astype(bool)
    members["group"] = members.groupby(group_keys, sort=False).ngroup()
    # A group without its total in the table needs the total from elsewhere: the attacker
    # has it unless it is a small count itself (masked wherever printed), and a group of one
    # part would only say that the part equals a total printed in another table (a count
    # printed twice is outside this attack; see the module's docstring).
    members["exact"] = cells["exact"].to_numpy()[members["cell"].to_numpy()]
    per_group = members.groupby("group").agg(
        closed=("is_total", "any"), size=("cell", "size"), total=("exact", "sum")
    )
    small = (per_group["total"] > 0) & (per_group["total"] < SMALL_CELL_THRESHOLD)
    usable = per_group.index[per_group["closed"] | ((per_group["size"] > 1) & ~small)]
    members = members[members["group"].isin(usable)]
    # The total an open group's parts add up to, as the attacker is given it.
    given = per_group["total"].where(~per_group["closed"])
    members = members.assign(given_total=given.reindex(members["group"]).to_numpy())
    return members[["group", "cell", "is_total", "given_total"]]


def recover(published: Published, masked: pd.Series | None = None) -> pd.DataFrame:
    """The masked cells the attacker gets back, peeling groups with one unknown cell.

    A group's lone unknown is its total minus its other parts (or, when the unknown is the
    total, the sum of its parts). The attacker only gets a cell back when that gives its
    exact value: a period that does not split exactly into the finer periods rolling into it
    yields a wrong number, which recovers nothing. ``masked`` overrides which cells are
    unknown (to show the attack works on a weaker masking); by default, the cells the public
    tables mask."""
    cells = published.cells
    exact = cells["exact"].to_numpy(dtype=np.float64)
    unknown = (cells["masked"] if masked is None else masked).to_numpy().copy()
    members = _equations(published)
    group, cell = members["group"].to_numpy(), members["cell"].to_numpy()
    is_total = members["is_total"].to_numpy()
    given = members["given_total"].to_numpy(dtype=np.float64)
    size = group.max() + 1
    recovered = np.zeros(len(unknown), dtype=bool)
    while True:
        known_value = np.where(unknown, 0.0, exact)[cell]
        unknown_count = np.bincount(group, weights=unknown[cell], minlength=size)
        parts_sum = np.bincount(group, weights=np.where(is_total, 0.0, known_value), minlength=size)
        total_cell = np.bincount(
            group, weights=np.where(is_total, known_value, 0.0), minlength=size
        )
        lone = (unknown_count[group] == 1) & unknown[cell]
        if not lone.any():
            break
        g = group[lone]
        total = np.where(np.isnan(given[lone]), total_cell[g], given[lone])
        solved = np.where(is_total[lone], parts_sum[g], total - parts_sum[g])
        right = np.isclose(solved, exact[cell[lone]], rtol=1e-9, atol=1e-9)
        found = np.unique(cell[lone][right])
        if len(found) == 0:
            break
        recovered[found] = True
        unknown[found] = False
    return published.cells[recovered]
