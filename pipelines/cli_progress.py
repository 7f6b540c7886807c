"""Progress bars for the long steps of ``healthpipe run`` and ``healthpipe demo``: records
landed per source (with a rate) and dbt nodes built. Drawn on stderr, so stdout stays clean
for ``--json`` and for pipes; switched off entirely when asked to be quiet."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second since the task started ("1,234 rec/s")."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        unit = str(task.fields.get("unit", "/s"))
        if elapsed <= 0 or not task.completed:
            return Text("", style="progress.data.speed")
        return Text(f"{task.completed / elapsed:,.0f} {unit}", style="progress.data.speed")


class CountColumn(ProgressColumn):
    """ "12,345 records" while the total is unknown (a source's pages), "35/120 nodes" once
    it is known."""

    def render(self, task: Task) -> Text:
        noun = str(task.fields.get("noun", ""))
        if task.total is None:
            return Text(f"{task.completed:,.0f} {noun}".rstrip(), style="progress.download")
        return Text(f"{task.completed:,.0f}/{task.total:,.0f} {noun}".rstrip(),
                    style="progress.download")  # fmt: skip


@dataclass
class PipelineProgress:
    """Callbacks for :func:`pipelines.run.run_pipeline` that drive one rich Progress."""

    progress: Progress | None
    sources: dict[str, TaskID] = field(default_factory=dict)
    dbt: TaskID | None = None
    started: float = field(default_factory=time.monotonic)
    # dbt reports finished nodes from its worker threads.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_page(self, source: str, entity: str, received: int) -> None:
        if self.progress is None:
            return
        if source not in self.sources:
            self.sources[source] = self.progress.add_task(
                f"ingest {source}", total=None, noun="records", unit="rec/s"
            )
        self.progress.update(
            self.sources[source],
            advance=received,
            description=f"ingest {source} [dim]{entity[:22]}[/]",
        )

    def on_node(self, unique_id: str, done: int, total: int) -> None:
        if self.progress is None:
            return
        with self.lock:
            self._node(self.progress, unique_id, done, total)

    def _node(self, progress: Progress, unique_id: str, done: int, total: int) -> None:
        for task in self.sources.values():
            progress.update(task, total=progress.tasks[task].completed)
        if self.dbt is None:
            self.dbt = progress.add_task("dbt build", total=total, noun="nodes", unit="nodes/s")
        # model.healthpipe.dim_org_unit, test.healthpipe.not_null_x.8125d843d7: the name
        parts = unique_id.split(".")
        name = parts[2] if len(parts) > 2 else unique_id
        progress.update(
            self.dbt, completed=done, total=total, description=f"dbt build [dim]{name[:20]}[/]"
        )


@contextmanager
def pipeline_progress(console: Console, enabled: bool = True) -> Iterator[PipelineProgress]:
    if not enabled:
        yield PipelineProgress(None)
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        CountColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    with progress:
        yield PipelineProgress(progress)
