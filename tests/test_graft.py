"""excel.graft: the tool's sheets are grafted into the staff's .xlsx, nothing else changes."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from openpyxl.chart import BarChart, Reference
from openpyxl.comments import Comment
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.datavalidation import DataValidation

from commplan_xl.excel.graft import (
    Chart,
    ToolSheet,
    backups,
    column_letter,
    lock_file,
    write_tool_sheets,
)
from commplan_xl.problems import CommplanError, WorkbookLocked

SENTLOG_HEADER = ("date", "order_id", "customer_id", "email", "plan", "step", "due_date",
                  "status", "subject", "detail", "archive_file")
CHANGED_FOR_A_NEW_SHEET = {"xl/workbook.xml", "xl/_rels/workbook.xml.rels", "xl/styles.xml",
                           "[Content_Types].xml"}


def _members(path: Path) -> dict[str, bytes]:
    """Every member's uncompressed bytes, in zip order."""
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        return {name: z.read(name) for name in z.namelist()}


def _rewrite_member(path: Path, name: str, edit) -> None:
    """Test set-up only: change one member as Excel would have written it."""
    members = _members(path)
    members[name] = edit(members[name])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for member, data in members.items():
            z.writestr(member, data)


@pytest.fixture
def staff_book(tmp_path: Path) -> Path:
    """A workbook as staff keep it: formulas with cached results, a drop-down reading
    another sheet, a comment, frozen panes, a defined name, a chart, an extra part."""
    wb = openpyxl.Workbook()
    orders = wb.active
    orders.title = "Orders"
    orders.append(["order_id", "customer_id", "plan", "start_date", "amount", "total"])
    for i in range(1, 6):
        orders.append([f"O{i:03d}", f"C{i}", "Baie vitrée", dt.date(2026, 3, i), i * 10,
                       f"=E{i + 1}*2"])
    orders.freeze_panes = "A2"
    orders["A2"].comment = Comment("Ask the store first", "Marie")
    lists = wb.create_sheet("Lists")
    for plan in ("Baie vitrée", "Porte", "Volet"):
        lists.append([plan])
    dv = DataValidation(type="list", formula1="Lists!$A$1:$A$3", allow_blank=True)
    orders.add_data_validation(dv)
    dv.add("C2:C100")
    wb.defined_names["plans"] = DefinedName("plans", attr_text="Lists!$A$1:$A$3")
    chart = BarChart()
    chart.title = "Amounts"
    chart.add_data(Reference(orders, min_col=5, min_row=1, max_row=6), titles_from_data=True)
    orders.add_chart(chart, "H2")
    path = tmp_path / "commplan.xlsx"
    wb.save(path)
    # openpyxl writes no cached formula results; Excel does: put one back by hand.
    _rewrite_member(path, "xl/worksheets/sheet1.xml",
                    lambda x: x.replace(b"<f>E2*2</f><v></v>", b"<f>E2*2</f><v>20</v>"))
    _rewrite_member(path, "[Content_Types].xml", lambda x: x)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("customXml/item1.xml", "<staff>made by another tool</staff>")
    return path


def _sentlog(n: int = 3) -> ToolSheet:
    rows = [
        [dt.datetime(2026, 11, 27, 6, 30), f"O{i:03d}", f"C{i}", f"c{i}@example.test",
         "Baie vitrée", i, dt.date(2026, 11, 27), "sent", f"Commande {i}", "", f"C{i}/m.eml"]
        for i in range(1, n + 1)
    ]
    return ToolSheet("SentLog", SENTLOG_HEADER, rows)


def _calamine(path: Path, sheet: str) -> list[list[object]]:
    frame = pd.read_excel(path, sheet_name=sheet, engine="calamine", header=None, dtype=object)
    return [[None if pd.isna(v) else v for v in row] for row in frame.itertuples(index=False)]


