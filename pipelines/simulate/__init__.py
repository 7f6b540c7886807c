"""A simulated country whose data is written in the source systems' own formats.

This first version covers what the walking skeleton needs: a four-level org-unit hierarchy and
a year of monthly HMIS values, written as DHIS2 Web API payloads. Everything is derived from
the seed, so the same seed gives byte-identical files.
"""

from pipelines.simulate.country import Country, build_country
from pipelines.simulate.dhis2_payloads import write_dhis2_payloads

__all__ = ["Country", "build_country", "write_dhis2_payloads"]
