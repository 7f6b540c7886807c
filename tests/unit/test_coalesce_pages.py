"""Small HTTP pages are landed in larger batches without the cursor running ahead."""

from __future__ import annotations

from connectors.base import Page
from pipelines.run import coalesce_pages


def page(entity: str, n: int, cursor: int) -> Page:
    return Page(entity, [{"i": i} for i in range(n)], f"url{cursor}", {"c": cursor})


def test_pages_of_one_entity_merge_up_to_the_limit_and_keep_the_last_cursor() -> None:
    pages = [
        page("a", 40, 1),
        page("a", 40, 2),
        page("a", 40, 3),
        page("b", 10, 4),
        page("b", 10, 5),
    ]
    merged = list(coalesce_pages(pages, 100))
    assert [(p.entity, len(p.records), p.cursor) for p in merged] == [
        ("a", 80, {"c": 2}),
        ("a", 40, {"c": 3}),
        ("b", 20, {"c": 5}),
    ]
    assert merged[0].origin == "url1 .. url2"


def test_a_page_larger_than_the_limit_passes_whole() -> None:
    merged = list(coalesce_pages([page("a", 500, 1), page("a", 1, 2)], 100))
    assert [len(p.records) for p in merged] == [500, 1]