def test_first_write_leaves_every_staff_member_identical(staff_book: Path) -> None:
    """Adding a sheet changes only its part, workbook.xml, its rels and the content types."""
    before = _members(staff_book)
    assert b"<v>20</v>" in before["xl/worksheets/sheet1.xml"]
    write_tool_sheets(staff_book, [_sentlog()])
    after = _members(staff_book)
    added = [name for name in after if name not in before]
    assert added == ["xl/worksheets/sheet3.xml"]
    assert list(after)[: len(before)] == list(before)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == CHANGED_FOR_A_NEW_SHEET


def test_second_write_changes_only_the_tool_sheet(staff_book: Path) -> None:
    """When the sheet exists, only its own worksheet member differs afterwards."""
    write_tool_sheets(staff_book, [_sentlog(2)])
    before = _members(staff_book)
    write_tool_sheets(staff_book, [_sentlog(5)])
    after = _members(staff_book)
    assert list(after) == list(before)
    assert {n for n in before if before[n] != after[n]} == {"xl/worksheets/sheet3.xml",
                                                          "xl/workbook.xml"}
    assert _staff_names(after["xl/workbook.xml"]) == _staff_names(before["xl/workbook.xml"])


def _staff_names(book_xml: bytes) -> bytes:
    """workbook.xml without the filter range and print titles the tool keeps for its sheets."""
    return re.sub(rb'<definedName name="_xlnm\.(_FilterDatabase|Print_Titles)"[^>]*>[^<]*'
                  rb"</definedName>", b"", book_xml)


def test_staff_content_still_reads_the_same(staff_book: Path) -> None:
    """The staff's cached formula result, comment, drop-down, name and chart survive."""
    write_tool_sheets(staff_book, [_sentlog()])
    wb = openpyxl.load_workbook(staff_book)
    orders = wb["Orders"]
    assert wb.sheetnames == ["Orders", "Lists", "SentLog"]
    assert orders["A2"].comment.text == "Ask the store first"
    assert orders.freeze_panes == "A2"
    assert orders.data_validations.dataValidation[0].formula1 == "Lists!$A$1:$A$3"
    assert "plans" in wb.defined_names
    assert len(orders._charts) == 1
    cached = pd.read_excel(staff_book, sheet_name="Orders", engine="calamine")
    assert cached["total"].iloc[0] == 20


def test_values_read_back_exactly(staff_book: Path) -> None:
    """openpyxl and calamine read the tool sheet's values: text, numbers, dates, blanks."""
    sheet = ToolSheet("SentLog", ("a", "b", "c", "d", "e", "f"), [
        ["00123", 42, 2.5, dt.date(2026, 11, 27), dt.datetime(2026, 11, 27, 6, 30), None],
        ["Ünïcode ✓ <&>", -7, 1e-05, True, "  spaced  ", "multi\nline"],
    ])
    write_tool_sheets(staff_book, [sheet])
    ws = openpyxl.load_workbook(staff_book)["SentLog"]
    assert [[c.value for c in row] for row in ws.iter_rows()] == [
        ["a", "b", "c", "d", "e", "f"],
        ["00123", 42, 2.5, dt.datetime(2026, 11, 27), dt.datetime(2026, 11, 27, 6, 30), None],
        ["Ünïcode ✓ <&>", -7, 1e-05, True, "  spaced  ", "multi\nline"],
    ]
    assert ws.freeze_panes == "A2"
    assert (ws["D2"].number_format, ws["E2"].number_format) == ("dd/mm/yyyy",
                                                                "dd/mm/yyyy hh:mm")
    assert _calamine(staff_book, "SentLog")[1][:3] == ["00123", 42, 2.5]


def test_repeated_values_keep_their_own_type(staff_book: Path) -> None:
    """Values a log repeats are written once each, yet True, 1, 1.0 and "1" (equal in
    Python) stay a boolean, a number and text, in every row."""
    row = [True, 1, 1.0, "1", None, "=1", dt.date(2026, 1, 2)]
    sheet = ToolSheet("SentLog", ("a", "b", "c", "d", "e", "f", "g"), [row, list(row), row])
    write_tool_sheets(staff_book, [sheet])
    ws = openpyxl.load_workbook(staff_book)["SentLog"]
    got = [[(type(c.value), c.value) for c in r] for r in ws.iter_rows(min_row=2)]
    expected = [(bool, True), (int, 1), (float, 1.0), (str, "1"), (type(None), None),
                (str, "=1"), (dt.datetime, dt.datetime(2026, 1, 2))]
    assert got == [expected] * 3


