"""The workbook's package parts: which zip members a graft replaces, removes and adds.

It reads the relationships ([Content_Types].xml, xl/workbook.xml and their .rels) and
plans the smallest change: a new sheet adds one element to each; a replaced sheet drops
the parts only it used (its old drawing and charts) and a calc chain that names its cells.
"""

from __future__ import annotations

import dataclasses
import html
import posixpath
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote
from xml.etree import ElementTree as ET

from commplan_xl.excel.charts import chart_xml, drawing_xml
from commplan_xl.excel.ooxml import (
    CT_CHART,
    CT_DRAWING,
    CT_STYLES,
    CT_WORKSHEET,
    REL_NS,
    REL_TYPE,
    STRICT_MAIN,
    XML_ATTR,
)
from commplan_xl.excel.sheet_xml import ToolSheet, defined_names
from commplan_xl.excel.styles import MINIMAL_STYLES, append_styles
from commplan_xl.excel.tool_marks import Placement, place_sheets, read_marks, set_marks
from commplan_xl.i18n import _
from commplan_xl.problems import CommplanError


def rels_xml(rels: Iterable[tuple[str, str, str]]) -> bytes:
    items = "".join(
        f'<Relationship Id="{rid}" Type="{REL_TYPE}{kind}" Target="{target}"/>'
        for rid, kind, target in rels
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f"{items}</Relationships>"
    ).encode()


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


def relative_target(source: str, part: str) -> str:
    return quote(posixpath.relpath(part, posixpath.dirname(source) or "."))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


@dataclass(frozen=True)
class Rel:
    rid: str
    type: str
    target: str  # resolved member name ("" for external targets)


class Package:
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

    def rels(self, source: str) -> list[Rel]:
        name = rels_name(source)
        if not self.has(name):
            return []
        out = []
        for el in ET.fromstring(self.read(name)):
            if _local(el.tag) != "Relationship":
                continue
            external = el.get("TargetMode", "").lower() == "external"
            target = "" if external else self.name(resolve(source, el.get("Target", "")))
            out.append(Rel(el.get("Id", ""), el.get("Type", ""), target))
        return out


def _insert_before_close(xml: str, element: str, fragment: str, member: str) -> str:
    """Insert `fragment` before the closing tag of `element`, with that tag's prefix."""
    closes = list(re.finditer(rf"</([A-Za-z_][\w.\-]*:)?{element}\s*>", xml))
    if not closes:
        raise CommplanError(_("The workbook's {member} has no <{element}> list; is it damaged?")
                            .format(member=member, element=element))
    close = closes[-1]
    prefix = close.group(1) or ""
    fragment = fragment.replace("</§", f"</{prefix}").replace("<§", f"<{prefix}")
    return xml[: close.start()] + fragment + xml[close.start():]


def _free_part(pattern: str, taken: set[str]) -> str:
    n = 1
    while pattern.format(n).lower() in taken:
        n += 1
    part = pattern.format(n)
    taken.add(part.lower())
    return part


@dataclass
class Graft:
    """What changes in the zip: members replaced, removed, and added (in order)."""

    replace: dict[str, bytes] = field(default_factory=dict)
    remove: set[str] = field(default_factory=set)
    add: dict[str, bytes] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)  # part → content type to add
    drop_overrides: set[str] = field(default_factory=set)
    style_ids: dict[str, int] = field(default_factory=dict)  # the tool's cell styles


def _owned_parts(pkg: Package, sheet_part: str) -> set[str]:
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


