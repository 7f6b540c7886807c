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