@pytest.mark.parametrize("text", ["=1+1", "+33 6 12", "@x", "-1+2", "=HYPERLINK(\"x\")"])
def test_formula_like_text_stays_text(staff_book: Path, text: str) -> None:
    """A string that looks like a formula is written as text, never as a formula."""
    write_tool_sheets(staff_book, [ToolSheet("SentLog", ("v",), [[text]])])
    cell = openpyxl.load_workbook(staff_book)["SentLog"]["A2"]
    assert (cell.value, cell.data_type) == (text, "s")
    assert _calamine(staff_book, "SentLog")[1] == [text]


def test_control_characters_do_not_break_the_file(staff_book: Path) -> None:
    """Characters XML forbids are dropped; CR-LF becomes a line break; the file opens."""
    write_tool_sheets(staff_book, [ToolSheet("SentLog", ("v",), [["a\x00b\x0bc\x1f"],
                                                                  ["one\r\ntwo"]])])
    ws = openpyxl.load_workbook(staff_book)["SentLog"]
    assert [ws["A2"].value, ws["A3"].value] == ["abc", "one\ntwo"]
    assert _calamine(staff_book, "SentLog")[1:] == [["abc"], ["one\ntwo"]]


def test_excel_escape_sequences_stay_literal(staff_book: Path) -> None:
    """Text such as "_x0041_" is escaped so Excel (and calamine) show it as typed."""
    write_tool_sheets(staff_book, [ToolSheet("SentLog", ("v",), [["id_x0041_z"]])])
    assert _calamine(staff_book, "SentLog")[1] == ["id_x0041_z"]


@pytest.mark.parametrize("lock_name", ["~$commplan.xlsx", ".~lock.commplan.xlsx#"])
def test_open_workbook_is_not_written(staff_book: Path, lock_name: str) -> None:
    """With Excel's or LibreOffice's lock file beside it, the workbook is left untouched."""
    (staff_book.parent / lock_name).write_bytes(b"Marie")
    before = staff_book.read_bytes()
    assert lock_file(staff_book) == staff_book.parent / lock_name
    with pytest.raises(WorkbookLocked, match=r"commplan\.xlsx is open in .*SentLog sheet was not"):
        write_tool_sheets(staff_book, [_sentlog()], backup_dir=staff_book.parent / "bk")
    assert staff_book.read_bytes() == before
    assert sorted(p.name for p in staff_book.parent.iterdir()) == sorted(
        ["commplan.xlsx", lock_name])


def test_no_lock_file_means_none(staff_book: Path) -> None:
    """lock_file is None for a workbook nobody has open."""
    assert lock_file(staff_book) is None


def test_backups_are_kept_and_pruned(staff_book: Path) -> None:
    """Each write keeps the previous file as a dated backup; only the newest few remain."""
    folder = staff_book.parent / "backups"
    stamps = iter(dt.datetime(2026, 11, 27, 6, 30, s) for s in (1, 2, 2, 3))
    previous = []
    for n in range(4):
        previous.append(staff_book.read_bytes())
        write_tool_sheets(staff_book, [_sentlog(n + 1)], backup_dir=folder, keep_backups=2,
                          now=lambda: next(stamps))
    kept = backups(staff_book, folder)
    assert [p.name for p in kept] == ["commplan.2026-11-27-063002-2.xlsx",
                                      "commplan.2026-11-27-063003.xlsx"]
    assert [p.read_bytes() for p in kept] == previous[2:]
    assert sorted(p.name for p in staff_book.parent.iterdir()) == ["backups", "commplan.xlsx"]


