"""Reading the staff's workbook: sheets as plain tables of trimmed values.

Only this module (and excel/graft, which writes the tool's own sheets) knows about Excel.
Each sheet is parsed by python-calamine as raw cells (text as typed, so "NA" stays "NA" and
ids keep their leading zeros; numbers; dates); this module then names the columns and turns
each cell into the text or date the tool works with. A Table gives its rows as a pandas
DataFrame (`Table.frame`) for the column-wise checks.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import re
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import compress, repeat
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from python_calamine import CalamineWorkbook

from commplan_xl.excel.names import column_key, fold, sheet_key
from commplan_xl.excel.sheet_xml import column_letter
from commplan_xl.gc_pause import no_gc
from commplan_xl.i18n import _
from commplan_xl.problems import CellError, CommplanError, Problem

if TYPE_CHECKING:
    import pandas as pd

V = TypeVar("V")

# The sheets validation needs; reading only these keeps a run fast on big workbooks.
INPUT_SHEETS = ("settings", "plans", "customers", "orders", "variables")


def normalise_header(name: str) -> str:
    """A header as a column name: no accents, lower case, spaces/-/_ alike → "_".

    `Date de livraison`, `date-de-livraison` and `DATE_DE_LIVRAISON` are all
    `date_de_livraison`. Other punctuation counts as a separator too, so every name is a
    usable template variable.
    """
    return fold(name)


class Clash(NamedTuple):
    """Two headers (or sheets) that mean the same thing: the second is ignored."""

    key: str  # what both mean: a column key ("email") or a sheet key ("customers")
    first: str  # the first one as written ("email"), and where (column letter, "" for sheets)
    first_at: str
    other: str  # the ignored one ("courriel"), and where
    other_at: str


@dataclass(frozen=True)
class Table:
    """One sheet: normalised columns and its non-empty rows with their Excel row numbers.

    The values are kept by column (`data`, `numbers`), as they are converted; `rows` gives
    them row by row.
    """

    sheet: str  # the sheet's name as in the file
    # Column keys, in sheet order, without duplicates: a known column of an input sheet
    # by its English name ("start_date" for "Date de début"), any other header normalised.
    columns: tuple[str, ...]
    letters: dict[str, str]  # column key -> Excel letter ("D")
    numbers: tuple[int, ...] = ()  # the Excel row number of each non-empty row
    data: dict[str, list[object]] = field(default_factory=dict)  # column -> values by row
    # Headers that normalise to a column already seen: (column, letter of the ignored one).
    duplicate_columns: tuple[tuple[str, str], ...] = field(default=())
    # Headers written in another spelling of a column already seen ("courriel" after
    # "email"): the later one is ignored.
    clashes: tuple[Clash, ...] = field(default=())
    # Column key -> its header normalised, where they differ ("start_date" ->
    # "date_de_debut"): templates know the column by both names.
    headers: dict[str, str] = field(default_factory=dict)
    # Column key -> its header as written ("Date de début"), to name it to staff.
    titles: dict[str, str] = field(default_factory=dict)

    @functools.cached_property
    def rows(self) -> tuple[tuple[int, dict[str, object]], ...]:
        """(Excel row, values by column) of each non-empty row."""
        columns = self.columns
        by_row = zip(*(self.data[c] for c in columns))  # noqa: B905 - columns of one length
        values = map(dict, map(zip, repeat(columns), by_row))  # noqa: B905 - as above
        return tuple(zip(self.numbers, values))  # noqa: B905 - one number per row

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame of cell values (objects), indexed by Excel row number."""
        import pandas as pd

        return pd.DataFrame(self.data, index=pd.Index(self.numbers, dtype="int64"),
                            columns=list(self.columns), dtype=object)

    def values(self, index: int) -> dict[str, object]:
        """The values by column of the row at `index` (of `numbers`)."""
        return {column: self.data[column][index] for column in self.columns}

    def by_any_name(self, by_column: Mapping[str, V]) -> dict[str, V]:
        """`by_column` (values, letters, headers… by column key) with each column under its
        header's own name too (`date_de_debut` beside `start_date`), as templates know it;
        a column of that name wins."""
        own = {name: by_column[column] for column, name in self.headers.items()
               if column in by_column and name not in by_column}
        return {**by_column, **own}

    def cell(self, column: str, row: int) -> str:
        """The Excel reference of a cell, e.g. "D7" ("" when the column is absent)."""
        letter = self.letters.get(column)
        return f"{letter}{row}" if letter else ""


