"""Replacing the staff's workbook safely: lock files of an open workbook, the file's
stat to notice a save meanwhile, dated backups, and a folder fsync after os.replace.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from commplan_xl.excel.sheet_xml import ToolSheet
from commplan_xl.i18n import _
from commplan_xl.problems import CommplanError, WorkbookLocked


def lock_file(path: Path) -> Path | None:
    """The lock file Excel (`~$name`) or LibreOffice (`.~lock.name#`) keeps beside an open
    workbook, or None when there is none."""
    path = Path(path)
    candidates = [path.with_name(f"~${path.name}"), path.with_name(f".~lock.{path.name}#")]
    if len(path.stem) > 8:
        # Office's owner file of a long name replaces its first two characters.
        candidates.append(path.with_name(f"~${path.name[2:]}"))
    return next((c for c in candidates if c.exists()), None)


def locked_error(path: Path, sheets: Sequence[ToolSheet], lock: Path | None) -> WorkbookLocked:
    """The refusal; each caller adds what it means for its own sheets."""
    app = _("another program")
    if lock:
        app = "LibreOffice" if lock.name.startswith(".~lock.") else "Excel"
    where = f" ({lock})" if lock else _(" (it could not be replaced)")
    names = ", ".join(s.name for s in sheets)
    return WorkbookLocked(_("{workbook} is open in {app}{where}: the {names} sheet was not "
                            "written").format(workbook=path.name, app=app, where=where,
                                              names=names))


def file_stat(path: Path) -> tuple[int, int]:
    """(size, mtime_ns) of the workbook: take it when reading, pass it as `expected_stat`."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def stat_retrying(path: Path, tries: int = 10) -> tuple[int, int]:
    for attempt in range(tries):
        try:
            return file_stat(path)
        except FileNotFoundError:
            # Excel replaces the file when it saves: it is briefly missing.
            if attempt == tries - 1:
                raise CommplanError(_("{name} was not found in {folder}.").format(
                    name=path.name, folder=path.parent)) from None
            time.sleep(0.1)
    raise AssertionError("unreachable")


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


def make_backup(path: Path, backup_dir: Path, keep: int, now: Callable[[], dt.datetime]) -> None:
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


def fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
