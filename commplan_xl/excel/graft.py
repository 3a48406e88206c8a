"""Write the tool's own sheets into the staff's .xlsx without touching anything else.

openpyxl rebuilds the whole file when it saves and loses what staff made (shapes, charts,
cross-sheet drop-downs, cached formula results...). So the workbook is never loaded and
saved: each tool sheet's worksheet XML is built here as text and grafted into the zip; every
other member is copied unchanged. Only the tool sheet's own parts change, plus, when a sheet
is new, xl/workbook.xml, its .rels and [Content_Types].xml (one element inserted in each).
docProps/app.xml (a cached list of sheet titles) is left as it was: Excel, LibreOffice and
openpyxl do not rely on it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import numbers
import os
import posixpath
import re
import shutil
import struct
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import quote, unquote
from xml.etree import ElementTree as ET

from commplan_xl.problems import CommplanError, WorkbookLocked

log = logging.getLogger(__name__)

REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
REL_TYPE = REL_NS + "/"
CT_WORKSHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
CT_DRAWING = "application/vnd.openxmlformats-officedocument.drawing+xml"
CT_CHART = "application/vnd.openxmlformats-officedocument.drawingml.chart+xml"
STRICT_MAIN = "http://purl.oclc.org/ooxml/spreadsheetml/main"

MAX_CELL_TEXT = 32767  # Excel's limit; longer text makes Excel "repair" the file
MAX_EXACT_INT = 10**15  # Excel keeps 15 significant digits; longer ints are written as text
_BAD_SHEET_CHARS = set("[]:*?/\\")
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Excel reads "_x0041_" in a string as the character it encodes; "_x005F_" keeps it literal.
_OOXML_ESCAPE = re.compile(r"_(x[0-9A-Fa-f]{4}_)")
_XML_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_XML_ATTR = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})


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


# ---------------------------------------------------------------- locks and sentences


def lock_file(path: Path) -> Path | None:
    """The lock file Excel (`~$name`) or LibreOffice (`.~lock.name#`) keeps beside an open
    workbook, or None when there is none."""
    path = Path(path)
    candidates = [path.with_name(f"~${path.name}"), path.with_name(f".~lock.{path.name}#")]
    if len(path.stem) > 8:
        # Office's owner file of a long name replaces its first two characters.
        candidates.append(path.with_name(f"~${path.name[2:]}"))
    return next((c for c in candidates if c.exists()), None)


def _locked(path: Path, sheets: Sequence[ToolSheet], lock: Path | None) -> WorkbookLocked:
    """The refusal; each caller adds what it means for its own sheets."""
    app = "another program"
    if lock:
        app = "LibreOffice" if lock.name.startswith(".~lock.") else "Excel"
    where = f" ({lock})" if lock else " (it could not be replaced)"
    names = ", ".join(s.name for s in sheets)
    return WorkbookLocked(f"{path.name} is open in {app}{where}: the {names} sheet was not "
                          "written")


def check_sheet_name(name: str) -> None:
    """Raise ValueError unless Excel accepts `name` as a sheet name."""
    if not 0 < len(name) <= 31:
        raise ValueError(f'sheet name "{name}" must have 1 to 31 characters')
    if _BAD_SHEET_CHARS & set(name) or name.startswith("'") or name.endswith("'"):
        raise ValueError(f'sheet name "{name}" may not contain [ ] : * ? / \\ or edge quotes')
    if name.casefold() == "history":
        raise ValueError('"History" is a sheet name Excel reserves')


# ---------------------------------------------------------------- worksheet XML


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


def cell_value(value: object) -> str | int | float | bool | None:
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
                value = raw if type(raw) is str else cell_value(raw)
                end = None if value is None else _cell_end(value)
                with contextlib.suppress(TypeError):
                    ends[key] = end
            if end is None:
                continue
            cells.append(f'{opening[i]}{r}"{end}')
            if r <= 2000:  # a sample is enough to size the columns
                longest[i] = max(longest[i], _width_of(cell_value(raw)))  # type: ignore[arg-type]
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


# ---------------------------------------------------------------- charts


def _ref(sheet: str, col: int, first: int, last: int | None = None) -> str:
    """An absolute reference to a cell or a column range, escaped for XML text."""
    quoted = "'" + sheet.replace("'", "''") + "'"
    letter = column_letter(col)
    ref = f"{quoted}!${letter}${first}"
    if last is not None:
        ref += f":${letter}${last}"
    return ref.translate(_XML_TEXT)


def chart_xml(sheet: ToolSheet, chart: Chart) -> bytes:
    """A DrawingML bar or line chart of `chart.value_cols` against `chart.category_col`."""
    last = max(len(sheet.rows), 1) + 1
    series = []
    for n, col in enumerate(chart.value_cols):
        extra = '<c:marker><c:symbol val="none"/></c:marker>' if chart.kind == "line" else (
            '<c:invertIfNegative val="0"/>')
        smooth = '<c:smooth val="0"/>' if chart.kind == "line" else ""
        series.append(
            f'<c:ser><c:idx val="{n}"/><c:order val="{n}"/>'
            f"<c:tx><c:strRef><c:f>{_ref(sheet.name, col, 1)}</c:f></c:strRef></c:tx>{extra}"
            f"<c:cat><c:strRef><c:f>{_ref(sheet.name, chart.category_col, 2, last)}</c:f>"
            f"</c:strRef></c:cat>"
            f"<c:val><c:numRef><c:f>{_ref(sheet.name, col, 2, last)}</c:f></c:numRef></c:val>"
            f"{smooth}</c:ser>"
        )
    if chart.kind == "line":
        plot = ('<c:lineChart><c:grouping val="standard"/><c:varyColors val="0"/>'
                + "".join(series)
                + '<c:marker val="1"/><c:axId val="10"/><c:axId val="100"/></c:lineChart>')
    else:
        plot = ('<c:barChart><c:barDir val="col"/><c:grouping val="clustered"/>'
                '<c:varyColors val="0"/>' + "".join(series)
                + '<c:gapWidth val="150"/><c:axId val="10"/><c:axId val="100"/></c:barChart>')
    title = clean_text(chart.title).translate(_XML_TEXT)
    xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<c:chartSpace xmlns:c="http://schemas.openxmlformats.org/drawingml/2006/chart" '
        'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
        f'xmlns:r="{REL_NS}"><c:roundedCorners val="0"/><c:chart>'
        f"<c:title><c:tx><c:rich><a:bodyPr/><a:p><a:r><a:t>{title}</a:t></a:r></a:p>"
        '</c:rich></c:tx><c:overlay val="0"/></c:title><c:autoTitleDeleted val="0"/>'
        f"<c:plotArea><c:layout/>{plot}"
        '<c:catAx><c:axId val="10"/><c:scaling><c:orientation val="minMax"/></c:scaling>'
        '<c:delete val="0"/><c:axPos val="b"/><c:majorTickMark val="out"/>'
        '<c:minorTickMark val="none"/><c:tickLblPos val="nextTo"/><c:crossAx val="100"/>'
        '<c:crosses val="autoZero"/><c:auto val="1"/><c:lblAlgn val="ctr"/>'
        '<c:lblOffset val="100"/></c:catAx>'
        '<c:valAx><c:axId val="100"/><c:scaling><c:orientation val="minMax"/></c:scaling>'
        '<c:delete val="0"/><c:axPos val="l"/><c:majorGridlines/>'
        '<c:majorTickMark val="out"/><c:minorTickMark val="none"/>'
        '<c:tickLblPos val="nextTo"/><c:crossAx val="10"/><c:crosses val="autoZero"/>'
        '<c:crossBetween val="between"/></c:valAx></c:plotArea>'
        '<c:legend><c:legendPos val="r"/><c:overlay val="0"/></c:legend>'
        '<c:plotVisOnly val="1"/><c:dispBlanksAs val="gap"/></c:chart></c:chartSpace>'
    )
    return xml.encode("utf-8")


def drawing_xml(sheet: ToolSheet) -> bytes:
    """The drawing part holding the sheet's charts (relationship ids rId1, rId2, ...),
    stacked right of the data."""
    ncols = max([len(sheet.header), *(len(row) for row in sheet.rows)], default=0)
    anchors = []
    for n, chart in enumerate(sheet.charts):
        name = clean_text(chart.title).translate(_XML_ATTR) or f"Chart {n + 1}"
        anchors.append(
            f"<xdr:oneCellAnchor><xdr:from><xdr:col>{ncols + 1}</xdr:col><xdr:colOff>0"
            f"</xdr:colOff><xdr:row>{1 + 18 * n}</xdr:row><xdr:rowOff>0</xdr:rowOff></xdr:from>"
            '<xdr:ext cx="6480000" cy="3240000"/><xdr:graphicFrame macro="">'
            f'<xdr:nvGraphicFramePr><xdr:cNvPr id="{n + 2}" name="{name}"/>'
            "<xdr:cNvGraphicFramePr/></xdr:nvGraphicFramePr>"
            '<xdr:xfrm><a:off x="0" y="0"/><a:ext cx="0" cy="0"/></xdr:xfrm><a:graphic>'
            '<a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/chart">'
            '<c:chart xmlns:c="http://schemas.openxmlformats.org/drawingml/2006/chart" '
            f'r:id="rId{n + 1}"/></a:graphicData></a:graphic></xdr:graphicFrame>'
            "<xdr:clientData/></xdr:oneCellAnchor>"
        )
    xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<xdr:wsDr xmlns:xdr="http://schemas.openxmlformats.org/drawingml/2006/'
        'spreadsheetDrawing" xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
        f'xmlns:r="{REL_NS}">{"".join(anchors)}</xdr:wsDr>'
    )
    return xml.encode("utf-8")


def _check_charts(sheet: ToolSheet) -> None:
    width = len(sheet.header)
    for chart in sheet.charts:
        cols = (chart.category_col, *chart.value_cols)
        if not chart.value_cols or any(not 0 <= c < width for c in cols):
            raise ValueError(f"{sheet.name}: chart {chart.title!r} names a column not in header")


def _rels_xml(rels: Iterable[tuple[str, str, str]]) -> bytes:
    items = "".join(
        f'<Relationship Id="{rid}" Type="{REL_TYPE}{kind}" Target="{target}"/>'
        for rid, kind, target in rels
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f"{items}</Relationships>"
    ).encode()


# ---------------------------------------------------------------- the package


def rels_name(part: str) -> str:
    """The relationships member of a part: xl/workbook.xml → xl/_rels/workbook.xml.rels."""
    folder, base = posixpath.split(part)
    return posixpath.join(folder, "_rels", base + ".rels")


def resolve(source: str, target: str) -> str:
    """The member name a relationship target of `source` points to (absolute or relative)."""
    target = unquote(target)
    if target.startswith("/"):
        return posixpath.normpath(target.lstrip("/"))
    return posixpath.normpath(posixpath.join(posixpath.dirname(source), target))


def _relative(source: str, part: str) -> str:
    return quote(posixpath.relpath(part, posixpath.dirname(source) or "."))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


@dataclass(frozen=True)
class _Rel:
    rid: str
    type: str
    target: str  # resolved member name ("" for external targets)


class _Package:
    """Read access to the members of an open zip, by case-insensitive part name."""

    def __init__(self, zin: zipfile.ZipFile) -> None:
        self.zin = zin
        self.names = {info.filename.lower(): info.filename for info in zin.infolist()}

    def has(self, part: str) -> bool:
        return part.lower() in self.names

    def name(self, part: str) -> str:
        return self.names.get(part.lower(), part)

    def read(self, part: str) -> bytes:
        return self.zin.read(self.names[part.lower()])

    def rels(self, source: str) -> list[_Rel]:
        name = rels_name(source)
        if not self.has(name):
            return []
        out = []
        for el in ET.fromstring(self.read(name)):
            if _local(el.tag) != "Relationship":
                continue
            external = el.get("TargetMode", "").lower() == "external"
            target = "" if external else self.name(resolve(source, el.get("Target", "")))
            out.append(_Rel(el.get("Id", ""), el.get("Type", ""), target))
        return out


def _insert_before_close(xml: str, element: str, fragment: str, member: str) -> str:
    """Insert `fragment` before the closing tag of `element`, with that tag's prefix."""
    closes = list(re.finditer(rf"</([A-Za-z_][\w.\-]*:)?{element}\s*>", xml))
    if not closes:
        raise CommplanError(f"The workbook's {member} has no <{element}> list; is it damaged?")
    close = closes[-1]
    prefix = close.group(1) or ""
    return xml[: close.start()] + fragment.replace("<§", f"<{prefix}") + xml[close.start():]