def plan_graft(pkg: Package, sheets: Sequence[ToolSheet], built: Mapping[str, bytes]) -> Graft:
    """What changes in the package to hold `sheets`, whose worksheet XML is `built` (by
    sheet name): the tool's own sheets are replaced (renamed when the workbook's language
    changed), the others added, each marked as the tool's (see tool_marks); a staff sheet
    is never written."""
    graft = Graft()
    root_rels = [r for r in pkg.rels("") if r.type.endswith("/officeDocument")]
    if not root_rels:
        raise CommplanError(_("The file has no workbook part; is it really an .xlsx workbook?"))
    book = root_rels[0].target
    book_xml = pkg.read(book).decode("utf-8")
    root = ET.fromstring(book_xml)
    if root.tag.startswith("{" + STRICT_MAIN):
        raise CommplanError(_("The workbook is saved as 'Strict Open XML'; save it in Excel "
                              "as an ordinary 'Excel Workbook (.xlsx)' and run again."))
    by_rid = {r.rid: r for r in pkg.rels(book)}
    sheets_of, sheet_ids = _workbook_sheets(root, by_rid)
    places = place_sheets({k: (v[0], v[2]) for k, v in sheets_of.items()}, read_marks(root),
                          sheets, lambda part: first_row(pkg, part))
    taken = set(pkg.names)
    rid_numbers = [int(m) for r in by_rid for m in re.findall(r"^rId(\d+)$", r)] or [0]
    next_rid = max(rid_numbers) + 1
    base = posixpath.dirname(book)
    new_sheets, new_rels = [], []
    renames = {p.renamed_from: p.name for p in places.values() if p.renamed_from}
    book_xml = _rename_sheets(book_xml, renames)
    by_part = {v[0]: v[1] for v in sheets_of.values()}
    replaced_ids = {by_part[p.part] for p in places.values() if p.part}
    _drop_stale_calc_chain(graft, pkg, book, by_rid, replaced_ids)
    if renames:
        graft.replace[book] = book_xml.encode("utf-8")

    for sheet in sheets:
        place = places[sheet.name]
        part = place.part
        if not part:
            part = _free_part(posixpath.join(base, "worksheets", "sheet{}.xml"), taken)
            sheet_ids.append(max(sheet_ids) + 1)
            rid = f"rId{next_rid}"
            next_rid += 1
            graft.add[part] = built[sheet.name]
            graft.overrides[part] = CT_WORKSHEET
            new_sheets.append((place.name, sheet_ids[-1], rid, sheet.hidden))
            new_rels.append((rid, "worksheet", relative_target(book, part)))
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
        if sheet.charts:  # the charts name the sheet as the workbook has it
            _add_charts(graft, dataclasses.replace(sheet, name=place.name), part, base, taken)

    new_rels += _plan_styles(graft, pkg, book, by_rid, f"rId{next_rid}")
    # Each tool sheet's print titles and filter range, by its place among the sheets.
    order = [renames.get(el.get("name", ""), el.get("name", "")).casefold()
             for el in root.iter() if _local(el.tag) == "sheet"]
    order += [new[0].casefold() for new in new_sheets]
    names = {}
    for sheet in sheets:
        name = places[sheet.name].name
        names[order.index(name.casefold())] = (
            name, defined_names(dataclasses.replace(sheet, name=name)))
    _edit_workbook(graft, pkg, book, book_xml, new_sheets, new_rels, names)
    edited = graft.replace.get(book, b"").decode("utf-8") or book_xml
    marked = set_marks(edited, {name: p.name for name, p in places.items()},
                       former=[n for s in sheets for n, _h in s.former])
    if marked != edited:
        graft.replace[book] = marked.encode("utf-8")
    if graft.overrides or graft.drop_overrides:
        _edit_content_types(graft, pkg)
    return graft


def _workbook_sheets(root: ET.Element, by_rid: Mapping[str, Rel]
                     ) -> tuple[dict[str, tuple[str, str, str]], list[int]]:
    """The workbook's sheets, name casefolded -> (part, sheetId, name), and the sheetIds."""
    found: dict[str, tuple[str, str, str]] = {}
    sheet_ids = [0]
    for el in root.iter():
        if _local(el.tag) != "sheet":
            continue
        sheet_ids.append(int(el.get("sheetId", "0")))
        rid = next((v for k, v in el.attrib.items() if k.endswith("}id")), "")
        if rid in by_rid:
            name = el.get("name", "")
            found[name.casefold()] = (by_rid[rid].target, el.get("sheetId", ""), name)
    return found, sheet_ids


def tool_sheet_places(pkg: Package, sheets: Sequence[ToolSheet]) -> dict[str, Placement]:
    """Where each tool sheet would be written in this package (by the sheet's name)."""
    root_rels = [r for r in pkg.rels("") if r.type.endswith("/officeDocument")]
    if not root_rels:
        return {}
    book = root_rels[0].target
    root = ET.fromstring(pkg.read(book))
    sheets_of, _ids = _workbook_sheets(root, {r.rid: r for r in pkg.rels(book)})
    return place_sheets({k: (v[0], v[2]) for k, v in sheets_of.items()}, read_marks(root),
                        sheets, lambda part: first_row(pkg, part))


def first_row(pkg: Package, part: str) -> list[str]:
    """The texts of a sheet part's first row (read no further), shared strings resolved."""
    if not pkg.has(part):
        return []
    cells: list[tuple[str, str]] = []  # (type, text)
    with pkg.zin.open(pkg.name(part)) as stream:
        try:
            for _event, el in ET.iterparse(stream, events=("end",)):
                tag = _local(el.tag)
                if tag == "c":
                    kind = el.get("t", "n")
                    text = "".join(t.text or "" for t in el.iter()
                                   if _local(t.tag) == "t" or (_local(t.tag) == "v"
                                                               and kind != "inlineStr"))
                    cells.append((kind, text))
                elif tag in ("row", "sheetData"):
                    break
        except ET.ParseError:
            return []
    if not any(kind == "s" for kind, _t in cells):
        return [t for _k, t in cells]
    strings = _shared_strings(pkg)
    return [strings[int(t)] if kind == "s" and t.isdigit() and int(t) < len(strings) else t
            for kind, t in cells]


