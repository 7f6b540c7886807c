"""Documentation sites: dbt docs (models, columns, lineage; ``dbt docs generate --static``
through the programmatic runner) and Great Expectations Data Docs, copied side by side into
one folder (``make docs`` writes ``site/``)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import HealthpipeConfig
from pipelines.errors import TransformError
from pipelines.run import data_docs, dbt_variables, open_warehouse
from pipelines.transform import run_dbt
from pipelines.validate import build_data_docs

DBT_DOCS_FILES = ("index.html", "static_index.html", "manifest.json", "catalog.json")


@dataclass(frozen=True)
class DocSites:
    dbt_docs: Path
    """index.html of the dbt docs (the static one: opens from disk, no server needed)."""
    data_docs: Path | None
    """index.html of the Data Docs, or None when nothing was validated yet."""


def build_docs(config: HealthpipeConfig, out: Path) -> DocSites:
    """Generate dbt docs from the configured warehouse's catalog into ``out/dbt-docs`` and
    copy the Data Docs site into ``out/data-docs``."""
    with open_warehouse(config) as warehouse:
        dbt_env = warehouse.dbt_env()
        built = warehouse.table_exists("marts", "dim_org_unit")
    if not built:
        raise TransformError(
            f"the warehouse {config.warehouse} has no dbt models yet; run `healthpipe run` "
            "(or `make demo`) before building the docs"
        )
    run_dbt(
        ["docs", "generate", "--static"],
        dbt_env=dbt_env,
        state_dir=config.state_dir,
        variables=dbt_variables(config),
    )
    target = config.state_dir / "dbt" / dbt_env.get("HEALTHPIPE_DBT_TARGET", "duckdb") / "target"
    dbt_out = out / "dbt-docs"
    dbt_out.mkdir(parents=True, exist_ok=True)
    for name in DBT_DOCS_FILES:
        if (target / name).exists():
            shutil.copy2(target / name, dbt_out / name)
    # The static page embeds the manifest and catalog, so it works from file:// as index.html.
    if (dbt_out / "static_index.html").exists():
        shutil.copy2(dbt_out / "static_index.html", dbt_out / "index.html")
    sites = data_docs(config)
    gx_index: Path | None = None
    if sites.gx_dir.exists():
        build_data_docs(sites)
        target_site = out / "data-docs"
        # The demo's state folder already renders its Data Docs where `out` puts them.
        if sites.site_dir.exists() and sites.site_dir.resolve() != target_site.resolve():
            shutil.copytree(sites.site_dir, target_site, dirs_exist_ok=True)
        if (target_site / "index.html").exists():
            gx_index = target_site / "index.html"
    return DocSites(dbt_out / "index.html", gx_index)
