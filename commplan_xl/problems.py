"""The small exception hierarchy: every error carries a sentence for people."""

from __future__ import annotations

from dataclasses import dataclass


class CommplanError(Exception):
    """An error that ends a command with a plain sentence (exit 1)."""


class WorkbookLocked(CommplanError):
    """The workbook is open in Excel or LibreOffice, so the tool must not write it."""


class RunLocked(CommplanError):
    """Another run holds the home folder."""


@dataclass(frozen=True)
class WorkbookProblem:
    """One problem in the workbook, at its place as Excel shows it.

    `row` is Excel's row number (header = 1) or None for a whole sheet; `column` is the
    normalised column name or None.
    """

    sheet: str
    row: int | None
    column: str | None
    message: str
    cell: str | None = None  # e.g. "D7" when the column letter is known
    # A problem of one message rather than of the row (a missing attachment file, a template
    # that cannot render for one order): reported, but the step stays scheduled and its
    # message is recorded `failed` (temporary) until fixed.
    message_level: bool = False

    def __str__(self) -> str:
        place = self.sheet
        if self.cell:
            place += f"!{self.cell}"
        elif self.row is not None:
            place += f"!{self.row}" if self.column is None else f" row {self.row}"
        if self.column:
            place += f" ({self.column})"
        return f"{place}: {self.message}"


class SendFailure(CommplanError):
    """A message could not be sent. `temporary` failures are retried by later runs."""

    def __init__(self, message: str, *, temporary: bool, connection: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary
        # True when the connection itself failed (server down, dropped, login refused):
        # the run counts these to stop trying after a few in a row.
        self.connection = connection


class SendUncertain(SendFailure):
    """The connection failed while the message was being handed over: the server may have
    it. The ledger records `uncertain` and never sends it again automatically."""

    def __init__(self, message: str, *, temporary: bool = False, connection: bool = True) -> None:
        super().__init__(message, temporary=temporary, connection=connection)
