"""The tool writes only the sheets it made: a mark that survives Excel, LibreOffice and
openpyxl saves tells them apart from staff sheets, whatever their names."""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import openpyxl
import pytest

from commplan_xl.cli import main
from commplan_xl.store.sentlog import SENTLOG_HEADER
from tests.builders import make_workbook
from tests.test_run import settings_for

DAY1 = "2026-03-07"


@pytest.fixture
def home(tmp_path, smtp_server, clean_env):
    make_workbook(tmp_path, settings=settings_for(smtp_server, locale="en_GB"))
    return tmp_path


def workbook(home: Path) -> Path:
    return home / "workbooks" / "commplan.xlsx"


def sheet_names(home: Path) -> list[str]:
    return openpyxl.load_workbook(workbook(home), read_only=True).sheetnames


def cli(home: Path, *args: str) -> int:
    return main([*args, "--home", str(home)])


def libreoffice_save(path: Path, tmp: Path) -> None:
    """Open and save the workbook in LibreOffice (headless), as staff would."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        pytest.skip("LibreOffice is not installed")
    out = tmp / "lo-out"
    out.mkdir(exist_ok=True)
    profile = (tmp / "lo-profile").as_uri()
    subprocess.run([soffice, f"-env:UserInstallation={profile}", "--headless",
                    "--convert-to", "xlsx", "--outdir", str(out), str(path)],
                   check=True, capture_output=True, timeout=120)
    shutil.move(out / path.name, path)


def openpyxl_save(path: Path, tmp: Path) -> None:
    """Load and save with openpyxl, as a script feeding Orders from another system does."""
    wb = openpyxl.load_workbook(path)
    wb["Orders"]["Z1"] = "note"
    wb.save(path)


@pytest.mark.parametrize("save", [libreoffice_save, openpyxl_save],
                         ids=["libreoffice", "openpyxl"])
def test_the_mark_survives_a_save_and_a_rename(home, tmp_path, save):
    """After the workbook is saved by LibreOffice or openpyxl, and the tool's sheets are
    renamed by staff, the next run writes into the same sheets: no second copy."""
    assert cli(home, "run", "--today", DAY1) == 0
    names = sheet_names(home)
    assert {"SentLog", "Dashboard", "Forecast"} <= set(names)
    save(workbook(home), tmp_path)
    wb = openpyxl.load_workbook(workbook(home))
    wb["SentLog"].title = "Journal des envois"
    wb.save(workbook(home))
    assert cli(home, "run", "--today", "2026-03-08") == 0
    after = sheet_names(home)
    assert len(after) == len(names)
    assert "Journal des envois" in after and "SentLog" not in after
    rows = list(openpyxl.load_workbook(workbook(home))["Journal des envois"]
                .iter_rows(values_only=True))
    assert rows[0] == SENTLOG_HEADER and len(rows) == 2


@pytest.mark.parametrize("save", [libreoffice_save, openpyxl_save],
                         ids=["libreoffice", "openpyxl"])
def test_the_mark_survives_a_save_as_is(home, tmp_path, save):
    """A plain save by LibreOffice or openpyxl keeps the tool's sheets known as its own."""
    assert cli(home, "run", "--today", DAY1) == 0
    names = sheet_names(home)
    save(workbook(home), tmp_path)
    assert cli(home, "run", "--today", "2026-03-08") == 0
    assert sheet_names(home) == names


