"""Pseudonymisation of patient-level data before anything reaches the warehouse.

Patient identifiers (FHIR Patient id and identifiers, HL7 PID-3, ODK household and person ids)
become keyed HMAC-SHA256 pseudonyms: stable for the same person and key, so records still
link up, but not reversible and not guessable without the key (a plain hash of a national id
or phone number could be brute-forced). Names, phone numbers, addresses and exact birth dates
are never written: keep the birth year (or an age band), sex and the facility.

The key comes from the environment variable named by ``pseudonym_key_env`` in the config;
without it, patient-level sources refuse to run.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

from pipelines.errors import ConfigError

MIN_KEY_LENGTH = 16
PSEUDONYM_LENGTH = 32  # hex characters: 128 bits, plenty against collisions at national scale
_YEAR = re.compile(r"^\s*(\d{4})")


@dataclass(frozen=True)
class Pseudonymiser:
    key: bytes = field(repr=False)

    @classmethod
    def from_env(
        cls, env_name: str, *, purpose: str, env: Mapping[str, str] | None = None
    ) -> Pseudonymiser:
        """The pseudonymiser for ``purpose`` (a source name, for the error message)."""
        value = (os.environ if env is None else env).get(env_name, "")
        if not value:
            raise ConfigError(
                f"{purpose}: patient-level data needs a pseudonymisation key: set the "
                f"environment variable {env_name} (pseudonym_key_env in healthpipe.yml) to a "
                f"secret of at least {MIN_KEY_LENGTH} characters; nothing was read"
            )
        if len(value) < MIN_KEY_LENGTH:
            raise ConfigError(
                f"{purpose}: the pseudonymisation key in {env_name} is shorter than "
                f"{MIN_KEY_LENGTH} characters; use a longer secret"
            )
        return cls(value.encode("utf-8"))

    def pseudonym(self, kind: str, value: str | None) -> str | None:
        """A stable pseudonym for an identifier of the given kind (``patient``,
        ``household`` ...); the kind keeps ids of different namespaces apart."""
        if value is None or value == "":
            return None
        message = f"{kind}\x1f{value.strip()}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:PSEUDONYM_LENGTH]


def birth_year(value: str | None) -> int | None:
    """The year of a birth date in any of the ISO or HL7 forms (1987, 1987-03, 19870314)."""
    if not value:
        return None
    match = _YEAR.match(value)
    return int(match.group(1)) if match else None


def age_band(birth: int | None, on: date) -> str | None:
    """Five-year age bands (0-4, 5-9 ... 85+), the grouping WHO tables use; ages over 89
    are never shown exactly (HIPAA Safe Harbor)."""
    if birth is None:
        return None
    age = on.year - birth
    if age < 0:
        return None
    if age >= 85:
        return "85+"
    low = age // 5 * 5
    return f"{low}-{low + 4}"
