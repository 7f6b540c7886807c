"""Spreadsheet drops of the simulated country: the CSV and XLSX files that district offices,
stores and programmes send in (``healthpipe simulate`` writes them under ``tabular/``).

Layout (paths relative to the simulation's output folder)::

    tabular/facility_assessments.csv   tabular/facility_assessments.xlsx
    tabular/lmis_stock/lmis_stock_<YYYYMM>.csv   .xlsx   (one pair per month, see below)
    tabular/workforce.csv              tabular/workforce.xlsx
    tabular/governance.csv             tabular/governance.xlsx
    tabular/cross_sectoral.csv         tabular/cross_sectoral.xlsx

Every entity is written twice with the same rows: CSV (UTF-8 without BOM, ``,`` separator,
``"`` quoting only where needed, ``\\n`` line ends, a header row, an empty field for a missing
value) and XLSX (one sheet named after the entity, row 1 the header, data from row 2; integers
as numbers, every other value as an inline text cell, so a period id such as ``202501`` or a
comment such as ``=1+1`` stays text; a missing value is an empty cell). Values are integers
or text; there are no decimals and no dates as spreadsheet dates (dates are ISO text).
Facilities are identified by their DHIS2 org-unit ``code`` (``DL_D001_HC02``) plus ``name``;
periods are DHIS2 period ids: ``2025`` (yearly), ``2025Q1`` (quarterly), ``202501`` (monthly).
Yes/no items are the text ``yes`` or ``no``. ``comment`` columns are free text, mostly empty;
a genuine comment never starts with ``= + - @`` (those are the injected defects below).

Periods covered: assessments for every year whose assessment season (April to October)
overlaps the window; LMIS for every month lying wholly inside the window
(``Window.months()``); quarterly entities for every quarter that ends inside the window.

``facility_assessments``: one yearly SARA-style (WHO Service Availability and Readiness
Assessment) survey per facility and year. Columns:
``facility_code`` text, ``facility_name`` text, ``period`` text (``2025``), ``assessment_date``
text (``YYYY-MM-DD``), ``facility_type`` text (District Hospital | Health Centre | Health Post),
then the general service readiness tracer items, each yes/no, grouped by domain prefix
(the domain score is the share of its items present; the readiness index is the mean of the
five domain scores):
``amen_*`` basic amenities (7): power, improved_water_source, consultation_room_privacy,
client_sanitation, communication_equipment, computer_email_internet, emergency_transport;
``equip_*`` basic equipment (6): adult_scale, child_scale, thermometer, stethoscope,
bp_apparatus, light_source;
``prec_*`` standard precautions (9): sharps_final_disposal, infectious_waste_final_disposal,
sharps_storage, infectious_waste_storage, disinfectant, single_use_syringes,
soap_water_or_handrub, latex_gloves, precautions_guidelines;
``diag_*`` diagnostic capacity (8): haemoglobin, blood_glucose, malaria_rdt_or_microscopy,
urine_dipstick_protein, urine_dipstick_glucose, hiv_rdt, syphilis_rdt, urine_pregnancy_test;
``med_*`` essential medicines (25): amitriptyline, amlodipine, amoxicillin, ampicillin_inj,
beclometasone_inhaler, bisoprolol, carbamazepine, ceftriaxone_inj, diazepam, enalapril,
fluoxetine, gentamicin_inj, glibenclamide, haloperidol, ibuprofen, insulin_regular,
magnesium_sulphate_inj, metformin, omeprazole, ors, oxytocin_inj, salbutamol_inhaler,
simvastatin, hydrochlorothiazide, zinc_sulphate;
then ``inpatient_beds`` integer (beds), ``comment`` text (assessor's remark).

``lmis_stock``: the monthly stock report (LMIS report and requisition) of each facility for its
tracer commodities, one file pair per month because each month is a separate drop:
``tabular/lmis_stock/lmis_stock_<YYYYMM>.csv`` and ``.xlsx`` (sheet ``lmis_stock``). Columns:
``facility_code`` text, ``facility_name`` text, ``period`` text (``202501``), ``item_code``
text, ``item_name`` text, ``unit`` text (dispensing unit), ``opening_balance``,
``quantity_received``, ``quantity_consumed`` (dispensed), ``losses`` (expired, damaged),
``adjustments`` (signed: physical count corrections, transfers), ``stock_on_hand``,
``stockout_days`` (days of the month with nothing on the shelf): all integers in the item's
unit, ``stockout_days`` in days; ``comment`` text. Row by row
``stock_on_hand = opening_balance + quantity_received - quantity_consumed - losses +
adjustments`` and a month's ``opening_balance`` is the previous month's ``stock_on_hand``.
A facility's whole report is missing for some months (reporting rate below 100%); the next
report then opens with the unreported month's closing stock. **Schema drift**: from one month
on (``truth.json`` notes ``tabular.lmis_schema_drift_from``) the export names the column
``stock_on_hand`` as ``soh``; the column order does not change.
Items (``item_code``: name, unit; facility types that stock it):
``AL6X4``: artemether-lumefantrine 20/120 mg, pack of 6x4, pack; ``MRDT``: malaria RDT, test;
``AMOX250DT``: amoxicillin 250 mg dispersible, tablet; ``ORS``: sachet; ``ZINC20DT``: zinc
sulfate 20 mg dispersible, tablet; ``OXY10``: oxytocin 10 IU, ampoule; ``IMPLANT``:
levonorgestrel implant, piece (all types); ``MGSO4``: magnesium sulfate 50% 10 mL, ampoule;
``TLD``: tenofovir/lamivudine/dolutegravir, bottle of 30 (hospitals and health centres).

``workforce``: per facility, cadre and quarter (cadres with approved posts or staff). Columns:
``facility_code`` text, ``facility_name`` text, ``period`` text (``2025Q1``), ``cadre`` text
(``country.CADRES``), ``approved_posts``, ``filled_posts``, ``vacant_posts`` (= approved -
filled), ``joined`` and ``left`` (staff who joined or left in the quarter; filled = previous
filled + joined - left), ``trained_in_quarter`` (in-service training), ``supervision_visits``
(supportive supervision visits received): integers (people, posts, visits); ``comment`` text.
The last quarter's ``filled_posts`` equal ``country.establishment``.

``governance``: per facility and quarter. Columns: ``facility_code`` text, ``facility_name``
text, ``period`` text (``2025Q1``), ``hmc_meetings_planned``, ``hmc_meetings_held``
(health unit management committee meetings) integers, ``budget_allocated``,
``budget_spent`` integers in whole units of ``currency`` text (ISO 4217, ``TZS``),
``service_charter_displayed`` yes/no, ``comment`` text.

``cross_sectoral``: per facility catchment and quarter. Columns: ``facility_code`` text,
``facility_name`` text, ``period`` text (``2025Q1``), ``households``,
``households_safe_water``, ``households_improved_sanitation``,
``school_health_sessions_planned``, ``school_health_sessions_held``,
``children_6_59m_screened_muac``, ``sam_referred``, ``mam_referred`` (severe and moderate
acute malnutrition cases referred): integers (households, sessions, children); ``comment`` text.

Ground truth (``sim.truth``): every stockout episode (a run of consecutive months with
``stockout_days > 0`` for one facility and item, reported or not) as ``{facility_code, item,
start_period, end_period, stockout_days}`` (``item`` is the ``item_code``; ``stockout_days`` the
sum over the episode); in ``notes["tabular"]``: ``lmis_reports_expected`` (facilities x months),
``lmis_reports_received`` (facility-months with a report) and ``lmis_schema_drift_from`` (the
first drifted month); and the injected defects, each with ``record = {"file": <the CSV's path
relative to the output folder>, "row": <1-based data row; 0 means the header>}`` (the XLSX of
the same name holds the same defect in the same row): unknown facility code
(``unknown_code`` / ``org_unit_known``), empty required value (``missing_field`` /
``required_field_present``), negative count (``invalid_value`` / ``value_in_range``), exact
duplicate row, the later copy (``duplicate`` / ``duplicate``), a comment that starts with
``= + - @`` (``formula_injection`` / ``formula_neutralised``: raw in the CSV, a text cell in the
XLSX) and, once per drifted LMIS file, the renamed column (``schema_drift`` / ``schema_drift``).

Everything is drawn from ``sim.rng("tabular", ...)``; the XLSX files are written directly as
SpreadsheetML with fixed document times and zip entry times (the window's last day), so the
same seed gives byte-identical files.
"""

