"""Settings send_days: with `business`, a message due on a day off goes on the next
business day; its due date (and catch-up) stay the planned ones."""

from __future__ import annotations

import datetime as dt

import pytest

from commplan_xl.cli import main
from commplan_xl.settings import parse_settings
from tests.builders import DEFAULT_ORDERS, DEFAULT_SETTINGS, make_workbook


def workbook(tmp_path, start: dt.date, send_days: str = "business") -> None:
    settings = [*(dict(r) for r in DEFAULT_SETTINGS), {"key": "send_days", "value": send_days}]
    orders = [{**DEFAULT_ORDERS[0], "start_date": start}]
    make_workbook(tmp_path, settings=settings, orders=orders)


def due_lines(tmp_path, day: str, capsys) -> list[str]:
    assert main(["due", "--home", str(tmp_path), "--today", day, "--csv"]) == 0
    return capsys.readouterr().out.splitlines()[1:]


@pytest.mark.parametrize(
    ("start", "due_on", "day_off", "goes_on"),
    [
        # +5 days from Monday 2 March 2026 is Saturday 7 March: it goes on Monday 9 March.
        (dt.date(2026, 3, 2), "2026-03-07", "2026-03-08", "2026-03-09"),
        # +5 days from 20 December 2026 is Friday 25 December (holidays FR), then a weekend.
        (dt.date(2026, 12, 20), "2026-12-25", "2026-12-27", "2026-12-28"),
    ],
)
def test_business_send_days_move_a_day_off_to_the_next_business_day(
        tmp_path, capsys, start, due_on, day_off, goes_on) -> None:
    """With send_days business, nothing goes on a weekend or a public holiday; the message
    goes on the next business day and keeps its planned due date."""
    workbook(tmp_path, start)
    assert due_lines(tmp_path, due_on, capsys) == []
    assert due_lines(tmp_path, day_off, capsys) == []
    assert due_lines(tmp_path, goes_on, capsys) == [
        f"O1001,C001,Baie vitrée,1,{due_on},send,due"]


def test_all_send_days_send_on_the_due_day(tmp_path, capsys) -> None:
    """send_days all (the default) sends on the due date, even a Saturday."""
    workbook(tmp_path, dt.date(2026, 3, 2), send_days="all")
    assert due_lines(tmp_path, "2026-03-07", capsys) == [
        "O1001,C001,Baie vitrée,1,2026-03-07,send,due"]


def test_catch_up_counts_from_the_planned_due_date(tmp_path, capsys) -> None:
    """A message moved past a day off is still missed catch_up_days after its due date."""
    workbook(tmp_path, dt.date(2026, 3, 2))
    assert due_lines(tmp_path, "2026-03-14", capsys) == [
        "O1001,C001,Baie vitrée,1,2026-03-07,send,due"]
    assert due_lines(tmp_path, "2026-03-16", capsys) == [
        "O1001,C001,Baie vitrée,1,2026-03-07,skip,missed"]


def test_send_days_takes_all_or_business(tmp_path) -> None:
    """Any other send_days is a Settings problem naming the two choices."""
    settings, problems = parse_settings({"send_days": ("Business", 9)}, home=tmp_path)
    assert settings.send_days == "business" and problems == []
    settings, problems = parse_settings({"send_days": ("weekdays", 9)}, home=tmp_path)
    assert settings.send_days == "all"
    assert [str(p) for p in problems] == [
        'Settings row 9 (value): send_days: "weekdays" is not one of all, business']


def test_plan_shows_the_day_a_message_goes(tmp_path, capsys) -> None:
    """`commplan plan` shows the next business day beside a due date on a day off."""
    workbook(tmp_path, dt.date(2026, 3, 2))
    assert main(["plan", "Baie vitrée", "--from", "2026-03-02", "--home", str(tmp_path)]) == 0
    assert "étape  1 : sam. 07/03/2026  (+5 jours, part le lun. 09/03/2026)" in \
        capsys.readouterr().out
