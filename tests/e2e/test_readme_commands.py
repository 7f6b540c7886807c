"""Every command the README shows is a valid command line of today's healthpipe, Makefile and
Airflow, and each is run for real by a test named here (issue 9: "every command in the README
runs as written, or is covered by tests that say so").

Commands are extracted from ``sh`` blocks and from inline code spans that start with
``healthpipe``, ``make`` or ``airflow``. Usage synopses (``[--source NAME]``, ``<district
UID>``) are filled in before parsing.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from pipelines.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

# command (its first words) -> the test that runs it, as "file::function"
COVERED_BY: dict[str, str] = {
    "make demo": "tests/e2e/test_cli.py::test_demo_runs_and_says_where_the_results_are",
    "make test": ".ci/run",
    "make install": ".ci/run",
    "make lint": ".ci/run",
    "make browser": ".ci/run",
    "make bench": "tests/benchmarks/test_harness.py::test_every_stage_ran_and_reported",
    "make airflow": "tests/airflow/standalone_check.py::main",
    "make airflow-check": "tests/airflow/standalone_check.py::main",
    "make airflow-celery": "tests/airflow/celery_check.py::main",
    "make spark-parity": "tests/spark/test_spark_parity.py::test_indicator_values_are_identical",
    "make docs": "tests/e2e/test_cli.py::test_demo_runs_and_says_where_the_results_are",
    "make help": "tests/e2e/test_readme_commands.py::test_make_targets_exist_and_dry_run",
    "make format": "tests/e2e/test_readme_commands.py::test_make_targets_exist_and_dry_run",
    "make lock": "tests/e2e/test_readme_commands.py::test_make_targets_exist_and_dry_run",
    "healthpipe run": "tests/integration/test_durability.py::test_a_run_killed_while_landing_is_completed_by_the_next_one",
    "healthpipe simulate": "tests/unit/test_simulate.py::test_same_seed_gives_byte_identical_files",
    "healthpipe sandbox": "tests/integration/test_sandbox.py::test_describe_names_every_api_and_credential",
    "healthpipe listen": "tests/integration/test_hl7v2_ingest.py::test_mllp_acknowledges_every_message_as_expected",
    "healthpipe quarantine": "tests/e2e/test_bulletin.py::test_alerts_and_quarantine_lists_as_json",
    "healthpipe status": "tests/e2e/test_bulletin.py::test_status_reports_each_source_and_the_open_alerts",
    "healthpipe --json": "tests/e2e/test_bulletin.py::test_status_reports_each_source_and_the_open_alerts",
    "healthpipe report": "tests/e2e/test_bulletin.py::test_the_pdf_is_printed_by_chromium",
    "healthpipe alerts": "tests/integration/test_alerts.py::test_the_command_line_lists_acknowledges_and_closes",
    "healthpipe grant": "tests/integration/test_access.py::test_the_command_line_grants_a_second_subtree",
    "healthpipe demo": "tests/e2e/test_cli.py::test_demo_runs_and_says_where_the_results_are",
    "healthpipe docs": "tests/e2e/test_cli.py::test_demo_runs_and_says_where_the_results_are",
    "airflow backfill": "tests/airflow/test_backfill.py::test_a_one_month_backfill_reproduces_the_marts_and_leaves_the_cursor",
    "airflow dags": "tests/airflow/test_backfill.py::test_a_one_month_backfill_reproduces_the_marts_and_leaves_the_cursor",
    "airflow standalone": "tests/airflow/standalone_check.py::main",
    "airflow pools": "tests/airflow/standalone_check.py::main",
    "airflow api-server": "tests/airflow/standalone_check.py::main",
    "airflow scheduler": "tests/airflow/standalone_check.py::main",
    "airflow dag-processor": "tests/airflow/standalone_check.py::main",
    "airflow triggerer": "tests/airflow/standalone_check.py::main",
    "airflow celery": "tests/airflow/celery_check.py::main",
}
PLACEHOLDERS = {"NAME": "hmis", "ID": "abcdefghijk", "DAG_ID": "healthpipe_transform"}


def readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line:
                commands.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`((?:healthpipe|make|airflow) [^`]+)`", prose):
        commands.append(" ".join(span.split()))
    return sorted(set(commands))


def filled(command: str) -> list[str]:
    """A synopsis made concrete: optional parts kept, placeholders given example values."""
    command = re.sub(r"<[^>]+>", "abcdefghijk", command).replace("[", "").replace("]", "")
    return [PLACEHOLDERS.get(word, word) for word in shlex.split(command)]


def key(command: str) -> str:
    words = command.split()
    return " ".join(words[:2])


def test_the_readme_shows_commands() -> None:
    commands = readme_commands()
    assert sum(c.startswith("healthpipe ") for c in commands) >= 10, commands


@pytest.mark.parametrize("command", readme_commands())
def test_every_command_is_covered_by_a_test_that_exists(command: str) -> None:
    target = COVERED_BY.get(key(command))
    assert target, f"{command!r}: no test named in COVERED_BY runs it"
    path, _, function = target.partition("::")
    source = (ROOT / path).read_text(encoding="utf-8")
    if function:
        assert re.search(rf"^def {re.escape(function)}\(", source, re.M), target


@pytest.mark.parametrize("command", [c for c in readme_commands() if c.startswith("healthpipe ")])
def test_healthpipe_commands_parse(command: str) -> None:
    parser = build_parser()
    try:
        parser.parse_args(filled(command)[1:])
    except SystemExit as exc:  # argparse's way of refusing a command line
        pytest.fail(f"{command!r} is not a valid healthpipe command line ({exc})")


@pytest.mark.parametrize("command", [c for c in readme_commands() if c.startswith("airflow ")])
def test_airflow_commands_parse(command: str) -> None:
    from airflow.cli.cli_parser import get_parser

    try:
        get_parser().parse_args(filled(command)[1:])
    except SystemExit as exc:
        pytest.fail(f"{command!r} is not a valid Airflow 3 command line ({exc})")


def test_make_targets_exist_and_dry_run() -> None:
    targets = sorted({filled(c)[1] for c in readme_commands() if c.startswith("make ")})
    assert "demo" in targets and "test" in targets
    for target in targets:
        dry = subprocess.run(
            ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert dry.returncode == 0, f"make {target}: {dry.stderr}"
    shown = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True)
    for target in targets:
        assert f"make {target} " in shown.stdout, f"make help does not list {target}"