def number_text(value: float) -> str:
    """A number cell as text: 12 for 12.0, and at most the 15 digits Excel keeps."""
    return str(int(value)) if value.is_integer() else f"{value:.15g}"


def cell_value(value: object) -> object:
    """One cell as the tool sees it: trimmed text, a date/datetime, or "" when empty.

    Numbers become text without a spurious ".0" (ids and phone numbers stay as typed).
    """
    kind = type(value)
    if kind is str:
        return value.strip()  # type: ignore[union-attr]
    if kind is int:
        return str(value)
    if kind is float:
        return number_text(value)  # type: ignore[arg-type]
    if isinstance(value, dt.datetime):
        # A date cell holding midnight is a plain date.
        if value.time() == dt.time():
            return dt.date(value.year, value.month, value.day)
        return value
    if isinstance(value, dt.date):
        return value
    if value is None:
        return ""
    if kind is bool:
        return "TRUE" if value else "FALSE"
    return str(value).strip()  # time, timedelta


def _table(name: str, cells: list[list[object]], key: str = "") -> Table:
    """A Table from a sheet's raw cells (rows from A1, the header in row 1). `key` is the
    input sheet it is ("orders"), whose columns are named by their keys in either
    language; by default the sheet's name says."""
    if not cells:
        return Table(sheet=name, columns=(), letters={})
    widths = set(map(len, cells))
    if len(widths) > 1:  # short rows read as empty cells, like Excel
        width = max(widths)
        cells = [[*row, *[""] * (width - len(row))] for row in cells]
    key = key or sheet_key(name)
    columns: list[str] = []
    letters: dict[str, str] = {}
    written: dict[str, str] = {}  # column key -> its header normalised
    titles: dict[str, str] = {}  # column key -> its header as written
    positions: list[int] = []
    duplicates: list[tuple[str, str]] = []
    clashes: list[Clash] = []
    for index, header in enumerate(cells[0]):
        title = str(cell_value(header))
        own = normalise_header(title)
        if not own:
            continue  # a column without a header is not data
        column = column_key(key, own)
        if column in letters:
            if own == written[column]:
                duplicates.append((column, column_letter(index)))
            else:
                clashes.append(Clash(column, written[column], letters[column], own,
                                     column_letter(index)))
            continue
        columns.append(column)
        letters[column] = column_letter(index)
        written[column] = own
        titles[column] = title
        positions.append(index)
    numbers, data = _columns(columns, positions, cells[1:])
    return Table(
        sheet=name, columns=tuple(columns), letters=letters, numbers=numbers, data=data,
        duplicate_columns=tuple(duplicates), clashes=tuple(clashes),
        headers={c: own for c, own in written.items() if c != own}, titles=titles,
    )


def _column(cells: tuple[object, ...]) -> list[object]:
    """One column's cells converted by `cell_value`."""
    kinds = set(map(type, cells))
    if kinds == {str}:  # the usual column: text only
        return list(map(str.strip, cells))
    if kinds == {float}:  # amounts: mostly distinct values
        return list(map(number_text, cells))
    if bool in kinds:  # True == 1: equal cells may not convert alike
        return list(map(cell_value, cells))
    # Date and number columns repeat a few distinct values: each is converted once.
    converted = {cell: cell_value(cell) for cell in set(cells)}
    return list(map(converted.__getitem__, cells))


def _columns(
    columns: list[str], positions: list[int], body: list[list[object]]
) -> tuple[tuple[int, ...], dict[str, list[object]]]:
    """The Excel row numbers of the non-empty data rows, and their values by column."""
    if not body or not columns:
        return (), {column: [] for column in columns}
    by_column = list(zip(*body))  # noqa: B905 - rows of one length
    cells = [_column(by_column[p]) for p in positions]
    # "" is the only empty value left after conversion, and a row is empty only where every
    # column is: one column without "" keeps every row.
    if all("" in values for values in cells):
        keep = list(map(any, zip(*cells)))  # noqa: B905 - columns of one length
    else:
        keep = [True] * len(body)
    numbers = tuple(compress(range(2, len(body) + 2), keep))
    if len(numbers) < len(keep):
        cells = [list(compress(values, keep)) for values in cells]
    return numbers, dict(zip(columns, cells, strict=True))


