"""Delay + unit + calendar → date. Pure: no files, no clock, no network."""

from __future__ import annotations

import bisect
import datetime as dt
import functools
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from commplan_xl.core.units import UNIT_ROWS, Unit
from commplan_xl.model import Order, Step

# Float noise (0.1 * 3 = 0.30000000000000004) is cut away at this many decimal places.
_NOISE = Decimal("1e-9")

# Subdivision names of older holidays releases that the current library no longer takes,
# mapped to the code that has the same holidays.
_LEGACY_SUBDIVS: dict[tuple[str, str], str | None] = {
    ("FR", "alsace-moselle"): "57",
    ("FR", "alsace moselle"): "57",
    ("FR", "métropole"): None,
    ("FR", "metropole"): None,
}


@dataclass(frozen=True)
class Calendar:
    """Non-working days: Saturdays, Sundays and the public holidays of `country`/`subdiv`.

    `country` "" means weekends only. Holidays are built lazily, one year at a time, and
    kept, so any year works and each year costs its build once.
    """

    country: str = ""
    subdiv: str | None = None
    _years: dict[int, frozenset[dt.date]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )
    _working: dict[int, list[int]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def holidays_in(self, year: int) -> frozenset[dt.date]:
        """The public holidays of one year (empty for a weekends-only calendar)."""
        days = self._years.get(year)
        if days is None:
            days = _holidays_of(self.country, self.subdiv, year)
            self._years[year] = days
        return days

    def is_working_day(self, day: dt.date) -> bool:
        """True on a weekday that is not a public holiday."""
        return day.weekday() < 5 and day not in self.holidays_in(day.year)

    def working_days(self, year: int) -> list[int]:
        """The working days of one year as sorted ordinals (for bisecting)."""
        days = self._working.get(year)
        if days is None:
            first = dt.date(year, 1, 1).toordinal()
            last = dt.date(year, 12, 31).toordinal()
            off = self.holidays_in(year)
            days = [
                o for o in range(first, last + 1)
                if (d := dt.date.fromordinal(o)).weekday() < 5 and d not in off
            ]
            self._working[year] = days
        return days

    def next_working_day(self, day: dt.date) -> dt.date:
        """`day` itself when it is a working day, else the first working day after it."""
        while not self.is_working_day(day):
            day += dt.timedelta(days=1)
        return day

    def add_working_days(self, start: dt.date, count: int) -> dt.date:
        """The `count`-th working day after `start` (0 → `start` itself, even on a weekend)."""
        if count <= 0:
            return start
        year = start.year
        after = start.toordinal()
        while True:
            days = self.working_days(year)
            first = bisect.bisect_right(days, after)  # the first working day after `start`
            if first + count <= len(days):
                return dt.date.fromordinal(days[first + count - 1])
            count -= len(days) - first
            year += 1


WEEKENDS_ONLY = Calendar()


def _holidays_of(country: str, subdiv: str | None, year: int) -> frozenset[dt.date]:
    if not country:
        return frozenset()
    import holidays

    return frozenset(holidays.country_holidays(country, subdiv=subdiv, years=year).keys())


def business_calendar(country: str, subdiv: str | None = None) -> Calendar:
    """The calendar of `country` (e.g. "FR") and optional `subdiv` (e.g. "57", "Moselle").

    "" is weekends only. Country codes and subdivisions are matched without regard to case;
    the subdivision may be a code, an alias the holidays library knows, or the older name
    "Alsace-Moselle". Raises ValueError with a sentence for an unknown country/subdivision.
    One Calendar is kept per (country, subdivision), so repeated calls are free.
    """
    return _calendar((country or "").strip().upper(), (subdiv or "").strip() or None)


@functools.lru_cache(maxsize=64)
def _calendar(country: str, subdiv: str | None) -> Calendar:
    if not country:
        if subdiv:
            raise ValueError(f'The holidays subdivision "{subdiv}" needs a country (e.g. FR).')
        return WEEKENDS_ONLY
    return _shared(country, _canonical_subdiv(country, subdiv))


@functools.lru_cache(maxsize=64)
def _shared(country: str, subdiv: str | None) -> Calendar:
    """One Calendar (and so one holiday cache) per canonical (country, subdivision)."""
    return Calendar(country, subdiv)


def _canonical_subdiv(country: str, subdiv: str | None) -> str | None:
    """The library's own code for `subdiv` in `country`, or a ValueError."""
    import holidays
    from holidays.registry import EntityLoader

    # The registry knows the country codes without loading a country: loading any one
    # imports every country module, which waits for a subdivision to check or
    # for the first business day counted (Calendar loads its holidays then).
    if country not in EntityLoader.get_country_codes():
        raise ValueError(
            f'"{country}" is not a country code the holidays library knows (e.g. FR, BE, CH).'
        )
    if subdiv is None:
        return None
    legacy = _LEGACY_SUBDIVS.get((country, subdiv.casefold()), "")
    if legacy != "":
        return legacy
    entity = holidays.country_holidays(country)
    codes = {str(code).casefold(): str(code) for code in entity.subdivisions}
    aliases = getattr(entity, "subdivisions_aliases", {}) or {}
    codes.update({str(alias).casefold(): str(code) for alias, code in aliases.items()})
    code = codes.get(subdiv.casefold())
    if code is None:
        known = ", ".join(str(c) for c in entity.subdivisions) or "none"
        raise ValueError(
            f'"{subdiv}" is not a subdivision of {country} for the holidays library '
            f"(it knows: {known})."
        )
    return code


def _as_decimal(delay: float | int | Decimal) -> Decimal:
    """The delay as an exact decimal, float noise removed (0.1*3 → 0.3)."""
    if isinstance(delay, bool):
        raise ValueError(f"{delay!r} is not a delay.")
    try:
        # repr of a float is its shortest round-trip text: 2.15 stays 2.15, not 2.1499…
        value = Decimal(repr(delay) if isinstance(delay, float) else str(delay))
        value = value.quantize(_NOISE, rounding=ROUND_HALF_UP)
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"{delay!r} is not a number of days, weeks or months.") from exc
    if not value.is_finite() or value < 0:
        raise ValueError(f"A delay must be a number ≥ 0, not {delay!r}.")
    return value