from __future__ import annotations

import calendar
import csv
import io
import math
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from pipelines.simulate.context import Simulation, Window
from pipelines.simulate.country import BASE_YEAR, CADRES, POPULATION_GROWTH, OrgUnit

Value = int | str | None
Row = list[Value]

SOURCE = "tabular"
DH, HC, HP = "District Hospital", "Health Centre", "Health Post"
CURRENCY = "TZS"

# --- Periods -------------------------------------------------------------------------------


def month_id(year: int, month: int) -> str:
    return f"{year}{month:02d}"


def quarters_in(window: Window) -> list[tuple[int, int]]:
    """Quarters that end inside the window: a quarterly report exists once its quarter is over."""
    quarters: list[tuple[int, int]] = []
    year, quarter = window.start.year, (window.start.month - 1) // 3 + 1
    while True:
        end = _quarter_end(year, quarter)
        if end > window.end:
            return quarters
        if end >= window.start:
            quarters.append((year, quarter))
        year, quarter = (year + 1, 1) if quarter == 4 else (year, quarter + 1)


def _quarter_end(year: int, quarter: int) -> date:
    month = quarter * 3
    return date(year, month, calendar.monthrange(year, month)[1])


# --- Sheets and defects ---------------------------------------------------------------------


@dataclass
class Sheet:
    """One CSV/XLSX file pair. Rows are lists so a row keeps its identity while defects are
    planted and duplicates inserted; its row number is only fixed when the files are written."""

    entity: str
    path: str
    """Relative to the output folder, without extension (``tabular/workforce``)."""
    columns: list[str]
    """The header as written (after any schema drift)."""
    rows: list[Row] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    """Schema drift: documented column name -> the name this file uses instead."""

    def __post_init__(self) -> None:
        self.columns = list(self.columns)  # never share (and drift) a module-level header

    def column(self, name: str) -> int:
        """Position of a column, by its documented name."""
        return self.columns.index(self.renamed.get(name, name))


@dataclass(frozen=True)
class Planted:
    sheet: Sheet
    row: Row | None
    """None for a file-level defect (schema drift: reported as row 0, the header)."""
    kind: str
    rule: str
    detail: str


@dataclass(frozen=True)
class DefectPlan:
    """How many defects of each kind to plant in an entity, and in which columns."""

    per_kind: int
    missing_columns: tuple[str, ...]
    negative_column: str


FORMULA_PAYLOADS = (
    '=HYPERLINK("http://example.invalid/report","click here")',
    "+SUM(1,1)",
    "-2+3",
    "@SUM(1,1)",
    "=1+1",
)

