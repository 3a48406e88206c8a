"""A tool sheet and its worksheet XML: a frozen header, column widths, inline strings only.

Values become cells here (numbers, booleans, ISO dates, text that is never a formula).
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


@dataclass(frozen=True)
class Chart:
    """A native chart of some columns of a tool sheet, placed right of its data.

    Column indexes count from 0 in `ToolSheet.header`; values must be numbers.
    """

    title: str
    category_col: int
    value_cols: tuple[int, ...]
    kind: Literal["bar", "line"] = "bar"


@dataclass(frozen=True)
class ToolSheet:
    """One sheet the tool owns: a header row, then rows of plain values.

    Values may be str, int, float, bool, date, datetime or None. Dates are written as ISO
    text (no styles needed); strings are always text, never formulas. `widths` maps a
    column (0-based index, header name or column letter) to a width in characters;
    other columns get a width from their content.
    """

    name: str
    header: tuple[str, ...]
    rows: Sequence[Sequence[object]]
    widths: Mapping[int | str, float] = field(default_factory=dict)
    charts: tuple[Chart, ...] = ()
    # This sheet's (name, header) in the other languages: a sheet of such a name with such
    # a header is this tool sheet written before the workbook's locale changed; writing
    # renames and replaces it.
    former: tuple[tuple[str, tuple[str, ...]], ...] = ()


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
        return f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, dt.date):
        return value.isoformat()
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
    CRs and "_xHHHH_" are handled once for the whole sheet by `_finish_text` (the markup
    has none of them)."""
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


def _explicit_widths(sheet: ToolSheet, ncols: int) -> dict[int, float]:
    widths: dict[int, float] = {}
    letters = {column_letter(i): i for i in range(ncols)}
    for key, width in sheet.widths.items():
        if isinstance(key, int):
            index = key
        elif key in sheet.header:
            index = sheet.header.index(key)
        elif key.upper() in letters:
            index = letters[key.upper()]
        else:
            raise ValueError(f'{sheet.name}: no column "{key}" to give a width')
        widths[index] = float(width)
    return widths


def sheet_xml(sheet: ToolSheet) -> bytes:
    """The worksheet part for `sheet`: frozen header, column widths, inline strings only.

    When the sheet has charts, it points to its drawing as relationship "rId1".
    """
    ncols = max([len(sheet.header), *(len(row) for row in sheet.rows)], default=0)
    letters = [column_letter(i) for i in range(ncols)]
    opening = [f'<c r="{letter}' for letter in letters]
    longest = [0] * ncols
    body: list[str] = []
    # A log repeats its values (statuses, plans, dates, reasons): each distinct value is
    # turned into XML once (keyed with its type: True, 1 and 1.0 are different cells).
    ends: dict[object, str | None] = {}
    for r, row in enumerate([sheet.header, *sheet.rows], start=1):
        cells = [f'<row r="{r}">']
        for i, raw in enumerate(row):
            key = raw if type(raw) is str else (type(raw), raw)
            try:
                end = ends.get(key, _MISSING)
            except TypeError:  # a value that cannot be a key: made each time
                end = _MISSING
            if end is _MISSING:
                value = raw if type(raw) is str else to_cell_value(raw)
                end = None if value is None else _cell_end(value)
                with contextlib.suppress(TypeError):
                    ends[key] = end
            if end is None:
                continue
            cells.append(f'{opening[i]}{r}"{end}')
            if r <= 2000:  # a sample is enough to size the columns
                longest[i] = max(longest[i], _width_of(to_cell_value(raw)))  # type: ignore[arg-type]
        cells.append("</row>")
        body.append("".join(cells))
    last = f"{letters[-1]}{len(sheet.rows) + 1}" if ncols else "A1"
    widths = {i: min(60.0, max(8.0, longest[i] + 2.0)) for i in range(ncols)}
    widths.update(_explicit_widths(sheet, ncols))
    cols = "".join(
        f'<col min="{i + 1}" max="{i + 1}" width="{w:g}" customWidth="1"/>'
        for i, w in sorted(widths.items())
    )
    parts = [
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n',
        f'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        f'xmlns:r="{REL_NS}">',
        f'<dimension ref="A1:{last}"/>',
        '<sheetViews><sheetView workbookViewId="0"><pane ySplit="1" topLeftCell="A2" '
        'activePane="bottomLeft" state="frozen"/><selection pane="bottomLeft" '
        'activeCell="A2" sqref="A2"/></sheetView></sheetViews>',
        '<sheetFormatPr defaultRowHeight="15"/>',
        f"<cols>{cols}</cols>" if cols else "",
        "<sheetData>",
        *body,
        "</sheetData>",
        # No <autoFilter>: without a hidden _xlnm._FilterDatabase name in workbook.xml
        # (which would then change on every write) Excel can crash when sorting and
        # LibreOffice shows no filter buttons.
        '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" '
        'footer="0.3"/>',
        # Ids such as "00123" are text on purpose: no green "number stored as text" flags.
        f'<ignoredErrors><ignoredError sqref="A1:{last}" numberStoredAsText="1"/>'
        "</ignoredErrors>",
        '<drawing r:id="rId1"/>' if sheet.charts else "",
        "</worksheet>",
    ]
    return _finish_text("".join(parts)).encode("utf-8")
