"""Write the tool's own sheets into the staff's .xlsx without touching anything else.

openpyxl rebuilds the whole file when it saves and loses what staff made (shapes, charts,
cross-sheet drop-downs, cached formula results...). So the workbook is never loaded and
saved: each tool sheet's worksheet XML is built here as text and grafted into the zip; every
other member is copied unchanged. Only the tool sheet's own parts change, plus, when a sheet
is new, xl/workbook.xml, its .rels and [Content_Types].xml (one element inserted in each).
docProps/app.xml (a cached list of sheet titles) is left as it was: Excel, LibreOffice and
openpyxl do not rely on it.

The work is split by concern: `sheet_xml` (the worksheet part), `charts`, `package`
(which parts change), `zip_writer` (the new zip) and `safe_replace` (locks, backups,
the atomic replace). This module puts them together in `write_tool_sheets`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.etree import ElementTree as ET

from commplan_xl.excel.charts import check_charts
from commplan_xl.excel.package import Package, current_style_ids, plan_graft
from commplan_xl.excel.safe_replace import (
    backups,
    fsync_folder,
    lock_file,
    locked_error,
    make_backup,
    stat_retrying,
)
from commplan_xl.excel.sheet_xml import (
    Chart,
    ToolSheet,
    check_sheet_name,
    column_letter,
    sheet_xml,
)
from commplan_xl.excel.zip_writer import Deflating, copy_zip, deflate
from commplan_xl.i18n import _
from commplan_xl.problems import CommplanError

# Also importable from here, where the tests of the whole graft find them.
__all__ = ["Chart", "ToolSheet", "backups", "column_letter", "lock_file", "write_tool_sheets"]

log = logging.getLogger(__name__)


def _graft_to_temp(path: Path, sheets: Sequence[ToolSheet], built: dict[str, bytes],
                   style_ids: dict[str, int]) -> Path:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        with open(path, "rb") as src:
            try:
                zin = zipfile.ZipFile(src)
            except zipfile.BadZipFile:
                raise CommplanError(_("{name} is not an Excel workbook (.xlsx).").format(
                    name=path.name)) from None
            with zin:
                try:
                    graft = plan_graft(Package(zin), sheets, built)
                    if graft.style_ids != style_ids:  # staff changed the styles meanwhile
                        style_ids.clear()
                        style_ids.update(graft.style_ids)
                        built.update({s.name: sheet_xml(s, style_ids) for s in sheets})
                        graft = plan_graft(Package(zin), sheets, built)
                except (ET.ParseError, KeyError, UnicodeDecodeError) as exc:
                    raise CommplanError(_(
                        "{name} has a damaged part ({error}); open it in Excel, save it and "
                        "run again.").format(name=path.name, error=exc)) from None
                copy_zip(src, zin, tmp, graft)
        with contextlib.suppress(OSError):  # keep the staff's permissions, not mkstemp's 0600
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        return tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _style_ids(path: Path) -> dict[str, int]:
    """The cellXfs numbers the tool's styles will have in the workbook (empty when it
    cannot be read now: the graft then finds them and the sheets are made again)."""
    try:
        with zipfile.ZipFile(path) as zin:
            return current_style_ids(Package(zin))
    except (OSError, zipfile.BadZipFile, ET.ParseError, KeyError, UnicodeDecodeError,
            CommplanError):
        return {}


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
        check_charts(sheet)
    if not sheets:
        return
    if lock := lock_file(path):
        raise locked_error(path, sheets, lock)
    style_ids = _style_ids(path)
    # Each sheet deflates in a thread while the next one's XML is made.
    pool = ThreadPoolExecutor(1, "commplan-deflate")
    built: dict[str, bytes] = {}
    try:
        for sheet in sheets:
            part = built[sheet.name] = Deflating(sheet_xml(sheet, style_ids))
            part.packed = pool.submit(deflate, part)
    finally:
        pool.shutdown(wait=False)
    for _attempt in range(3):
        before = stat_retrying(path)
        if expected_stat is not None and before != tuple(expected_stat):
            log.info("%s", _("{name} changed since it was read; the sheets go into the file as it "
                             "is now").format(name=path.name))
        try:
            tmp = _graft_to_temp(path, sheets, built, style_ids)
        except PermissionError:
            raise locked_error(path, sheets, lock_file(path)) from None
        if stat_retrying(path) == before:
            break
        tmp.unlink(missing_ok=True)  # someone saved meanwhile: graft into their version
    else:
        raise CommplanError(_("{name} kept changing while the tool wrote it; run again.")
                            .format(name=path.name))
    try:
        if lock := lock_file(path):
            raise locked_error(path, sheets, lock)
        if backup_dir is not None and keep_backups > 0:
            make_backup(path, Path(backup_dir), keep_backups, now)
        os.replace(tmp, path)
    except PermissionError:
        raise locked_error(path, sheets, lock_file(path)) from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(path.parent)
