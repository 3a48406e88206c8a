"""A new workbook made of tool sheets only (`commplan log --xlsx`), by the same writer as
the tool's sheets in the staff's workbook: styled header, filter, real dates, print setup."""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from commplan_xl.excel.ooxml import (
    CT_STYLES,
    CT_WORKSHEET,
    MAIN_NS,
    REL_NS,
    XML_ATTR,
)
from commplan_xl.excel.package import rels_xml, set_defined_names
from commplan_xl.excel.safe_replace import lock_file, locked_error
from commplan_xl.excel.sheet_xml import ToolSheet, check_sheet_name, defined_names, sheet_xml
from commplan_xl.excel.styles import MINIMAL_STYLES, append_styles

_CT_WORKBOOK = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"


def _content_types(n: int) -> bytes:
    sheets = "".join(f'<Override PartName="/xl/worksheets/sheet{i}.xml" '
                     f'ContentType="{CT_WORKSHEET}"/>' for i in range(1, n + 1))
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
        'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{_CT_WORKBOOK}"/>'
        f'<Override PartName="/xl/styles.xml" ContentType="{CT_STYLES}"/>{sheets}</Types>'
    ).encode()


def _workbook(sheets: Sequence[ToolSheet]) -> str:
    items = "".join(
        f'<sheet name="{s.name.translate(XML_ATTR)}" sheetId="{i}" r:id="rId{i}"/>'
        for i, s in enumerate(sheets, start=1))
    xml = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
           f'<workbook xmlns="{MAIN_NS}" xmlns:r="{REL_NS}"><sheets>{items}</sheets>'
           "</workbook>")
    return set_defined_names(xml, {i: (s.name, defined_names(s))
                                   for i, s in enumerate(sheets)})


def write_new_workbook(path: Path, sheets: Sequence[ToolSheet]) -> None:
    """Write a workbook holding `sheets` at `path`, replacing a file there, unless Excel or
    LibreOffice has it open (WorkbookLocked, nothing written)."""
    path = Path(path)
    for sheet in sheets:
        check_sheet_name(sheet.name)
    if lock := lock_file(path):
        raise locked_error(path, sheets, lock)
    styles, ids = append_styles(MINIMAL_STYLES)
    parts = {
        "[Content_Types].xml": _content_types(len(sheets)),
        "_rels/.rels": rels_xml([("rId1", "officeDocument", "xl/workbook.xml")]),
        "xl/workbook.xml": _workbook(sheets).encode("utf-8"),
        "xl/_rels/workbook.xml.rels": rels_xml(
            [*((f"rId{i}", "worksheet", f"worksheets/sheet{i}.xml")
               for i in range(1, len(sheets) + 1)),
             (f"rId{len(sheets) + 1}", "styles", "styles.xml")]),
        "xl/styles.xml": styles.encode("utf-8"),
    }
    for i, sheet in enumerate(sheets, start=1):
        parts[f"xl/worksheets/sheet{i}.xml"] = sheet_xml(sheet, ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(name, "w", zipfile.ZIP_DEFLATED) as z:
            for member, data in parts.items():
                z.writestr(member, data)
        os.chmod(name, 0o666 & ~_umask())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
