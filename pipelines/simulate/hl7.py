"""HL7 v2.5.1 ORU^R01 laboratory results of the simulated country, written as the district
laboratories' interfaces would deliver them.

Who sends what
    Every facility with ``has_lab`` (the district hospitals) runs a laboratory information
    system (MSH-3 ``DemoLIS``) that reports results for specimens collected at the facilities
    of its own district (the hospital included). One message is one order: one patient, one
    specimen, one test; messages are ELR style, like the NIST and public-health "realm"
    samples in ``shared/samples/hl7v2``.

Output layout (under ``out_dir``)::

    hl7/batches/<lab code>/<yyyy>W<ww>.hl7     one file per lab and ISO week, every week of the
                                               window but the last four (weeks with nothing to
                                               send still get a file with ``BTS|0``)
    hl7/messages/<lab code>/<MSH-10>.hl7       the last four weeks: one message per file
    hl7/messages/<lab code>/<MSH-10>.2.hl7     a second delivery of the same bytes (duplicate;
                                               the first may sit in a batch file)

    A message goes to the week of its MSH-7 (the time it was sent). Batch files are
    ``FHS BHS <messages> BTS FTS``: BTS-1 counts the messages in the batch (duplicates and
    malformed ones included), FTS-1 counts the batches (always 1). Segments end with CR
    (``\\r``), the last one included; there is no LF anywhere and no MLLP framing (the MLLP
    sandbox adds ``0x0B ... 0x1C 0x0D`` itself). Files are ASCII.

    A result that would only be sent after the window ends is not written: at extraction time
    that order is still pending (viral loads collected in the last weeks, for instance).

Segments
    MSH  MSH-3 ``DemoLIS``, MSH-4 ``<lab name>^<lab org-unit code>^L``, MSH-5 ``HEALTHPIPE``,
         MSH-6 ``DL_MOH``, MSH-7 send time ``YYYYMMDDHHMMSS+0300``, MSH-9 ``ORU^R01^ORU_R01``,
         MSH-10 ``<lab code>-<6-digit sequence>`` (per lab, in sending order), MSH-11 ``P``,
         MSH-12 ``2.5.1``.
    SFT  the LIS vendor and version.
    PID  PID-3 ``<MRN>^^^<facility code>^MR`` (assigning authority = ordering facility), for
         some patients repeated with a national ID ``~<NIN>^^^DLNIR^NI``; PID-5
         ``family^given^middle^^^^L``; PID-7 birth date; PID-8 ``F``/``M``; PID-11 street,
         village, district, country ``DL``; PID-13 mobile phone. All synthetic, on purpose:
         the privacy tests must show that the pipeline drops or pseudonymises them. Viral-load
         patients come from a cohort on treatment, so the same PID-3 recurs.
    ORC  ORC-1 ``RE``, ORC-2 placer order ``<facility code>-<n>^<facility code>``, ORC-3 filler
         order ``<yy><test prefix><n>^<lab code>``, ORC-21 ordering facility
         ``<name>^L^^^^DHIS2^XX^^^<facility org-unit code>`` (XON-10 is the DHIS2 org-unit
         code the pipeline maps to the hierarchy), ORC-22 district and region.
    OBR  OBR-2/3 as ORC, OBR-4 the order (``<LOINC>^<name>^LN``), OBR-7 collection time,
         OBR-22 result (or status change) time, OBR-25 ``F`` final, ``C`` corrected, ``X``
         specimen rejected (no result).
    NTE  after OBR or OBX: free-text comments (``NTE|1|L|<text>``).
    OBX  OBX-2 ``CWE``/``NM``/``SN``, OBX-3 ``<LOINC>^<name>^LN``, OBX-5 value, OBX-6 units
         (UCUM), OBX-7 reference range, OBX-8 ``A`` abnormal / ``N`` normal / ``H`` high,
         OBX-11 ``F`` or ``C``, OBX-14 collection time (as in the samples), OBX-19 analysis
         time, OBX-23 performing laboratory (XON with its org-unit code).
    SPM  SPM-2 ``<placer>&<facility code>^<filler>&<lab code>``, SPM-4 specimen type
         (SNOMED CT ``^SCT``), SPM-17 collection time, SPM-18 received time, SPM-20 ``Y``/``N``
         (available), SPM-21 reject reason (HL7 table 0490 ``^HL70490``) on rejected specimens.

Tests and codes (LOINC for OBX-3/OBR-4, SNOMED CT for results and specimens)
    =================  ========  ==========================================  =============
    test               LOINC     results (OBX-5)                             specimen
    =================  ========  ==========================================  =============
    malaria RDT        70569-9   30020004 P. falciparum / 260415000 Not det  122554006 cap.
    malaria smear      51587-4   260373001 Detected / 260415000 Not detected 122554006 cap.
    GeneXpert MTB/RIF  85362-2   MTB: Detected / Not detected, and when      119334006
                       89372-7   detected RIF resistance: Detected / Not     sputum
                                 detected / 82334004 Indeterminate
    HIV-1 viral load   20447-9   NM copies, or SN ``<^20`` (below the limit  119361006
                                 of detection), ``{copies}/mL``, ``H`` when  plasma
                                 >= 1,000 copies/mL
    V. cholerae        625-4     75953000 Vibrio cholerae / 260415000 Not    119339001
    stool culture                detected                                    stool
    measles IgM        21503-8   10828004 Positive / 260385009 Negative /    119364003
                                 42425007 Equivocal                          serum
    =================  ========  ==========================================  =============

    Turnaround (collection to result, hours): RDT 0.25-6, smear 1-24, GeneXpert 24-72, viral
    load 168-672 (1-4 weeks), culture 48-120, measles IgM 72-240. A rejected specimen gets
    its OBR-22 when the laboratory rejects it (hours after receipt).

Positivity
    Malaria follows the two rainy seasons (peaks in May and December) and a per-district
    endemicity; TB about 12% (4% of positives rifampicin resistant); viral load about 80%
    suppressed; cholera and measles are rare except in clusters (a district, a few weeks),
    listed in ``truth.notes["hl7_lab_clusters"]``. These clusters are the laboratory's own;
    they need not match the outbreaks of the DHIS2 generator.

Corrections
    About 1% of results are sent again later (1-14 days) as a new message: new MSH-10, same
    placer and filler order numbers, OBR-25 ``C``, OBX-11 ``C`` on the corrected observation
    (the first OBX) and a changed OBX-5. ``truth.notes["hl7_corrections"]`` lists them:
    ``{lab, filler_order, test, original_msh10, corrected_msh10, old_value, new_value}``
    (values as sent in OBX-5, unescaped).

Escapes
    Free text is escaped (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` for ``| ^ & ~ \\``). Some NTE
    comments and some PID-11 street names contain these characters;
    ``truth.notes["hl7_escapes"]`` lists the NTE comments that do (``{file, msh10, text}``,
    text unescaped).

Defects (``truth.defects``, ``source="hl7"``, ``entity="oru_r01"``; ``record`` is
``{"file": <path relative to out_dir>, "position": <1-based message index in the file>,
"msh10": <MSH-10 or None>}``)
    =====================  ======================  ======================================
    kind                   expected_rule           what
    =====================  ======================  ======================================
    malformed_message      message_complete        truncated inside OBR: no OBX, no SPM
                                                   (the cut still ends with CR, so the next
                                                   message of a batch stays whole)
    malformed_message      msh10_present           MSH-10 empty (file name still the id)
    malformed_message      segment_valid           a segment replaced by garbage
    malformed_message      test_code_present       the first OBX has no OBX-3
    unknown_code           loinc_known             OBX-3 carries the LIS's local code
    unknown_code           org_unit_known          ORC-21 names a facility that is not in
                                                   the hierarchy (a private clinic)
    duplicate              duplicate               the same bytes delivered twice; the
                                                   record points at the second copy
    =====================  ======================  ======================================

Randomness comes only from ``sim.rng("hl7", ...)`` streams; nothing reads the clock, and the
same seed gives byte-identical files.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pipelines.simulate.context import Simulation
from pipelines.simulate.country import Country, OrgUnit

T = TypeVar("T")

# --- codes ------------------------------------------------------------------------------------
# LOINC, checked with the search tool (loinc.org pages, lab test catalogues, HL7 FHIR IGs):
# 70569-9 "Plasmodium sp Ag [Identifier] in Blood by Rapid immunoassay" (FHIR examples and EMR
#   code lists use it for the malaria RDT);
# 51587-4 "Plasmodium sp [Presence] in Blood by Light microscopy" (CH ELM value set, NUH
#   Singapore catalogue "MALARIAL PARASITE");
# 85362-2 "Mycobacterium tuberculosis complex DNA [Presence] in Sputum or Bronchial by NAA with
#   probe detection" (loinc.org, answer list Positive/Negative);
# 89372-7 "Mycobacterium tuberculosis complex rpoB gene rifAMPin resistance mutation [Presence]
#   by Molecular method" (ARUP Xpert MTB/RIF panel; chosen over 46244-0, which identifies the
#   mutation rather than answering yes/no);
# 20447-9 "HIV 1 RNA [#/volume] (viral load) in Serum or Plasma by NAA with probe detection"
#   (Ohio State and other catalogues; copies/mL);
# 625-4 "Bacteria identified in Stool by Culture" (the realm Campylobacter sample);
# 21503-8 "Measles virus IgM Ab [Presence] in Serum" (Mayo catalogue, FHIR concept maps).
LOINC_MALARIA_RDT = "70569-9"
LOINC_MALARIA_SMEAR = "51587-4"
LOINC_MTB_DNA = "85362-2"
LOINC_MTB_RIF = "89372-7"
LOINC_HIV_VL = "20447-9"
LOINC_STOOL_CULTURE = "625-4"
LOINC_MEASLES_IGM = "21503-8"
KNOWN_LOINC = frozenset(
    {
        LOINC_MALARIA_RDT,
        LOINC_MALARIA_SMEAR,
        LOINC_MTB_DNA,
        LOINC_MTB_RIF,
        LOINC_HIV_VL,
        LOINC_STOOL_CULTURE,
        LOINC_MEASLES_IGM,
    }
)

# SNOMED CT qualifier values (FHIR IG value sets, NIST/CDC code lists): results of
# qualitative tests.
SCT_POSITIVE = ("10828004", "Positive")
SCT_NEGATIVE = ("260385009", "Negative")
SCT_DETECTED = ("260373001", "Detected")
SCT_NOT_DETECTED = ("260415000", "Not detected")
SCT_EQUIVOCAL = ("42425007", "Equivocal")
SCT_INDETERMINATE = ("82334004", "Indeterminate")
# SNOMED CT organisms (CH ELM organism value sets).
SCT_P_FALCIPARUM = ("30020004", "Plasmodium falciparum")
SCT_V_CHOLERAE = ("75953000", "Vibrio cholerae")
# SNOMED CT specimen types (NIST and realm samples, FHIR specimen value sets).
SCT_CAPILLARY_BLOOD = ("122554006", "Capillary blood specimen")
SCT_SPUTUM = ("119334006", "Sputum specimen")
SCT_PLASMA = ("119361006", "Plasma specimen")
SCT_STOOL = ("119339001", "Stool specimen")
SCT_SERUM = ("119364003", "Serum specimen")

# HL7 table 0490, specimen reject reason (HL7 v2 tables as published with FHIR).
REJECT_REASONS = {
    "EX": "Expired",
    "QS": "Quantity not sufficient",
    "RB": "Broken container",
    "RC": "Clotting",
    "RH": "Hemolysis",
    "RM": "Labeling",
    "RN": "Contamination",
    "RR": "Improper storage",
}

# Validation rule names the defects are recorded under (see the module docstring).
RULE_MESSAGE_COMPLETE = "message_complete"
RULE_MSH10_PRESENT = "msh10_present"
RULE_SEGMENT_VALID = "segment_valid"
RULE_TEST_CODE_PRESENT = "test_code_present"
RULE_LOINC_KNOWN = "loinc_known"
RULE_ORG_UNIT_KNOWN = "org_unit_known"
RULE_DUPLICATE = "duplicate"

# --- message constants ------------------------------------------------------------------------
SENDING_APPLICATION = "DemoLIS"
RECEIVING_APPLICATION = "HEALTHPIPE"
RECEIVING_FACILITY = "DL_MOH"
COUNTRY_CODE = "DL"
UTC_OFFSET = "+0300"  # East Africa Time, no daylight saving
SFT_SEGMENT = "SFT|Demoland Ministry of Health^L|3.2.1|DemoLIS|3.2.1-45||20230301"
SINGLE_MESSAGE_WEEKS = 4
VL_SUPPRESSION_THRESHOLD = 1000  # copies/mL (WHO)
VL_DETECTION_LIMIT = 20  # copies/mL

# Rates: expected orders per district and week for a district of REFERENCE_POPULATION people.
# They are the results that labs report electronically, a small share of all tests done.
REFERENCE_POPULATION = 200_000
MIN_VOLUME_SCALE = 0.5  # small districts still refer specimens to their hospital lab
CORRECTION_SHARE = 0.008
COMMENT_SHARE = 0.03
ESCAPED_COMMENT_SHARE = 0.003
DEFECT_EVERY = {  # one defect of each kind per this many messages (at least one)
    RULE_MESSAGE_COMPLETE: 6000,
    RULE_MSH10_PRESENT: 6000,
    RULE_SEGMENT_VALID: 6000,
    RULE_TEST_CODE_PRESENT: 6000,
    RULE_LOINC_KNOWN: 4000,
    RULE_ORG_UNIT_KNOWN: 4000,
    RULE_DUPLICATE: 2000,
}


@dataclass(frozen=True)
class LabTest:
    key: str
    loinc: str
    loinc_name: str
    specimen: tuple[str, str]
    prefix: str
    """Accession prefix of the filler order number."""
    weekly_rate: float
    tat_hours: tuple[float, float, float, float]
    """Collection to result: median, log-normal sigma, minimum, maximum."""
    rejection_rate: float
    reject_reasons: tuple[str, ...]
    local_code: str
    """The LIS's own code, sent instead of LOINC by a misconfigured interface."""