# --- SARA tracer items (WHO SARA reference manual, general service readiness) ---------------
# Each item with a difficulty from 0 (found almost everywhere) to 1 (rare below hospitals).
SARA_ITEMS: dict[str, dict[str, float]] = {
    "amen": {
        "power": 0.35, "improved_water_source": 0.3, "consultation_room_privacy": 0.15,
        "client_sanitation": 0.25, "communication_equipment": 0.35,
        "computer_email_internet": 0.85, "emergency_transport": 0.65,
    },
    "equip": {
        "adult_scale": 0.1, "child_scale": 0.15, "thermometer": 0.05, "stethoscope": 0.05,
        "bp_apparatus": 0.15, "light_source": 0.35,
    },
    "prec": {
        "sharps_final_disposal": 0.3, "infectious_waste_final_disposal": 0.4,
        "sharps_storage": 0.1, "infectious_waste_storage": 0.2, "disinfectant": 0.25,
        "single_use_syringes": 0.1, "soap_water_or_handrub": 0.2, "latex_gloves": 0.1,
        "precautions_guidelines": 0.5,
    },
    "diag": {
        "haemoglobin": 0.55, "blood_glucose": 0.5, "malaria_rdt_or_microscopy": 0.1,
        "urine_dipstick_protein": 0.45, "urine_dipstick_glucose": 0.45, "hiv_rdt": 0.15,
        "syphilis_rdt": 0.35, "urine_pregnancy_test": 0.3,
    },
    "med": {
        "amitriptyline": 0.8, "amlodipine": 0.6, "amoxicillin": 0.1, "ampicillin_inj": 0.35,
        "beclometasone_inhaler": 0.85, "bisoprolol": 0.75, "carbamazepine": 0.7,
        "ceftriaxone_inj": 0.4, "diazepam": 0.45, "enalapril": 0.6, "fluoxetine": 0.85,
        "gentamicin_inj": 0.3, "glibenclamide": 0.6, "haloperidol": 0.8, "ibuprofen": 0.2,
        "insulin_regular": 0.9, "magnesium_sulphate_inj": 0.4, "metformin": 0.55,
        "omeprazole": 0.45, "ors": 0.05, "oxytocin_inj": 0.15, "salbutamol_inhaler": 0.65,
        "simvastatin": 0.85, "hydrochlorothiazide": 0.6, "zinc_sulphate": 0.1,
    },
}  # fmt: skip
SARA_COLUMNS = [f"{domain}_{item}" for domain, items in SARA_ITEMS.items() for item in items]
SARA_DIFFICULTY = {
    f"{domain}_{item}": difficulty
    for domain, items in SARA_ITEMS.items()
    for item, difficulty in items.items()
}
# Availability = ceiling - difficulty * spread: better-resourced types have more items.
READINESS = {DH: (0.98, 0.3), HC: (0.92, 0.6), HP: (0.82, 0.85)}
# Year to year an item changes state with probability CHURN * (stationary share of the other
# state), so the yearly surveys drift but keep each facility's availability on average.
CHURN = 0.35
ASSESSMENT_SEASON = ((4, 1), (10, 31))  # surveys run after the long rains, April to October
BEDS = {DH: (60, 200), HC: (8, 40), HP: (0, 2)}

ASSESSMENT_COLUMNS = [
    "facility_code", "facility_name", "period", "assessment_date", "facility_type",
    *SARA_COLUMNS, "inpatient_beds", "comment",
]  # fmt: skip

# --- LMIS commodities -----------------------------------------------------------------------


@dataclass(frozen=True)
class Commodity:
    code: str
    name: str
    unit: str
    per_10k: float
    """Mean monthly consumption per 10,000 catchment population."""
    seasonal: bool
    """Follows the malaria season."""
    stocked_at: tuple[str, ...] = (DH, HC, HP)


COMMODITIES = (
    Commodity("AL6X4", "Artemether-lumefantrine 20/120 mg tablet, pack of 6x4", "pack", 40, True),
    Commodity("MRDT", "Malaria rapid diagnostic test (Pf/Pan)", "test", 180, True),
    Commodity("AMOX250DT", "Amoxicillin 250 mg dispersible tablet", "tablet", 280, False),
    Commodity("ORS", "Oral rehydration salts, sachet for 1 L", "sachet", 55, False),
    Commodity("ZINC20DT", "Zinc sulfate 20 mg dispersible tablet", "tablet", 220, False),
    Commodity("OXY10", "Oxytocin 10 IU/mL injection", "ampoule", 14, False),
    Commodity("IMPLANT", "Levonorgestrel contraceptive implant 2 x 75 mg", "piece", 4, False),
    Commodity("MGSO4", "Magnesium sulfate 50% injection, 10 mL", "ampoule", 5, False, (DH, HC)),
    Commodity(
        "TLD",
        "Tenofovir/lamivudine/dolutegravir 300/300/50 mg tablet, bottle of 30",
        "bottle",
        55,
        False,
        (DH, HC),
    ),
)
MALARIA_PEAK_MONTH = 5  # transmission peaks after the March-May long rains
MALARIA_AMPLITUDE = 0.6
# Resupply: hospitals are delivered every month, lower levels every second month; the order
# tops stock up to (cycle + buffer) months of average monthly consumption (AMC).
DELIVERY_CYCLE = {DH: 1, HC: 2, HP: 2}
MAX_STOCK_MONTHS_BUFFER = 1.5
MISSED_DELIVERY = 0.03  # a facility's delivery does not come
DISRUPTION_START = 0.02  # a district store runs out of an item, for 1-3 months
SEASONAL_ANTICIPATION = 0.7
MIN_STOCK_UNITS = 6  # even a slow item is kept at a few units, not ordered one by one
LOSS_EVENT, ADJUSTMENT_EVENT = 0.06, 0.05
AMC_MONTHS = 3

LMIS_COLUMNS = [
    "facility_code", "facility_name", "period", "item_code", "item_name", "unit",
    "opening_balance", "quantity_received", "quantity_consumed", "losses", "adjustments",
    "stock_on_hand", "stockout_days", "comment",
]  # fmt: skip
DRIFTED_NAMES = {"stock_on_hand": "soh"}

# --- Quarterly entities ---------------------------------------------------------------------

WORKFORCE_COLUMNS = [
    "facility_code", "facility_name", "period", "cadre", "approved_posts", "filled_posts",
    "vacant_posts", "joined", "left", "trained_in_quarter", "supervision_visits", "comment",
]  # fmt: skip
GOVERNANCE_COLUMNS = [
    "facility_code", "facility_name", "period", "hmc_meetings_planned", "hmc_meetings_held",
    "budget_allocated", "budget_spent", "currency", "service_charter_displayed", "comment",
]  # fmt: skip
CROSS_SECTORAL_COLUMNS = [
    "facility_code", "facility_name", "period", "households", "households_safe_water",
    "households_improved_sanitation", "school_health_sessions_planned",
    "school_health_sessions_held", "children_6_59m_screened_muac", "sam_referred",
    "mam_referred", "comment",
]  # fmt: skip
QUARTERLY_BUDGET = {DH: 150_000_000, HC: 24_000_000, HP: 6_000_000}  # TZS
MEETINGS_PLANNED = {DH: 3, HC: 3, HP: 1}
HOUSEHOLD_SIZE = 4.8
CHILDREN_6_59M_SHARE = 0.145
PEOPLE_PER_SCHOOL = 2500

DEFECT_PLANS = {
    "facility_assessments": DefectPlan(1, ("assessment_date", "inpatient_beds"), "inpatient_beds"),
    "lmis_stock": DefectPlan(3, ("quantity_consumed", "stock_on_hand", "item_code"), "stock_on_hand"),
    "workforce": DefectPlan(1, ("filled_posts", "cadre"), "trained_in_quarter"),
    "governance": DefectPlan(1, ("budget_allocated", "hmc_meetings_held"), "budget_spent"),
    "cross_sectoral": DefectPlan(1, ("households", "children_6_59m_screened_muac"), "households_safe_water"),
}  # fmt: skip