@pytest.mark.parametrize("name", ["Journal d'envoi é", "Liste des variables", "Données 2026"])
def test_sheet_names_with_spaces_and_accents(staff_book: Path, name: str) -> None:
    """A tool sheet name with spaces, accents or an apostrophe is written and found again."""
    write_tool_sheets(staff_book, [ToolSheet(name, ("v",), [["x"]])])
    write_tool_sheets(staff_book, [ToolSheet(name, ("v",), [["y"]])])
    wb = openpyxl.load_workbook(staff_book)
    assert wb.sheetnames == ["Orders", "Lists", name]
    assert wb[name]["A2"].value == "y"
    assert _calamine(staff_book, name) == [["v"], ["y"]]


def test_existing_sheet_is_found_regardless_of_case(staff_book: Path) -> None:
    """Excel sheet names ignore case, so "sentlog" replaces "SentLog" instead of adding one."""
    write_tool_sheets(staff_book, [_sentlog(1)])
    write_tool_sheets(staff_book, [ToolSheet("sentlog", ("v",), [["new"]])])
    wb = openpyxl.load_workbook(staff_book)
    assert wb.sheetnames == ["Orders", "Lists", "SentLog"]
    assert wb["SentLog"]["A2"].value == "new"


def test_several_sheets_at_once(staff_book: Path) -> None:
    """Two tool sheets are written in one pass with distinct ids and parts."""
    write_tool_sheets(staff_book, [_sentlog(), ToolSheet("VariableList", ("name",), [["x"]])])
    wb = openpyxl.load_workbook(staff_book)
    assert wb.sheetnames == ["Orders", "Lists", "SentLog", "VariableList"]
    assert wb["VariableList"]["A2"].value == "x"


def test_file_changed_since_read_keeps_staff_changes(staff_book: Path) -> None:
    """A workbook saved by staff after it was read is grafted as it is now, not as it was."""
    stale = (staff_book.stat().st_size, staff_book.stat().st_mtime_ns)
    wb = openpyxl.load_workbook(staff_book)
    wb["Orders"]["A3"] = "EDITED"
    wb.save(staff_book)
    write_tool_sheets(staff_book, [_sentlog()], expected_stat=stale)
    wb = openpyxl.load_workbook(staff_book)
    assert wb["Orders"]["A3"].value == "EDITED"
    assert wb["SentLog"]["B2"].value == "O001"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_file_permissions_are_kept(staff_book: Path) -> None:
    """The new file keeps the workbook's permissions (not the temp file's private ones)."""
    staff_book.chmod(0o664)
    write_tool_sheets(staff_book, [_sentlog()])
    assert staff_book.stat().st_mode & 0o777 == 0o664


def test_widths_by_index_name_or_letter(staff_book: Path) -> None:
    """Widths may name a column by 0-based index, header name or letter; others fit content."""
    sheet = ToolSheet("SentLog", ("a", "b", "c", "d"), [["x" * 30, "y", "z", "w"]],
                      widths={0: 12, "b": 20, "C": 7.5})
    write_tool_sheets(staff_book, [sheet])
    dims = openpyxl.load_workbook(staff_book)["SentLog"].column_dimensions
    assert [dims[c].width for c in "ABCD"] == [12, 20, 7.5, 8]


def test_bad_sheet_name_is_refused(staff_book: Path) -> None:
    """A name Excel would reject is a programming error, raised before touching the file."""
    with pytest.raises(ValueError, match="31"):
        write_tool_sheets(staff_book, [ToolSheet("x" * 32, ("v",), [])])
    with pytest.raises(ValueError, match="may not contain"):
        write_tool_sheets(staff_book, [ToolSheet("Sent/Log", ("v",), [])])


def test_not_a_workbook_is_a_sentence(tmp_path: Path) -> None:
    """A file that is not a zip ends in a plain sentence naming it."""
    path = tmp_path / "commplan.xlsx"
    path.write_text("hello")
    with pytest.raises(CommplanError, match=r"commplan\.xlsx is not an Excel workbook"):
        write_tool_sheets(path, [_sentlog()])
    assert list(tmp_path.iterdir()) == [path]