def _free_part(pattern: str, taken: set[str]) -> str:
    n = 1
    while pattern.format(n).lower() in taken:
        n += 1
    part = pattern.format(n)
    taken.add(part.lower())
    return part


@dataclass
class _Graft:
    """What changes in the zip: members replaced, removed, and added (in order)."""

    replace: dict[str, bytes] = field(default_factory=dict)
    remove: set[str] = field(default_factory=set)
    add: dict[str, bytes] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)  # part → content type to add
    drop_overrides: set[str] = field(default_factory=set)


def _owned_parts(pkg: _Package, sheet_part: str) -> set[str]:
    """Parts reachable only from the old tool sheet (its drawing, charts...): they go."""
    reach: set[str] = set()
    stack = [sheet_part]
    while stack:
        for rel in pkg.rels(stack.pop()):
            if rel.target and pkg.has(rel.target) and rel.target not in reach:
                reach.add(rel.target)
                stack.append(rel.target)
    sources = {sheet_part, *reach}
    source_rels = {rels_name(p).lower() for p in sources}
    elsewhere: set[str] = set()
    for lower, member in pkg.names.items():
        if lower.endswith(".rels") and lower not in source_rels:
            folder = posixpath.dirname(posixpath.dirname(member))
            source = posixpath.join(folder, posixpath.basename(member)[: -len(".rels")])
            elsewhere.update(r.target for r in pkg.rels(source) if r.target)
    return {p for p in reach if p not in elsewhere}


