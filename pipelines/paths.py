"""Where the project's own files live (the dbt project, suites, built-in indicators)."""

from __future__ import annotations

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
"""The repository root: holds dbt_project.yml, expectations/ and indicators/."""

DBT_PROJECT_DIR = PROJECT_DIR
EXPECTATIONS_DIR = PROJECT_DIR / "expectations"
INDICATORS_DIR = PROJECT_DIR / "indicators"
