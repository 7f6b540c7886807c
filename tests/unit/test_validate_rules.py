"""Each GX result is matched to its own rule, whatever order GX returns them in (it groups
results by column), so quarantine entries name the rule that really failed."""

from __future__ import annotations

import pandas as pd

from pipelines.validate import SuiteSpec, run_suite


def test_results_are_matched_to_their_rules_not_by_position() -> None:
    spec = SuiteSpec.model_validate(
        {
            "suite": "rule_matching",
            "expectations": [
                {
                    "rule": "a_present",
                    "type": "expect_column_values_to_not_be_null",
                    "column": "a",
                    "reason": "r",
                },
                {
                    "rule": "b_known",
                    "type": "expect_column_values_to_be_in_set",
                    "column": "b",
                    "kwargs": {"value_set": ["ok"]},
                    "reason": "r",
                },
                {
                    "rule": "a_is_z",
                    "type": "expect_column_values_to_match_regex",
                    "column": "a",
                    "kwargs": {"regex": "^z$"},
                    "reason": "r",
                },
            ],
        }
    )
    frame = pd.DataFrame({"a": ["z", None, "q", "z"], "b": ["ok", "ok", "ok", "bad"]})
    failing = {
        item.rule: result.get("unexpected_index_list")
        for item, result, _ in run_suite(spec, frame, {})
    }
    assert failing == {"a_present": [1], "b_known": [3], "a_is_z": [2]}


def _org_unit_suite() -> SuiteSpec:
    # a fresh spec object each call, as validate_pending reads the suite file per batch
    return SuiteSpec.model_validate(
        {
            "suite": "suite_reuse",
            "expectations": [
                {
                    "rule": "org_unit_known",
                    "type": "expect_column_values_to_be_in_set",
                    "column": "org_unit",
                    "kwargs": {"value_set": "$org_units"},
                    "reason": "r",
                },
                {
                    "rule": "value_present",
                    "type": "expect_column_values_to_not_be_null",
                    "column": "value",
                    "reason": "r",
                },
            ],
        }
    )


def _failing(references: dict[str, object], frame: pd.DataFrame) -> dict[str, object]:
    return {
        item.rule: result.get("unexpected_index_list")
        for item, result, _ in run_suite(_org_unit_suite(), frame, references)
    }


def test_the_suite_follows_the_references_of_each_batch() -> None:
    """The GX suite is kept between batches (rebuilding it per batch cost minutes at scale),
    so a batch after new metadata must still be judged against the new reference set."""
    frame = pd.DataFrame({"org_unit": ["ou1", "ou2", "ou3"], "value": ["1", None, "3"]})
    before = {"org_units": ["ou1", "ou2"]}
    assert _failing(before, frame) == {"org_unit_known": [2], "value_present": [1]}
    # the same references again, from a new spec object: same rules, same answers
    assert _failing(before, frame) == {"org_unit_known": [2], "value_present": [1]}
    # ou3 arrives with the next metadata page; ou1 is gone
    after = {"org_units": ["ou2", "ou3"]}
    assert _failing(after, frame) == {"org_unit_known": [0], "value_present": [1]}
