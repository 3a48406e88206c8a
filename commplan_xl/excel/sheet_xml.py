"""A tool sheet and its worksheet XML: a frozen header, column widths, inline strings only.

Values become cells here (numbers, booleans, Excel dates, text that is never a formula).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from commplan_xl.excel.ooxml import REL_NS

MAX_CELL_TEXT = 32767  # Excel's limit; longer text makes Excel "repair" the file
MAX_EXACT_INT = 10**15  # Excel keeps 15 significant digits; longer ints are written as text
_BAD_SHEET_CHARS = set("[]:*?/\\")
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Excel reads "_x0041_" in a string as the character it encodes; "_x005F_" keeps it literal.
_OOXML_ESCAPE = re.compile(r"_(x[0-9A-Fa-f]{4}_)")


# The cell styles a tool sheet may use, by name; `styles.append_styles` adds them to the
# workbook's styles (appended, never changing the staff's) and gives their numbers.
STYLE_NAMES = ("header", "date", "datetime", "title", "subtitle", "figure", "wrap")
DATE_STYLES = {"date", "datetime"}
# A column of dates gets this width; Excel shows "########" in a cell too narrow.
DATE_WIDTHS = {"date": 11.0, "datetime": 16.5}
EXCEL_EPOCH = dt.datetime(1899, 12, 30)
# The tool's hidden sheet listing each plan once (the Orders plan drop-down reads it).
PLAN_LIST = "PlanList"


@dataclass(frozen=True)
class Chart:
    """A native chart of some columns of a tool sheet.

    Column indexes count from 0 in `ToolSheet.header`; values must be numbers. The data
    are the Excel rows `first_row` to `last_row` (default: the sheet's last row), their
    series names in the row above. `anchor` (column, row; 0-based) is the chart's top-left
    cell, right of the data by default; `size` in centimetres.
    """

    title: str
    category_col: int
    value_cols: tuple[int, ...]
    kind: Literal["bar", "stacked", "line"] = "bar"
    first_row: int = 2
    last_row: int | None = None
    anchor: tuple[int, int] | None = None
    size: tuple[float, float] = (18.0, 9.0)


@dataclass(frozen=True)
class ToolSheet:
    """One sheet the tool owns: a header row, then rows of plain values.

    Values may be str, int, float, bool, date, datetime or None. Dates and date-times
    become Excel dates shown DD/MM/YYYY (HH:MM); strings are always text, never formulas.
    `widths` maps a column (0-based index, header name or column letter) to a width in
    characters; other columns get a width from their content. `formats` gives a column
    the style of its numbers ("date" or "datetime": Excel serial numbers) or "wrap".
    `styles` styles single cells: (Excel row, 0-based column) -> a name of STYLE_NAMES.

    Read like a report: the header row is styled (`header_style`) and frozen
    (`frozen_rows`), an autofilter covers `filter_area` ((first row, first column, last
    row, last column), Excel rows, 0-based columns; "table": the header row and every row
    under it), and it prints landscape, one page wide, repeating `title_rows` rows.
    """

    name: str
    header: tuple[str, ...]
    rows: Sequence[Sequence[object]]
    widths: Mapping[int | str, float] = field(default_factory=dict)
    charts: tuple[Chart, ...] = ()
    formats: Mapping[int | str, str] = field(default_factory=dict)
    styles: Mapping[tuple[int, int], str] = field(default_factory=dict)
    header_style: str | None = "header"
    frozen_rows: int = 1
    filter_area: tuple[int, int, int, int] | Literal["table"] | None = "table"
    title_rows: int = 1
    hidden_cols: tuple[int, ...] = ()
    landscape: bool = True
    heights: Mapping[int, float] = field(default_factory=dict)  # Excel row -> points
    hidden: bool = False  # a new sheet is added hidden (a list the tool keeps)
    # This sheet's (name, header) in the other languages: a sheet of such a name with such
    # a header is this tool sheet written before the workbook's locale changed; writing
    # renames and replaces it.
    former: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def ncols(self) -> int:
        return max([len(self.header), *(len(row) for row in self.rows)], default=0)

    def filter_ref(self) -> str | None:
        """The autofilter's range ("A1:K250"), or None."""
        area = self.filter_area
        if area == "table":
            if not self.header:
                return None
            area = (1, 0, len(self.rows) + 1, len(self.header) - 1)
        if area is None:
            return None
        top, left, bottom, right = area
        return f"{column_letter(left)}{top}:{column_letter(right)}{max(bottom, top)}"


def excel_serial(value: dt.date) -> float | int:
    """The Excel serial number of a date (whole) or date-time (with its fraction of day)."""
    if isinstance(value, dt.datetime):
        delta = value.replace(tzinfo=None) - EXCEL_EPOCH
        return round(delta.days + delta.seconds / 86400, 8)
    return (value - EXCEL_EPOCH.date()).days


def check_sheet_name(name: str) -> None:
    """Raise ValueError unless Excel accepts `name` as a sheet name."""
    if not 0 < len(name) <= 31:
        raise ValueError(f'sheet name "{name}" must have 1 to 31 characters')
    if _BAD_SHEET_CHARS & set(name) or name.startswith("'") or name.endswith("'"):
        raise ValueError(f'sheet name "{name}" may not contain [ ] : * ? / \\ or edge quotes')
    if name.casefold() == "history":
        raise ValueError('"History" is a sheet name Excel reserves')


def column_letter(index: int) -> str:
    """Excel's letters for a 0-based column index (0 → A, 26 → AA)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def clean_text(text: str) -> str:
    """Text as a cell can hold it: no XML-illegal characters, CR-LF as LF, not too long."""
    text = _ILLEGAL_XML.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    return text[:MAX_CELL_TEXT]


def to_cell_value(value: object) -> str | int | float | bool | None:
    """What a cell shows for `value`: a number, a bool, text, or None for an empty cell."""
    if value is None:
        return None
    if isinstance(value, bool | str):
        return value
    if isinstance(value, dt.datetime):
        if value != value:  # pandas NaT
            return None
        return excel_serial(value)
    if isinstance(value, dt.date):
        return excel_serial(value)
    if isinstance(value, dt.time):
        return value.isoformat(timespec="minutes")
    if isinstance(value, numbers.Integral):
        return int(value) if abs(int(value)) < MAX_EXACT_INT else str(value)
    if isinstance(value, numbers.Real | Decimal):
        number = float(value)
        if math.isnan(number):
            return None
        return number if math.isfinite(number) else str(value)
    return str(value)


def _cell_end(value: str | int | float | bool) -> str:
    """One cell's XML after its `<c r="A1"`. Text is XML-escaped here; illegal characters,
    CRs and "_xHHHH_" are handled by `_finish_text`, once per distinct text (`_one_end`)."""
    if type(value) is str:
        if len(value) > MAX_CELL_TEXT:
            value = value[:MAX_CELL_TEXT]
        if "&" in value or "<" in value or ">" in value:
            value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        if value[:1].isspace() or value[-1:].isspace():
            return f' t="inlineStr"><is><t xml:space="preserve">{value}</t></is></c>'
        # Inline strings are never formulas: "=1+1" or "+33 6 12" stay text in Excel.
        return f' t="inlineStr"><is><t>{value}</t></is></c>'
    if isinstance(value, bool):
        return f' t="b"><v>{int(value)}</v></c>'
    if isinstance(value, int):
        return f"><v>{value}</v></c>"
    if isinstance(value, float):
        return f"><v>{value!r}</v></c>"
    return _cell_end(str(value))


_MISSING = object()


def _finish_text(xml: str) -> str:
    """Whole-part clean-up of cell text: drop XML-illegal characters, CR-LF as LF, and
    keep a literal "_x0041_" literal (Excel would read it as "A")."""
    xml = _ILLEGAL_XML.sub("", xml)
    if "\r" in xml:
        xml = xml.replace("\r\n", "\n").replace("\r", "\n")
    if "_x" in xml:
        xml = _OOXML_ESCAPE.sub(r"_x005F_\1", xml)
    return xml


def _width_of(value: str | int | float | bool) -> int:
    text = value if isinstance(value, str) else str(value)
    if "\n" not in text:
        return len(text)
    return max(len(line) for line in text.split("\n"))


def _column_index(sheet: ToolSheet, key: int | str, ncols: int, what: str) -> int:
    if isinstance(key, int):
        return key
    if key in sheet.header:
        return sheet.header.index(key)
    letters = {column_letter(i): i for i in range(ncols)}
    if key.upper() in letters:
        return letters[key.upper()]
    raise ValueError(f'{sheet.name}: no column "{key}" to give {what}')


def _explicit_widths(sheet: ToolSheet, ncols: int) -> dict[int, float]:
    return {_column_index(sheet, key, ncols, "a width"): float(width)
            for key, width in sheet.widths.items()}


def column_formats(sheet: ToolSheet) -> dict[int, str]:
    """The style name of each column that has one (`ToolSheet.formats`), by index."""
    ncols = sheet.ncols
    out = {}
    for key, name in sheet.formats.items():
        if name not in STYLE_NAMES:
            raise ValueError(f"{sheet.name}: no cell style {name!r}")
        out[_column_index(sheet, key, ncols, "a format")] = name
    return out


def _style_of(raw: object, column: str | None) -> str | None:
    """The style a value needs in a column of style `column`: dates need theirs."""
    if isinstance(raw, dt.datetime):
        return column if column in DATE_STYLES else "datetime"
    if isinstance(raw, dt.date):
        return column if column in DATE_STYLES else "date"
    if column == "wrap" and not isinstance(raw, str):
        return None
    return column


def _s(style: str | None, style_ids: Mapping[str, int] | None) -> str:
    if style is None or not style_ids or style not in style_ids:
        return ""
    return f' s="{style_ids[style]}"'


def _display_width(value: str | int | float | bool, style: str | None) -> float:
    if style in DATE_WIDTHS:
        return DATE_WIDTHS[style] - 2
    return _width_of(value)


def _sheet_body(sheet: ToolSheet, ncols: int, style_ids: Mapping[str, int] | None
                ) -> tuple[list[bytes], list[float]]:
    """The <row> elements (UTF-8: a long log is never one more text copy) and each
    column's widest value (of the first 2,000 rows)."""
    letters = [column_letter(i) for i in range(ncols)]
    opening = [f'<c r="{letter}' for letter in letters]
    formats = column_formats(sheet)
    col_style = [formats.get(i) for i in range(ncols)]
    longest = [0.0] * ncols
    body: list[str] = []
    # A log repeats its values (statuses, plans, dates, reasons): each distinct value is
    # turned into XML once per column (keyed with its type: True, 1 and 1.0 differ).
    ends: list[dict[object, str | None]] = [{} for _ in range(ncols)]
    cell_styles = sheet.styles
    heights = sheet.heights
    for r, row in enumerate([sheet.header, *sheet.rows], start=1):
        if heights and r in heights:
            cells = [f'<row r="{r}" ht="{heights[r]:g}" customHeight="1">']
        else:
            cells = [f'<row r="{r}">']
        for i, raw in enumerate(row):
            if r == 1 or (cell_styles and (r, i) in cell_styles):
                end = _one_end(raw, cell_styles.get((r, i)) or (
                    sheet.header_style if r == 1 else _style_of(raw, col_style[i])), style_ids)
            else:
                key = raw if type(raw) is str else (type(raw), raw)
                try:
                    end = ends[i].get(key, _MISSING)
                except TypeError:  # a value that cannot be a key: made each time
                    end = _MISSING
                if end is _MISSING:
                    end = _one_end(raw, _style_of(raw, col_style[i]), style_ids)
                    with contextlib.suppress(TypeError):
                        ends[i][key] = end
            if end is None:
                continue
            cells.append(f'{opening[i]}{r}"{end}')
            if r <= 2000 and (r > 1 or sheet.header_style):  # a sample sizes the columns
                value = to_cell_value(raw)
                longest[i] = max(longest[i], _display_width(
                    value, _style_of(raw, col_style[i]) if r > 1 else None))  # type: ignore[arg-type]
        cells.append("</row>")
        body.append("".join(cells).encode("utf-8"))
    return body, longest


def _one_end(raw: object, style: str | None, style_ids: Mapping[str, int] | None) -> str | None:
    """One cell's XML after its `<c r="A1"`, text cleaned (`_finish_text`)."""
    value = raw if type(raw) is str else to_cell_value(raw)
    if value is None:
        return None
    end = _s(style, style_ids) + _cell_end(value)
    return _finish_text(end) if type(value) is str else end


def defined_names(sheet: ToolSheet) -> dict[str, str]:
    """The workbook-level names the sheet needs (name -> formula): its print titles and
    the hidden range of its autofilter."""
    quoted = "'" + sheet.name.replace("'", "''") + "'"
    names = {}
    if sheet.title_rows:
        names["_xlnm.Print_Titles"] = f"{quoted}!$1:${sheet.title_rows}"
    ref = sheet.filter_ref()
    if ref:
        first, last = ref.split(":")
        names["_xlnm._FilterDatabase"] = f"{quoted}!{_absolute(first)}:{_absolute(last)}"
    return names


def _absolute(cell: str) -> str:
    found = re.fullmatch(r"([A-Z]+)(\d+)", cell)
    assert found
    return f"${found.group(1)}${found.group(2)}"


def _sheet_view(sheet: ToolSheet) -> str:
    n = sheet.frozen_rows
    if not n:
        return ('<sheetViews><sheetView workbookViewId="0"><selection activeCell="A1" '
                'sqref="A1"/></sheetView></sheetViews>')
    return (f'<sheetViews><sheetView workbookViewId="0"><pane ySplit="{n}" '
            f'topLeftCell="A{n + 1}" activePane="bottomLeft" state="frozen"/>'
            f'<selection pane="bottomLeft" activeCell="A{n + 1}" sqref="A{n + 1}"/>'
            "</sheetView></sheetViews>")


def sheet_xml(sheet: ToolSheet, style_ids: Mapping[str, int] | None = None) -> bytes:
    """The worksheet part for `sheet`: styled frozen header, filter, widths, print setup.

    `style_ids` gives each style name its cellXfs index in the workbook (see
    `package.append_styles`); without it cells carry no style. When the sheet has charts,
    it points to its drawing as relationship "rId1".
    """
    ncols = sheet.ncols
    letters = [column_letter(i) for i in range(ncols)]
    body, longest = _sheet_body(sheet, ncols, style_ids)
    last = f"{letters[-1]}{len(sheet.rows) + 1}" if ncols else "A1"
    formats = column_formats(sheet)
    widths = {i: min(60.0, max(8.0, longest[i] + 2.0)) for i in range(ncols)}
    widths.update({i: max(widths[i], DATE_WIDTHS[f]) for i, f in formats.items()
                   if f in DATE_WIDTHS and i < ncols})
    widths.update(_explicit_widths(sheet, ncols))
    if sheet.header_style == "header":  # a column is never narrower than its name
        for i, name in enumerate(sheet.header):
            if name and i < ncols:
                widths[i] = max(widths[i], len(name) + 2.0)
    hidden = set(sheet.hidden_cols)
    cols = "".join(
        f'<col min="{i + 1}" max="{i + 1}" width="{w:g}" customWidth="1"'
        + (' hidden="1"' if i in hidden else "") + "/>"
        for i, w in sorted(widths.items())
    )
    ref = sheet.filter_ref()
    orientation = "landscape" if sheet.landscape else "portrait"
    parts = [
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n',
        f'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        f'xmlns:r="{REL_NS}">',
        '<sheetPr><pageSetUpPr fitToPage="1"/></sheetPr>',
        f'<dimension ref="A1:{last}"/>',
        _sheet_view(sheet),
        '<sheetFormatPr defaultRowHeight="15"/>',
        f"<cols>{cols}</cols>" if cols else "",
        "<sheetData>",
        *body,
        "</sheetData>",
        # Excel wants the hidden _xlnm._FilterDatabase name beside it (see defined_names).
        f'<autoFilter ref="{ref}"/>' if ref else "",
        '<printOptions horizontalCentered="1"/>',
        '<pageMargins left="0.4" right="0.4" top="0.6" bottom="0.6" header="0.3" '
        'footer="0.3"/>',
        # A4, one page wide, as many pages tall as it takes.
        f'<pageSetup paperSize="9" orientation="{orientation}" fitToWidth="1" '
        'fitToHeight="0"/>',
        "<headerFooter><oddFooter>&amp;L&amp;A&amp;R&amp;P / &amp;N</oddFooter>"
        "</headerFooter>",
        # Ids such as "00123" are text on purpose: no green "number stored as text" flags.
        f'<ignoredErrors><ignoredError sqref="A1:{last}" numberStoredAsText="1"/>'
        "</ignoredErrors>",
        '<drawing r:id="rId1"/>' if sheet.charts else "",
        "</worksheet>",
    ]
    return b"".join(part if type(part) is bytes else part.encode("utf-8") for part in parts)