MALARIA_RDT = LabTest(
    "malaria_rdt", LOINC_MALARIA_RDT, "Plasmodium sp Ag [Identifier] in Blood by Rapid immunoassay",
    SCT_CAPILLARY_BLOOD, "MR", 3.2, (1.0, 0.7, 0.25, 6.0), 0.005, ("QS", "RM"), "MAL-RDT",
)  # fmt: skip
MALARIA_SMEAR = LabTest(
    "malaria_smear", LOINC_MALARIA_SMEAR, "Plasmodium sp [Presence] in Blood by Light microscopy",
    SCT_CAPILLARY_BLOOD, "MS", 2.4, (5.0, 0.6, 1.0, 24.0), 0.02, ("RC", "QS", "RM"), "MAL-BS",
)  # fmt: skip
GENEXPERT = LabTest(
    "genexpert_mtb_rif", LOINC_MTB_DNA,
    "Mycobacterium tuberculosis complex DNA [Presence] in Sputum or Bronchial by NAA with probe detection",
    SCT_SPUTUM, "TB", 1.2, (40.0, 0.35, 24.0, 72.0), 0.04, ("QS", "RN", "RB"), "XPERT-MTB",
)  # fmt: skip
HIV_VIRAL_LOAD = LabTest(
    "hiv_viral_load", LOINC_HIV_VL,
    "HIV 1 RNA [#/volume] (viral load) in Serum or Plasma by NAA with probe detection",
    SCT_PLASMA, "VL", 2.0, (336.0, 0.35, 168.0, 672.0), 0.05, ("RH", "EX", "RB", "QS"), "HIVVL",
)  # fmt: skip
CHOLERA_CULTURE = LabTest(
    "vibrio_cholerae_culture", LOINC_STOOL_CULTURE, "Bacteria identified in Stool by Culture",
    SCT_STOOL, "CH", 0.15, (72.0, 0.25, 48.0, 120.0), 0.03, ("RR", "EX"), "STOOL-CS",
)  # fmt: skip
MEASLES_IGM = LabTest(
    "measles_igm", LOINC_MEASLES_IGM, "Measles virus IgM Ab [Presence] in Serum",
    SCT_SERUM, "ME", 0.2, (120.0, 0.3, 72.0, 240.0), 0.03, ("RH", "QS"), "MEAS-IGM",
)  # fmt: skip
TESTS: tuple[LabTest, ...] = (
    MALARIA_RDT,
    MALARIA_SMEAR,
    GENEXPERT,
    HIV_VIRAL_LOAD,
    CHOLERA_CULTURE,
    MEASLES_IGM,
)
RIF_NAME = (
    "Mycobacterium tuberculosis complex rpoB gene rifAMPin resistance mutation [Presence] "
    "by Molecular method"
)

