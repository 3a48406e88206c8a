"""The units of a step's delay: one row each, with its spellings and how it is added.

Adding a unit is one Unit member and one row of UNIT_TABLE: the Plans check, the date
arithmetic, the starter workbook's drop-down and its help text all read the table.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Protocol

from dateutil.relativedelta import relativedelta


class Calendar(Protocol):
    """The working days a delay in business days counts (core.offsets.Calendar)."""

    def add_working_days(self, start: dt.date, count: int) -> dt.date: ...

DAYS_PER_MONTH_FRACTION = 30  # the fraction of a month counts 30 days


class Unit(StrEnum):
    """A unit as the tool knows it, whatever the spelling in the Plans sheet."""

    DAYS = "days"
    BUSINESS_DAYS = "business_days"
    WEEKS = "weeks"
    MONTHS = "months"


def round_half_up(value: Decimal) -> int:
    """The nearest whole number, halves up (10.5 → 11)."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _add_days(start: dt.date, value: Decimal, calendar: Calendar) -> dt.date:
    return start + dt.timedelta(days=int(value))


def _add_business_days(start: dt.date, value: Decimal, calendar: Calendar) -> dt.date:
    return calendar.add_working_days(start, int(value))


def _add_weeks(start: dt.date, value: Decimal, calendar: Calendar) -> dt.date:
    return start + dt.timedelta(days=round_half_up(value * 7))


def _add_months(start: dt.date, value: Decimal, calendar: Calendar) -> dt.date:
    months = int(value)  # value ≥ 0, so int() is the whole part
    extra = round_half_up((value - months) * DAYS_PER_MONTH_FRACTION)
    return start + relativedelta(months=months) + dt.timedelta(days=extra)


@dataclass(frozen=True)
class UnitRow:
    """One unit: its names, the spellings the Plans sheet accepts, and its arithmetic."""

    unit: Unit
    english: str  # in messages and the starter's drop-down
    french: str  # in the starter's drop-down and help
    # Every accepted spelling; case, accents, surrounding spaces and `_`/`-`/space between
    # words do not matter.
    spellings: tuple[str, ...]
    # start + a delay ≥ 0 (whole when `whole`) in this unit, on a working-day calendar.
    add: Callable[[dt.date, Decimal, Calendar], dt.date]
    whole: bool = False  # only whole numbers of this unit
    help_fr: str = ""  # a sentence for the starter's help, if the unit needs one


UNIT_TABLE: tuple[UnitRow, ...] = (
    UnitRow(Unit.DAYS, "days", "jours",
            ("day", "days", "jour", "jours", "jour(s)", "j"),
            _add_days, whole=True),
    UnitRow(Unit.BUSINESS_DAYS, "business days", "jours ouvrés",
            ("business day", "business days", "jour ouvré", "jours ouvrés", "jour(s) ouvré(s)",
             "jours ouvré", "jour ouvrés", "jour ouvrable", "jours ouvrables"),
            _add_business_days, whole=True,
            help_fr="Jours ouvrés = hors week-ends et jours fériés."),
    UnitRow(Unit.WEEKS, "weeks", "semaines",
            ("week", "weeks", "semaine", "semaines", "semaine(s)"),
            _add_weeks),
    UnitRow(Unit.MONTHS, "months", "mois",
            ("month", "months", "mois"),
            _add_months),
)
UNIT_ROWS: dict[Unit, UnitRow] = {row.unit: row for row in UNIT_TABLE}

_SEPARATORS = re.compile(r"[\s_-]+")


def spelling_key(text: str) -> str:
    """How unit spellings compare: case, accents and `_`/`-`/spaces between words ignored."""
    text = unicodedata.normalize("NFKD", str(text).casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(part for part in _SEPARATORS.split(text) if part)


_BY_SPELLING: dict[str, Unit] = {
    spelling_key(word): row.unit
    for row in UNIT_TABLE for word in (row.unit.value, row.english, row.french, *row.spellings)
}


def parse_unit(text: str) -> Unit | None:
    """The unit `text` spells (e.g. "Jours ouvrés" → business days), or None."""
    return _BY_SPELLING.get(spelling_key(text))


def choices() -> tuple[str, ...]:
    """The units as a drop-down offers them: English names, then French names."""
    return (*(row.english for row in UNIT_TABLE), *(row.french for row in UNIT_TABLE))


def english_hint() -> str:
    """The units to write, for a message: "days, …, weeks or months (or jours, …, mois)"."""
    english = [row.english for row in UNIT_TABLE]
    french = ", ".join(row.french for row in UNIT_TABLE)
    return f"{', '.join(english[:-1])} or {english[-1]} (or {french})"