def _load(path: Path) -> tuple[bytes, list[str]]:
    """The workbook's bytes (read at once, so Excel is never blocked by our open handle)
    and its sheet names."""
    data = path.read_bytes()
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ValueError("not a zip")
    book = CalamineWorkbook.from_filelike(io.BytesIO(data))  # fails on a non-workbook
    try:
        return data, book.sheet_names
    finally:
        book.close()


def _parse(data: bytes, names: dict[str, str], futures: dict[str, Future]) -> None:
    """Parse the sheets `names` (key -> name), in order, each into its future: its rows of
    raw cells from A1 (text as typed, numbers, datetimes). Runs in a worker thread."""
    try:
        book = CalamineWorkbook.from_filelike(io.BytesIO(data))
    except Exception as exc:
        for key in names:
            futures[key].set_exception(exc)
        return
    try:
        for key, name in names.items():
            try:
                rows = book.get_sheet_by_name(name).to_python(skip_empty_area=False)
            except Exception as exc:
                futures[key].set_exception(exc)
            else:
                futures[key].set_result(rows)
    finally:
        book.close()


def read_tables(
    path: Path,
    *,
    only: Iterable[str] | None = INPUT_SHEETS,
    attempts: int = 5,
    pause: float = 0.2,
) -> dict[str, Table]:
    """Read the workbook's sheets as Tables, keyed by sheet key: an input sheet's English
    name folded ("customers" for "Clients"), any other sheet's name normalised.

    `only` lists the sheets to read by name or key (default: the input sheets; None reads
    every sheet). A failed read is retried `attempts` times, because during an Excel save
    the file briefly does not exist.
    """
    return dict(open_tables(path, only=only, attempts=attempts, pause=pause).items())


def open_tables(
    path: Path,
    *,
    only: Iterable[str] | None = INPUT_SHEETS,
    attempts: int = 5,
    pause: float = 0.2,
) -> Mapping[str, Table]:
    """`read_tables`, with the sheets still parsing when it returns: looking a sheet up
    waits for that sheet only, so the caller works on Customers while Orders parses."""
    path = Path(path)
    data, names = _load_retrying(path, attempts, pause)
    wanted = None if only is None else {sheet_key(name) for name in only}
    chosen: dict[str, str] = {}
    clashes: list[Clash] = []
    for name in names:
        key = sheet_key(name)
        if wanted is not None and key not in wanted:
            continue
        if key not in chosen:
            chosen[key] = name
        elif normalise_header(name) != normalise_header(chosen[key]):
            clashes.append(Clash(key, chosen[key], "", name, ""))
    return _PendingTables(path, data, chosen, tuple(clashes))


class _PendingTables(Mapping[str, Table]):
    """The chosen sheets of a workbook, parsing in two worker threads (calamine parses
    without holding the GIL): Orders in one, the others in the other, Customers first; each
    is converted to a Table when first looked up."""

    def __init__(self, path: Path, data: bytes, chosen: dict[str, str],
                 clashes: tuple[Clash, ...] = ()) -> None:
        self._path = path
        self._names = chosen  # in the workbook's order
        # Sheets named in another language beside the one read ("Clients" after
        # "Customers"): ignored, and reported by validation.
        self.sheet_clashes = clashes
        self._tables: dict[str, Table] = {}
        self._futures: dict[str, Future] = {key: Future() for key in chosen}
        # Sheets parsed by calamine directly, not by pandas.read_excel: read_excel's own
        # pass over every cell (our conversion does the same work) and its pandas import
        # before the parse could start were a large part of `due`'s time. Here the parse
        # starts first and pandas is imported (by validation) while it runs.
        orders = {k: n for k, n in chosen.items() if k == "orders"}
        others = {k: chosen[k] for k in sorted(chosen, key=lambda k: k != "customers")
                  if k != "orders"}
        for names in (orders, others):
            if names:
                threading.Thread(target=_parse, args=(data, names, self._futures),
                                 daemon=True).start()

    @property
    def sheet_names(self) -> list[str]:
        """The chosen sheets' names, as in the workbook (known before they parse)."""
        return list(self._names.values())

    def __getitem__(self, key: str) -> Table:
        table = self._tables.get(key)
        if table is None:
            future = self._futures[key]  # KeyError: no such sheet
            try:
                cells = future.result()
                with no_gc():
                    table = self._tables[key] = _table(self._names[key], cells, key)
            except Exception as exc:
                raise _unreadable(self._path, exc) from exc
        return table

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, key: object) -> bool:
        return key in self._names