def catchment_population(facility: OrgUnit, year: int) -> int:
    """``Country.population`` for one facility, without scanning the whole hierarchy."""
    return round(facility.base_population * (1 + POPULATION_GROWTH) ** (year - BASE_YEAR))


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def facility_key(facility: OrgUnit) -> tuple[str, str]:
    return facility.code, facility.name


# --- Facility assessments (SARA) ------------------------------------------------------------


def assessment_years(window: Window) -> list[tuple[int, date, date]]:
    """(year, first day, last day) of each assessment season overlapping the window."""
    seasons = []
    (m0, d0), (m1, d1) = ASSESSMENT_SEASON
    for year in window.years():
        first = max(date(year, m0, d0), window.start)
        last = min(date(year, m1, d1), window.end)
        if first <= last:
            seasons.append((year, first, last))
    return seasons


def item_availability(facility_type: str, quality: float) -> dict[str, float]:
    ceiling, spread = READINESS[facility_type]
    return {
        item: float(np.clip(ceiling - difficulty * spread + quality, 0.02, 0.99))
        for item, difficulty in SARA_DIFFICULTY.items()
    }


def assessment_comment(items: dict[str, bool], rng: np.random.Generator) -> str | None:
    if rng.random() > 0.25:
        return None
    if not items["amen_power"]:
        return "No electricity on the day of the visit"
    if not items["amen_improved_water_source"]:
        return "Water fetched from a river more than 500 m away"
    return str(rng.choice(["Assessment completed", "In-charge absent, deputy interviewed"]))


def facility_assessments(sim: Simulation) -> Sheet:
    sheet = Sheet("facility_assessments", "tabular/facility_assessments", ASSESSMENT_COLUMNS)
    seasons = assessment_years(sim.window)
    rows_by_year: dict[int, list[Row]] = {year: [] for year, _, _ in seasons}
    for facility in sim.country.facilities:
        rng = sim.rng(SOURCE, "assessment", facility.code)
        ftype = facility.facility_type or HP
        availability = item_availability(ftype, float(rng.normal(0, 0.08)))
        present = {item: bool(rng.random() < p) for item, p in availability.items()}
        beds = int(rng.integers(BEDS[ftype][0], BEDS[ftype][1] + 1))
        for year, first, last in seasons:
            day = first + timedelta(days=int(rng.integers(0, (last - first).days + 1)))
            rows_by_year[year].append(
                [
                    *facility_key(facility), str(year), day.isoformat(), ftype,
                    *(yes_no(present[item]) for item in SARA_COLUMNS),
                    beds, assessment_comment(present, rng),
                ]
            )  # fmt: skip
            present = {
                item: _next_state(flag, availability[item], rng) for item, flag in present.items()
            }
            beds = max(BEDS[ftype][0], beds + int(rng.integers(-2, 3)))
    sheet.rows = [row for year, _, _ in seasons for row in rows_by_year[year]]
    return sheet


def _next_state(present: bool, share: float, rng: np.random.Generator) -> bool:
    flip = CHURN * ((1 - share) if present else share)
    return present != bool(rng.random() < flip)


# --- LMIS stock reports ---------------------------------------------------------------------


@dataclass(frozen=True)
class StockMonth:
    opening: int
    received: int
    consumed: int
    losses: int
    adjustments: int
    closing: int
    stockout_days: int
    comment: str | None


def deplete(stock: int, demand: int, days: int) -> tuple[int, int]:
    """Dispense ``demand`` spread evenly over ``days`` from ``stock``: (dispensed, days with
    nothing on the shelf). Demand the shelf cannot meet is lost, as at a real facility."""
    if days <= 0:
        return 0, 0
    if stock <= 0:
        return 0, days
    if demand <= stock:
        return demand, 0
    days_with_stock = stock * days // demand
    return stock, days - days_with_stock


def stock_month(
    opening: int,
    received: int,
    delivery_day: int,
    demand: int,
    days: int,
    draws: dict[str, float],
) -> StockMonth:
    """One month at one facility for one item: stock is dispensed until the delivery arrives
    on ``delivery_day``, then from the replenished shelf; losses and count adjustments are
    booked at the month's end, never below zero."""
    before = delivery_day - 1 if received > 0 else days
    first_demand = demand * before // days
    used_first, out_first = deplete(opening, first_demand, before)
    used_second, out_second = deplete(
        opening - used_first + received, demand - first_demand, days - before
    )
    consumed = used_first + used_second
    remaining = opening + received - consumed
    losses, adjustments, notes = 0, 0, []
    if remaining > 0 and draws["loss"] < LOSS_EVENT:
        losses = min(remaining, math.ceil(remaining * (0.02 + 0.1 * draws["loss_size"])))
        notes.append("Expired stock removed" if draws["loss_size"] < 0.7 else "Damaged in storage")
    if draws["adjust"] < ADJUSTMENT_EVENT:
        step = max(1, round(0.05 * (remaining - losses)))
        adjustments = max(-(remaining - losses), round((2 * draws["adjust_size"] - 1) * step))
        if adjustments > 0:
            notes.append("Transfer in from neighbouring facility")
        elif adjustments < 0:
            notes.append("Physical count correction")
    stockout_days = out_first + out_second
    if stockout_days and not notes and draws["note"] < 0.3:
        notes.append("Stocked out, emergency order placed")
    return StockMonth(
        opening=opening,
        received=received,
        consumed=consumed,
        losses=losses,
        adjustments=adjustments,
        closing=remaining - losses + adjustments,
        stockout_days=stockout_days,
        comment="; ".join(notes) or None,
    )


def adjusted_consumption(month: StockMonth, days: int) -> float | None:
    """OpenLMIS: consumption x days / (days - stockout days); None when out all month."""
    if month.stockout_days >= days:
        return None
    return month.consumed * days / (days - month.stockout_days)


def season_factor(month: int, seasonal: bool) -> float:
    """Demand relative to the yearly mean in a calendar month (1 outside the malaria items)."""
    if not seasonal:
        return 1.0
    return 1 + MALARIA_AMPLITUDE * math.cos((month - MALARIA_PEAK_MONTH) * 2 * math.pi / 12)


