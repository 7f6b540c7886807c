"""The Data Docs site is rendered again only when GX stored something newer than it."""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.validate import DataDocs, data_docs_stale


def _touch(path: Path, seconds: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}", encoding="utf-8")
    os.utime(path, (seconds, seconds))


def test_the_site_is_stale_only_when_a_suite_or_result_is_newer(tmp_path: Path) -> None:
    docs = DataDocs(gx_dir=tmp_path / "gx", site_dir=tmp_path / "site")
    assert not data_docs_stale(docs)  # nothing validated, nothing to render

    result = docs.gx_dir / "gx" / "uncommitted" / "validations" / "suite" / "run" / "b.json"
    _touch(result, 1_000)
    assert data_docs_stale(docs)  # results, no site yet

    _touch(docs.site_dir / "index.html", 2_000)
    assert not data_docs_stale(docs)  # rendered after the last result

    _touch(result.with_name("c.json"), 3_000)
    assert data_docs_stale(docs)  # a run stored a new result

    _touch(docs.site_dir / "index.html", 4_000)
    _touch(docs.gx_dir / "gx" / "expectations" / "dhis2__data_values.json", 5_000)
    assert data_docs_stale(docs)  # a suite changed
