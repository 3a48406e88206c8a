"""`commplan log`: any period of outcomes from the ledger, as a listing, CSV or .xlsx."""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
import subprocess
from pathlib import Path

import openpyxl
import pytest

from commplan_xl.cli import main
from commplan_xl.model import MessageRef
from commplan_xl.store.ledger import Ledger
from tests.builders import make_workbook

D = dt.date
NOON = dt.datetime(2026, 12, 1, 12, 15, 30)  # the clock; the run days differ


def _msg(order: str, customer: str, step: int) -> MessageRef:
    return MessageRef(order_id=order, customer_id=customer, plan="Baie vitrée",
                      plan_key="baie vitrée", step=step, due_date=D(2026, 3, 1),
                      emails=f"{customer.lower()}@shop.test")


@pytest.fixture(autouse=True)
def english(monkeypatch) -> None:
    """The command line speaks English here (before a workbook is read it speaks the
    user's language)."""
    monkeypatch.setenv("COMMPLAN_LANG", "en")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home whose ledger holds outcomes of three run days."""
    make_workbook(tmp_path)
    with Ledger(tmp_path / "commplan-ledger.sqlite3") as ledger:
        for day, order, customer, step in ((D(2026, 3, 1), "O1", "C1", 1),
                                           (D(2026, 3, 5), "O2", "C2", 1),
                                           (D(2026, 3, 9), "O1", "C1", 2)):
            token = ledger.begin(_msg(order, customer, step), subject=f"{order} {step}",
                                 now=NOON, day=day)
            ledger.finish(token, status="sent", now=NOON, day=day)
    return tmp_path


def log(home: Path, *args: str) -> int:
    return main(["log", "--home", str(home), *args])


def test_listing_of_a_period_dated_by_run_day(home: Path, capsys) -> None:
    """The listing shows the outcomes of the run days asked, dated on their run day at the
    clock's time; dates are accepted as YYYY-MM-DD or DD/MM/YYYY."""
    assert log(home, "--from", "02/03/2026", "--to", "2026-03-09") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("05/03/2026 12:15  sent       O2  C2  Baie vitrée step 1")
    assert lines[1].startswith("09/03/2026 12:15  sent       O1  C1  Baie vitrée step 2")
    assert lines[2] == "2 outcomes from 02/03/2026 to 09/03/2026."


def test_csv_of_one_order_compared_ignoring_case(home: Path, capsys) -> None:
    """--csv prints the SentLog's header and one row per outcome of the order asked."""
    assert log(home, "--order", " o1 ", "--csv") == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0][:3] == ["date", "order_id", "customer_id"]
    assert [(r[0], r[1], r[5]) for r in rows[1:]] == [
        ("2026-03-01 12:15:30", "O1", "1"), ("2026-03-09 12:15:30", "O1", "2")]


@pytest.mark.parametrize(("option", "value", "word"),
                         [("--order", "O404", "order"), ("--customer", "C9", "customer")])
def test_unknown_order_or_customer_says_so(home: Path, capsys, option, value, word) -> None:
    """An order or customer the ledger never saw is named in a sentence, exit 1."""
    assert log(home, option, value) == 1
    assert f'no outcome for {word} "{value}"' in capsys.readouterr().err


def test_xlsx_is_a_styled_sheet_of_real_dates(home: Path, tmp_path: Path, capsys) -> None:
    """--xlsx writes a new workbook: bold frozen header, a filter, real dates."""
    target = tmp_path / "export" / "journal.xlsx"
    assert log(home, "--customer", "C1", "--xlsx", str(target)) == 0
    # Once it read the workbook (for its language) the tool speaks the workbook's French.
    assert "2 envois du premier passage au dernier passage écrits" in capsys.readouterr().out
    ws = openpyxl.load_workbook(target).active
    assert ws.title == "Journal" and ws["B1"].value == "commande"  # the workbook's language
    assert ws["A1"].value == "date" and ws["A1"].font.b and ws.freeze_panes == "A2"
    assert ws.auto_filter.ref == "A1:K3"
    assert ws["A2"].value == dt.datetime(2026, 3, 1, 12, 15, 30)
    assert ws["A2"].number_format == "dd/mm/yyyy hh:mm"
    assert ws["G2"].value == dt.datetime(2026, 3, 1) and ws["G2"].number_format == "dd/mm/yyyy"