def _unreadable(path: Path, exc: Exception) -> CommplanError:
    return CommplanError(_("The workbook {path} could not be read: {error}.").format(
        path=path, error=exc))


def _load_retrying(path: Path, attempts: int, pause: float) -> tuple[bytes, list[str]]:
    """The workbook's bytes and sheet names, retried while Excel saves it (the file
    briefly does not exist)."""
    error: Exception | None = None
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(pause * attempt)
        try:
            return _load(path)
        except Exception as exc:  # missing, locked mid-save, half-written, not a workbook
            error = exc
    if isinstance(error, FileNotFoundError) or not path.exists():
        raise CommplanError(_(
            "The workbook {path} does not exist; check --home or --workbook, or create one "
            "with `commplan init`.").format(path=path)) from error
    if isinstance(error, IsADirectoryError | PermissionError):
        raise CommplanError(_("The workbook {path} cannot be read: {error}.").format(
            path=path, error=error)) from error
    raise CommplanError(_(
        '{path} is not an Excel workbook (.xlsx); save it from Excel as "Excel Workbook '
        '(*.xlsx)".').format(path=path)) from error


_EXCEL_EPOCH = dt.date(1899, 12, 30)
_NUMBER = re.compile(r"\d+(?:[.,]\d*)?")
_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?")
_DAY_FIRST = re.compile(r"(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})(?: \d{1,2}:\d{2}(?::\d{2})?)?")


def _serial(number: float, text: str) -> dt.date:
    if not 1 <= number < 2958466:  # 1900-01-01 .. 9999-12-31
        raise CellError(Problem.NOT_A_DATE, text=text)
    return _EXCEL_EPOCH + dt.timedelta(days=int(number))


def parse_date(value: object) -> dt.date | None:
    """A date cell as a date: real dates, Excel serials, ISO or day-first text.

    None when empty. Text is always day-first (05/03/2026 is 5 March). Raises CellError
    (a ValueError with a sentence) when the value is not a date.
    """
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if value is None:
        return None
    if isinstance(value, bool):
        raise CellError(Problem.NOT_A_DATE, text=str(value))
    if isinstance(value, int | float):
        return _serial(float(value), str(value))
    text = str(value).strip()
    if not text:
        return None
    if _NUMBER.fullmatch(text):
        return _serial(float(text.replace(",", ".")), text)
    if match := _ISO.fullmatch(text):
        year, month, day = (int(g) for g in match.groups())
    elif match := _DAY_FIRST.fullmatch(text):
        day, month, year = int(match[1]), int(match[3]), int(match[4])
        if len(match[4]) == 2:
            year += 2000
    else:
        raise CellError(Problem.DATE_TEXT_NOT_A_DATE, text=text)
    try:
        return dt.date(year, month, day)
    except ValueError:
        raise CellError(Problem.DATE_NO_SUCH_DAY, text=text) from None


_YES = frozenset({"yes", "oui", "true", "vrai", "1", "x", "y", "o"})
_NO = frozenset({"no", "non", "false", "faux", "0", "n"})


def parse_yes_no(value: object, default: bool) -> bool:
    """A yes/no cell: yes/no, oui/non, true/false, vrai/faux, 1/0, x; empty = `default`."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().casefold() if value is not None else ""
    if not text:
        return default
    if text in _YES:
        return True
    if text in _NO:
        return False
    raise CellError(Problem.NOT_YES_NO, text=str(value).strip())