def test_column_letters() -> None:
    """Column letters follow Excel: A..Z, AA, AZ, BA, ZZ, AAA."""
    assert [column_letter(i) for i in (0, 25, 26, 51, 52, 701, 702)] == [
        "A", "Z", "AA", "AZ", "BA", "ZZ", "AAA"]


# ---- a package written the way Excel writes it: prefixes, relative targets, declarations

EXCEL_PARTS = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
        'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
        'officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/'
        'sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.'
        'worksheet+xml"/></Types>'),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>'),
    "xl/workbook.xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
        '<x:workbook xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        'xmlns:rel="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        '<x:sheets><x:sheet name="Orders" sheetId="4" rel:id="rId7"/></x:sheets>'
        '<x:calcPr calcId="191029"/></x:workbook>'),
    "xl/_rels/workbook.xml.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId7" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'),
    "xl/worksheets/sheet1.xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        '<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>order_id</t></is></c>'
        '<c r="B1" t="inlineStr"><is><t>total</t></is></c></row>'
        '<row r="2"><c r="A2" t="inlineStr"><is><t>O1</t></is></c><c r="B2"><f>1+1</f>'
        '<v>2</v></c></row></sheetData></worksheet>'),
}


def test_excel_style_package_with_prefixes_and_relative_targets(tmp_path: Path) -> None:
    """Prefixed namespaces, relative targets and sparse ids as Excel writes them still work."""
    path = tmp_path / "commplan.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in EXCEL_PARTS.items():
            z.writestr(name, text)
    write_tool_sheets(path, [_sentlog()])
    write_tool_sheets(path, [_sentlog(4)])
    members = _members(path)
    assert members["xl/worksheets/sheet1.xml"] == EXCEL_PARTS["xl/worksheets/sheet1.xml"].encode()
    assert b'<x:sheet name="SentLog" sheetId="5" rel:id="rId8"/></x:sheets>' in members[
        "xl/workbook.xml"]
    assert b'Target="worksheets/sheet2.xml"' in members["xl/_rels/workbook.xml.rels"]
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Orders", "SentLog"]
    assert wb["SentLog"].max_row == 5
    assert _calamine(path, "Orders") == [["order_id", "total"], ["O1", 2]]


def _with_calc_chain(path: Path, chain: str, tool_sheet_formula: bool) -> None:
    """An Excel-style package whose calcChain.xml lists the formulas' cells."""
    parts = dict(EXCEL_PARTS)
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
    parts["xl/calcChain.xml"] = f'<calcChain {ns}>{chain}</calcChain>'
    parts["[Content_Types].xml"] = parts["[Content_Types].xml"].replace(
        "</Types>", '<Override PartName="/xl/calcChain.xml" ContentType="application/vnd.'
        'openxmlformats-officedocument.spreadsheetml.calcChain+xml"/></Types>')
    sheets = '<x:sheet name="Orders" sheetId="4" rel:id="rId7"/>'
    rels = f'<Relationship Id="rId3" Type="{rel}calcChain" Target="calcChain.xml"/>'
    if tool_sheet_formula:  # the tool's own SentLog, marked as the tool marks it
        sheets += '<x:sheet name="SentLog" sheetId="9" rel:id="rId9"/>'
        rels += f'<Relationship Id="rId9" Type="{rel}worksheet" Target="worksheets/log.xml"/>'
        parts["xl/worksheets/log.xml"] = (
            f'<worksheet {ns}><sheetData><row r="2"><c r="A2"><f>1+1</f><v>2</v></c></row>'
            "</sheetData></worksheet>")
        parts["[Content_Types].xml"] = parts["[Content_Types].xml"].replace(
            "</Types>", '<Override PartName="/xl/worksheets/log.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>')
    parts["xl/workbook.xml"] = parts["xl/workbook.xml"].replace(
        '<x:sheet name="Orders" sheetId="4" rel:id="rId7"/>', sheets)
    if tool_sheet_formula:
        parts["xl/workbook.xml"] = parts["xl/workbook.xml"].replace(
            "</x:sheets>", '</x:sheets><x:definedNames><x:definedName name="commplan_tool_'
            "sentlog\" localSheetId=\"1\" hidden=\"1\">'SentLog'!$A$1</x:definedName>"
            "</x:definedNames>")
    parts["xl/_rels/workbook.xml.rels"] = parts["xl/_rels/workbook.xml.rels"].replace(
        "</Relationships>", rels + "</Relationships>")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            z.writestr(name, text)


