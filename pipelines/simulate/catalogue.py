"""The data elements the simulator reports and the built-in indicators refer to.

Their UIDs are fixed (not drawn from the seed) because the indicator library in
``indicators/`` names them; a real deployment brings its own data elements and indicator files.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CATEGORY_COMBO = "bjDvmb4bfuf"
DEFAULT_CATEGORY_OPTION_COMBO = "HllvX50cXC0"
HMIS_MONTHLY_DATA_SET = "hpHMISMonth"


@dataclass(frozen=True)
class DataElementSpec:
    uid: str
    code: str
    name: str
    value_type: str = "INTEGER_ZERO_OR_POSITIVE"
    aggregation_type: str = "SUM"


ANC1 = DataElementSpec("hpANC1Visit", "HMIS_ANC1", "ANC 1st visit")
ANC4 = DataElementSpec("hpANC4Visit", "HMIS_ANC4", "ANC 4th or more visits")
HIV_TESTED = DataElementSpec("hpHIVTested", "HMIS_HIV_TESTED", "HIV tests performed")
HIV_POSITIVE = DataElementSpec("hpHIVPositv", "HMIS_HIV_POSITIVE", "HIV tests positive")
OPD_VISITS = DataElementSpec("hpOPDVisits", "HMIS_OPD", "Outpatient consultations")

MONTHLY_HMIS: tuple[DataElementSpec, ...] = (ANC1, ANC4, HIV_TESTED, HIV_POSITIVE, OPD_VISITS)
