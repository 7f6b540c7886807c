"""DHIS2 metadata of the simulated country: category combos, data elements, data sets, and
the IDSR diseases with the parameters their weekly counts are drawn from.

UIDs are fixed (not drawn from the seed) because the indicator library in ``indicators/``
names them. DHIS2's own default category objects keep their real UIDs.
"""

from __future__ import annotations

from dataclasses import dataclass

# DHIS2's default category model: the same UIDs in every instance.
DEFAULT_CATEGORY_COMBO = "bjDvmb4bfuf"
DEFAULT_CATEGORY = "GLevLNI9wkl"
DEFAULT_CATEGORY_OPTION = "xYerKDKCefk"
DEFAULT_CATEGORY_OPTION_COMBO = "HllvX50cXC0"


@dataclass(frozen=True)
class CategoryOption:
    uid: str
    code: str
    name: str


@dataclass(frozen=True)
class Category:
    uid: str
    code: str
    name: str
    options: tuple[CategoryOption, ...]


@dataclass(frozen=True)
class CategoryCombo:
    uid: str
    code: str
    name: str
    category: Category
    option_combos: tuple[tuple[str, CategoryOption], ...]
    """(category option combo UID, its option): one combo per option of the one category."""

    @property
    def combo_uids(self) -> tuple[str, ...]:
        return tuple(uid for uid, _ in self.option_combos)


UNDER_5 = CategoryOption("hpAgeUnder5", "AGE_LT5", "Under 5 years")
FIVE_AND_OLDER = CategoryOption("hpAge5Older", "AGE_GE5", "5 years and older")
MALE = CategoryOption("hpOptMale00", "SEX_M", "Male")
FEMALE = CategoryOption("hpOptFemale", "SEX_F", "Female")

AGE_GROUP = Category("hpCatAgeGrp", "AGE_IDSR", "Age group (IDSR)", (UNDER_5, FIVE_AND_OLDER))
SEX = Category("hpCatSex000", "SEX", "Sex", (MALE, FEMALE))

AGE_COMBO = CategoryCombo(
    "hpCCAgeIDSR",
    "AGE_IDSR",
    "Age group (IDSR)",
    AGE_GROUP,
    (("hpCocUnder5", UNDER_5), ("hpCoc5Older", FIVE_AND_OLDER)),
)
SEX_COMBO = CategoryCombo(
    "hpCCSex0000", "SEX", "Sex", SEX, (("hpCocMale00", MALE), ("hpCocFemale", FEMALE))
)
CATEGORY_COMBOS = (AGE_COMBO, SEX_COMBO)


@dataclass(frozen=True)
class DataElementSpec:
    uid: str
    code: str
    name: str
    value_type: str = "INTEGER_ZERO_OR_POSITIVE"
    aggregation_type: str = "SUM"
    category_combo: CategoryCombo | None = None

    @property
    def category_combo_uid(self) -> str:
        return self.category_combo.uid if self.category_combo else DEFAULT_CATEGORY_COMBO

    @property
    def combo_uids(self) -> tuple[str, ...]:
        if self.category_combo is None:
            return (DEFAULT_CATEGORY_OPTION_COMBO,)
        return self.category_combo.combo_uids


# --- IDSR weekly -------------------------------------------------------------------------


@dataclass(frozen=True)
class Disease:
    """An IDSR priority disease and how its weekly counts behave.

    ``rate`` is suspected cases per 1,000 population per week at the seasonal mean;
    seasonality is ``1 + amplitude * cos(2 pi (week - peak_week) / 52)``; counts are negative
    binomial with ``dispersion`` as the size parameter (variance mu + mu^2 / size).
    """

    key: str
    name: str
    cases: DataElementSpec
    deaths: DataElementSpec
    rate: float
    amplitude: float
    peak_week: int
    dispersion: float
    case_fatality: float
    under_5_share: float
    trend_per_year: float
    immediately_notifiable: bool
    outbreak_k: tuple[float, ...]
    """Outbreak sizes, as multiples of the district baseline's standard deviation
    (Noufaily et al. 2013), that the simulator may inject for this disease."""