def test_calc_chain_naming_the_tool_sheet_is_dropped(tmp_path: Path) -> None:
    """Formulas typed into a tool sheet leave calcChain.xml stale: it is dropped for Excel
    to rebuild, with its relationship and content type."""
    path = tmp_path / "commplan.xlsx"
    _with_calc_chain(path, '<c r="B2" i="4"/><c r="A2" i="9"/><c r="A3"/>', True)
    write_tool_sheets(path, [_sentlog()])
    members = _members(path)
    assert "xl/calcChain.xml" not in members
    assert b"calcChain" not in members["xl/_rels/workbook.xml.rels"]
    assert b"calcChain" not in members["[Content_Types].xml"]
    assert b"<f>" not in members["xl/worksheets/log.xml"]
    assert openpyxl.load_workbook(path).sheetnames == ["Orders", "SentLog"]


def test_calc_chain_of_staff_sheets_is_kept(tmp_path: Path) -> None:
    """A calc chain that lists only staff cells is copied unchanged."""
    path = tmp_path / "commplan.xlsx"
    _with_calc_chain(path, '<c r="B2" i="4"/>', False)
    before = _members(path)
    write_tool_sheets(path, [_sentlog()])
    after = _members(path)
    assert after["xl/calcChain.xml"] == before["xl/calcChain.xml"]
    assert {n for n in before if before[n] != after[n]} == CHANGED_FOR_A_NEW_SHEET - {
        "xl/styles.xml"}  # this package had none: one is added


def test_libreoffice_package_is_grafted(staff_book: Path, tmp_path: Path) -> None:
    """A workbook saved by LibreOffice takes the tool sheet and reads back (when installed)."""
    soffice = shutil.which("soffice")
    if not soffice:
        pytest.skip("LibreOffice is not installed (.ci/run installs it)")
    out = tmp_path / "lo"
    subprocess.run([soffice, "--headless", f"-env:UserInstallation=file://{tmp_path}/profile",
                    "--convert-to", "xlsx", "--outdir", str(out), str(staff_book)],
                   check=True, capture_output=True, timeout=120)
    path = out / "commplan.xlsx"
    before = _members(path)
    write_tool_sheets(path, [_sentlog()])
    after = _members(path)
    assert {n for n in before if before[n] != after[n]} == CHANGED_FOR_A_NEW_SHEET
    assert _calamine(path, "SentLog")[1][1] == "O001"
    subprocess.run([soffice, "--headless", f"-env:UserInstallation=file://{tmp_path}/profile",
                    "--convert-to", "pdf", "--outdir", str(out), str(path)],
                   check=True, capture_output=True, timeout=120)
    assert (out / "commplan.pdf").stat().st_size > 0


# ---- charts


def test_chart_is_added_and_replaced_without_growing(staff_book: Path) -> None:
    """A tool chart adds a drawing and a chart part; rewriting reuses them in place."""
    sheet = ToolSheet("Dashboard", ("day", "sent", "failed"),
                      [["2026-11-26", 4, 1], ["2026-11-27", 6, 0]],
                      charts=(Chart("Mails per day", 0, (1, 2)),))
    write_tool_sheets(staff_book, [sheet])
    first = _members(staff_book)
    new = {"xl/worksheets/sheet3.xml", "xl/worksheets/_rels/sheet3.xml.rels",
           "xl/drawings/drawing2.xml", "xl/drawings/_rels/drawing2.xml.rels",
           "xl/charts/chart2.xml"}
    assert new <= set(first)
    wb = openpyxl.load_workbook(staff_book)
    assert len(wb["Dashboard"]._charts) == 1
    assert len(wb["Orders"]._charts) == 1
    longer = ToolSheet(sheet.name, sheet.header, [*sheet.rows, ["2026-11-28", 2, 2]],
                       charts=(Chart("Mails per day", 0, (1, 2), kind="line"),))
    write_tool_sheets(staff_book, [longer])
    second = _members(staff_book)
    assert list(second) == list(first)
    assert {n for n in first if first[n] != second[n]} == {
        "xl/worksheets/sheet3.xml", "xl/charts/chart2.xml", "xl/workbook.xml"}
    assert b"$B$2:$B$4" in second["xl/charts/chart2.xml"]