# --- synthetic people -------------------------------------------------------------------------
GIVEN_FEMALE = (
    "Amina", "Neema", "Zawadi", "Halima", "Rehema", "Mwajuma", "Esther", "Grace", "Fatuma",
    "Mary", "Agnes", "Salma", "Rose", "Upendo", "Tumaini", "Joyce", "Anna", "Faraja",
    "Subira", "Imani", "Asha", "Mariam", "Winfrida", "Happiness",
)  # fmt: skip
GIVEN_MALE = (
    "Baraka", "Juma", "Hassan", "Said", "Daudi", "Joseph", "Musa", "Peter", "John", "Omari",
    "Emmanuel", "Rashidi", "Hamisi", "Elia", "Petro", "Yusufu", "Godfrey", "Ibrahimu",
    "Salim", "Frank", "Kassim", "Abdallah", "Amani", "Jabiri",
)  # fmt: skip
FAMILY_NAMES = (
    "Mwangi", "Otieno", "Njoroge", "Mushi", "Massawe", "Kimaro", "Lyimo", "Mrisho", "Mohamed",
    "Ally", "Kweka", "Temba", "Shirima", "Mollel", "Laizer", "Nyirenda", "Banda", "Phiri",
    "Okello", "Achieng", "Wanjiku", "Mbwambo", "Kisanga", "Mfinanga", "Chande", "Mapunda",
    "Komba", "Haule", "Ngowi", "Swai",
)  # fmt: skip
STREETS = (
    "Mtaa wa Soko", "Barabara ya Uhuru", "Mtaa wa Shule", "Njia ya Mnazi", "Mtaa wa Kanisa",
    "Barabara ya Stesheni", "Mtaa wa Msikiti", "Njia ya Bwawani",
)  # fmt: skip
VILLAGE_SUFFIXES = ("Kati", "Juu", "Chini", "Mashariki", "Magharibi", "Kusini")
AGE_RANGES = {  # years: (min, max) by test, the population that gets the test
    "malaria_rdt": (0.5, 70.0),
    "malaria_smear": (0.5, 70.0),
    "genexpert_mtb_rif": (15.0, 75.0),
    "hiv_viral_load": (18.0, 65.0),
    "vibrio_cholerae_culture": (2.0, 70.0),
    "measles_igm": (0.75, 14.0),
}

PLAIN_COMMENTS = (
    "Specimen received in good condition.",
    "Result phoned to clinician on duty.",
    "Please send clinical history with next request.",
    "Repeat test advised if symptoms persist.",
)
# Each contains one character that must be escaped in HL7 v2 (| ^ & ~ \).
ESCAPED_COMMENTS = (
    "Repeat test advised | clinician informed",
    "Ward 3 ^ paediatric outpatients",
    "Haemolysed & lipaemic; interpret with caution",
    "RDT lot A12~B07 used",
    "QC log ref LAB\\QC\\2025",
)
GARBAGE_CHARACTERS = "#@!%*?$=+;:"