def _whole(value: Decimal, name: str) -> Decimal:
    if value != value.to_integral_value():
        raise ValueError(f"A delay in {name} must be a whole number, "
                         f"not {value.normalize()}.")
    return value


def add_business_days(start: dt.date, count: int, calendar: Calendar | None) -> dt.date:
    """The `count`-th working day after `start` (0 → `start` itself, even on a weekend)."""
    return (calendar or WEEKENDS_ONLY).add_working_days(start, count)


def add_delay(
    start: dt.date, delay: float | int | Decimal, unit: Unit, calendar: Calendar | None = None
) -> dt.date:
    """`start` + `delay` in `unit`, by the unit's row of the units table.

    - days, business days: whole numbers only (ValueError otherwise).
    - weeks: delay × 7 days, rounded to the nearest day, halves up (1.5 weeks = 11 days).
    - months: the whole part as calendar months, clamped to the month's end (Jan 31 + 1
      month = Feb 28/29), then the fraction × 30 days, rounded halves up.
    - business days: the Nth working day after `start`, skipping Saturdays, Sundays and the
      calendar's holidays (None = weekends only); 0 business days is `start` itself.
    """
    value = _as_decimal(delay)
    row = UNIT_ROWS.get(unit)
    if row is None:
        raise ValueError(f'"{unit}" is not a unit (one of {", ".join(Unit)}).')
    if row.whole:
        value = _whole(value, row.english)
    return row.add(start, value, calendar or WEEKENDS_ONLY)


@functools.lru_cache(maxsize=65536)
def cached_add_delay(
    start: dt.date, delay: float | int | Decimal, unit: Unit, calendar: Calendar | None
) -> dt.date:
    """add_delay, memoised: many orders share a start date and every plan shares its steps."""
    return add_delay(start, delay, unit, calendar)


def due_date(step: Step, order: Order, calendar: Calendar | None) -> dt.date | None:
    """When `step` of `order` is due, or None while its `from` date is empty (not due yet)."""
    start = order.dates.get(step.from_column)
    if start is None:
        return None
    return cached_add_delay(start, step.delay, step.unit, calendar)