def _disease(
    key: str,
    abbreviation: str,
    name: str,
    *,
    rate: float,
    amplitude: float = 0.0,
    peak_week: int = 1,
    dispersion: float = 5.0,
    case_fatality: float = 0.01,
    under_5_share: float = 0.3,
    trend_per_year: float = 0.0,
    immediately_notifiable: bool = False,
    outbreak_k: tuple[float, ...] = (),
) -> Disease:
    return Disease(
        key=key,
        name=name,
        cases=DataElementSpec(
            f"hp{abbreviation}Cases",
            f"IDSR_{key.upper()}_CASES",
            f"IDSR {name} cases",
            category_combo=AGE_COMBO,
        ),
        deaths=DataElementSpec(
            f"hp{abbreviation}Death", f"IDSR_{key.upper()}_DEATHS", f"IDSR {name} deaths"
        ),
        rate=rate,
        amplitude=amplitude,
        peak_week=peak_week,
        dispersion=dispersion,
        case_fatality=case_fatality,
        under_5_share=under_5_share,
        trend_per_year=trend_per_year,
        immediately_notifiable=immediately_notifiable,
        outbreak_k=outbreak_k,
    )


DISEASES: tuple[Disease, ...] = (
    _disease("malaria", "MALA", "Malaria (confirmed)", rate=1.6, amplitude=0.6, peak_week=20,
             dispersion=8.0, case_fatality=0.002, under_5_share=0.45, trend_per_year=-0.03,
             outbreak_k=(3, 5, 10)),
    _disease("cholera", "CHOL", "Cholera", rate=0.0008, amplitude=0.5, peak_week=14,
             dispersion=0.5, case_fatality=0.015, under_5_share=0.2, immediately_notifiable=True,
             outbreak_k=(10, 20, 50)),
    _disease("measles", "MEAS", "Measles", rate=0.004, amplitude=0.4, peak_week=8,
             dispersion=0.8, case_fatality=0.02, under_5_share=0.7, outbreak_k=(10, 20, 50)),
    _disease("meningitis", "MENI", "Meningitis", rate=0.003, amplitude=0.8, peak_week=12,
             dispersion=1.0, case_fatality=0.1, under_5_share=0.35, outbreak_k=(10, 20)),
    _disease("afp", "AFPo", "Acute flaccid paralysis", rate=0.0004, dispersion=2.0,
             case_fatality=0.0, under_5_share=0.8, immediately_notifiable=True),
    _disease("bloody_diarrhoea", "BDIA", "Bloody diarrhoea", rate=0.06, amplitude=0.4,
             peak_week=16, dispersion=4.0, case_fatality=0.005, under_5_share=0.5,
             outbreak_k=(3, 5, 10)),
    _disease("typhoid", "TYPH", "Typhoid fever", rate=0.03, amplitude=0.3, peak_week=18,
             dispersion=3.0, case_fatality=0.01, under_5_share=0.15, outbreak_k=(3, 5, 10)),
    _disease("sari", "SARI", "Severe acute respiratory infection", rate=0.05, amplitude=0.5,
             peak_week=28, dispersion=5.0, case_fatality=0.03, under_5_share=0.4,
             outbreak_k=(3, 5, 10)),
    _disease("yellow_fever", "YFEV", "Yellow fever", rate=0.0002, dispersion=1.0,
             case_fatality=0.2, under_5_share=0.1, immediately_notifiable=True),
)  # fmt: skip

IDSR_DATA_ELEMENTS: tuple[DataElementSpec, ...] = tuple(
    de for disease in DISEASES for de in (disease.cases, disease.deaths)
)

# --- HMIS monthly --------------------------------------------------------------------------

OPD_VISITS = DataElementSpec("hpOPDVisits", "HMIS_OPD", "Outpatient consultations")
ANC1 = DataElementSpec("hpANC1Visit", "HMIS_ANC1", "ANC 1st visit")
ANC4 = DataElementSpec("hpANC4Visit", "HMIS_ANC4", "ANC 4th or more visits")
DELIVERIES = DataElementSpec("hpDelivFacl", "HMIS_DELIVERIES", "Deliveries in facility")
PENTA1 = DataElementSpec("hpPenta1Dos", "HMIS_PENTA1", "Penta 1 doses given (<1 year)")
PENTA3 = DataElementSpec("hpPenta3Dos", "HMIS_PENTA3", "Penta 3 doses given (<1 year)")
MCV1 = DataElementSpec("hpMCV1Doses", "HMIS_MCV1", "Measles-containing vaccine 1st dose (<1 year)")
HIV_TESTED = DataElementSpec(
    "hpHIVTested", "HMIS_HIV_TESTED", "HIV tests performed", category_combo=SEX_COMBO
)
HIV_POSITIVE = DataElementSpec(
    "hpHIVPositv", "HMIS_HIV_POSITIVE", "HIV tests positive", category_combo=SEX_COMBO
)
ON_ART = DataElementSpec(
    "hpCurrOnART", "HMIS_ART_CURRENT", "Patients currently on ART", aggregation_type="LAST"
)
VL_TESTED = DataElementSpec("hpVLTestDon", "HMIS_VL_TESTED", "Viral load tests done")
VL_SUPPRESSED = DataElementSpec(
    "hpVLSupress", "HMIS_VL_SUPPRESSED", "Viral load tests suppressed (<1000 copies/mL)"
)
RDT_TESTED = DataElementSpec("hpMalRDTTst", "HMIS_MAL_RDT_TESTED", "Malaria RDTs performed")
RDT_POSITIVE = DataElementSpec("hpMalRDTPos", "HMIS_MAL_RDT_POSITIVE", "Malaria RDTs positive")

