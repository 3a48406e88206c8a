"""Reading the workbook: headers, values, rows, dates and yes/no cells."""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path

import pytest

from commplan_xl.excel.read import (
    _table,
    cell_value,
    column_letter,
    normalise_header,
    parse_date,
    parse_yes_no,
    read_tables,
)
from commplan_xl.problems import CellError, CommplanError, Problem
from tests.builders import make_workbook, write_xlsx


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Date de livraison", "date_de_livraison"),
        ("date-de-livraison", "date_de_livraison"),
        ("DATE_DE_LIVRAISON", "date_de_livraison"),
        ("  Date  --  de__livraison ", "date_de_livraison"),
        ("Téléphone", "telephone"),
        ("_order id_", "order_id"),
        ("N° commande", "n_commande"),
        ("customer_id", "customer_id"),
    ],
)
def test_normalise_header(header: str, expected: str) -> None:
    """Headers match ignoring case, accents, and spaces, `-` and `_` alike."""
    assert normalise_header(header) == expected


@pytest.mark.parametrize(("index", "letter"), [(0, "A"), (3, "D"), (25, "Z"), (26, "AA"),
                                               (27, "AB"), (701, "ZZ"), (702, "AAA")])
def test_column_letter(index: int, letter: str) -> None:
    """Column indexes map to Excel's letters."""
    assert column_letter(index) == letter


def test_values_are_read_as_staff_typed_them(tmp_path: Path) -> None:
    """Text is trimmed, ids keep zeros, numbers lose a spurious .0, dates stay dates."""
    path = write_xlsx(tmp_path / "w.xlsx", {"Orders": [
        ["Order ID", "Amount", "Ratio", "Start Date", "When", "Note", "Empty"],
        ["00123", 123.0, 1.5, dt.date(2026, 3, 5), dt.datetime(2026, 3, 5, 10, 30), " NA ", None],
        [42, 7, 0.25, dt.datetime(2026, 3, 6), "", "N/A", None],
    ]})
    table = read_tables(path)["orders"]
    assert table.sheet == "Orders"
    assert table.columns == ("order_id", "amount", "ratio", "start_date", "when", "note", "empty")
    (row2, first), (row3, second) = table.rows
    assert (row2, row3) == (2, 3)
    assert first == {
        "order_id": "00123", "amount": "123", "ratio": "1.5", "start_date": dt.date(2026, 3, 5),
        "when": dt.datetime(2026, 3, 5, 10, 30), "note": "NA", "empty": "",
    }
    assert second["order_id"] == "42"
    assert second["amount"] == "7"
    assert second["ratio"] == "0.25"
    assert second["start_date"] == dt.date(2026, 3, 6)  # a midnight datetime is a date
    assert second["note"] == "N/A"


def test_empty_rows_are_skipped_and_rows_keep_excel_numbers(tmp_path: Path) -> None:
    """Empty rows are ignored; each row keeps the number Excel shows, for messages."""
    path = write_xlsx(tmp_path / "w.xlsx", {"Customers": [
        ["customer_id", "name"], ["C1", "A"], [None, None], ["  ", ""], ["C2", "B"],
    ]})
    table = read_tables(path)["customers"]
    assert [row for row, _ in table.rows] == [2, 5]
    assert table.letters == {"customer_id": "A", "name": "B"}
    assert table.cell("name", 5) == "B5"


def test_columns_keep_their_letters_past_blank_headers(tmp_path: Path) -> None:
    """A column without a header is ignored, and later columns keep their own letters."""
    path = write_xlsx(tmp_path / "w.xlsx", {"Orders": [
        ["order_id", None, "Start date"], ["O1", "stray", "05/03/2026"],
    ]})
    table = read_tables(path)["orders"]
    assert table.columns == ("order_id", "start_date")
    assert table.cell("start_date", 2) == "C2"
    assert table.rows[0][1] == {"order_id": "O1", "start_date": "05/03/2026"}


def test_repeated_headers_keep_the_first_column(tmp_path: Path) -> None:
    """Two headers that normalise alike: the first is used, the second is noted."""
    path = write_xlsx(tmp_path / "w.xlsx", {"Customers": [
        ["Email", "name", " EMAIL "], ["a@x.fr", "A", "b@x.fr"],
    ]})
    table = read_tables(path)["customers"]
    assert table.rows[0][1]["email"] == "a@x.fr"
    assert table.duplicate_columns == (("email", "C"),)


def test_sheets_are_keyed_by_normalised_name_and_only_input_sheets_by_default(
    tmp_path: Path,
) -> None:
    """Sheet keys are normalised; tool sheets are read only when asked for."""
    path = make_workbook(tmp_path, sheets={"Sent Log": [["date"], ["x"]]})
    assert set(read_tables(path)) == {"settings", "plans", "customers", "orders", "variables"}
    everything = read_tables(path, only=None)
    assert everything["sent_log"].sheet == "Sent Log"
    assert set(read_tables(path, only=["Orders"])) == {"orders"}


def test_missing_workbook_is_a_plain_error(tmp_path: Path) -> None:
    """A missing file ends with a sentence naming it, not a traceback."""
    with pytest.raises(CommplanError, match="does not exist"):
        read_tables(tmp_path / "nope.xlsx", attempts=2, pause=0.01)


