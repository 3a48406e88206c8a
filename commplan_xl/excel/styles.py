"""The cell styles of the tool's sheets, appended to the workbook's styles part.

A cell names its style by a number, its place in styles.xml's `cellXfs` list. The staff's
entries keep their places and bytes: the tool's fonts, fills, borders, number formats and
`xf` entries are added at the end of each list (only the lists' `count` changes), and an
entry the tool added before is found again and reused, so the part does not grow run
after run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from commplan_xl.excel.ooxml import MAIN_NS
from commplan_xl.problems import CommplanError

FIRST_CUSTOM_FORMAT = 164  # numFmtId below this are Excel's built-in formats
_NAVY = "FF1F3864"


@dataclass(frozen=True)
class StyleSpec:
    """One named style: its number format code and the XML of its parts (None: default)."""

    number_format: str | None = None
    font: str | None = None
    fill: str | None = None
    border: str | None = None
    alignment: str | None = None  # the attributes of <alignment>


def _font(size: int, *, bold: bool = True, color: str = _NAVY) -> str:
    b = "<b/>" if bold else ""
    return (f'<font>{b}<sz val="{size}"/><color rgb="{color}"/><name val="Calibri"/>'
            '<family val="2"/></font>')


# Every style name sheet_xml.STYLE_NAMES lists.
STYLES: dict[str, StyleSpec] = {
    "header": StyleSpec(
        font=_font(11),
        fill='<fill><patternFill patternType="solid"><fgColor rgb="FFDDEBF7"/>'
             '<bgColor indexed="64"/></patternFill></fill>',
        border='<border><left/><right/><top/><bottom style="medium"><color rgb="FF8EA9DB"/>'
               "</bottom><diagonal/></border>",
        alignment='vertical="center" wrapText="1"',
    ),
    "date": StyleSpec(number_format="dd/mm/yyyy",
                      alignment='horizontal="center" vertical="top"'),
    "datetime": StyleSpec(number_format="dd/mm/yyyy hh:mm",
                          alignment='horizontal="center" vertical="top"'),
    "title": StyleSpec(font=_font(16)),
    "subtitle": StyleSpec(
        font=_font(12),
        border='<border><left/><right/><top/><bottom style="thin"><color rgb="FF8EA9DB"/>'
               "</bottom><diagonal/></border>",
    ),
    "figure": StyleSpec(font=_font(18), alignment='horizontal="left"'),
    "wrap": StyleSpec(alignment='vertical="top" wrapText="1"'),
}

MINIMAL_STYLES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    f'<styleSheet xmlns="{MAIN_NS}"><fonts count="1"><font><sz val="11"/>'
    '<name val="Calibri"/><family val="2"/></font></fonts><fills count="2"><fill>'
    '<patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/>'
    '</fill></fills><borders count="1"><border><left/><right/><top/><bottom/><diagonal/>'
    '</border></borders><cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" '
    'borderId="0"/></cellStyleXfs><cellXfs count="1"><xf numFmtId="0" fontId="0" '
    'fillId="0" borderId="0" xfId="0"/></cellXfs><cellStyles count="1"><cellStyle '
    'name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>'
)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _canon(el: ET.Element) -> tuple:
    """An element as a comparable value: tag, sorted attributes, children."""
    return (_local(el.tag), tuple(sorted((_local(k), v) for k, v in el.attrib.items())),
            tuple(_canon(child) for child in el))


def _parse_fragment(fragment: str) -> ET.Element:
    return ET.fromstring(f'<x xmlns="{MAIN_NS}">{fragment}</x>')[0]


class _List:
    """One list of styles.xml (fonts, fills, ...) and what is appended to it."""

    def __init__(self, root: ET.Element, name: str) -> None:
        self.name = name
        self.element = next((el for el in root if _local(el.tag) == name), None)
        children = list(self.element) if self.element is not None else []
        self.existing = [_canon(child) for child in children]
        self.added: list[str] = []

    def index_of(self, fragment: str) -> int:
        """The index of an entry equal to `fragment`, appending it when there is none."""
        wanted = _canon(_parse_fragment(fragment))
        if wanted in self.existing:
            return self.existing.index(wanted)
        self.existing.append(wanted)
        self.added.append(fragment)
        return len(self.existing) - 1


def _xf(spec: StyleSpec, num_fmt: int, font: int, fill: int, border: int) -> str:
    flags = "".join(
        f' apply{name}="1"' for name, used in (
            ("NumberFormat", spec.number_format), ("Font", spec.font), ("Fill", spec.fill),
            ("Border", spec.border), ("Alignment", spec.alignment)) if used
    )
    inner = f"<alignment {spec.alignment}/>" if spec.alignment else ""
    return (f'<xf numFmtId="{num_fmt}" fontId="{font}" fillId="{fill}" borderId="{border}" '
            f'xfId="0"{flags}>{inner}</xf>')


def _number_formats(root: ET.Element) -> dict[str, int]:
    """The custom number formats already in the part: format code (lower case) -> id."""
    out: dict[str, int] = {}
    for el in root.iter():
        if _local(el.tag) == "numFmt" and el.get("numFmtId", "").isdigit():
            out.setdefault(el.get("formatCode", "").lower(), int(el.get("numFmtId", "0")))
    return out


def append_styles(styles_xml: str, names: tuple[str, ...] = tuple(STYLES)
                  ) -> tuple[str, dict[str, int]]:
    """styles.xml with the tool's styles `names` appended (when missing), and the cellXfs
    index of each name. The text is returned unchanged when every style is already there."""
    try:
        root = ET.fromstring(styles_xml)
    except ET.ParseError as exc:
        raise CommplanError(f"The workbook's styles part is damaged ({exc}); open the "
                            "workbook in Excel, save it and run again.") from None
    lists = {name: _List(root, name) for name in ("fonts", "fills", "borders", "cellXfs")}
    for name in ("fonts", "fills", "borders", "cellXfs"):
        if lists[name].element is None or not lists[name].existing:
            raise CommplanError(f"The workbook's styles part has no {name} list; open the "
                                "workbook in Excel, save it and run again.")
    formats = _number_formats(root)
    known_formats = sum(1 for el in root.iter() if _local(el.tag) == "numFmt")
    new_formats: list[str] = []
    next_format = max([FIRST_CUSTOM_FORMAT - 1, *formats.values()]) + 1
    xf_keys = [_xf_key(el) for el in lists["cellXfs"].element]  # type: ignore[union-attr]
    ids: dict[str, int] = {}
    for name in names:
        spec = STYLES[name]
        num_fmt = 0
        if spec.number_format:
            num_fmt = formats.get(spec.number_format.lower(), 0)
            if not num_fmt:
                num_fmt = formats[spec.number_format.lower()] = next_format
                next_format += 1
                code = spec.number_format.replace('"', "&quot;")
                new_formats.append(f'<numFmt numFmtId="{num_fmt}" formatCode="{code}"/>')
        font = lists["fonts"].index_of(spec.font) if spec.font else 0
        fill = lists["fills"].index_of(spec.fill) if spec.fill else 0
        border = lists["borders"].index_of(spec.border) if spec.border else 0
        xf = _xf(spec, num_fmt, font, fill, border)
        key = _xf_key(_parse_fragment(xf))
        if key in xf_keys:
            ids[name] = xf_keys.index(key)
        else:
            xf_keys.append(key)
            lists["cellXfs"].added.append(xf)
            ids[name] = len(xf_keys) - 1
    out = styles_xml
    for name in ("fonts", "fills", "borders", "cellXfs"):
        if lists[name].added:
            out = _append_to_list(out, name, "".join(lists[name].added), len(lists[name].existing)
                                  if name != "cellXfs" else len(xf_keys))
    if new_formats:
        out = _add_number_formats(out, new_formats, known_formats)
    return out, ids


def _xf_key(el: ET.Element) -> tuple:
    """What makes two cell formats the same (Excel may drop or reorder the apply flags)."""
    alignment = next((_canon(child) for child in el if _local(child.tag) == "alignment"), ())
    return (el.get("numFmtId", "0"), el.get("fontId", "0"), el.get("fillId", "0"),
            el.get("borderId", "0"), el.get("xfId", "0"), alignment)


def _prefix_of(xml: str, name: str) -> str:
    found = re.search(rf"<([A-Za-z_][\w.\-]*:)?{name}[\s>/]", xml)
    return found.group(1) or "" if found else ""


def _with_prefix(fragment: str, prefix: str) -> str:
    if not prefix:
        return fragment
    return re.sub(r"<(/?)([A-Za-z])", rf"<\1{prefix}\2", fragment)


def _append_to_list(xml: str, name: str, fragment: str, count: int) -> str:
    prefix = _prefix_of(xml, name)
    close = f"</{prefix}{name}>"
    at = xml.rfind(close)
    if at < 0:
        raise CommplanError(f"The workbook's styles part has an empty {name} list; open the "
                            "workbook in Excel, save it and run again.")
    xml = xml[:at] + _with_prefix(fragment, prefix) + xml[at:]
    return _set_count(xml, prefix + name, count)


def _set_count(xml: str, tag: str, count: int) -> str:
    opening = re.search(rf"<{re.escape(tag)}\b[^>]*>", xml)
    assert opening
    text = opening.group(0)
    if re.search(r'\scount\s*=\s*["\']\d*["\']', text):
        new = re.sub(r'(\scount\s*=\s*["\'])\d*(["\'])', rf"\g<1>{count}\g<2>", text, count=1)
    else:
        new = text[:len(tag) + 1] + f' count="{count}"' + text[len(tag) + 1:]
    return xml[:opening.start()] + new + xml[opening.end():]


def _add_number_formats(xml: str, fragments: list[str], before: int) -> str:
    prefix = _prefix_of(xml, "styleSheet")
    tag = prefix + "numFmts"
    body = "".join(_with_prefix(f, prefix) for f in fragments)
    if re.search(rf"<{re.escape(tag)}\b[^>]*/>", xml):  # an empty self-closed list
        return re.sub(rf"<{re.escape(tag)}\b[^>]*/>",
                      f'<{tag} count="{len(fragments)}">{body}</{tag}>', xml, count=1)
    if f"</{tag}>" in xml:
        return _append_to_list(xml, "numFmts", "".join(fragments), before + len(fragments))
    opening = re.search(rf"<{re.escape(prefix)}styleSheet\b[^>]*>", xml)
    assert opening
    return (xml[:opening.end()] + f'<{tag} count="{len(fragments)}">{body}</{tag}>'
            + xml[opening.end():])


def style_ids(styles_xml: str | None) -> Mapping[str, int]:
    """The cellXfs index each tool style will have in this styles part."""
    return append_styles(styles_xml or MINIMAL_STYLES)[1]