# --- deterministic draws ------------------------------------------------------------------------
class _Draws:
    """Uniform and normal variates served from blocks drawn with numpy.

    One numpy call per block rather than per value keeps tens of thousands of messages fast,
    and the sequence stays a pure function of the named stream."""

    BLOCK = 4096

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._uniform: list[float] = []
        self._normal: list[float] = []

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        if not self._uniform:
            self._uniform = self.rng.random(self.BLOCK).tolist()
        return low + (high - low) * self._uniform.pop()

    def normal(self) -> float:
        if not self._normal:
            self._normal = self.rng.standard_normal(self.BLOCK).tolist()
        return self._normal.pop()

    def chance(self, probability: float) -> bool:
        return self.uniform() < probability

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high)."""
        return min(high - 1, low + int(self.uniform() * (high - low)))

    def pick(self, items: Sequence[T]) -> T:
        return items[self.integer(0, len(items))]

    def poisson(self, mean: float) -> int:
        return int(self.rng.poisson(mean)) if mean > 0 else 0

    def log_normal(self, median: float, sigma: float, low: float, high: float) -> float:
        return min(high, max(low, median * math.exp(sigma * self.normal())))


# --- model --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Patient:
    mrn: str
    facility_code: str
    national_id: str
    family: str
    given: str
    middle: str
    birth_date: date
    sex: str
    street: str
    village: str
    district: str
    phone: str


@dataclass(frozen=True)
class _Obs:
    code: str
    name: str
    value_type: str
    value: str
    """OBX-5 as sent: coded values are ``code^text^SCT`` (none needs escaping)."""
    units: str = ""
    reference: str = ""
    flag: str = ""
    status: str = "F"


@dataclass(frozen=True)
class _Order:
    lab: OrgUnit
    test: LabTest
    facility_code: str
    facility_name: str
    district_name: str
    region_name: str
    patient: _Patient
    collected: datetime
    received: datetime
    resulted: datetime
    placer: str = ""
    filler: str = ""
    observations: tuple[_Obs, ...] = ()
    reject_reason: str = ""
    comments: tuple[str, ...] = ()


@dataclass
class _Delivery:
    order: _Order
    sent: datetime
    status_time: datetime
    observations: tuple[_Obs, ...]
    corrected: bool = False
    msh10: str = ""
    defect: str = ""
    escapes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Cluster:
    disease: str
    lab_code: str
    district_uid: str
    district_code: str
    first_week: int
    weeks: int
    peak: float

    def intensity(self, week_index: int) -> float:
        """0 outside the cluster; a hump peaking mid-cluster inside it."""
        offset = week_index - self.first_week
        if not 0 <= offset < self.weeks:
            return 0.0
        return self.peak * math.sin(math.pi * (offset + 0.5) / self.weeks)


@dataclass
class _Stats:
    orders: int = 0
    pending: int = 0


# --- helpers ------------------------------------------------------------------------------------
def escape(text: str) -> str:
    """HL7 v2 escaping with the default delimiters; the escape character goes first so the
    sequences added for the others are not escaped again."""
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
    )


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M") + UTC_OFFSET


def _ts_seconds(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S") + UTC_OFFSET


def _segment(name: str, fields: dict[int, str]) -> str:
    """A segment from its non-empty fields, numbered as the standard numbers them."""
    values = [""] * max(fields)
    for number, value in fields.items():
        values[number - 1] = value
    return "|".join([name, *values])


def _iso_week_file(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}W{week:02d}"


def _coded(pair: tuple[str, str]) -> str:
    return f"{pair[0]}^{pair[1]}^SCT"


def _malaria_season(day: date) -> float:
    """Relative malaria transmission: a main peak after the long rains (May) and a smaller one
    after the short rains (December), as in much of East Africa."""
    doy = day.timetuple().tm_yday

    def bump(peak: float, width: float = 40.0) -> float:
        distance = abs(doy - peak)
        distance = min(distance, 365.25 - distance)
        return math.exp(-0.5 * (distance / width) ** 2)

    return 0.45 + 1.0 * bump(140) + 0.6 * bump(350)


# --- planning -------------------------------------------------------------------------------------
def _labs(country: Country) -> list[OrgUnit]:
    return sorted((f for f in country.facilities if f.has_lab), key=lambda f: f.code)


def _plan_clusters(sim: Simulation, labs: list[OrgUnit]) -> list[_Cluster]:
    """Cholera and measles clusters: a district and a few weeks of extra specimens, most of
    them positive."""
    draws = _Draws(sim.rng("hl7", "clusters"))
    weeks = sim.window.weeks
    clusters: list[_Cluster] = []
    for disease, per_lab_year, peak in (
        ("cholera", 0.08, (6.0, 14.0)),
        ("measles", 0.1, (4.0, 10.0)),
    ):
        count = max(1, round(len(labs) * weeks / 52 * per_lab_year))
        for _ in range(count):
            lab = draws.pick(labs)
            length = min(weeks, draws.integer(3, 9))
            district = sim.country.district_of(lab.uid)
            clusters.append(
                _Cluster(
                    disease=disease,
                    lab_code=lab.code,
                    district_uid=district.uid,
                    district_code=district.code,
                    first_week=draws.integer(0, weeks - length + 1),
                    weeks=length,
                    peak=draws.uniform(*peak),
                )
            )
    return clusters


def _new_patient(
    draws: _Draws, test: LabTest, facility: OrgUnit, district_name: str, mrn: int, on: date
) -> _Patient:
    sex = "F" if draws.chance(0.65 if test is HIV_VIRAL_LOAD else 0.5) else "M"
    given_names = GIVEN_FEMALE if sex == "F" else GIVEN_MALE
    low, high = AGE_RANGES[test.key]
    birth = on - timedelta(days=round(draws.uniform(low, high) * 365.25))
    number = draws.integer(1, 200)
    street = draws.pick(STREETS)
    # A few plots span two numbers, written with "&", which must be escaped in PID-11.
    plot = f"Plot {number} & {number + 1}" if draws.chance(0.015) else f"Plot {number}"
    national_id = ""
    if draws.chance(0.4):
        national_id = (
            f"{birth:%Y%m%d}-{draws.integer(10000, 100000)}-"
            f"{draws.integer(10000, 100000)}-{draws.integer(10, 100)}"
        )
    phone = ""
    if draws.chance(0.85):
        phone = f"^PRN^CP^^255^7{draws.integer(10, 90)}^{draws.integer(1000000, 10000000)}"
    return _Patient(
        mrn=f"{mrn:06d}",
        facility_code=facility.code,
        national_id=national_id,
        family=draws.pick(FAMILY_NAMES),
        given=draws.pick(given_names),
        middle=draws.pick(given_names)[0] if draws.chance(0.5) else "",
        birth_date=birth,
        sex=sex,
        street=f"{plot} {street}",
        village=f"{facility.name.split()[0]} {draws.pick(VILLAGE_SUFFIXES)}",
        district=district_name,
        phone=phone,
    )


class _LabGenerator:
    """Orders of one laboratory, from its own random stream."""

    def __init__(self, sim: Simulation, lab: OrgUnit, clusters: list[_Cluster]) -> None:
        self.sim = sim
        self.lab = lab
        self.draws = _Draws(sim.rng("hl7", "orders", lab.code))
        country = sim.country
        district = country.district_of(lab.uid)
        region = country.by_uid[district.parent_uid or ""]
        self.district_name = district.name
        self.region_name = region.name
        self.facilities = sorted(country.children.get(district.uid, ()), key=lambda f: f.code)
        # The hospital also sees its own outpatients and admissions: it weighs double.
        weights = [f.base_population * (2 if f.uid == lab.uid else 1) for f in self.facilities]
        total = sum(weights)
        self.cumulative: list[float] = (np.cumsum(weights) / total).tolist()
        population = sum(f.base_population for f in self.facilities)
        self.scale = max(MIN_VOLUME_SCALE, population / REFERENCE_POPULATION)
        self.endemicity = math.exp(0.35 * self.draws.normal())
        self.clusters = [c for c in clusters if c.lab_code == lab.code]
        self.mrn_next: dict[str, int] = {f.code: 1 for f in self.facilities}
        self.cohort = self._vl_cohort()

    def _facility(self) -> OrgUnit:
        index = bisect.bisect_left(self.cumulative, self.draws.uniform())
        return self.facilities[min(index, len(self.facilities) - 1)]

    def _patient(self, test: LabTest, facility: OrgUnit, on: date) -> _Patient:
        mrn = self.mrn_next[facility.code]
        self.mrn_next[facility.code] = mrn + 1
        return _new_patient(self.draws, test, facility, self.district_name, mrn, on)

    def _vl_cohort(self) -> list[_Patient]:
        """People on antiretroviral treatment, tested about twice a year: their PID-3 recurs."""
        size = max(5, round(HIV_VIRAL_LOAD.weekly_rate * self.scale * 26))
        start = self.sim.window.start
        return [self._patient(HIV_VIRAL_LOAD, self._facility(), start) for _ in range(size)]

    def _collection_time(self, monday: date) -> datetime:
        # Fewer specimens at weekends; collection during clinic hours.
        day = self.draws.pick((0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 6))
        minutes = round(self.draws.uniform(7.5 * 60, 17.5 * 60))
        return datetime(monday.year, monday.month, monday.day) + timedelta(
            days=day, minutes=minutes
        )

    def _cluster_intensity(self, disease: str, week_index: int) -> float:
        return sum(c.intensity(week_index) for c in self.clusters if c.disease == disease)

    def weekly_plan(self, week_index: int, monday: date) -> list[tuple[LabTest, float, float]]:
        """(test, expected orders, probability of a positive result) for one week."""
        season = _malaria_season(monday + timedelta(days=3))
        rdt_positive = min(0.75, max(0.02, 0.22 * season * self.endemicity))
        cholera = self._cluster_intensity("cholera", week_index)
        measles = self._cluster_intensity("measles", week_index)
        return [
            (MALARIA_RDT, MALARIA_RDT.weekly_rate * self.scale * season, rdt_positive),
            (MALARIA_SMEAR, MALARIA_SMEAR.weekly_rate * self.scale * season, 0.85 * rdt_positive),
            (GENEXPERT, GENEXPERT.weekly_rate * self.scale, 0.12),
            (HIV_VIRAL_LOAD, HIV_VIRAL_LOAD.weekly_rate * self.scale, 0.2),
            (
                CHOLERA_CULTURE,
                CHOLERA_CULTURE.weekly_rate * self.scale + cholera,
                0.6 if cholera > 0 else 0.03,
            ),
            (
                MEASLES_IGM,
                MEASLES_IGM.weekly_rate * self.scale + measles,
                0.55 if measles > 0 else 0.05,
            ),
        ]

    def orders(self) -> list[_Order]:
        orders: list[_Order] = []
        for week_index, monday in enumerate(self.sim.window.week_starts()):
            for test, expected, positive in self.weekly_plan(week_index, monday):
                for _ in range(self.draws.poisson(expected)):
                    orders.append(self._order(test, monday, positive))
        orders.sort(key=lambda o: (o.collected, o.test.key, o.facility_code))
        return [self._numbered(order, n) for n, order in enumerate(orders, start=1)]

    def _numbered(self, order: _Order, n: int) -> _Order:
        placer = f"{order.facility_code}-{n:06d}^{order.facility_code}"
        filler = f"{order.collected:%y}{order.test.prefix}{n:06d}^{self.lab.code}"
        return replace(order, placer=placer, filler=filler)

    def _order(self, test: LabTest, monday: date, positive: float) -> _Order:
        draws = self.draws
        collected = self._collection_time(monday)
        if test is HIV_VIRAL_LOAD:
            patient = draws.pick(self.cohort)
            facility = self.sim.country.by_uid[self._uid_of(patient.facility_code)]
        else:
            facility = self._facility()
            patient = self._patient(test, facility, collected.date())
        median, sigma, low, high = test.tat_hours
        turnaround = draws.log_normal(median, sigma, low, high)
        received = collected + timedelta(hours=turnaround * draws.uniform(0.05, 0.4))
        reject_reason = ""
        observations: tuple[_Obs, ...] = ()
        if draws.chance(test.rejection_rate):
            reject_reason = draws.pick(test.reject_reasons)
            resulted = received + timedelta(hours=draws.uniform(0.5, 6.0))
            comments: tuple[str, ...] = (
                f"Specimen rejected: {REJECT_REASONS[reject_reason].lower()}. Please re-collect.",
            )
        else:
            resulted = collected + timedelta(hours=turnaround)
            observations = _result(test, draws, positive)
            comments = (draws.pick(PLAIN_COMMENTS),) if draws.chance(COMMENT_SHARE) else ()
        return _Order(
            lab=self.lab,
            test=test,
            facility_code=facility.code,
            facility_name=facility.name,
            district_name=self.district_name,
            region_name=self.region_name,
            patient=patient,
            collected=collected,
            received=received,
            resulted=resulted,
            observations=observations,
            reject_reason=reject_reason,
            comments=comments,
        )

    def _uid_of(self, code: str) -> str:
        return next(f.uid for f in self.facilities if f.code == code)


# --- results --------------------------------------------------------------------------------------
def _qualitative(test: LabTest, yes: tuple[str, str], no: tuple[str, str], hit: bool) -> _Obs:
    return _Obs(
        test.loinc,
        test.loinc_name,
        "CWE",
        _coded(yes if hit else no),
        reference=no[1],
        flag="A" if hit else "N",
    )


def _viral_load(copies: int | None) -> _Obs:
    """``None`` is below the limit of detection, sent as SN ``<^20``."""
    units = "{copies}/mL^copies per milliliter^UCUM"
    reference = f"<{VL_SUPPRESSION_THRESHOLD}"
    if copies is None:
        return _Obs(
            LOINC_HIV_VL,
            HIV_VIRAL_LOAD.loinc_name,
            "SN",
            f"<^{VL_DETECTION_LIMIT}",
            units,
            reference,
            "N",
        )
    flag = "H" if copies >= VL_SUPPRESSION_THRESHOLD else "N"
    return _Obs(LOINC_HIV_VL, HIV_VIRAL_LOAD.loinc_name, "NM", str(copies), units, reference, flag)


def _round_copies(copies: float) -> int:
    """Two significant digits, as viral-load platforms report."""
    magnitude = 10 ** max(0, math.floor(math.log10(copies)) - 1)
    return int(round(copies / magnitude) * magnitude)


def _result(test: LabTest, draws: _Draws, positive: float) -> tuple[_Obs, ...]:
    hit = draws.chance(positive)
    if test is MALARIA_RDT:
        return (_qualitative(test, SCT_P_FALCIPARUM, SCT_NOT_DETECTED, hit),)
    if test is MALARIA_SMEAR:
        return (_qualitative(test, SCT_DETECTED, SCT_NOT_DETECTED, hit),)
    if test is GENEXPERT:
        mtb = _qualitative(test, SCT_DETECTED, SCT_NOT_DETECTED, hit)
        if not hit:
            return (mtb,)
        return (mtb, _rifampicin(draws))
    if test is HIV_VIRAL_LOAD:
        if hit:
            return (_viral_load(_round_copies(10 ** draws.uniform(3.0, 6.3))),)
        if draws.chance(0.6):
            return (_viral_load(None),)
        return (_viral_load(_round_copies(10 ** draws.uniform(1.31, 2.99))),)
    if test is CHOLERA_CULTURE:
        return (_qualitative(test, SCT_V_CHOLERAE, SCT_NOT_DETECTED, hit),)
    if not hit and draws.chance(0.03):
        return (
            _Obs(test.loinc, test.loinc_name, "CWE", _coded(SCT_EQUIVOCAL), reference="Negative"),
        )
    return (_qualitative(test, SCT_POSITIVE, SCT_NEGATIVE, hit),)


def _rifampicin(draws: _Draws) -> _Obs:
    roll = draws.uniform()
    value = SCT_DETECTED if roll < 0.04 else SCT_INDETERMINATE if roll < 0.05 else SCT_NOT_DETECTED
    flag = "A" if value is SCT_DETECTED else "N"
    return _Obs(LOINC_MTB_RIF, RIF_NAME, "CWE", _coded(value), "", "Not detected", flag)


def _corrected(observations: tuple[_Obs, ...]) -> tuple[_Obs, ...]:
    """The same report with its first observation changed, as after a transcription error."""
    first = observations[0]
    if first.code == LOINC_HIV_VL:
        if first.value_type == "SN":
            new = _viral_load(850)
        else:
            copies = int(first.value)
            new = _viral_load(copies // 10 if copies >= 200 else copies * 10)
        return (replace(new, status="C"),)
    swaps = {
        _coded(SCT_P_FALCIPARUM): SCT_NOT_DETECTED,
        _coded(SCT_V_CHOLERAE): SCT_NOT_DETECTED,
        _coded(SCT_DETECTED): SCT_NOT_DETECTED,
        _coded(SCT_POSITIVE): SCT_NEGATIVE,
        _coded(SCT_NEGATIVE): SCT_POSITIVE,
        _coded(SCT_EQUIVOCAL): SCT_NEGATIVE,
    }
    positive_of = {
        LOINC_MALARIA_RDT: SCT_P_FALCIPARUM,
        LOINC_STOOL_CULTURE: SCT_V_CHOLERAE,
    }
    swapped = swaps.get(first.value) or positive_of.get(first.code, SCT_DETECTED)
    hit = swapped not in (SCT_NOT_DETECTED, SCT_NEGATIVE)
    new_first = replace(
        first,
        value=_coded(swapped),
        flag="A" if hit else "N",
        reference=first.reference,
        status="C",
    )
    rest = observations[1:]
    if first.code == LOINC_MTB_DNA:
        # RIF resistance is only reported when MTB is detected.
        rest = (
            (
                _Obs(
                    LOINC_MTB_RIF,
                    RIF_NAME,
                    "CWE",
                    _coded(SCT_NOT_DETECTED),
                    "",
                    "Not detected",
                    "N",
                ),
            )
            if hit
            else ()
        )
    return (new_first, *rest)


# --- rendering ------------------------------------------------------------------------------------
def _xon(name: str, code: str) -> str:
    return f"{escape(name)}^L^^^^DHIS2^XX^^^{code}"


def _pid(patient: _Patient) -> str:
    identifiers = f"{patient.mrn}^^^{patient.facility_code}^MR"
    if patient.national_id:
        identifiers += f"~{patient.national_id}^^^DLNIR^NI"
    name = f"{escape(patient.family)}^{escape(patient.given)}^{patient.middle}^^^^L"
    address = (
        f"{escape(patient.street)}^^{escape(patient.village)}^{escape(patient.district)}"
        f"^^{COUNTRY_CODE}^H"
    )
    return _segment(
        "PID",
        {
            1: "1",
            3: identifiers,
            5: name,
            7: f"{patient.birth_date:%Y%m%d}",
            8: patient.sex,
            11: address,
            13: patient.phone,
        },
    )


def _render(delivery: _Delivery) -> list[str]:
    order = delivery.order
    lab = order.lab
    status = "X" if order.reject_reason else "C" if delivery.corrected else "F"
    test = order.test
    msh10 = "" if delivery.defect == RULE_MSH10_PRESENT else delivery.msh10
    segments = [
        "|".join(
            [
                "MSH",
                "^~\\&",
                SENDING_APPLICATION,
                f"{escape(lab.name)}^{lab.code}^L",
                RECEIVING_APPLICATION,
                RECEIVING_FACILITY,
                _ts_seconds(delivery.sent),
                "",
                "ORU^R01^ORU_R01",
                msh10,
                "P",
                "2.5.1",
            ]
        ),
        SFT_SEGMENT,
        _pid(order.patient),
        _segment(
            "ORC",
            {
                1: "RE",
                2: order.placer,
                3: order.filler,
                21: _xon(order.facility_name, order.facility_code),
                22: f"^^{escape(order.district_name)}^{escape(order.region_name)}^^{COUNTRY_CODE}^B",
            },
        ),
        _segment(
            "OBR",
            {
                1: "1",
                2: order.placer,
                3: order.filler,
                4: f"{test.loinc}^{escape(test.loinc_name)}^LN",
                7: _ts(order.collected),
                22: _ts(delivery.status_time),
                25: status,
            },
        ),
    ]
    if order.reject_reason:
        segments += [_nte(i, text, delivery) for i, text in enumerate(order.comments, start=1)]
    for set_id, obs in enumerate(delivery.observations, start=1):
        segments.append(
            _segment(
                "OBX",
                {
                    1: str(set_id),
                    2: obs.value_type,
                    3: f"{obs.code}^{escape(obs.name)}^LN",
                    5: obs.value,
                    6: obs.units,
                    7: escape(obs.reference),
                    8: obs.flag,
                    11: obs.status,
                    14: _ts(order.collected),
                    19: _ts(order.resulted),
                    23: _xon(lab.name, lab.code),
                },
            )
        )
        if set_id == 1:
            segments += [_nte(i, text, delivery) for i, text in enumerate(order.comments, start=1)]
    segments.append(_spm(order))
    return segments


def _nte(set_id: int, text: str, delivery: _Delivery) -> str:
    if escape(text) != text:
        delivery.escapes.append(text)
    return f"NTE|{set_id}|L|{escape(text)}"


def _spm(order: _Order) -> str:
    placer_id, placer_ns = order.placer.split("^")
    filler_id, filler_ns = order.filler.split("^")
    fields = {
        1: "1",
        2: f"{placer_id}&{placer_ns}^{filler_id}&{filler_ns}",
        4: _coded(order.test.specimen),
        17: _ts(order.collected),
        18: _ts(order.received),
        20: "N" if order.reject_reason else "Y",
    }
    if order.reject_reason:
        fields[21] = f"{order.reject_reason}^{REJECT_REASONS[order.reject_reason]}^HL70490"
    return _segment("SPM", fields)


# --- defects --------------------------------------------------------------------------------------
def _apply_defect(segments: list[str], delivery: _Delivery, draws: _Draws) -> list[str]:
    """Damage a rendered message the way the defect's rule describes."""
    kind = delivery.defect
    if kind == RULE_MESSAGE_COMPLETE:
        obr = next(i for i, s in enumerate(segments) if s.startswith("OBR|"))
        cut = draws.integer(8, len(segments[obr]))
        return [*segments[:obr], segments[obr][:cut]]
    if kind == RULE_SEGMENT_VALID:
        target = draws.pick([i for i, s in enumerate(segments) if s[:3] in ("PID", "ORC", "SPM")])
        garbage = "".join(draws.pick(GARBAGE_CHARACTERS) for _ in range(draws.integer(12, 40)))
        return [*segments[:target], garbage, *segments[target + 1 :]]
    if kind == RULE_TEST_CODE_PRESENT:
        obx = next(i for i, s in enumerate(segments) if s.startswith("OBX|"))
        fields = segments[obx].split("|")
        fields[3] = ""
        return [*segments[:obx], "|".join(fields), *segments[obx + 1 :]]
    return segments