def _plan(pkg: _Package, sheets: Sequence[ToolSheet], built: Mapping[str, bytes]) -> _Graft:
    graft = _Graft()
    root_rels = [r for r in pkg.rels("") if r.type.endswith("/officeDocument")]
    if not root_rels:
        raise CommplanError("The file has no workbook part; is it really an .xlsx workbook?")
    book = root_rels[0].target
    book_xml = pkg.read(book).decode("utf-8")
    root = ET.fromstring(book_xml)
    if root.tag.startswith("{" + STRICT_MAIN):
        raise CommplanError("The workbook is saved as 'Strict Open XML'; save it in Excel as "
                            "an ordinary 'Excel Workbook (.xlsx)' and run again.")
    by_rid = {r.rid: r for r in pkg.rels(book)}
    existing: dict[str, tuple[str, str]] = {}  # name casefolded → (part, sheetId)
    sheet_ids = [0]
    for el in root.iter():
        if _local(el.tag) != "sheet":
            continue
        sheet_ids.append(int(el.get("sheetId", "0")))
        rid = next((v for k, v in el.attrib.items() if k.endswith("}id")), "")
        if rid in by_rid:
            existing[el.get("name", "").casefold()] = (by_rid[rid].target, el.get("sheetId", ""))
    taken = set(pkg.names)
    rid_numbers = [int(m) for r in by_rid for m in re.findall(r"^rId(\d+)$", r)] or [0]
    next_rid = max(rid_numbers) + 1
    base = posixpath.dirname(book)
    new_sheets, new_rels = [], []
    replaced_ids = {existing[s.name.casefold()][1] for s in sheets if s.name.casefold() in existing}
    _drop_stale_calc_chain(graft, pkg, book, by_rid, replaced_ids)

    for sheet in sheets:
        part = existing.get(sheet.name.casefold(), ("", ""))[0]
        if not part:
            part = _free_part(posixpath.join(base, "worksheets", "sheet{}.xml"), taken)
            sheet_ids.append(max(sheet_ids) + 1)
            rid = f"rId{next_rid}"
            next_rid += 1
            graft.add[part] = built[sheet.name]
            graft.overrides[part] = CT_WORKSHEET
            new_sheets.append((sheet.name, sheet_ids[-1], rid))
            new_rels.append((rid, _relative(book, part)))
        else:
            graft.replace[pkg.name(part)] = built[sheet.name]
            old_rels = rels_name(part)
            if pkg.has(old_rels):
                for gone in _owned_parts(pkg, part):
                    graft.remove.add(gone)
                    graft.remove.add(pkg.name(rels_name(gone)))
                    graft.drop_overrides.add(gone)
                graft.remove.add(pkg.name(old_rels))
                # Freed names are reused, so an unchanged chart keeps its part names.
                taken -= {name.lower() for name in graft.remove}
        if sheet.charts:
            _add_charts(graft, sheet, part, base, taken)

    if new_sheets:
        _edit_workbook(graft, pkg, book, book_xml, new_sheets, new_rels)
    if graft.overrides or graft.drop_overrides:
        _edit_content_types(graft, pkg)
    return graft