def _shared_strings(pkg: Package) -> list[str]:
    part = next((r.target for r in pkg.rels("xl/workbook.xml")
                 if r.type.endswith("/sharedStrings")), "xl/sharedStrings.xml")
    if not pkg.has(part):
        return []
    return ["".join(t.text or "" for t in si.iter() if _local(t.tag) == "t")
            for si in ET.fromstring(pkg.read(part)) if _local(si.tag) == "si"]


def _rename_sheets(book_xml: str, renames: Mapping[str, str]) -> str:
    """`book_xml` with sheets renamed (old -> new), and the defined names (print titles,
    filters) that name them following."""
    for old, new in renames.items():
        attr = re.escape(old.translate(XML_ATTR))
        book_xml = re.sub(rf'(<(?:[\w.\-]+:)?sheet\b[^>]*\bname\s*=\s*")({attr})(")',
                          lambda m, new=new: m.group(1) + new.translate(XML_ATTR) + m.group(3),
                          book_xml, count=1)
        quoted = "'" + new.replace("'", "''") + "'!"
        for reference in ("'" + old.replace("'", "''") + "'!", old + "!"):
            for before in (">", ","):  # a reference starts a defined name, or follows ","
                book_xml = book_xml.replace(before + reference, before + quoted)
    return book_xml