def _with_local_code(delivery: _Delivery) -> tuple[_Obs, ...]:
    first, *rest = delivery.observations
    return (replace(first, code=delivery.order.test.local_code), *rest)


def _unregistered_facility(order: _Order, number: int) -> _Order:
    """The order comes from a private clinic the lab serves but DHIS2 does not list."""
    root = order.district_name.split()[0]
    code = f"{order.facility_code.rsplit('_', 1)[0]}_PC{90 + number % 10:02d}"
    patient = replace(order.patient, facility_code=code)
    placer = order.placer.replace(order.facility_code, code)
    return replace(
        order,
        facility_code=code,
        facility_name=f"{root} Private Clinic",
        patient=patient,
        placer=placer,
    )


def _defect_counts(messages: int) -> dict[str, int]:
    return {rule: max(1, round(messages / every)) for rule, every in DEFECT_EVERY.items()}


def _choose_defects(deliveries: list[_Delivery], draws: _Draws, corrected: set[str]) -> None:
    """Mark originals (never corrected ones, so corrections stay clean) with one defect each."""
    candidates = [d for d in deliveries if not d.corrected and d.order.filler not in corrected]
    order = draws.rng.permutation(len(candidates)).tolist()
    queue = [candidates[i] for i in order]
    for rule, count in _defect_counts(len(deliveries)).items():
        needs_result = rule in (RULE_MESSAGE_COMPLETE, RULE_TEST_CODE_PRESENT, RULE_LOINC_KNOWN)
        chosen = 0
        for delivery in queue:
            if chosen == count:
                break
            if delivery.defect or (needs_result and not delivery.observations):
                continue
            delivery.defect = rule
            chosen += 1