def test_dropping_the_chart_removes_its_parts(staff_book: Path) -> None:
    """When the tool sheet no longer has a chart, its drawing and chart parts go too."""
    charted = ToolSheet("Dashboard", ("day", "sent"), [["d", 1]],
                        charts=(Chart("Sent", 0, (1,)),))
    before = _members(staff_book)
    write_tool_sheets(staff_book, [charted])
    write_tool_sheets(staff_book, [ToolSheet("Dashboard", ("day", "sent"), [["d", 1]])])
    after = _members(staff_book)
    assert set(after) == set(before) | {"xl/worksheets/sheet3.xml"}
    assert b"drawing2" not in after["[Content_Types].xml"]
    assert b"chart2" not in after["[Content_Types].xml"]
    assert len(openpyxl.load_workbook(staff_book)["Orders"]._charts) == 1


def test_chart_column_must_exist(staff_book: Path) -> None:
    """A chart naming a column outside the header is refused before writing."""
    bad = ToolSheet("Dashboard", ("day",), [], charts=(Chart("x", 0, (3,)),))
    with pytest.raises(ValueError, match="column"):
        write_tool_sheets(staff_book, [bad])


def test_picture_survives(staff_book: Path, tmp_path: Path) -> None:
    """A staff picture (which openpyxl drops without Pillow) is copied as it is."""
    pil = pytest.importorskip("PIL.Image")
    from openpyxl.drawing.image import Image

    png = tmp_path / "logo.png"
    pil.new("RGB", (4, 4), "red").save(png)
    wb = openpyxl.load_workbook(staff_book)
    wb["Lists"].add_image(Image(str(png)), "C3")
    wb.save(staff_book)
    before = _members(staff_book)
    write_tool_sheets(staff_book, [_sentlog()])
    after = _members(staff_book)
    assert {n for n in before if before[n] != after[n]} == CHANGED_FOR_A_NEW_SHEET


# ---- size: a script-like check, no timing assertion


def _big_staff_book(path: Path, rows: int) -> None:
    cells = "".join(
        f'<row r="{r}"><c r="A{r}" t="inlineStr"><is><t>O{r:06d}</t></is></c>'
        f'<c r="B{r}" t="inlineStr"><is><t>Fenêtre PVC 120x140, Magasin de Lyon</t></is></c>'
        f'<c r="C{r}"><v>{r * 1.5}</v></c><c r="D{r}"><f>C{r}*2</f><v>{r * 3.0}</v></c></row>'
        for r in range(1, rows + 1)
    )
    parts = dict(EXCEL_PARTS)
    parts["xl/worksheets/sheet1.xml"] = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<worksheet xmlns='
        f'"http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{cells}'
        "</sheetData></worksheet>")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            z.writestr(name, text)


def test_big_workbook_graft(tmp_path: Path) -> None:
    """A 50,000-row staff workbook takes a 5,000-row SentLog (time printed, not asserted)."""
    path = tmp_path / "commplan.xlsx"
    _big_staff_book(path, 50_000)
    staff_sheet = _members(path)["xl/worksheets/sheet1.xml"]
    log = _sentlog(5_000)
    start = time.perf_counter()
    write_tool_sheets(path, [log], backup_dir=tmp_path / "backups")
    write_tool_sheets(path, [log], backup_dir=tmp_path / "backups")
    took = (time.perf_counter() - start) / 2
    print(f"\n50,000-row workbook ({path.stat().st_size / 1e6:.1f} MB), 5,000-row SentLog: "
          f"{took:.2f} s per write")
    assert _members(path)["xl/worksheets/sheet1.xml"] == staff_sheet
    assert len(_calamine(path, "SentLog")) == 5_001


