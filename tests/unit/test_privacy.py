"""Pseudonyms are keyed, stable, namespaced; exact birth dates reduce to years and bands."""

from __future__ import annotations

from datetime import date

import pytest

from pipelines.errors import ConfigError
from pipelines.privacy import Pseudonymiser, age_band, birth_year

KEY = {"HP_KEY": "a-long-enough-test-key"}


def test_pseudonyms_are_stable_keyed_and_namespaced() -> None:
    p = Pseudonymiser.from_env("HP_KEY", purpose="emr", env=KEY)
    other = Pseudonymiser.from_env("HP_KEY", purpose="emr", env={"HP_KEY": "another-long-test-key"})
    first = p.pseudonym("patient", "MRN-00123")
    assert first == p.pseudonym("patient", " MRN-00123 ")
    assert first != other.pseudonym("patient", "MRN-00123")
    assert first != p.pseudonym("household", "MRN-00123")
    assert first is not None and len(first) == 32 and "00123" not in first
    assert p.pseudonym("patient", None) is None and p.pseudonym("patient", "") is None
    assert "test-key" not in repr(p)


def test_a_missing_or_short_key_stops_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="set the environment variable HP_KEY"):
        Pseudonymiser.from_env("HP_KEY", purpose="emr", env={})
    with pytest.raises(ConfigError, match="shorter than 16"):
        Pseudonymiser.from_env("HP_KEY", purpose="emr", env={"HP_KEY": "short"})


@pytest.mark.parametrize(
    ("value", "year"),
    [
        ("1987-03-14", 1987),
        ("19870314", 1987),
        ("1987", 1987),
        ("", None),
        (None, None),
        ("x", None),
    ],
)
def test_birth_year(value: str | None, year: int | None) -> None:
    assert birth_year(value) == year


def test_age_bands() -> None:
    today = date(2026, 1, 1)
    assert age_band(2024, today) == "0-4"
    assert age_band(1990, today) == "35-39"
    assert age_band(1930, today) == "85+"
    assert age_band(2030, today) is None