def forecast(amc: float, month: int, cycle: int, seasonal: bool) -> float:
    """Expected monthly need until the next delivery. For malaria items the district
    pharmacist scales the AMC by the season to come, but only halfway: pre-positioning is
    imperfect, which is why antimalarials still run out early in the season."""
    if not seasonal:
        return amc
    past = [season_factor((month - k - 1) % 12 + 1, True) for k in range(1, AMC_MONTHS + 1)]
    ahead = [season_factor((month + k - 1) % 12 + 1, True) for k in range(cycle + 1)]
    ratio = (sum(ahead) / len(ahead)) / (sum(past) / len(past))
    return amc * (1 + SEASONAL_ANTICIPATION * (ratio - 1))


def district_fill_rates(sim: Simulation) -> dict[tuple[str, str], np.ndarray]:
    """Share of each order the district store can fill, per district, item and month: mostly
    full, with stock-out spells of one to three months at the store."""
    months = len(sim.window.months())
    rates = {}
    for district in sim.country.districts:
        for item in COMMODITIES:
            rng = sim.rng(SOURCE, "lmis", "store", district.code, item.code)
            fill = np.ones(months)
            m = 0
            while m < months:
                if rng.random() < DISRUPTION_START:
                    length = int(rng.integers(1, 4))
                    fill[m : m + length] = rng.uniform(0.0, 0.3)
                    m += length
                else:
                    m += 1
            rates[(district.code, item.code)] = fill
    return rates


def simulate_stock(
    facility: OrgUnit,
    item: Commodity,
    months: Sequence[tuple[int, int]],
    store_fill: np.ndarray,
    rng: np.random.Generator,
    population: int,
) -> list[StockMonth]:
    """The true monthly stock card of one item at one facility."""
    ftype = facility.facility_type or HP
    cycle = DELIVERY_CYCLE[ftype]
    mean = item.per_10k * population / 10_000 * float(rng.lognormal(0, 0.3))
    season = [season_factor(month, item.seasonal) for _, month in months]
    demand = rng.poisson(mean * np.array(season))
    n = len(months)
    delivery_day = rng.integers(2, 22, size=n)
    offset = int(rng.integers(cycle))
    missed = rng.random(n) < MISSED_DELIVERY
    partial = rng.uniform(0.8, 1.0, size=n)
    draws = {name: rng.random(n) for name in ("loss", "loss_size", "adjust", "adjust_size", "note")}
    max_months = cycle + MAX_STOCK_MONTHS_BUFFER
    opening = round(mean * season[0] * float(rng.uniform(1.0, max_months))) if n else 0
    history: list[float] = []
    card = []
    for i, (year, month) in enumerate(months):
        days = calendar.monthrange(year, month)[1]
        received = 0
        if i % cycle == offset and not missed[i]:
            recent = history[-AMC_MONTHS:]
            amc = sum(recent) / len(recent) if recent else mean
            need = forecast(amc, month, cycle, item.seasonal)
            order = max(0, max(round(max_months * need), MIN_STOCK_UNITS) - opening)
            received = round(order * store_fill[i] * partial[i])
        month_draws = {name: float(values[i]) for name, values in draws.items()}
        result = stock_month(
            opening, received, int(delivery_day[i]), int(demand[i]), days, month_draws
        )
        adjusted = adjusted_consumption(result, days)
        if adjusted is not None:
            history.append(adjusted)
        card.append(result)
        opening = result.closing
    return card


def stockout_episodes(
    facility: OrgUnit, item: Commodity, months: Sequence[tuple[int, int]], card: list[StockMonth]
) -> list[dict[str, str | int]]:
    """Runs of consecutive months with at least one day out of stock."""
    runs: list[list[tuple[str, int]]] = []
    previous_out = False
    for (year, month), result in zip(months, card, strict=True):
        out = result.stockout_days > 0
        if out and not previous_out:
            runs.append([])
        if out:
            runs[-1].append((month_id(year, month), result.stockout_days))
        previous_out = out
    return [
        {
            "facility_code": facility.code,
            "item": item.code,
            "start_period": run[0][0],
            "end_period": run[-1][0],
            "stockout_days": sum(days for _, days in run),
        }
        for run in runs
    ]


def lmis_row(facility: OrgUnit, period: str, item: Commodity, result: StockMonth) -> Row:
    return [
        *facility_key(facility), period, item.code, item.name, item.unit,
        result.opening, result.received, result.consumed, result.losses, result.adjustments,
        result.closing, result.stockout_days, result.comment,
    ]  # fmt: skip


def lmis_stock(sim: Simulation) -> list[Sheet]:
    """One sheet per month; records the true stockout episodes and the reporting counts."""
    months = sim.window.months()
    periods = [month_id(y, m) for y, m in months]
    sheets = [
        Sheet("lmis_stock", f"tabular/lmis_stock/lmis_stock_{p}", list(LMIS_COLUMNS))
        for p in periods
    ]
    fill = district_fill_rates(sim)
    received_reports = 0
    for facility in sim.country.facilities:
        rng = sim.rng(SOURCE, "lmis", facility.code)
        # Most facilities report almost every month; a few are poor reporters.
        miss_rate = 0.02 if rng.random() < 0.7 else float(rng.uniform(0.05, 0.25))
        reported = rng.random(len(months)) >= miss_rate
        received_reports += int(reported.sum())
        district_code = sim.country.district_of(facility.uid).code
        # Demand is sized on the first year's catchment: growth (under 3% a year) is lost in
        # the noise of monthly consumption.
        population = catchment_population(facility, months[0][0]) if months else 0
        for item in COMMODITIES:
            if facility.facility_type not in item.stocked_at:
                continue
            card = simulate_stock(
                facility, item, months, fill[(district_code, item.code)], rng, population
            )
            sim.truth.stockouts.extend(stockout_episodes(facility, item, months, card))
            for i, result in enumerate(card):
                if reported[i]:
                    sheets[i].rows.append(lmis_row(facility, periods[i], item, result))
    sim.truth.notes.setdefault("tabular", {}).update(
        {
            "lmis_reports_expected": len(sim.country.facilities) * len(months),
            "lmis_reports_received": received_reports,
        }
    )
    return sheets


