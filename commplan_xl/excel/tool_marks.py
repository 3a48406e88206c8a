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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from commplan_xl.excel.ooxml import XML_TEXT
from commplan_xl.excel.sheet_xml import ToolSheet
from commplan_xl.problems import CommplanError

MARK_PREFIX = "commplan_tool_"
_SUFFIX = " (commplan)"
_MARK_ELEMENT = re.compile(
    r"<(?:[\w.\-]+:)?definedName\b(?=[^>]*\bname\s*=\s*[\"']" + MARK_PREFIX
    + r"[^\"']*[\"'])[^>]*?(?:/>|>.*?</(?:[\w.\-]+:)?definedName\s*>)",
    re.DOTALL | re.IGNORECASE,
)


def mark_name(wanted: str) -> str:
    """The defined name marking the tool sheet named `wanted` (in one language)."""
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
    new sheet); `renamed_from` the name its sheet had in another language (renamed now);
    `staff_sheet` the staff's sheet holding the wanted name, if any."""

    name: str
    part: str = ""
    renamed_from: str | None = None
    staff_sheet: str | None = None


def place_sheets(
    existing: Mapping[str, tuple[str, str]],
    marks: Mapping[str, str],
    sheets: Sequence[ToolSheet],
    first_row: Callable[[str], list[str]],
) -> dict[str, Placement]:
    """Where each tool sheet goes (by its name), given the workbook's sheets (`existing`:
    name casefolded -> (part, name as written)), its marks (see `read_marks`) and a reader
    of a sheet part's first row (to know sheets an older commplan wrote without a mark).

    A sheet is the tool's when it carries the mark of the sheet's name in any language, or
    is unmarked with the tool's name and header (in any language): a sheet in another
    language is renamed to the current one unless a staff sheet has that name. Any other
    sheet is the staff's and is never written: the tool then picks another name.
    """
    claimed = {marks[m].casefold() for m in marks if marks[m].casefold() in existing}
    taken = set(existing)
    out: dict[str, Placement] = {}
    for sheet in sheets:
        names = ((sheet.name, sheet.header), *sheet.former)
        found = _marked(existing, marks, names) or _unmarked(existing, claimed, names,
                                                             first_row)
        wanted = sheet.name.casefold()
        staff = None
        if wanted in existing and (found is None or found[1].casefold() != wanted):
            staff = existing[wanted][1]
        if found is not None:
            part, shown = found
            claimed.add(shown.casefold())
            if shown.casefold() != wanted and staff is None and shown.casefold() in {
                    n.casefold() for n, _h in sheet.former}:
                taken.discard(shown.casefold())
                taken.add(wanted)
                out[sheet.name] = Placement(sheet.name, part, renamed_from=shown)
            else:
                out[sheet.name] = Placement(shown, part, staff_sheet=staff)
        elif staff is None:
            out[sheet.name] = Placement(sheet.name)
            taken.add(wanted)
        else:
            other = _free_name(sheet.name, taken)
            taken.add(other.casefold())
            again = existing.get(other.casefold())
            out[sheet.name] = Placement(other, again[0] if again else "", staff_sheet=staff)
    return out


def _marked(existing: Mapping[str, tuple[str, str]], marks: Mapping[str, str],
            names: Iterable[tuple[str, tuple[str, ...]]]) -> tuple[str, str] | None:
    """(part, name) of the sheet carrying the mark of one of `names`, if any."""
    for name, _header in names:
        sheet = marks.get(mark_name(name))
        if sheet is not None and sheet.casefold() in existing:
            return existing[sheet.casefold()]
    return None


def _unmarked(existing: Mapping[str, tuple[str, str]], claimed: set[str],
              names: Iterable[tuple[str, tuple[str, ...]]],
              first_row: Callable[[str], list[str]]) -> tuple[str, str] | None:
    """(part, name) of an unmarked sheet of one of `names` under that name's header."""
    for name, header in names:
        found = existing.get(name.casefold())
        if found is not None and name.casefold() not in claimed \
                and _is_tool_header(first_row(found[0]), header):
            return found
    return None


def _is_tool_header(row: list[str], header: Iterable[str]) -> bool:
    """Whether a first row starts as the header does (its first three names, ignoring
    case, accents, spaces, `-` and `_`): an older commplan may have had other columns
    after them."""
    expected = [_fold(h) for h in header if h][:3]
    return bool(expected) and [_fold(t) for t in row if t][:3] == expected


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


def set_marks(book_xml: str, names: Mapping[str, str], former: Iterable[str] = ()) -> str:
    """`book_xml` with one mark per tool sheet (its name -> the name it has in the
    workbook), scoped to that sheet; the old marks of those sheets and those of their
    `former` names (other languages) removed. The text is unchanged when the marks are
    already right."""
    root = ET.fromstring(book_xml)
    current = read_marks(root)
    stale = {mark_name(name) for name in former} - {mark_name(name) for name in names}
    if all(current.get(mark_name(n)) == shown for n, shown in names.items()) and not (
            stale & set(current)):
        return book_xml
    index = {name: i for i, name in enumerate(sheet_names(root))}
    wanted = {
        mark_name(name): (
            f'<§definedName name="{mark_name(name)}" localSheetId="{index[shown]}" '
            f'hidden="1">{reference_to(shown).translate(XML_TEXT)}</§definedName>'
        )
        for name, shown in names.items()
    }
    xml = book_xml
    for element in {m.group(0) for m in _MARK_ELEMENT.finditer(book_xml)}:
        match = re.search(r"\bname\s*=\s*[\"']([^\"']*)[\"']", element)
        if match and match.group(1).casefold() in set(wanted) | stale:
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