def _drop_stale_calc_chain(
    graft: _Graft, pkg: _Package, book: str, by_rid: Mapping[str, _Rel], sheet_ids: set[str]
) -> None:
    """Drop xl/calcChain.xml when it lists cells of a sheet being replaced.

    Formulas someone typed into a tool sheet would otherwise stay in the calc chain with
    no formula behind them, and Excel reports the file as damaged. Excel rebuilds the
    chain by itself.
    """
    rel = next((r for r in by_rid.values() if r.type.endswith("/calcChain")), None)
    if rel is None or not sheet_ids or not pkg.has(rel.target):
        return
    current = ""
    for el in ET.fromstring(pkg.read(rel.target)):
        current = el.get("i", current)  # a cell without i is on the previous cell's sheet
        if current in sheet_ids:
            break
    else:
        return
    graft.remove.add(rel.target)
    graft.drop_overrides.add(rel.target)
    member = pkg.name(rels_name(book))
    xml = pkg.read(member).decode("utf-8")
    rid = re.escape(rel.rid)
    xml = re.sub(rf"<([\w.\-]+:)?Relationship\b[^>]*\bId\s*=\s*[\"']{rid}[\"'][^>]*/>", "", xml)
    graft.replace[member] = xml.encode("utf-8")


def _add_charts(graft: _Graft, sheet: ToolSheet, part: str, base: str, taken: set[str]) -> None:
    drawing = _free_part(posixpath.join(base, "drawings", "drawing{}.xml"), taken)
    charts = []
    for chart in sheet.charts:
        chart_part = _free_part(posixpath.join(base, "charts", "chart{}.xml"), taken)
        graft.add[chart_part] = chart_xml(sheet, chart)
        graft.overrides[chart_part] = CT_CHART
        charts.append(chart_part)
    graft.add[drawing] = drawing_xml(sheet)
    graft.overrides[drawing] = CT_DRAWING
    graft.add[rels_name(drawing)] = _rels_xml(
        (f"rId{n + 1}", "chart", _relative(drawing, c)) for n, c in enumerate(charts)
    )
    graft.add[rels_name(part)] = _rels_xml([("rId1", "drawing", _relative(part, drawing))])
    taken.add(rels_name(drawing).lower())