# --- Workforce ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaffQuarter:
    filled: int
    joined: int
    left: int


def staffing_history(
    approved: int, filled_now: int, quarters: int, rng: np.random.Generator
) -> list[StaffQuarter]:
    """Quarterly filled posts ending at today's establishment, drawn backwards in time: each
    quarter some staff leave (attrition) and some vacancies are filled."""
    history = []
    filled = filled_now
    for _ in range(quarters):
        joined = min(filled, int(rng.poisson(0.08 * (approved - filled) + 0.02 * filled)))
        left = int(rng.poisson(0.025 * filled + 0.05))
        before = filled - joined + left
        if before > approved:
            left -= before - approved
            before = approved
        history.append(StaffQuarter(filled, joined, left))
        filled = before
    return history[::-1]


def workforce(sim: Simulation) -> Sheet:
    sheet = Sheet("workforce", "tabular/workforce", WORKFORCE_COLUMNS)
    quarters = quarters_in(sim.window)
    by_quarter: list[list[Row]] = [[] for _ in quarters]
    for facility in sim.country.facilities:
        rng = sim.rng(SOURCE, "workforce", facility.code)
        training_rate = float(rng.uniform(0.03, 0.2))
        posts = sim.country.establishment.get(facility.uid, {})
        for cadre in CADRES:
            approved, filled = posts.get(cadre, (0, 0))
            if approved == 0 and filled == 0:
                continue
            history = staffing_history(approved, filled, len(quarters), rng)
            for q, ((year, quarter), staff) in enumerate(zip(quarters, history, strict=True)):
                comment = None
                if staff.left and rng.random() < 0.3:
                    comment = str(rng.choice(["Transferred out", "Resigned", "On study leave"]))
                by_quarter[q].append(
                    [
                        *facility_key(facility), f"{year}Q{quarter}", cadre, approved,
                        staff.filled, approved - staff.filled, staff.joined, staff.left,
                        int(rng.binomial(staff.filled, training_rate)), int(rng.poisson(0.9)),
                        comment,
                    ]
                )  # fmt: skip
    sheet.rows = [row for rows in by_quarter for row in rows]
    return sheet


# --- Governance -----------------------------------------------------------------------------


def governance(sim: Simulation) -> Sheet:
    sheet = Sheet("governance", "tabular/governance", GOVERNANCE_COLUMNS)
    quarters = quarters_in(sim.window)
    by_quarter: list[list[Row]] = [[] for _ in quarters]
    for facility in sim.country.facilities:
        rng = sim.rng(SOURCE, "governance", facility.code)
        ftype = facility.facility_type or HP
        attendance = float(rng.uniform(0.45, 0.97))
        execution = float(rng.uniform(0.55, 0.98))
        budget = QUARTERLY_BUDGET[ftype] * float(rng.lognormal(0, 0.2))
        charter = bool(rng.random() < {DH: 0.85, HC: 0.6, HP: 0.4}[ftype])
        for q, (year, quarter) in enumerate(quarters):
            planned = MEETINGS_PLANNED[ftype]
            held = int(rng.binomial(planned, attendance))
            allocated = round(budget * float(rng.uniform(0.85, 1.15)), -3)
            # Disbursements arrive late in the first quarter of the financial year (July).
            rate = execution * (0.6 if quarter == 3 else 1.0) * float(rng.uniform(0.9, 1.1))
            spent = round(allocated * rate, -3)
            comment = (
                "Meeting postponed, no quorum" if held < planned and rng.random() < 0.3 else None
            )
            by_quarter[q].append(
                [
                    *facility_key(facility), f"{year}Q{quarter}", planned, held, int(allocated),
                    int(spent), CURRENCY, yes_no(charter), comment,
                ]
            )  # fmt: skip
            charter = _next_state(charter, 0.8, rng)
    sheet.rows = [row for rows in by_quarter for row in rows]
    return sheet


# --- Cross-sectoral (WASH, school health, nutrition) ----------------------------------------


def cross_sectoral(sim: Simulation) -> Sheet:
    sheet = Sheet("cross_sectoral", "tabular/cross_sectoral", CROSS_SECTORAL_COLUMNS)
    quarters = quarters_in(sim.window)
    by_quarter: list[list[Row]] = [[] for _ in quarters]
    for facility in sim.country.facilities:
        rng = sim.rng(SOURCE, "cross_sectoral", facility.code)
        water = float(rng.uniform(0.4, 0.85))
        sanitation = float(rng.uniform(0.2, 0.7))
        screening = float(rng.uniform(0.2, 0.7))
        sessions_kept = float(rng.uniform(0.55, 0.95))
        sam_rate, mam_rate = float(rng.uniform(0.006, 0.02)), float(rng.uniform(0.03, 0.08))
        for q, (year, quarter) in enumerate(quarters):
            population = catchment_population(facility, year)
            households = round(population / HOUSEHOLD_SIZE)
            years_on = q / 4  # WASH coverage improves about one point a year
            planned = max(1, round(population / PEOPLE_PER_SCHOOL))
            # The lean season before the harvest (January to June) brings more wasting.
            lean = 1.4 if quarter in (1, 2) else 1.0
            children = round(population * CHILDREN_6_59M_SHARE)
            screened = int(rng.binomial(children, screening))
            by_quarter[q].append(
                [
                    *facility_key(facility), f"{year}Q{quarter}", households,
                    int(rng.binomial(households, min(0.99, water + 0.01 * years_on))),
                    int(rng.binomial(households, min(0.99, sanitation + 0.01 * years_on))),
                    planned, int(rng.binomial(planned, sessions_kept)), screened,
                    int(rng.binomial(screened, sam_rate * lean)),
                    int(rng.binomial(screened, mam_rate * lean)),
                    "Schools closed for holidays part of the quarter" if quarter == 4
                    and rng.random() < 0.1 else None,
                ]
            )  # fmt: skip
    sheet.rows = [row for rows in by_quarter for row in rows]
    return sheet


# --- Defects --------------------------------------------------------------------------------


