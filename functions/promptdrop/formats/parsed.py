"""What parsing an input file yields: a :class:`Request`, a :class:`LineError`, or :class:`FileRejected`."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.request import Request
from ..records import FailureCode

__all__ = ["FileRejected", "LineError", "Parsed", "Request"]


class FileRejected(Exception):
    """The whole file cannot be processed (the reason is meant for the user)."""

    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True, frozen=True)
class LineError:
    """A line that could not be turned into a request; it fails alone."""

    line: int
    custom_id: str
    message: str
    offset: int = 0
    # A .csv row's cells, (name, cell) for every column in file order: its line of the .out.csv.
    columns: tuple[tuple[str, str], ...] = ()
    code: FailureCode = FailureCode.INVALID_LINE  # INVALID_SCHEMA: its structured-output schema


Parsed = Request | LineError
