"""Errors a connector raises when a source cannot be read."""

from __future__ import annotations


class SourceError(Exception):
    """A source could not be read; the message says which source, file or URL, and why."""


class SourceFormatError(SourceError):
    """A payload does not have the shape its protocol documents.

    The message names the file (or URL), the record and the field at fault and what was
    expected, so a data engineer can find and fix the payload without a debugger.
    """

    def __init__(
        self,
        origin: str,
        problem: str,
        *,
        field: str | None = None,
        record: int | None = None,
    ) -> None:
        self.origin = origin
        self.problem = problem
        self.field = field
        self.record = record
        where = origin
        if field is not None:
            where += f": field {field}"
        super().__init__(f"{where}: {problem}")