# --- corrections ------------------------------------------------------------------------------------
def _corrections(
    deliveries: list[_Delivery], draws: _Draws, end: datetime
) -> tuple[list[_Delivery], set[str]]:
    # Corrections come 1-14 days later: only originals sent early enough get one, so every
    # correction is still sent inside the window.
    latest_original = end - timedelta(days=15)
    candidates = [d for d in deliveries if d.observations and d.sent <= latest_original]
    count = min(len(candidates), max(1, round(len(deliveries) * CORRECTION_SHARE)))
    picks = sorted(draws.rng.choice(len(candidates), size=count, replace=False).tolist())
    corrections = []
    for index in picks:
        original = candidates[index]
        sent = original.sent + timedelta(days=draws.uniform(1.0, 14.0))
        corrections.append(
            _Delivery(
                order=original.order,
                sent=sent,
                status_time=sent - timedelta(minutes=draws.uniform(5.0, 60.0)),
                observations=_corrected(original.observations),
                corrected=True,
            )
        )
    return corrections, {c.order.filler for c in corrections}


def _choose_escaped_comments(
    deliveries: list[_Delivery], draws: _Draws, corrected: set[str]
) -> None:
    """Give some clean originals a comment with a character that must be escaped; at least one
    of each kind, so every escape sequence occurs."""
    clean = [d for d in deliveries if not d.defect and d.order.filler not in corrected]
    count = min(
        len(clean), max(len(ESCAPED_COMMENTS), round(len(deliveries) * ESCAPED_COMMENT_SHARE))
    )
    picks = sorted(draws.rng.choice(len(clean), size=count, replace=False).tolist())
    for n, index in enumerate(picks):
        delivery = clean[index]
        text = ESCAPED_COMMENTS[n % len(ESCAPED_COMMENTS)]
        delivery.order = replace(delivery.order, comments=(*delivery.order.comments, text))