def _edit_workbook(
    graft: _Graft,
    pkg: _Package,
    book: str,
    book_xml: str,
    new_sheets: list[tuple[str, int, str]],
    new_rels: list[tuple[str, str]],
) -> None:
    start = re.search(r"<(?![?!])[^>]*>", book_xml)
    declared = re.search(rf'xmlns:([\w.\-]+)\s*=\s*["\']{re.escape(REL_NS)}["\']',
                         start.group(0) if start else "")
    fragment = ""
    for name, sheet_id, rid in new_sheets:
        rid_attr = (f'{declared.group(1)}:id="{rid}"' if declared
                    else f'r:id="{rid}" xmlns:r="{REL_NS}"')
        fragment += f'<§sheet name="{name.translate(_XML_ATTR)}" sheetId="{sheet_id}" {rid_attr}/>'
    graft.replace[book] = _insert_before_close(book_xml, "sheets", fragment, book).encode()
    rels_member = pkg.name(rels_name(book))
    rels_xml = graft.replace.get(rels_member, b"") or pkg.read(rels_member)
    rels_xml = rels_xml.decode("utf-8")
    fragment = "".join(
        f'<§Relationship Id="{rid}" Type="{REL_TYPE}worksheet" Target="{target}"/>'
        for rid, target in new_rels
    )
    graft.replace[rels_member] = _insert_before_close(
        rels_xml, "Relationships", fragment, rels_member).encode()