MONTHLY_HMIS: tuple[DataElementSpec, ...] = (
    OPD_VISITS, ANC1, ANC4, DELIVERIES, PENTA1, PENTA3, MCV1, HIV_TESTED, HIV_POSITIVE, ON_ART,
    VL_TESTED, VL_SUPPRESSED, RDT_TESTED, RDT_POSITIVE,
)  # fmt: skip

# --- Population estimates (yearly) ---------------------------------------------------------

TOTAL_POPULATION = DataElementSpec(
    "hpTotalPopn", "POP_TOTAL", "Total population", aggregation_type="AVERAGE_SUM_ORG_UNIT"
)
EXPECTED_PREGNANCIES = DataElementSpec(
    "hpExpPregna", "POP_EXPECTED_PREGNANCIES", "Expected pregnancies",
    aggregation_type="AVERAGE_SUM_ORG_UNIT",
)  # fmt: skip
SURVIVING_INFANTS = DataElementSpec(
    "hpSurvInfnt", "POP_SURVIVING_INFANTS", "Surviving infants (<1 year)",
    aggregation_type="AVERAGE_SUM_ORG_UNIT",
)  # fmt: skip
POPULATION: tuple[DataElementSpec, ...] = (
    TOTAL_POPULATION,
    EXPECTED_PREGNANCIES,
    SURVIVING_INFANTS,
)

# Shares of the total population (typical of the region's census projections).
EXPECTED_PREGNANCY_RATE = 0.04
SURVIVING_INFANT_RATE = 0.035


@dataclass(frozen=True)
class DataSetSpec:
    uid: str
    code: str
    name: str
    period_type: str
    timely_days: int
    data_elements: tuple[DataElementSpec, ...]


IDSR_WEEKLY = DataSetSpec(
    "hpIDSRWeekl", "IDSR_WEEKLY", "IDSR weekly report", "Weekly", 2, IDSR_DATA_ELEMENTS
)
HMIS_MONTHLY = DataSetSpec(
    "hpHMISMonth", "HMIS_MONTHLY", "HMIS monthly facility report", "Monthly", 15, MONTHLY_HMIS
)
POPULATION_YEARLY = DataSetSpec(
    "hpPopulYear", "POPULATION_YEARLY", "Population estimates", "Yearly", 0, POPULATION
)
DATA_SETS: tuple[DataSetSpec, ...] = (IDSR_WEEKLY, HMIS_MONTHLY, POPULATION_YEARLY)
ALL_DATA_ELEMENTS: tuple[DataElementSpec, ...] = tuple(
    de for data_set in DATA_SETS for de in data_set.data_elements
)

# Org-unit groups (and their group sets) for facility type and ownership.
ORG_UNIT_GROUP_SETS: dict[str, tuple[str, str]] = {
    "facility_type": ("hpOUGSFType", "Facility type"),
    "ownership": ("hpOUGSOwner", "Facility ownership"),
}
ORG_UNIT_GROUPS: dict[tuple[str, str], str] = {
    ("facility_type", "District Hospital"): "hpOUGDistHo",
    ("facility_type", "Health Centre"): "hpOUGHlthCe",
    ("facility_type", "Health Post"): "hpOUGHlthPo",
    ("ownership", "Public"): "hpOUGPublic",
    ("ownership", "Faith-based"): "hpOUGFaithB",
    ("ownership", "Private"): "hpOUGPrivat",
}
