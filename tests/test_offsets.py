"""Delays and units → dates (README "When a message is sent")."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commplan_xl.core.offsets import (
    WEEKENDS_ONLY,
    Calendar,
    add_business_days,
    add_delay,
    business_calendar,
    due_date,
)
from commplan_xl.model import Order, Step

D = dt.date


@pytest.mark.parametrize(
    ("start", "delay", "unit", "expected"),
    [
        (D(2026, 3, 2), 5, "days", D(2026, 3, 7)),
        (D(2026, 3, 2), 0, "days", D(2026, 3, 2)),
        (D(2026, 3, 2), 15.0, "days", D(2026, 3, 17)),
        (D(2026, 12, 25), 10, "days", D(2027, 1, 4)),
        (D(2026, 3, 2), 1, "weeks", D(2026, 3, 9)),
        (D(2026, 3, 2), 1.5, "weeks", D(2026, 3, 13)),  # 10.5 days rounds up to 11
        (D(2026, 3, 2), 0.5, "weeks", D(2026, 3, 6)),  # 3.5 days rounds up to 4
        (D(2026, 3, 2), 0.3, "weeks", D(2026, 3, 4)),  # 2.1 days rounds to 2
        (D(2026, 3, 2), 0.1 * 3, "weeks", D(2026, 3, 4)),  # float noise 0.30000000000000004
        (D(2026, 3, 2), 8, "weeks", D(2026, 4, 27)),
        (D(2026, 1, 31), 1, "months", D(2026, 2, 28)),
        (D(2028, 1, 31), 1, "months", D(2028, 2, 29)),
        (D(2026, 1, 31), 1.5, "months", D(2026, 3, 15)),  # Feb 28 + 15 days
        (D(2026, 3, 31), 1, "months", D(2026, 4, 30)),
        (D(2026, 3, 2), 2, "months", D(2026, 5, 2)),
        (D(2026, 11, 15), 2, "months", D(2027, 1, 15)),
        (D(2026, 3, 2), 0.5, "months", D(2026, 3, 17)),  # 15 days
        (D(2026, 3, 2), 0.05, "months", D(2026, 3, 4)),  # 1.5 days rounds up to 2
        (D(2026, 3, 2), 2.15, "months", D(2026, 5, 7)),  # 4.5 days up to 5, not 2.1499… → 4
        (D(2026, 3, 2), Decimal("1.5"), "months", D(2026, 4, 17)),
        (D(2026, 3, 2), 0, "months", D(2026, 3, 2)),
    ],
)
def test_calendar_units(start, delay, unit, expected):
    """Days, weeks (halves up) and months (clamped, fraction × 30 days) add as the README says."""
    assert add_delay(start, delay, unit, None) == expected


@pytest.mark.parametrize(
    ("start", "delay", "holidays", "expected"),
    [
        # Friday + 1 business day skips the weekend.
        (D(2026, 3, 6), 1, "", D(2026, 3, 9)),
        # From a Saturday, the first working day after is Monday.
        (D(2026, 3, 7), 1, "", D(2026, 3, 9)),
        # 0 business days is the date itself, even on a Saturday.
        (D(2026, 3, 7), 0, "FR", D(2026, 3, 7)),
        (D(2026, 3, 2), 5, "", D(2026, 3, 9)),
        # 2026-05-01 (Friday) is Labour Day in France, not with weekends only.
        (D(2026, 4, 30), 1, "", D(2026, 5, 1)),
        (D(2026, 4, 30), 1, "FR", D(2026, 5, 4)),
        # 2026-05-08 (Friday, Victory Day) and 2026-05-14 (Thursday, Ascension).
        (D(2026, 5, 7), 1, "FR", D(2026, 5, 11)),
        (D(2026, 5, 13), 1, "FR", D(2026, 5, 15)),
        (D(2026, 5, 13), 1, "", D(2026, 5, 14)),
        # 2026-07-14 (Tuesday, National Day).
        (D(2026, 7, 13), 1, "FR", D(2026, 7, 15)),
        # Through all of May 2026 in France: May 1, 8, 14 and 25 (Whit Monday) are off.
        (D(2026, 4, 30), 15, "FR", D(2026, 5, 27)),
        (D(2026, 4, 30), 15, "", D(2026, 5, 21)),
        # Across New Year: Dec 31 2026 is a Thursday, Jan 1 2027 a holiday in France.
        (D(2026, 12, 31), 1, "FR", D(2027, 1, 4)),
        (D(2026, 12, 31), 1, "", D(2027, 1, 1)),
        # A large delay spans several years.
        (D(2026, 1, 1), 600, "", D(2028, 4, 20)),
    ],
)
def test_business_days(start, delay, holidays, expected):
    """Business days are the Nth working day after the date, skipping weekends and holidays."""
    calendar = business_calendar(holidays, None)
    assert add_delay(start, delay, "business_days", calendar) == expected


@pytest.mark.parametrize("subdiv", ["57", "Moselle", "moselle", "Alsace", "6AE", "Alsace-Moselle"])
def test_alsace_moselle_adds_good_friday_and_st_stephen(subdiv):
    """Alsace-Moselle (57/6AE, aliases, old name) also rests on Good Friday and 26 December."""
    calendar = business_calendar("FR", subdiv)
    # 2026-04-02 is a Thursday; Good Friday 04-03, Easter Monday 04-06.
    assert add_delay(D(2026, 4, 2), 1, "business_days", calendar) == D(2026, 4, 7)
    assert add_delay(D(2026, 4, 2), 1, "business_days", business_calendar("FR")) == D(2026, 4, 3)
    # 2025-12-24 is a Wednesday; 25 and 26 December are off in Alsace-Moselle.
    assert add_delay(D(2025, 12, 24), 1, "business_days", calendar) == D(2025, 12, 29)
    assert add_delay(D(2025, 12, 24), 1, "business_days", business_calendar("FR")) == D(
        2025, 12, 26
    )


def test_business_calendar_is_shared_and_case_blind():
    """One Calendar is kept per country and subdivision, whatever their spelling."""
    assert business_calendar("fr", None) is business_calendar(" FR ", "")
    assert business_calendar("FR", "Moselle") is business_calendar("FR", "57")
    assert business_calendar("", None) is WEEKENDS_ONLY
    assert business_calendar("FR", "57") == Calendar("FR", "57")


@pytest.mark.parametrize(
    ("country", "subdiv", "words"),
    [
        ("XX", None, '"XX" is not a country code'),
        ("FR", "Atlantis", '"Atlantis" is not a subdivision of FR'),
        ("", "57", "needs a country"),
    ],
)
def test_business_calendar_rejects_unknown_places(country, subdiv, words):
    """An unknown country or subdivision is a ValueError with a sentence naming it."""
    with pytest.raises(ValueError, match=words):
        business_calendar(country, subdiv)


def test_calendar_works_for_any_year():
    """Holidays are built for whatever year is asked, far past or future."""
    fr = business_calendar("FR", None)
    assert D(2099, 7, 14) in fr.holidays_in(2099)
    assert not fr.is_working_day(D(1999, 12, 25))
    assert fr.is_working_day(D(2099, 7, 15))
    assert WEEKENDS_ONLY.holidays_in(2026) == frozenset()


@pytest.mark.parametrize(
    ("delay", "unit", "words"),
    [
        (1.5, "days", "whole number"),
        (2.5, "business_days", "whole number"),
        (-1, "days", "≥ 0"),
        (-0.5, "weeks", "≥ 0"),
        (float("nan"), "weeks", "number"),
        ("abc", "weeks", "not a number"),
        (True, "days", "not a delay"),
        (1, "fortnights", "not a unit"),
    ],
)
def test_bad_delays_raise(delay, unit, words):
    """Fractions of (business) days, negatives, non-numbers and unknown units are ValueErrors."""
    with pytest.raises(ValueError, match=words):
        add_delay(D(2026, 3, 2), delay, unit, None)  # type: ignore[arg-type]


def test_whole_days_tolerate_float_noise():
    """A day count that is whole up to float noise (0.1 * 30) is accepted as whole."""
    assert add_delay(D(2026, 3, 2), 0.1 * 30, "days", None) == D(2026, 3, 5)


def _step(delay: float, unit: str, from_column: str = "start_date") -> Step:
    return Step(plan="P", number=1, delay=delay, unit=unit,  # type: ignore[arg-type]
                subject="s", body="b", from_column=from_column)


def test_due_date_counts_from_the_step_column():
    """due_date counts from the step's `from` column, and is None while that date is empty."""
    order = Order("O1", "C1", "p", dates={"start_date": D(2026, 3, 2), "delivery_date": None})
    assert due_date(_step(5, "days"), order, None) == D(2026, 3, 7)
    assert due_date(_step(5, "days", "delivery_date"), order, None) is None
    assert due_date(_step(5, "days", "other_date"), order, None) is None
    order2 = Order("O2", "C1", "p", dates={"start_date": D(2026, 3, 2),
                                           "delivery_date": D(2026, 4, 30)})
    fr = business_calendar("FR", None)
    assert due_date(_step(1, "business_days", "delivery_date"), order2, fr) == D(2026, 5, 4)


_dates = st.dates(min_value=D(2000, 1, 1), max_value=D(2090, 12, 31))


@settings(max_examples=150, deadline=None)
@given(start=_dates, count=st.integers(min_value=0, max_value=400))
def test_business_days_match_a_day_by_day_walk(start, count):
    """Bisecting the working days gives the same day as walking one day at a time."""
    fr = business_calendar("FR", None)
    day, left = start, count
    while left > 0:
        day += dt.timedelta(days=1)
        if fr.is_working_day(day):
            left -= 1
    assert add_business_days(start, count, fr) == day


@settings(max_examples=150, deadline=None)
@given(
    start=_dates,
    later=st.integers(min_value=0, max_value=40),
    delay=st.integers(min_value=0, max_value=40).map(lambda n: n / 4),
    unit=st.sampled_from(["weeks", "months"]),
)
def test_due_dates_never_go_backwards(start, later, delay, unit):
    """A later start never gives an earlier due date, and a delay never moves before the start."""
    first = add_delay(start, delay, unit, None)
    second = add_delay(start + dt.timedelta(days=later), delay, unit, None)
    assert start <= first <= second