def _edit_content_types(graft: _Graft, pkg: _Package) -> None:
    member = pkg.name("[Content_Types].xml")
    xml = pkg.read(member).decode("utf-8")
    for part in graft.drop_overrides - set(graft.overrides):
        xml = re.sub(
            rf"<([\w.\-]+:)?Override\b[^>]*PartName\s*=\s*[\"']/{re.escape(part)}[\"'][^>]*/>",
            "", xml, flags=re.IGNORECASE,
        )
    fragment = "".join(
        f'<§Override PartName="/{part}" ContentType="{kind}"/>'
        for part, kind in graft.overrides.items()
        if part not in graft.drop_overrides
    )
    if fragment:
        xml = _insert_before_close(xml, "Types", fragment, member)
    graft.replace[member] = xml.encode("utf-8")


def _deflate(data: bytes) -> tuple[int, bytes]:
    """(CRC-32, raw deflate) of a zip member."""
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    return zlib.crc32(data), packer.compress(data) + packer.flush()


class _Deflating(bytes):
    """A part's bytes, with its deflated form being made in a thread meanwhile (zlib works
    without the GIL: a year's SentLog, 135 MB of XML, takes 1.6 s to deflate)."""

    packed: Future[tuple[int, bytes]]


class _ZipWriter:
    """A minimal zip writer that can copy a member's compressed bytes as they are.

    zipfile can only write by compressing again, which for a 50,000-row staff sheet costs
    most of a second; copying the raw bytes keeps staff members identical and is instant.
    """

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.central: list[bytes] = []

    def _entry(self, name: str, method: int, date_time: tuple[int, ...], crc: int,
               csize: int, usize: int, external_attr: int, data: bytes,
               made_by: int = 20) -> None:
        encoded = name.encode("utf-8")
        flags = 0x800 if not name.isascii() else 0  # bit 11: the name is UTF-8
        year, month, day, hour, minute, second = date_time[:6]
        dos_date = (max(year, 1980) - 1980) << 9 | month << 5 | day
        dos_time = hour << 11 | minute << 5 | second // 2
        offset = self.out.tell()
        if max(offset, csize, usize) >= 0xFFFFFFFF or len(self.central) >= 0xFFFF:
            raise CommplanError("The workbook is too large to be written (over 4 GB).")
        fields = (20, flags, method, dos_time, dos_date, crc, csize, usize, len(encoded))
        self.out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields, 0) + encoded)
        self.out.write(data)
        self.central.append(
            struct.pack("<4s6H3L5H2L", b"PK\x01\x02", made_by, *fields, 0, 0, 0, 0,
                        external_attr, offset) + encoded
        )

    def copy_raw(self, src: BinaryIO, info: zipfile.ZipInfo, name: str) -> None:
        """Copy member `info` of the zip open as `src` without decompressing it."""
        src.seek(info.header_offset)
        header = src.read(30)
        if header[:4] != b"PK\x03\x04" or info.flag_bits & 1:
            raise CommplanError("The workbook's zip structure is damaged or encrypted.")
        name_len, extra_len = struct.unpack("<2H", header[26:30])
        src.seek(info.header_offset + 30 + name_len + extra_len)
        data = src.read(info.compress_size)
        self._entry(name, info.compress_type, info.date_time, info.CRC, info.compress_size,
                    info.file_size, info.external_attr, data,
                    made_by=info.create_system << 8 | min(info.create_version, 63))

    def write(self, name: str, data: bytes, date_time: tuple[int, ...],
              external_attr: int = 0o600 << 16) -> None:
        """Add a member with `data` deflated."""
        crc, packed = data.packed.result() if isinstance(data, _Deflating) else _deflate(data)
        self._entry(name, zipfile.ZIP_DEFLATED, date_time, crc, len(packed),
                    len(data), external_attr, packed)


    def close(self) -> None:
        start = self.out.tell()
        directory = b"".join(self.central)
        self.out.write(directory)
        count = len(self.central)
        self.out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count,
                                   len(directory), start, 0))