def test_xlsx_open_in_excel_is_not_written(home: Path, tmp_path: Path, capsys) -> None:
    """--xlsx to a file Excel has open says so and leaves the file as it was."""
    target = tmp_path / "journal.xlsx"
    target.write_bytes(b"the staff's file")
    (tmp_path / "~$journal.xlsx").write_bytes(b"lock")
    assert log(home, "--xlsx", str(target)) == 1
    assert "est ouvert dans Excel ou LibreOffice" in capsys.readouterr().err
    assert target.read_bytes() == b"the staff's file"


def test_xlsx_opens_in_libreoffice(home: Path, tmp_path: Path) -> None:
    """LibreOffice reads the --xlsx export and prints it: the header, then its dates shown
    DD/MM/YYYY (when installed)."""
    soffice = shutil.which("soffice")
    if not soffice:
        pytest.skip("LibreOffice is not installed (.ci/run installs it)")
    target = tmp_path / "journal.xlsx"
    assert log(home, "--xlsx", str(target)) == 0
    out = tmp_path / "lo"
    subprocess.run([soffice, "--headless", f"-env:UserInstallation=file://{out}/profile",
                    "--convert-to", "pdf", "--outdir", str(out), str(target)],
                   check=True, capture_output=True, timeout=120)
    text = subprocess.run(["pdftotext", "-layout", str(out / "journal.pdf"), "-"],
                          check=True, capture_output=True, text=True).stdout
    lines = [line.split() for line in text.splitlines() if line.strip()]
    assert lines[0][:3] == ["date", "commande", "client"]  # the workbook's language
    assert lines[1][:4] == ["01/03/2026", "12:15", "O1", "C1"]
    assert "01/03/2026" in lines[3] and lines[4] == ["Journal", "1/1"]  # one page


def test_sentlog_shows_its_window_and_log_every_outcome(tmp_path: Path, capsys) -> None:
    """The SentLog shows the last `sentlog_days` run days; `commplan log` still has every
    outcome, the older ones included."""
    from commplan_xl.run.batch import RunReport, load_site, write_sentlog
    from tests.builders import DEFAULT_SETTINGS

    make_workbook(tmp_path, settings=[*DEFAULT_SETTINGS, {"key": "sentlog_days", "value": 5}])
    with Ledger(tmp_path / "commplan-ledger.sqlite3") as ledger:
        for day, order, step in ((D(2026, 3, 1), "O1", 1), (D(2026, 3, 5), "O2", 1),
                                 (D(2026, 3, 9), "O1", 2)):
            ledger.record_skip(_msg(order, "C1", step), reason="missed", now=NOON, day=day)
        site = load_site(tmp_path)
        assert site.settings.sentlog_days == 5
        assert write_sentlog(site, ledger, RunReport(today=D(2026, 3, 9)))
    journal = openpyxl.load_workbook(site.workbook)["Journal"]
    assert [(r[0].date(), r[1]) for r in journal.iter_rows(min_row=2, values_only=True)] == [
        (D(2026, 3, 5), "O2"), (D(2026, 3, 9), "O1")]
    assert log(tmp_path, "--csv") == 0
    assert capsys.readouterr().out.count("\n") == 1 + 3


def test_from_after_to_is_a_bad_command_line(home: Path, capsys) -> None:
    """--from after --to says so and exits 2."""
    assert log(home, "--from", "2026-03-09", "--to", "2026-03-01") == 2
    assert "is after --to" in capsys.readouterr().err