def _style_lists(styles_xml: bytes) -> dict[str, list[bytes]]:
    """Each list of styles.xml as the bytes of its entries."""
    out = {}
    for name, item in (("numFmts", "numFmt"), ("fonts", "font"), ("fills", "fill"),
                       ("borders", "border"), ("cellXfs", "xf")):
        found = re.search(rb"<%s[^>]*>(.*?)</%s>" % (name.encode(), name.encode()), styles_xml,
                          re.DOTALL)
        body = found.group(1) if found else b""
        out[name] = re.findall(rb"<%s\b.*?(?:/>|</%s>)" % (item.encode(), item.encode()), body,
                               re.DOTALL)
    return out


def test_styles_are_appended_and_never_change_the_staffs(staff_book: Path) -> None:
    """The tool's date and header styles are added after the staff's style entries, which
    keep their bytes and numbers; writing again adds nothing more."""
    before = _style_lists(_members(staff_book)["xl/styles.xml"])
    write_tool_sheets(staff_book, [_sentlog()])
    once = _style_lists(_members(staff_book)["xl/styles.xml"])
    for name, entries in before.items():
        assert once[name][: len(entries)] == entries
    assert len(once["cellXfs"]) > len(before["cellXfs"])
    write_tool_sheets(staff_book, [_sentlog(9)])
    assert _style_lists(_members(staff_book)["xl/styles.xml"]) == once


def test_tool_sheet_reads_like_a_report(staff_book: Path) -> None:
    """The header row is bold, filled and frozen, a filter covers the table, and the sheet
    prints landscape, one page wide, repeating its header row."""
    sheet = _sentlog(4)
    write_tool_sheets(staff_book, [sheet])
    wb = openpyxl.load_workbook(staff_book)
    ws = wb["SentLog"]
    assert ws.freeze_panes == "A2"
    assert all(c.font.b and c.fill.fgColor.rgb.endswith("DDEBF7") for c in ws[1])
    assert ws.auto_filter.ref == "A1:K5"
    assert ws.page_setup.orientation == "landscape"
    assert (ws.page_setup.fitToWidth, ws.page_setup.fitToHeight) == (1, 0)
    assert ws.sheet_properties.pageSetUpPr.fitToPage
    assert ws.print_title_rows == "$1:$1"
    assert ws.column_dimensions["A"].width >= 10


def test_sheets_are_made_again_when_the_styles_moved(staff_book: Path) -> None:
    """Sheets built with style numbers that no longer match the file (staff saved it
    meanwhile) are made again with the numbers the graft finds: dates stay dates."""
    from commplan_xl.excel import graft
    from commplan_xl.excel.sheet_xml import sheet_xml

    sheet = _sentlog()
    built = {sheet.name: sheet_xml(sheet, {})}  # made without knowing the styles
    ids: dict[str, int] = {}
    tmp = graft._graft_to_temp(staff_book, [sheet], built, ids)
    os.replace(tmp, staff_book)
    assert ids and b' s="' in built[sheet.name]
    ws = openpyxl.load_workbook(staff_book)["SentLog"]
    assert ws["A2"].number_format == "dd/mm/yyyy hh:mm"


def test_print_titles_join_an_empty_list_of_names() -> None:
    """A workbook.xml with an empty <definedNames/> (as openpyxl writes it) gets the print
    titles inside it: one list of names, which Excel and openpyxl read."""
    from commplan_xl.excel.package import set_defined_names

    book = ('<workbook xmlns="x"><sheets><sheet name="A"/></sheets><definedNames/>'
            "<calcPr/></workbook>")
    out = set_defined_names(book, {0: ("A", {"_xlnm.Print_Titles": "'A'!$1:$1"})})
    assert out.count("definedNames>") == 2 and "<definedNames/>" not in out
    assert '<definedName name="_xlnm.Print_Titles" localSheetId="0">' in out