# --- files ------------------------------------------------------------------------------------------
@dataclass
class _File:
    path: str
    lab: OrgUnit
    week: str
    batch: bool
    texts: list[str] = field(default_factory=list)


def _batch_text(file: _File, created: datetime) -> str:
    lab = file.lab
    sender = f"{escape(lab.name)}^{lab.code}^L"
    name = f"{lab.code}_{file.week}"
    header = [
        f"FHS|^~\\&|{SENDING_APPLICATION}|{sender}|{RECEIVING_APPLICATION}|{RECEIVING_FACILITY}"
        f"|{_ts_seconds(created)}||{name}.hl7||{name}",
        f"BHS|^~\\&|{SENDING_APPLICATION}|{sender}|{RECEIVING_APPLICATION}|{RECEIVING_FACILITY}"
        f"|{_ts_seconds(created)}||{name}||{name}-1",
    ]
    trailer = [f"BTS|{len(file.texts)}", "FTS|1"]
    return (
        "".join(s + "\r" for s in header) + "".join(file.texts) + "".join(s + "\r" for s in trailer)
    )


class _Writer:
    """Places rendered messages in batch or single-message files and records the truth."""

    def __init__(self, sim: Simulation, labs: list[OrgUnit]) -> None:
        self.sim = sim
        weeks = sim.window.week_starts()
        self.single_from = weeks[max(0, len(weeks) - SINGLE_MESSAGE_WEEKS)]
        self.files: dict[str, _File] = {}
        for lab in labs:
            for monday in weeks[: len(weeks) - SINGLE_MESSAGE_WEEKS]:
                week = _iso_week_file(datetime(monday.year, monday.month, monday.day))
                path = f"hl7/batches/{lab.code}/{week}.hl7"
                self.files[path] = _File(path, lab, week, batch=True)

    def place(self, delivery: _Delivery, text: str, copy: int = 1) -> tuple[str, int]:
        lab = delivery.order.lab
        if delivery.sent.date() >= self.single_from:
            suffix = "" if copy == 1 else f".{copy}"
            path = f"hl7/messages/{lab.code}/{delivery.msh10}{suffix}.hl7"
            self.files[path] = _File(path, lab, "", batch=False)
        else:
            path = f"hl7/batches/{lab.code}/{_iso_week_file(delivery.sent)}.hl7"
        file = self.files[path]
        file.texts.append(text)
        return path, len(file.texts)

    def write(self, out_dir: Path) -> None:
        for path in sorted(self.files):
            file = self.files[path]
            target = out_dir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if file.batch:
                year, week = file.week.split("W")
                sunday = date.fromisocalendar(int(year), int(week), 7)
                created = datetime(sunday.year, sunday.month, sunday.day) + timedelta(hours=25.5)
                content = _batch_text(file, created)
            else:
                content = file.texts[0]
            target.write_bytes(content.encode("ascii"))


