"""Structural checks for clinical codes, used by the validation suites.

- LOINC: ``NNNNN-N``, the last digit a mod-10 (Luhn) check digit over the digits before the
  hyphen, as the LOINC users' guide specifies; a typo almost never survives it.
- ICD-10 (WHO): a letter, two digits, optionally a dot and one or two more digits
  (``B50.9``, ``U07.1``). The WHO classification's third character is always a digit, so
  ``B5O.9`` (a letter O for a zero) is caught.
"""

from __future__ import annotations

import re

_LOINC = re.compile(r"^(\d{1,7})-(\d)$")
_ICD10 = re.compile(r"^[A-Z]\d{2}(?:\.\d{1,2})?$")


def loinc_check_digit(number: str) -> int:
    """The Luhn check digit of the digits of a LOINC code before its hyphen."""
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 0:  # every other digit from the right, starting with the last
            digit *= 2
            digit = digit // 10 + digit % 10
        total += digit
    return (10 - total % 10) % 10


def is_loinc(code: str | None) -> bool:
    if not code:
        return False
    match = _LOINC.match(code.strip())
    if match is None:
        return False
    return loinc_check_digit(match.group(1)) == int(match.group(2))


def is_icd10(code: str | None) -> bool:
    return bool(code) and bool(_ICD10.match(str(code).strip().upper()))