@pytest.mark.parametrize(("locale", "staff_name", "tool_name"), [
    ("en_GB", "Dashboard", "Dashboard"), ("en_GB", "forecast", "Forecast"),
    ("en_GB", "SENTLOG", "SentLog"), ("fr_FR", "tableau de bord", "Tableau de bord"),
    ("fr_FR", "Prévisions", "Prévisions"), ("fr_FR", "JOURNAL", "Journal"),
])
def test_a_staff_sheet_with_a_tool_name_is_never_overwritten(tmp_path, smtp_server,
                                                             monkeypatch, capsys, locale,
                                                             staff_name, tool_name):
    """Staff's own sheet named like a tool sheet (any case, either language) keeps its
    content; the tool writes its sheet under another name, and `check` says so."""
    monkeypatch.delenv("COMMPLAN_HOME", raising=False)
    mine = [["Objectifs", "Chiffre"], ["mars", 1200], ["avril", 1500]]
    make_workbook(tmp_path, settings=settings_for(smtp_server, locale=locale),
                  sheets={staff_name: mine})
    capsys.readouterr()
    assert main(["check", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    yours = (f'the sheet "{staff_name}" is yours' if locale.startswith("en")
             else f"la feuille « {staff_name} » est à vous")
    assert yours in out and "(commplan)" in out
    for day in (DAY1, "2026-03-08"):
        assert main(["run", "--home", str(tmp_path), "--today", day]) == 0
    wb = openpyxl.load_workbook(workbook(tmp_path))
    assert [list(r) for r in wb[staff_name].iter_rows(values_only=True)] == mine
    assert f"{tool_name} (commplan)" in wb.sheetnames
    with zipfile.ZipFile(workbook(tmp_path)) as z:  # the chart reads the tool's sheet
        charts = [z.read(n).decode() for n in z.namelist() if n.startswith("xl/charts/")]
    assert charts and all(f"'{staff_name}'!" not in c for c in charts)
    assert len(wb.sheetnames) == 5 + 1 + 3 + 1  # staff, theirs, the tool's three, its PlanList


def test_a_sheet_an_older_version_wrote_is_still_the_tools(tmp_path, smtp_server, monkeypatch):
    """A SentLog written before the mark existed (its header row as the tool writes it) is
    taken over and marked, not doubled."""
    monkeypatch.delenv("COMMPLAN_HOME", raising=False)
    old = [list(SENTLOG_HEADER), ["2026-03-01 07:00:00", "O1", "C1", "a@x.fr", "P", 1, "",
                                  "sent", "s", "", ""]]
    make_workbook(tmp_path, settings=settings_for(smtp_server, locale="en_GB"),
                  sheets={"SentLog": old})
    assert main(["run", "--home", str(tmp_path), "--today", DAY1, "--new-ledger"]) == 0
    names = openpyxl.load_workbook(workbook(tmp_path), read_only=True).sheetnames
    assert "SentLog" in names and not any("(commplan)" in n for n in names)


def test_the_mark_follows_a_sheet_moved_first(home):
    """Staff drag the SentLog tab to the front (its scope moves with it): the next run
    writes there, with no second SentLog."""
    assert cli(home, "run", "--today", DAY1) == 0
    names = sheet_names(home)
    wb = openpyxl.load_workbook(workbook(home))
    wb.move_sheet("SentLog", offset=-wb.sheetnames.index("SentLog"))
    wb.save(workbook(home))
    assert cli(home, "run", "--today", "2026-03-08") == 0
    after = sheet_names(home)
    assert after[0] == "SentLog" and sorted(after) == sorted(names)


def test_the_mark_as_excel_writes_it(home, tmp_path):
    """Excel rewrites defined names in its own form (attributes reordered, no quotes, its
    own names beside ours, sorted): the tool still knows its sheets."""
    assert cli(home, "run", "--today", DAY1) == 0
    names = sheet_names(home)
    path = workbook(home)
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i.filename) for i in z.infolist()}
    book = members["xl/workbook.xml"].decode("utf-8")
    marks = re.findall(r'<definedName name="(commplan_tool_\w+)" localSheetId="(\d+)" '
                       r'hidden="1">[^<]*</definedName>', book)
    assert len(marks) == 4  # with the hidden PlanList
    excel = "".join(
        f'<definedName hidden="1" localSheetId="{sheet}" name="{name}">'
        f"{names[int(sheet)]}!$A$1</definedName>" for name, sheet in sorted(marks))
    book = re.sub(r"<definedNames>.*</definedNames>", "<definedNames><definedName "
                  'name="_xlnm._FilterDatabase" localSheetId="3" hidden="1">Orders!$A$1:$F$3'
                  f"</definedName>{excel}</definedNames>", book)
    members["xl/workbook.xml"] = book.encode("utf-8")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    assert cli(home, "run", "--today", "2026-03-08") == 0
    assert sheet_names(home) == names


def test_a_locale_change_renames_the_marked_sheets_not_a_renamed_one(home):
    """After the locale changes to French, the tool's marked sheets take their French
    names, except one staff renamed on purpose, which keeps its name; none is doubled."""
    assert cli(home, "run", "--today", DAY1) == 0
    wb = openpyxl.load_workbook(workbook(home))
    wb["Forecast"].title = "À venir"
    settings = wb["Settings"]
    for row in settings.iter_rows(min_row=2):
        if row[0].value == "locale":
            row[1].value = "fr_FR"
    wb.save(workbook(home))
    assert cli(home, "run", "--today", "2026-03-08") == 0
    names = sheet_names(home)
    assert {"Journal", "Tableau de bord", "À venir"} <= set(names)
    assert not {"SentLog", "Dashboard", "Forecast", "Prévisions"} & set(names)