# --- entry point --------------------------------------------------------------------------------------
def write_hl7(sim: Simulation, out_dir: Path) -> dict[str, int]:
    """Write the laboratories' ORU^R01 messages under ``out_dir/hl7`` (layout in the module
    docstring), record defects, corrections and escapes in ``sim.truth``, return counts."""
    labs = _labs(sim.country)
    clusters = _plan_clusters(sim, labs)
    window = sim.window
    end = datetime(window.end.year, window.end.month, window.end.day) + timedelta(days=1)
    deliveries, stats = _originals(sim, labs, clusters, end)

    draws = _Draws(sim.rng("hl7", "defects"))
    corrections, corrected = _corrections(deliveries, draws, end)
    _choose_defects(deliveries, draws, corrected)
    _choose_escaped_comments(deliveries, draws, corrected)
    everything = sorted(
        deliveries + corrections,
        key=lambda d: (d.order.lab.code, d.sent, d.order.filler, d.corrected),
    )
    _number(everything)
    for delivery in deliveries:
        if delivery.defect == RULE_LOINC_KNOWN:
            delivery.observations = _with_local_code(delivery)
        elif delivery.defect == RULE_ORG_UNIT_KNOWN:
            delivery.order = _unregistered_facility(delivery.order, draws.integer(0, 10))

    sim.truth.notes["hl7_escapes"] = []
    writer = _Writer(sim, labs)
    for delivery in everything:
        _deliver(sim, writer, delivery, draws)
    writer.write(out_dir)

    sim.truth.notes["hl7_corrections"] = _correction_notes(deliveries, corrections)
    sim.truth.notes["hl7_lab_clusters"] = [
        {
            "disease": c.disease,
            "lab": c.lab_code,
            "district": c.district_uid,
            "district_code": c.district_code,
            "start_week": window.week_ids()[c.first_week],
            "weeks": c.weeks,
        }
        for c in clusters
    ]
    counts = {
        "labs": len(labs),
        "orders": stats.orders,
        "pending_at_window_end": stats.pending,
        "messages": len(everything),
        "rejected_specimens": sum(1 for d in deliveries if d.order.reject_reason),
        "corrections": len(corrections),
        "duplicates": sum(1 for d in deliveries if d.defect == RULE_DUPLICATE),
        "defects": sum(1 for d in deliveries if d.defect),
        "batch_files": sum(1 for f in writer.files.values() if f.batch),
        "message_files": sum(1 for f in writer.files.values() if not f.batch),
    }
    counts["files"] = counts["batch_files"] + counts["message_files"]
    sim.truth.notes["hl7_summary"] = counts
    return counts


def _originals(
    sim: Simulation, labs: list[OrgUnit], clusters: list[_Cluster], end: datetime
) -> tuple[list[_Delivery], _Stats]:
    """The first report of every order resulted, and sent, before the window ends."""
    stats = _Stats()
    deliveries: list[_Delivery] = []
    for lab in labs:
        generator = _LabGenerator(sim, lab, clusters)
        send_delay = _Draws(sim.rng("hl7", "send", lab.code))
        for order in generator.orders():
            stats.orders += 1
            sent = order.resulted + timedelta(minutes=send_delay.log_normal(20, 1.0, 2, 720))
            if sent >= end:
                stats.pending += 1
                continue
            deliveries.append(_Delivery(order, sent, order.resulted, order.observations))
    return deliveries, stats


def _deliver(sim: Simulation, writer: _Writer, delivery: _Delivery, draws: _Draws) -> None:
    """Render one message (damaged if it carries a defect), file it, and record the truth."""
    text = "".join(s + "\r" for s in _apply_defect(_render(delivery), delivery, draws))
    path, position = writer.place(delivery, text)
    _record(sim, delivery, path, position)
    if delivery.defect == RULE_DUPLICATE:
        path, position = _place_duplicate(writer, delivery, text, draws)
        _record_defect(
            sim,
            RULE_DUPLICATE,
            "duplicate",
            path,
            position,
            delivery.msh10,
            "the same message delivered a second time",
        )


def _correction_notes(
    originals: list[_Delivery], corrections: list[_Delivery]
) -> list[dict[str, str]]:
    by_filler = {d.order.filler: d for d in originals}
    notes = []
    for correction in sorted(corrections, key=lambda c: c.msh10):
        original = by_filler[correction.order.filler]
        notes.append(
            {
                "lab": correction.order.lab.code,
                "filler_order": correction.order.filler.split("^")[0],
                "test": correction.observations[0].code,
                "original_msh10": original.msh10,
                "corrected_msh10": correction.msh10,
                "old_value": original.observations[0].value,
                "new_value": correction.observations[0].value,
            }
        )
    return notes


def _number(deliveries: list[_Delivery]) -> None:
    """MSH-10 in sending order, per lab."""
    sequence: dict[str, int] = {}
    for delivery in deliveries:
        code = delivery.order.lab.code
        sequence[code] = sequence.get(code, 0) + 1
        delivery.msh10 = f"{code}-{sequence[code]:06d}"


def _place_duplicate(
    writer: _Writer, delivery: _Delivery, text: str, draws: _Draws
) -> tuple[str, int]:
    """A re-sent upload: the copy lands a few hours to a week later (same or next batch, or a
    second single-message file)."""
    resent = replace(delivery, sent=delivery.sent + timedelta(hours=draws.uniform(2.0, 168.0)))
    end_of_window = writer.sim.window.end
    if resent.sent.date() > end_of_window:
        resent.sent = delivery.sent
    return writer.place(resent, text, copy=2)


_DEFECT_KIND = {
    RULE_MESSAGE_COMPLETE: ("malformed_message", "message truncated inside OBR: no OBX, no SPM"),
    RULE_MSH10_PRESENT: ("malformed_message", "MSH-10 (message control ID) is empty"),
    RULE_SEGMENT_VALID: ("malformed_message", "a segment was replaced by line noise"),
    RULE_TEST_CODE_PRESENT: ("malformed_message", "the first OBX has no OBX-3"),
    RULE_LOINC_KNOWN: ("unknown_code", "OBX-3 carries the LIS's local code, not LOINC"),
    RULE_ORG_UNIT_KNOWN: ("unknown_code", "ORC-21 names a facility missing from the hierarchy"),
}


def _record(sim: Simulation, delivery: _Delivery, path: str, position: int) -> None:
    if delivery.escapes:
        notes: list[dict[str, Any]] = sim.truth.notes["hl7_escapes"]
        notes.extend({"file": path, "msh10": delivery.msh10, "text": t} for t in delivery.escapes)
    if delivery.defect in _DEFECT_KIND:
        kind, detail = _DEFECT_KIND[delivery.defect]
        msh10 = None if delivery.defect == RULE_MSH10_PRESENT else delivery.msh10
        _record_defect(sim, kind, delivery.defect, path, position, msh10, detail)


def _record_defect(
    sim: Simulation,
    kind: str,
    rule: str,
    path: str,
    position: int,
    msh10: str | None,
    detail: str,
) -> None:
    sim.truth.add_defect(
        source="hl7",
        entity="oru_r01",
        kind=kind,
        record={"file": path, "position": position, "msh10": msh10},
        expected_rule=rule,
        detail=detail,
    )