def test_not_an_xlsx_is_a_plain_error(tmp_path: Path) -> None:
    """A file that is not an .xlsx ends with a sentence saying so."""
    path = tmp_path / "commplan.xlsx"
    path.write_text("order_id;plan\n1;x\n", encoding="utf-8")
    with pytest.raises(CommplanError, match=r"not an Excel workbook \(\.xlsx\)"):
        read_tables(path, attempts=2, pause=0.01)


def test_read_retries_while_excel_saves(tmp_path: Path) -> None:
    """A workbook briefly missing (Excel saving) is read once it is back."""
    path = make_workbook(tmp_path)
    aside = path.with_suffix(".tmp")
    os.replace(path, aside)
    putting_back = threading.Timer(0.05, os.replace, (aside, path))
    putting_back.start()
    try:
        tables = read_tables(path, attempts=6, pause=0.1)
    finally:
        putting_back.join()
    assert len(tables["orders"].rows) == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.date(2026, 3, 5), dt.date(2026, 3, 5)),
        (dt.datetime(2026, 3, 5, 10, 30), dt.date(2026, 3, 5)),
        ("2026-03-05", dt.date(2026, 3, 5)),
        ("2026-03-05 00:00:00", dt.date(2026, 3, 5)),
        ("05/03/2026", dt.date(2026, 3, 5)),
        ("5/3/2026", dt.date(2026, 3, 5)),
        ("05-03-2026", dt.date(2026, 3, 5)),
        ("05.03.2026", dt.date(2026, 3, 5)),
        ("05/03/26", dt.date(2026, 3, 5)),
        ("13/01/2026", dt.date(2026, 1, 13)),
        (46086, dt.date(2026, 3, 5)),
        (46086.75, dt.date(2026, 3, 5)),
        ("46086", dt.date(2026, 3, 5)),
        ("", None),
        (None, None),
        ("   ", None),
    ],
)
def test_parse_date_accepts_the_spec_forms(value: object, expected: dt.date | None) -> None:
    """Dates may be real dates, Excel serials, ISO text or day-first text (always day-first)."""
    assert parse_date(value) == expected


@pytest.mark.parametrize(
    "value",
    ["31/02/2026", "2026-02-30", "32/01/2026", "05/13/2026", "demain", "5 mars 2026",
     "2026/03/05", "-3", True, 0],
)
def test_parse_date_rejects_what_is_not_a_date(value: object) -> None:
    """Impossible days, month-first dates and words are not dates."""
    with pytest.raises(ValueError, match="is not a date"):
        parse_date(value)


@pytest.mark.parametrize(
    ("value", "kind"),
    [("31/02/2026", Problem.DATE_NO_SUCH_DAY), ("demain", Problem.DATE_TEXT_NOT_A_DATE),
     (0, Problem.NOT_A_DATE)],
)
def test_a_bad_date_says_its_kind_and_text(value: object, kind: Problem) -> None:
    """A cell that is not a date says why as data: the kind of problem and the text read."""
    with pytest.raises(CellError) as raised:
        parse_date(value)
    assert (raised.value.kind, raised.value.values) == (kind, {"text": str(value)})


@pytest.mark.parametrize(
    ("value", "expected"),
    [("yes", True), ("Oui", True), ("TRUE", True), ("vrai", True), ("1", True), ("x", True),
     (" X ", True), (True, True), ("no", False), ("NON", False), ("false", False),
     ("Faux", False), ("0", False), (False, False)],
)
def test_parse_yes_no(value: object, expected: bool) -> None:
    """Yes/no cells accept yes/no, oui/non, true/false, vrai/faux, 1/0 and x."""
    assert parse_yes_no(value, default=not expected) is expected


@pytest.mark.parametrize("default", [True, False])
def test_parse_yes_no_empty_is_the_default(default: bool) -> None:
    """An empty yes/no cell takes the column's default."""
    assert parse_yes_no("", default) is default
    assert parse_yes_no(None, default) is default


def test_parse_yes_no_rejects_other_words() -> None:
    """Anything else in a yes/no cell is an error naming the value."""
    with pytest.raises(ValueError, match='"peut-être" is not yes or no'):
        parse_yes_no("peut-être", False)


def test_whole_columns_convert_like_single_cells(tmp_path: Path) -> None:
    """A column read at once gives what cell_value gives cell by cell, odd numbers included."""
    numbers = [12.0, 0.1 + 0.2, -0.5, 1e16, 123456789012345.0, 2.5e-7, -3.0, 0.0]
    grid = [["n", "mixed", "text"]] + [
        [n, dt.date(2026, 3, i + 1) if i % 2 else f" t{i} ", f" x{i} "]
        for i, n in enumerate(numbers)
    ]
    path = write_xlsx(tmp_path / "w.xlsx", {"Orders": grid})
    table = read_tables(path)["orders"]
    assert [v["n"] for _, v in table.rows] == [cell_value(n) for n in numbers]
    assert [v["mixed"] for _, v in table.rows][:2] == ["t0", dt.date(2026, 3, 2)]
    assert [v["text"] for _, v in table.rows][-1] == "x7"


def test_ragged_grid_reads_missing_cells_as_empty() -> None:
    """A row shorter than the header (as some writers store it) has its missing cells empty."""
    table = _table("Orders", [["order_id", "plan", "note"], ["O1", "P"], ["O2", "P", "n"]])
    assert table.rows == ((2, {"order_id": "O1", "plan": "P", "note": ""}),
                          (3, {"order_id": "O2", "plan": "P", "note": "n"}))