class DefectPlanter:
    """Plants defects in an entity's sheets; each row gets at most one defect, so a test can
    hold every other row to the data's rules."""

    def __init__(self, sheets: list[Sheet], rng: np.random.Generator, known: set[str]) -> None:
        self.sheets = sheets
        self.rng = rng
        self.known = known
        self.used: set[int] = set()
        self.planted: list[Planted] = []
        self.rows = [(sheet, row) for sheet in sheets for row in sheet.rows]

    def pick(self, count: int) -> list[tuple[Sheet, Row]]:
        candidates = [(sheet, row) for sheet, row in self.rows if id(row) not in self.used]
        chosen = self.rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
        picked = [candidates[int(i)] for i in sorted(chosen)]
        self.used.update(id(row) for _, row in picked)
        return picked

    def add(self, sheet: Sheet, row: Row | None, kind: str, rule: str, detail: str) -> None:
        self.planted.append(Planted(sheet, row, kind, rule, detail))

    def unknown_codes(self, count: int) -> None:
        for sheet, row in self.pick(count):
            code = str(row[0])
            # A retired or mistyped facility number in a real district: not in the hierarchy.
            number = 90 + int(self.rng.integers(0, 10))
            wrong = f"{code[:-2]}{number}"
            while wrong in self.known:
                number += 1
                wrong = f"{code[:-2]}{number}"
            row[0] = wrong
            self.add(
                sheet,
                row,
                "unknown_code",
                "org_unit_known",
                f"facility_code {wrong!r} (was {code!r}) is not an org unit code",
            )

    def missing(self, count: int, columns: tuple[str, ...]) -> None:
        for n, (sheet, row) in enumerate(self.pick(count)):
            index = sheet.column(columns[n % len(columns)])
            row[index] = None
            self.add(
                sheet,
                row,
                "missing_field",
                "required_field_present",
                f"required column {sheet.columns[index]!r} is empty",
            )

    def negative(self, count: int, column: str) -> None:
        for sheet, row in self.pick(count):
            index = sheet.column(column)
            value = row[index]
            row[index] = -(
                value if isinstance(value, int) and value > 0 else int(self.rng.integers(1, 20))
            )
            self.add(
                sheet,
                row,
                "invalid_value",
                "value_in_range",
                f"{sheet.columns[index]!r} is negative ({row[index]})",
            )

    def formula_injections(self, count: int, offset: int) -> int:
        for n, (sheet, row) in enumerate(self.pick(count)):
            payload = FORMULA_PAYLOADS[(offset + n) % len(FORMULA_PAYLOADS)]
            row[sheet.column("comment")] = payload
            self.add(
                sheet,
                row,
                "formula_injection",
                "formula_neutralised",
                f"comment starts with {payload[0]!r}: {payload}",
            )
        return offset + count

    def duplicates(self, count: int) -> None:
        for sheet, row in self.pick(count):
            copy = list(row)
            sheet.rows.insert(_index_of(sheet, row) + 1, copy)
            self.used.add(id(copy))
            self.add(sheet, copy, "duplicate", "duplicate", "exact copy of the previous row")


def _index_of(sheet: Sheet, row: Row) -> int:
    return next(i for i, candidate in enumerate(sheet.rows) if candidate is row)


def plant_defects(
    sim: Simulation, entity: str, sheets: list[Sheet], formula_offset: int
) -> tuple[list[Planted], int]:
    plan = DEFECT_PLANS[entity]
    known = {ou.code for ou in sim.country.org_units}
    planter = DefectPlanter(sheets, sim.rng(SOURCE, "defects", entity), known)
    planter.unknown_codes(plan.per_kind)
    planter.missing(plan.per_kind, plan.missing_columns)
    planter.negative(plan.per_kind, plan.negative_column)
    formula_offset = planter.formula_injections(plan.per_kind, formula_offset)
    planter.duplicates(plan.per_kind)
    return planter.planted, formula_offset


