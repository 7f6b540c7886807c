"""LOINC check digits and ICD-10 shapes, on real codes and typical typos."""

from __future__ import annotations

import pytest

from pipelines.codes import is_icd10, is_loinc, loinc_check_digit


@pytest.mark.parametrize(
    "code",
    [
        "8310-5",
        "20447-9",
        "8480-6",
        "8462-4",
        "29463-7",
        "85354-9",
        "15074-8",
        "70569-9",
        "625-4",
        "21503-8",
    ],
)
def test_real_loinc_codes_pass(code: str) -> None:
    assert is_loinc(code)


@pytest.mark.parametrize("code", ["8310-6", "20447-0", "8310", "ABC-1", "", None, "12345678-1"])
def test_wrong_loinc_codes_fail(code: str | None) -> None:
    assert not is_loinc(code)


def test_check_digit() -> None:
    assert loinc_check_digit("8310") == 5
    assert loinc_check_digit("20447") == 9


@pytest.mark.parametrize("code", ["B50.9", "B54", "A09.0", "J18.9", "U07.1", "b24"])
def test_icd10_shapes_pass(code: str) -> None:
    assert is_icd10(code)


@pytest.mark.parametrize("code", ["B5O.9", "B5", "50.9", "B50.", "B50.123", "", None])
def test_icd10_typos_fail(code: str | None) -> None:
    assert not is_icd10(code)
