"""A home folder with its workbook read and validated, and its clock."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from commplan_xl.model import Model
from commplan_xl.problems import WorkbookProblem
from commplan_xl.settings import Settings

LEDGER_NAME = "commplan-ledger.sqlite3"


@dataclass(frozen=True)
class Site:
    """A home folder with its workbook read and validated."""

    home: Path
    workbook: Path
    settings: Settings
    model: Model
    problems: tuple[WorkbookProblem, ...]
    stat: tuple[int, int] | None = None  # (size, mtime_ns) of the workbook when read
    # Column letters per sheet ("plans" -> {"body": "F"}), to name cells in problems.
    letters: dict[str, dict[str, str]] = field(default_factory=dict)
    # Each input sheet's name ("orders" -> "Commandes") and headers as written
    # ("orders" -> {"start_date": "Date de début"}), to name them as staff see them.
    sheets: dict[str, str] = field(default_factory=dict)
    titles: dict[str, dict[str, str]] = field(default_factory=dict)

    def cell(self, sheet: str, column: str, row: int) -> str | None:
        letter = self.letters.get(sheet.casefold(), {}).get(column)
        return f"{letter}{row}" if letter else None

    def problem(self, sheet: str, row: int, column: str, message: str, *,
                message_level: bool = False) -> WorkbookProblem:
        """A problem at a cell of the input sheet `sheet` ("orders"), named as the
        workbook names the sheet and the column ("Commandes!D2 (Date de début)")."""
        return WorkbookProblem(self.sheets.get(sheet, sheet.capitalize()), row, column, message,
                               cell=self.cell(sheet, column, row), message_level=message_level,
                               header=self.titles.get(sheet, {}).get(column))

    @property
    def ledger_path(self) -> Path:
        return self.home / LEDGER_NAME


def today_in(settings: Settings) -> dt.date:
    """Today's date in the site's time zone."""
    return dt.datetime.now(ZoneInfo(settings.timezone)).date()


def now_in(settings: Settings) -> dt.datetime:
    """The current local time in the site's time zone, without tzinfo, to the second."""
    return dt.datetime.now(ZoneInfo(settings.timezone)).replace(tzinfo=None, microsecond=0)