def _drop_stale_calc_chain(
    graft: Graft, pkg: Package, book: str, by_rid: Mapping[str, Rel], sheet_ids: set[str]
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


def _add_charts(graft: Graft, sheet: ToolSheet, part: str, base: str, taken: set[str]) -> None:
    drawing = _free_part(posixpath.join(base, "drawings", "drawing{}.xml"), taken)
    charts = []
    for chart in sheet.charts:
        chart_part = _free_part(posixpath.join(base, "charts", "chart{}.xml"), taken)
        graft.add[chart_part] = chart_xml(sheet, chart)
        graft.overrides[chart_part] = CT_CHART
        charts.append(chart_part)
    graft.add[drawing] = drawing_xml(sheet)
    graft.overrides[drawing] = CT_DRAWING
    graft.add[rels_name(drawing)] = rels_xml(
        (f"rId{n + 1}", "chart", relative_target(drawing, c)) for n, c in enumerate(charts)
    )
    graft.add[rels_name(part)] = rels_xml([("rId1", "drawing", relative_target(part, drawing))])
    taken.add(rels_name(drawing).lower())


def _edit_workbook(
    graft: Graft,
    pkg: Package,
    book: str,
    book_xml: str,
    new_sheets: list[tuple[str, int, str, bool]],
    new_rels: list[tuple[str, str, str]],
    names: Mapping[int, tuple[str, Mapping[str, str]]],
) -> None:
    """Add the new sheets to workbook.xml and the new relationships (sheets, styles) to
    its .rels; set the defined names of the tool's sheets (by their index)."""
    text = book_xml
    if new_sheets:
        text = _add_sheet_elements(text, book, new_sheets)
    text = set_defined_names(text, names)
    if text != book_xml:
        graft.replace[book] = text.encode("utf-8")
    if not new_rels:
        return
    rels_member = pkg.name(rels_name(book))
    rels_xml = graft.replace.get(rels_member, b"") or pkg.read(rels_member)
    rels_xml = rels_xml.decode("utf-8")
    fragment = "".join(
        f'<§Relationship Id="{rid}" Type="{REL_TYPE}{kind}" Target="{target}"/>'
        for rid, kind, target in new_rels
    )
    graft.replace[rels_member] = _insert_before_close(
        rels_xml, "Relationships", fragment, rels_member).encode()


def _add_sheet_elements(book_xml: str, book: str,
                        new_sheets: list[tuple[str, int, str, bool]]) -> str:
    start = re.search(r"<(?![?!])[^>]*>", book_xml)
    declared = re.search(rf'xmlns:([\w.\-]+)\s*=\s*["\']{re.escape(REL_NS)}["\']',
                         start.group(0) if start else "")
    fragment = ""
    for name, sheet_id, rid, hidden in new_sheets:
        rid_attr = (f'{declared.group(1)}:id="{rid}"' if declared
                    else f'r:id="{rid}" xmlns:r="{REL_NS}"')
        state = ' state="hidden"' if hidden else ""
        fragment += (f'<§sheet name="{name.translate(XML_ATTR)}" sheetId="{sheet_id}"{state} '
                     f"{rid_attr}/>")
    return _insert_before_close(book_xml, "sheets", fragment, book)


_TOOL_NAMES = ("_xlnm.Print_Titles", "_xlnm._FilterDatabase")
_DEFINED_NAME = re.compile(
    r"<(?P<p>[\w.\-]+:)?definedName\b(?P<attrs>[^>]*?)(?:/>|>(?P<value>.*?)</(?:[\w.\-]+:)?"
    r"definedName\s*>)", re.DOTALL)


def set_defined_names(book_xml: str, names: Mapping[int, tuple[str, Mapping[str, str]]]
                      ) -> str:
    """workbook.xml with the print titles and filter ranges of the tool's sheets: `names`
    maps a sheet's index to its name and its defined names (name -> formula). Those two
    built-in names of that sheet are replaced; every other name stays as it was."""
    def attr(attrs: str, key: str) -> str | None:
        found = re.search(rf'\b{key}\s*=\s*["\']([^"\']*)["\']', attrs)
        return found.group(1) if found else None

    def stale(match: re.Match) -> bool:
        if attr(match.group("attrs"), "name") not in _TOOL_NAMES:
            return False
        local = attr(match.group("attrs"), "localSheetId")
        if local is not None and local.isdigit() and int(local) in names:
            return True
        value = html.unescape(match.group("value") or "")
        return any(value.startswith(_quoted(sheet) + "!") for sheet, _n in names.values())

    text = _DEFINED_NAME.sub(lambda m: "" if stale(m) else m.group(0), book_xml)
    fragment = "".join(
        f'<§definedName name="{name}" localSheetId="{index}"'
        + (' hidden="1"' if name.endswith("_FilterDatabase") else "")
        + f">{html.escape(formula, quote=False)}</§definedName>"
        for index, (_sheet, defined) in sorted(names.items())
        for name, formula in sorted(defined.items())
    )
    if not fragment:
        return text
    if re.search(r"</([\w.\-]+:)?definedNames\s*>", text):
        return _insert_before_close(text, "definedNames", fragment, "workbook.xml")
    empty = re.search(r"<(?P<p>[\w.\-]+:)?definedNames\s*/>", text)  # openpyxl writes one
    if empty:
        prefix = empty.group("p") or ""
        block = f"<{prefix}definedNames>{fragment}</{prefix}definedNames>".replace(
            "</§", f"</{prefix}").replace("<§", f"<{prefix}")
        return text[:empty.start()] + block + text[empty.end():]
    # No list yet: it goes after <sheets> (and the lists the schema puts between).
    closes = [m for m in re.finditer(
        r"</(?P<p>[\w.\-]+:)?(sheets|functionGroups|externalReferences)\s*>"
        r"|<(?P<q>[\w.\-]+:)?functionGroups\b[^>]*/>", text)]
    if not closes:
        raise CommplanError("The workbook's workbook.xml has no <sheets> list; is it damaged?")
    last = closes[-1]
    prefix = last.group("p") or last.group("q") or ""
    block = f"<§definedNames>{fragment}</§definedNames>".replace("<§", f"<{prefix}").replace(
        "</§", f"</{prefix}")
    return text[:last.end()] + block + text[last.end():]


def _quoted(sheet: str) -> str:
    return "'" + sheet.replace("'", "''") + "'"


def current_style_ids(pkg: Package) -> dict[str, int]:
    """The cellXfs index each tool style gets in this package (see `_plan_styles`)."""
    root_rels = [r for r in pkg.rels("") if r.type.endswith("/officeDocument")]
    if not root_rels:
        return {}
    rel = next((r for r in pkg.rels(root_rels[0].target) if r.type.endswith("/styles")), None)
    if rel is not None and rel.target and pkg.has(rel.target):
        return append_styles(pkg.read(rel.target).decode("utf-8"))[1]
    return append_styles(MINIMAL_STYLES)[1]


def _plan_styles(graft: Graft, pkg: Package, book: str, by_rid: Mapping[str, Rel],
                 free_rid: str) -> list[tuple[str, str, str]]:
    """Append the tool's cell styles to the workbook's styles part (made when there is
    none: then its relationship is returned, to add to the workbook's)."""
    rel = next((r for r in by_rid.values() if r.type.endswith("/styles")), None)
    if rel is not None and rel.target and pkg.has(rel.target):
        member = pkg.name(rel.target)
        old = pkg.read(member).decode("utf-8")
        new, graft.style_ids = append_styles(old)
        if new != old:
            graft.replace[member] = new.encode("utf-8")
        return []
    part = posixpath.join(posixpath.dirname(book), "styles.xml")
    new, graft.style_ids = append_styles(MINIMAL_STYLES)
    graft.add[part] = new.encode("utf-8")
    graft.overrides[part] = CT_STYLES
    return [(free_rid, "styles", relative_target(book, part))]


def _edit_content_types(graft: Graft, pkg: Package) -> None:
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