def _copy_zip(src: BinaryIO, zin: zipfile.ZipFile, out: Path, graft: _Graft) -> None:
    """Write every member of `zin` to `out` in order, with the graft's changes.

    Unchanged members keep their compressed bytes. A removed member that is added again
    (the same chart rewritten) keeps its place.
    """
    removed = {name.lower() for name in graft.remove}
    added = {name.lower(): name for name in graft.add}
    with open(out, "wb") as f:
        writer = _ZipWriter(f)
        for info in zin.infolist():
            lower = info.filename.lower()
            readded = added.pop(lower, None)
            if lower in removed and readded is None:
                continue
            name = readded or info.filename
            data = graft.replace.get(name, graft.add.get(name))
            if data is not None:
                writer.write(name, data, info.date_time, info.external_attr)
            elif info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                writer.copy_raw(src, info, name)
            else:
                writer.write(name, zin.read(info), info.date_time, info.external_attr)
        stamp = time.localtime()[:6]
        for name in added.values():
            writer.write(name, graft.add[name], stamp)
        writer.close()
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------- writing the file


def file_stat(path: Path) -> tuple[int, int]:
    """(size, mtime_ns) of the workbook: take it when reading, pass it as `expected_stat`."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _stat_retrying(path: Path, tries: int = 10) -> tuple[int, int]:
    for attempt in range(tries):
        try:
            return file_stat(path)
        except FileNotFoundError:
            # Excel replaces the file when it saves: it is briefly missing.
            if attempt == tries - 1:
                raise CommplanError(f"{path.name} was not found in {path.parent}.") from None
            time.sleep(0.1)
    raise AssertionError("unreachable")


def _graft_to_temp(path: Path, sheets: Sequence[ToolSheet], built: Mapping[str, bytes]) -> Path:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        with open(path, "rb") as src:
            try:
                zin = zipfile.ZipFile(src)
            except zipfile.BadZipFile:
                raise CommplanError(f"{path.name} is not an Excel workbook (.xlsx).") from None
            with zin:
                try:
                    graft = _plan(_Package(zin), sheets, built)
                except (ET.ParseError, KeyError, UnicodeDecodeError) as exc:
                    raise CommplanError(
                        f"{path.name} has a damaged part ({exc}); open it in Excel, save it "
                        "and run again.") from None
                _copy_zip(src, zin, tmp, graft)
        with contextlib.suppress(OSError):  # keep the staff's permissions, not mkstemp's 0600
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        return tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_BACKUP = r"^{stem}\.(\d{{4}}-\d\d-\d\d-\d{{6}})(?:-(\d+))?{suffix}$"


def backups(path: Path, backup_dir: Path) -> list[Path]:
    """The dated backups of `path` in `backup_dir`, oldest first."""
    pattern = re.compile(_BACKUP.format(stem=re.escape(path.stem), suffix=re.escape(path.suffix)))
    found = []
    for entry in backup_dir.glob(f"{path.stem}.*{path.suffix}"):
        m = pattern.match(entry.name)
        if m:
            found.append(((m.group(1), int(m.group(2) or 1)), entry))
    return [entry for _key, entry in sorted(found)]


def _backup(path: Path, backup_dir: Path, keep: int, now: Callable[[], dt.datetime]) -> None:
    backup_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{now():%Y-%m-%d-%H%M%S}"
    target = backup_dir / f"{path.stem}.{stamp}{path.suffix}"
    n = 1
    while target.exists():
        n += 1
        target = backup_dir / f"{path.stem}.{stamp}-{n}{path.suffix}"
    shutil.copy2(path, target)
    for old in backups(path, backup_dir)[:-keep]:
        with contextlib.suppress(OSError):
            old.unlink()


def write_tool_sheets(
    path: Path,
    sheets: Sequence[ToolSheet],
    *,
    expected_stat: tuple[int, int] | None = None,
    backup_dir: Path | None = None,
    keep_backups: int = 10,
    now: Callable[[], dt.datetime] = dt.datetime.now,
) -> None:
    """Write `sheets` into the workbook at `path`, replacing only the tool's own parts.

    Refuses (WorkbookLocked) while Excel or LibreOffice has the file open. The zip is read
    afresh right before writing, so a file changed since `expected_stat` was taken keeps
    the staff's changes. The previous file is copied to `backup_dir` (newest
    `keep_backups` kept) before the new one replaces it atomically.
    """
    path = Path(path)
    names = [s.name.casefold() for s in sheets]
    if len(set(names)) != len(names):
        raise ValueError("two tool sheets have the same name")
    for sheet in sheets:
        check_sheet_name(sheet.name)
        _check_charts(sheet)
    if not sheets:
        return
    if lock := lock_file(path):
        raise _locked(path, sheets, lock)
    # Each sheet deflates in a thread while the next one's XML is made.
    pool = ThreadPoolExecutor(1, "commplan-deflate")
    built: dict[str, bytes] = {}
    try:
        for sheet in sheets:
            part = built[sheet.name] = _Deflating(sheet_xml(sheet))
            part.packed = pool.submit(_deflate, part)
    finally:
        pool.shutdown(wait=False)
    for _attempt in range(3):
        before = _stat_retrying(path)
        if expected_stat is not None and before != tuple(expected_stat):
            log.info("%s changed since it was read; grafting into the current file", path.name)
        try:
            tmp = _graft_to_temp(path, sheets, built)
        except PermissionError:
            raise _locked(path, sheets, lock_file(path)) from None
        if _stat_retrying(path) == before:
            break
        tmp.unlink(missing_ok=True)  # someone saved meanwhile: graft into their version
    else:
        raise CommplanError(f"{path.name} kept changing while the tool wrote it; run again.")
    try:
        if lock := lock_file(path):
            raise _locked(path, sheets, lock)
        if backup_dir is not None and keep_backups > 0:
            _backup(path, Path(backup_dir), keep_backups, now)
        os.replace(tmp, path)
    except PermissionError:
        raise _locked(path, sheets, lock_file(path)) from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