def drift_lmis_schema(sim: Simulation, sheets: list[Sheet]) -> list[Planted]:
    """From a month in the second half of the window on, the export renames a column."""
    if len(sheets) < 2:
        return []
    rng = sim.rng(SOURCE, "lmis", "drift")
    start = int(rng.integers(max(1, len(sheets) // 2), len(sheets)))
    renamed = ", ".join(f"{old!r} -> {new!r}" for old, new in DRIFTED_NAMES.items())
    planted = []
    for sheet in sheets[start:]:
        sheet.columns = [DRIFTED_NAMES.get(name, name) for name in sheet.columns]
        sheet.renamed = dict(DRIFTED_NAMES)
        planted.append(
            Planted(sheet, None, "schema_drift", "schema_drift", f"column renamed: {renamed}")
        )
    first_period = sheets[start].path.rsplit("_", 1)[-1]
    sim.truth.notes.setdefault("tabular", {})["lmis_schema_drift_from"] = first_period
    return planted


def record_defects(sim: Simulation, planted: Iterable[Planted]) -> None:
    """Row numbers are resolved only now, after every duplicate has been inserted."""
    positions: dict[int, dict[int, int]] = {}
    for defect in planted:
        sheet = defect.sheet
        if id(sheet) not in positions:
            positions[id(sheet)] = {id(row): i + 1 for i, row in enumerate(sheet.rows)}
        row = 0 if defect.row is None else positions[id(sheet)][id(defect.row)]
        sim.truth.add_defect(
            source=SOURCE,
            entity=sheet.entity,
            kind=defect.kind,
            record={"file": f"{sheet.path}.csv", "row": row},
            expected_rule=defect.rule,
            detail=f"{defect.detail} (same row in {sheet.path}.xlsx)",
        )


# --- Writers --------------------------------------------------------------------------------


def write_csv(sheet: Sheet, path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(sheet.columns)
    writer.writerows(["" if v is None else v for v in row] for row in sheet.rows)
    path.write_bytes(buffer.getvalue().encode("utf-8"))


def column_letter(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _cell(ref: str, value: Value, style: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return f'<c r="{ref}"{style}><v>{value}</v></c>'
    return f'<c r="{ref}"{style}{_inline_text(value)}'


@lru_cache(maxsize=65536)
def _inline_text(value: str) -> str:
    """Every text value is an inline string: a spreadsheet shows "=1+1" as text, never as a
    formula, and never turns "202501" into a number. (Cached: names repeat on every row.)"""
    space = ' xml:space="preserve"' if value != value.strip() else ""
    return f' t="inlineStr"><is><t{space}>{escape(value)}</t></is></c>'


def sheet_xml(sheet: Sheet) -> str:
    letters = [column_letter(i) for i in range(len(sheet.columns))]
    last = f"{letters[-1]}{len(sheet.rows) + 1}"
    header = "".join(
        _cell(f"{letter}1", name, ' s="1"')
        for letter, name in zip(letters, sheet.columns, strict=True)
    )
    lines = [f'<row r="1">{header}</row>']
    for number, row in enumerate(sheet.rows, start=2):
        cells = "".join(
            _cell(f"{letter}{number}", value) for letter, value in zip(letters, row, strict=True)
        )
        lines.append(f'<row r="{number}">{cells}</row>')
    return (
        f'{XML_DECLARATION}<worksheet xmlns="{MAIN_NS}"><dimension ref="A1:{last}"/>'
        '<sheetViews><sheetView workbookViewId="0"><pane ySplit="1" topLeftCell="A2" '
        'activePane="bottomLeft" state="frozen"/></sheetView></sheetViews>'
        f"<sheetData>{''.join(lines)}</sheetData></worksheet>"
    )


XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
PACKAGE_RELS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
DOC_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
CONTENT_TYPES = (
    f'{XML_DECLARATION}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    '<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
    '<Override PartName="/docProps/core.xml" ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
    '<Override PartName="/docProps/app.xml" ContentType="application/vnd.openxmlformats-officedocument.extended-properties+xml"/>'
    "</Types>"
)
PACKAGE_RELS = (
    f'{XML_DECLARATION}<Relationships xmlns="{PACKAGE_RELS_NS}">'
    f'<Relationship Id="rId1" Type="{DOC_RELS}/officeDocument" Target="xl/workbook.xml"/>'
    '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties" Target="docProps/core.xml"/>'
    f'<Relationship Id="rId3" Type="{DOC_RELS}/extended-properties" Target="docProps/app.xml"/>'
    "</Relationships>"
)
WORKBOOK_RELS = (
    f'{XML_DECLARATION}<Relationships xmlns="{PACKAGE_RELS_NS}">'
    f'<Relationship Id="rId1" Type="{DOC_RELS}/worksheet" Target="worksheets/sheet1.xml"/>'
    f'<Relationship Id="rId2" Type="{DOC_RELS}/styles" Target="styles.xml"/>'
    "</Relationships>"
)
STYLES = (
    f'{XML_DECLARATION}<styleSheet xmlns="{MAIN_NS}">'
    '<fonts count="2"><font><sz val="11"/><name val="Calibri"/></font>'
    '<font><b/><sz val="11"/><name val="Calibri"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)  # fmt: skip
APP_PROPERTIES = (
    f'{XML_DECLARATION}<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties">'
    "<Application>healthpipe simulate</Application></Properties>"
)


def workbook_xml(sheet_name: str) -> str:
    return (
        f'{XML_DECLARATION}<workbook xmlns="{MAIN_NS}" xmlns:r="{DOC_RELS}">'
        f'<sheets><sheet name="{escape(sheet_name)}" sheetId="1" r:id="rId1"/></sheets></workbook>'
    )


def core_properties(title: str, stamp: date) -> str:
    when = f"{stamp.isoformat()}T00:00:00Z"
    return (
        f"{XML_DECLARATION}<cp:coreProperties "
        'xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<dc:title>{escape(title)}</dc:title><dc:creator>healthpipe simulate</dc:creator>"
        f'<dcterms:created xsi:type="dcterms:W3CDTF">{when}</dcterms:created>'
        f'<dcterms:modified xsi:type="dcterms:W3CDTF">{when}</dcterms:modified>'
        "</cp:coreProperties>"
    )


def write_xlsx(sheet: Sheet, path: Path, stamp: date) -> None:
    """A one-sheet workbook. Its document times and zip entry times are ``stamp`` (the window's
    last day), never the clock, so the same data gives the same bytes."""
    parts = (
        ("[Content_Types].xml", CONTENT_TYPES),
        ("_rels/.rels", PACKAGE_RELS),
        ("docProps/app.xml", APP_PROPERTIES),
        ("docProps/core.xml", core_properties(sheet.path.rsplit("/", 1)[-1], stamp)),
        ("xl/workbook.xml", workbook_xml(sheet.entity)),
        ("xl/_rels/workbook.xml.rels", WORKBOOK_RELS),
        ("xl/styles.xml", STYLES),
        ("xl/worksheets/sheet1.xml", sheet_xml(sheet)),
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in parts:
            info = zipfile.ZipInfo(name, date_time=(stamp.year, stamp.month, stamp.day, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # the same bytes whichever system writes them
            info.external_attr = 0o644 << 16
            archive.writestr(info, text.encode("utf-8"), compresslevel=6)
    path.write_bytes(buffer.getvalue())


# --- Entry point ----------------------------------------------------------------------------


def build_sheets(sim: Simulation) -> dict[str, list[Sheet]]:
    """Every entity's sheets, in a fixed order, with their defects planted and recorded."""
    entities = {
        "facility_assessments": [facility_assessments(sim)],
        "lmis_stock": lmis_stock(sim),
        "workforce": [workforce(sim)],
        "governance": [governance(sim)],
        "cross_sectoral": [cross_sectoral(sim)],
    }
    # Drift first, so a defect planted in a drifted file names the column as the file does.
    planted = drift_lmis_schema(sim, entities["lmis_stock"])
    formula_offset = 0  # the payloads cycle across entities, so every trigger character occurs
    for entity, sheets in entities.items():
        found, formula_offset = plant_defects(sim, entity, sheets, formula_offset)
        planted.extend(found)
    record_defects(sim, planted)
    return entities


def write_tabular(sim: Simulation, out_dir: Path) -> dict[str, int]:
    """Write the spreadsheet drops under ``out_dir/tabular`` (layout in the module docstring);
    return the number of data rows per file, keyed by the path relative to ``out_dir``."""
    rows: dict[str, int] = {}
    stamp = sim.window.end
    for sheets in build_sheets(sim).values():
        for sheet in sheets:
            base = out_dir / sheet.path
            base.parent.mkdir(parents=True, exist_ok=True)
            write_csv(sheet, base.with_name(base.name + ".csv"))
            write_xlsx(sheet, base.with_name(base.name + ".xlsx"), stamp)
            rows[f"{sheet.path}.csv"] = rows[f"{sheet.path}.xlsx"] = len(sheet.rows)
    return rows
