"""The units table: each unit once, its spellings, and everything that reads it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import openpyxl
import pytest

from commplan_xl.core.offsets import add_delay
from commplan_xl.core.units import UNIT_TABLE, Unit, parse_unit, spelling_key
from commplan_xl.excel.read import read_tables
from commplan_xl.excel.starter import create_workbook
from commplan_xl.excel.validate import validate
from tests.builders import DEFAULT_PLANS, make_workbook


def test_each_unit_has_one_row() -> None:
    """Every Unit member has exactly one row of the table, in the members' order."""
    assert [row.unit for row in UNIT_TABLE] == list(Unit)


def test_no_spelling_names_two_units() -> None:
    """No accepted spelling, once folded, belongs to two units."""
    seen: dict[str, Unit] = {}
    for row in UNIT_TABLE:
        for word in (row.unit.value, row.english, row.french, *row.spellings):
            assert seen.setdefault(spelling_key(word), row.unit) == row.unit, word


@pytest.mark.parametrize(
    ("text", "unit"),
    [("day", "days"), ("DAYS", "days"), ("jour", "days"), ("Jours", "days"),
     ("jour(s)", "days"), ("business day", "business_days"),
     ("business_days", "business_days"), ("Business-Days", "business_days"),
     (" business  days ", "business_days"), ("jour ouvré", "business_days"),
     ("Jours ouvrés", "business_days"), ("jours-ouvres", "business_days"),
     ("jour(s) ouvré(s)", "business_days"), ("week", "weeks"), ("semaines", "weeks"),
     ("semaine(s)", "weeks"), ("Month", "months"), ("MOIS", "months")],
)
def test_spellings(text: str, unit: str) -> None:
    """English singular and plural, the French names, any case and `_`/`-`/space alike."""
    assert parse_unit(text) == unit


@pytest.mark.parametrize("text", ["", "fortnight", "années", "business", "days days"])
def test_not_a_unit(text: str) -> None:
    """A word that is no unit's spelling is no unit."""
    assert parse_unit(text) is None


def test_units_are_the_strings_they_were() -> None:
    """A Unit compares, hashes and prints as its plain name (output stays byte-identical)."""
    assert Unit.BUSINESS_DAYS == "business_days" and f"{Unit.WEEKS}" == "weeks"
    assert {"months": 1}[Unit.MONTHS] == 1
    start = dt.date(2026, 3, 6)
    assert add_delay(start, 1, Unit.BUSINESS_DAYS) == add_delay(start, 1, "business_days")


def test_plans_accept_any_spelling_of_the_table(tmp_path: Path) -> None:
    """A Plans unit written with dashes or underscores is read as its unit by `check`."""
    plans = [dict(row) for row in DEFAULT_PLANS]
    plans[0]["unit"], plans[1]["unit"] = "Business-Days", "jours_ouvrés"
    tables = read_tables(make_workbook(tmp_path, plans=plans))
    model, _settings, problems = validate(tables, home=tmp_path, environ={})
    assert problems == []
    units = [step.unit for step in model.plans["baie vitrée"].steps]
    assert units[:2] == [Unit.BUSINESS_DAYS, Unit.BUSINESS_DAYS]


def test_unknown_unit_message_names_the_table(tmp_path: Path) -> None:
    """An unknown unit is reported with the English and French names of every unit."""
    plans = [dict(row) for row in DEFAULT_PLANS]
    plans[0]["unit"] = "siècles"
    tables = read_tables(make_workbook(tmp_path, plans=plans))
    _model, _settings, problems = validate(tables, home=tmp_path, environ={})
    assert [p.message for p in problems] == [
        '"siècles" is not a unit; write days, business days, weeks or months (or jours, '
        "jours ouvrés, semaines, mois)."]


def test_starter_drop_down_and_help_come_from_the_table(tmp_path: Path) -> None:
    """The starter's unit drop-down offers every unit's English and French name, and the
    unit column's help names them too; each name reads back as its unit."""
    create_workbook(tmp_path / "w.xlsx", today=dt.date(2026, 11, 27), lang="en")
    ws = openpyxl.load_workbook(tmp_path / "w.xlsx")["Plans"]
    column = [c.value for c in ws[1]].index("unit") + 1
    letter = openpyxl.utils.get_column_letter(column)
    (dv,) = [dv for dv in ws.data_validations.dataValidation if letter in str(dv.sqref)]
    offered = dv.formula1.strip('"').split(",")
    assert offered == [r.english for r in UNIT_TABLE] + [r.french for r in UNIT_TABLE]
    assert [parse_unit(word) for word in offered] == list(Unit) * 2
    help_text = ws.cell(row=1, column=column).comment.text
    assert all(r.english in help_text and r.french in help_text for r in UNIT_TABLE)
