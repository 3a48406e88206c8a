"""Which sheets are the tool's own: each one it writes is marked by a defined name scoped
to that sheet, `commplan_tool_<sheet>` (e.g. `commplan_tool_sentlog`), pointing at its A1.

A sheet-scoped defined name survives a save by Excel, by LibreOffice and by openpyxl, and
stays with its sheet when someone renames or moves it (its scope is the sheet itself, not
a name): the tool finds its sheet whatever its name, and never takes a staff sheet for its
own. A staff sheet with the name the tool wants ("Dashboard", "forecast", any case) is left
alone: the tool's sheet gets another name ("Dashboard (commplan)"). A sheet an older
commplan wrote, unmarked, is known by its header row.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from commplan_xl.excel.ooxml import XML_TEXT
from commplan_xl.problems import CommplanError

MARK_PREFIX = "commplan_tool_"
_SUFFIX = " (commplan)"
_MARK_ELEMENT = re.compile(
    r"<(?:[\w.\-]+:)?definedName\b(?=[^>]*\bname\s*=\s*[\"']" + MARK_PREFIX
    + r"[^\"']*[\"'])[^>]*?(?:/>|>.*?</(?:[\w.\-]+:)?definedName\s*>)",
    re.DOTALL | re.IGNORECASE,
)


def mark_name(wanted: str) -> str:
    """The defined name marking the tool sheet first named `wanted`."""
    return MARK_PREFIX + re.sub(r"[^0-9a-z]", "_", wanted.casefold())


def reference_to(sheet: str) -> str:
    return "'" + sheet.replace("'", "''") + "'!$A$1"


def sheet_names(root: ET.Element) -> list[str]:
    """The workbook's sheet names, in order (a sheet-scoped name's localSheetId)."""
    return [el.get("name", "") for el in root.iter() if _local(el.tag) == "sheet"]


def read_marks(root: ET.Element) -> dict[str, str]:
    """Mark name (lower case) -> the name of the sheet it is scoped to (the first one when
    a copied sheet took the mark along)."""
    names = sheet_names(root)
    marks: dict[str, str] = {}
    for el in root.iter():
        if _local(el.tag) != "definedName":
            continue
        name = (el.get("name") or "").casefold()
        scope = el.get("localSheetId")
        if name.startswith(MARK_PREFIX) and scope is not None and scope.isdigit() \
                and int(scope) < len(names):
            marks.setdefault(name, names[int(scope)])
    return marks


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


@dataclass(frozen=True)
class Placement:
    """Where one tool sheet goes: `name` in the workbook, and the part it replaces ("" for a
    new sheet); `staff_sheet` is the staff's sheet holding the wanted name, if any."""

    name: str
    part: str = ""
    staff_sheet: str | None = None


def place_sheets(
    existing: Mapping[str, tuple[str, str]],
    marks: Mapping[str, str],
    wanted: Mapping[str, tuple[str, ...]],
    first_row: Callable[[str], list[str]],
) -> dict[str, Placement]:
    """Where each wanted tool sheet (name -> header) goes, given the workbook's sheets
    (`existing`: name casefolded -> (part, display name)), its marks and a reader of a
    sheet part's first row (to know sheets an older commplan wrote without a mark)."""
    claimed = {marks[m].casefold() for m in marks if marks[m].casefold() in existing}
    taken = set(existing)
    out: dict[str, Placement] = {}
    for name, header in wanted.items():
        marked = marks.get(mark_name(name))
        if marked is not None and marked.casefold() in existing:
            part, shown = existing[marked.casefold()]
            out[name] = Placement(shown, part)
            continue
        same = existing.get(name.casefold())
        if same is None:
            out[name] = Placement(name)
            taken.add(name.casefold())
            continue
        part, shown = same
        if name.casefold() not in claimed and _is_tool_header(first_row(part), header):
            out[name] = Placement(shown, part)  # written by an older commplan, unmarked
            claimed.add(name.casefold())
            continue
        other = _free_name(name, taken)
        taken.add(other.casefold())
        found = existing.get(other.casefold())
        out[name] = Placement(other, found[0] if found else "", staff_sheet=shown)
    return out


def _is_tool_header(row: list[str], header: Iterable[str]) -> bool:
    """Whether a first row is the header (ignoring case, accents, spaces, `-` and `_`)."""
    expected = [_fold(h) for h in header if h]
    return bool(expected) and [_fold(t) for t in row if t] == expected


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return re.sub(r"[\s_\-]+", "", text)


def _free_name(name: str, taken: set[str]) -> str:
    n = 1
    while True:
        suffix = _SUFFIX if n == 1 else f" (commplan {n})"
        candidate = name[: 31 - len(suffix)] + suffix
        if candidate.casefold() not in taken:
            return candidate
        n += 1


def set_marks(book_xml: str, names: Mapping[str, str]) -> str:
    """`book_xml` with one mark per tool sheet (first name -> current name), scoped to
    that sheet, the old marks of those sheets replaced; the text unchanged when the marks
    are already right."""
    root = ET.fromstring(book_xml)
    if all(read_marks(root).get(mark_name(first)) == shown for first, shown in names.items()):
        return book_xml
    index = {name: i for i, name in enumerate(sheet_names(root))}
    wanted = {
        mark_name(first): (
            f'<§definedName name="{mark_name(first)}" localSheetId="{index[shown]}" '
            f'hidden="1">{reference_to(shown).translate(XML_TEXT)}</§definedName>'
        )
        for first, shown in names.items()
    }
    xml = book_xml
    for element in {m.group(0) for m in _MARK_ELEMENT.finditer(book_xml)}:
        match = re.search(r"\bname\s*=\s*[\"']([^\"']*)[\"']", element)
        if match and match.group(1).casefold() in wanted:
            xml = xml.replace(element, "", 1)
    return _insert_defined_names(xml, "".join(wanted.values()))


def _insert_defined_names(xml: str, fragment: str) -> str:
    close = list(re.finditer(r"</([\w.\-]+:)?definedNames\s*>", xml))
    if close:
        at = close[-1]
        prefix = at.group(1) or ""
        return xml[: at.start()] + fragment.replace("<§", f"<{prefix}").replace(
            "</§", f"</{prefix}") + xml[at.start():]
    empty = re.search(r"<([\w.\-]+:)?definedNames\s*/>", xml)
    if empty:
        prefix = empty.group(1) or ""
        block = (f"<{prefix}definedNames>" + fragment.replace("<§", f"<{prefix}")
                 .replace("</§", f"</{prefix}") + f"</{prefix}definedNames>")
        return xml[: empty.start()] + block + xml[empty.end():]
    # definedNames comes after sheets, functionGroups and externalReferences.
    after = None
    for element in ("externalReferences", "functionGroups", "sheets"):
        found = list(re.finditer(rf"</([\w.\-]+:)?{element}\s*>|<([\w.\-]+:)?{element}\s*/>",
                                 xml))
        if found:
            after = found[-1]
            break
    if after is None:
        raise CommplanError("The workbook's xl/workbook.xml has no <sheets> list; is it "
                            "damaged?")
    prefix = after.group(1) or after.group(2) or ""
    block = (f"<{prefix}definedNames>" + fragment.replace("<§", f"<{prefix}")
             .replace("</§", f"</{prefix}") + f"</{prefix}definedNames>")
    return xml[: after.end()] + block + xml[after.end():]
