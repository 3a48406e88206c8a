"""What earlier runs left behind, checked before a run sends anything.

- A ledger that is missing or empty while the workbook's SentLog or the archive shows
  earlier sends: a new ledger would send them all again, so the run stops and says how to
  restore the ledger or to confirm a fresh start (`commplan run --new-ledger`).
- Orders whose plan changed since their last recorded message (said by `check` and `due`).
- Staff sheets holding the name of a tool sheet (the tool writes its own under another name).
- The temporary files of a run that was killed.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from commplan_xl.i18n import _
from commplan_xl.problems import CommplanError

if TYPE_CHECKING:
    from commplan_xl.excel.sheet_xml import ToolSheet
    from commplan_xl.run.site import Site

NEW_LEDGER_OPTION = "--new-ledger"


def ledger_is_blank(path: Path) -> bool:
    """True when the ledger file is missing, empty (0 bytes) or has recorded nothing."""
    from commplan_xl.store.ledger import Ledger

    try:
        if path.stat().st_size == 0 and not path.with_name(path.name + "-wal").exists():
            return True
    except FileNotFoundError:
        return True
    try:
        with Ledger(path) as ledger:
            return ledger.is_empty()
    except CommplanError:
        return False  # a damaged or newer ledger: opening it says why


def earlier_sends(site: Site) -> str | None:
    """Where the workbook or the archive shows mails sent before, as words; None if nowhere."""
    sheet = sentlog_with_rows(site.workbook)
    if sheet:
        return _("the {sheet} sheet of {workbook} lists earlier mails").format(
            sheet=sheet, workbook=site.workbook.name)
    archive = archive_with_mails(site.settings.archive_dir)
    if archive is not None:
        return _("the archive folder {folder} holds mails sent before").format(folder=archive)
    return None


def missing_ledger_message(site: Site, outcome: str | None = None) -> str | None:
    """The sentence stopping a run that would start a new ledger over earlier sends;
    `outcome` says what came of it (default: nothing was sent)."""
    path = site.ledger_path
    if not ledger_is_blank(path):
        return None
    evidence = earlier_sends(site)
    if evidence is None:
        return None
    from commplan_xl.store.ledger_backup import backup_folder, backups

    state = _("is missing") if not path.exists() else _("is empty")
    copies = backups(site.home)
    if copies:
        restore = _("To restore it from its newest dated copy ({copy}, in {folder}), run "
                    "`commplan restore-ledger --home {home}`; `commplan restore-ledger --list` "
                    "shows every copy.").format(copy=copies[-1].name,
                                                folder=backup_folder(site.home), home=site.home)
    else:
        restore = _("There is no dated copy in {folder}: if you have a copy of {name} (from "
                    "another folder or a backup), put it back in {home}, or use `commplan "
                    "restore-ledger --from FILE`.").format(folder=backup_folder(site.home),
                                                           name=path.name, home=site.home)
    return _(
        "The ledger {path} {state}, but {evidence}: a new ledger would send those mails again, "
        "{outcome}. If this is not the right home folder, give it with --home (the folder "
        "holding workbooks/, archive/ and {name}). {restore} Only if you really want to start "
        "afresh (every message due within catch_up_days is sent again), run `commplan run "
        "{option}`.").format(path=path, state=state, evidence=evidence,
                             outcome=outcome or _("so nothing was sent"), name=path.name,
                             restore=restore, option=NEW_LEDGER_OPTION)


def sentlog_with_rows(workbook: Path) -> str | None:
    """The name of the workbook's SentLog (or Journal) sheet when it has a row under its
    header; None otherwise. The sheet is the tool's: marked, or named SentLog or Journal
    under that name's header. Reads no further than its second row."""
    from commplan_xl.excel.names import localise
    from commplan_xl.excel.package import Package, tool_sheet_places
    from commplan_xl.excel.sheet_xml import ToolSheet
    from commplan_xl.store.sentlog import SENTLOG_HEADER

    sentlog = localise(ToolSheet(name="SentLog", header=SENTLOG_HEADER, rows=()), "sentlog",
                       "en")
    try:
        with zipfile.ZipFile(workbook) as zin:
            pkg = Package(zin)
            place = tool_sheet_places(pkg, [sentlog]).get(sentlog.name)
            if place is None or not place.part:
                return None
            shown = place.renamed_from or place.name  # its name in the workbook now
            return shown if _has_second_row(pkg, place.part) else None
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):
        return None


def _has_second_row(pkg, part: str) -> bool:
    from xml.etree import ElementTree as ET

    rows = 0
    with pkg.zin.open(pkg.name(part)) as stream:
        try:
            for _event, el in ET.iterparse(stream, events=("end",)):
                if el.tag.rsplit("}", 1)[-1] == "row":
                    rows += 1
                    if rows >= 2 and len(el):
                        return True
        except ET.ParseError:
            return False
    return False


def archive_with_mails(archive_dir: Path) -> Path | None:
    """The archive folder if any customer folder in it holds an .eml file."""
    try:
        with os.scandir(archive_dir) as folders:
            for folder in folders:
                if not folder.is_dir() or folder.name.startswith("."):
                    continue
                with os.scandir(folder.path) as files:
                    if any(f.name.lower().endswith(".eml") for f in files):
                        return Path(archive_dir)
    except OSError:
        return None
    return None


def moved_notes(site: Site, recorded: Mapping[str, tuple[str, str]]) -> list[str]:
    """One sentence per order whose plan changed since its last recorded message."""
    from commplan_xl.core.schedule import moved_orders

    return [
        _("Note: order {order} moved from plan {old} to plan {new}; the steps already sent "
          "or skipped are not sent again.").format(order=order_id, old=old, new=new)
        for order_id, old, new in moved_orders(site.model, recorded)
    ]


def recorded_plans(site: Site) -> dict[str, tuple[str, str]]:
    """The plan of each order's latest message in the ledger (empty without a ledger)."""
    from commplan_xl.store.ledger import Ledger

    if ledger_is_blank(site.ledger_path):
        return {}
    with Ledger(site.ledger_path) as ledger:
        return ledger.recorded_plans()


def tool_sheet_notes(site: Site, sheets: Sequence[ToolSheet]) -> list[str]:
    """One sentence per staff sheet holding a tool sheet's name."""
    from commplan_xl.excel.package import Package, tool_sheet_places

    try:
        with zipfile.ZipFile(site.workbook) as zin:
            places = tool_sheet_places(Package(zin), sheets)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):
        return []
    return [
        _('{workbook}: the sheet "{sheet}" is yours, not commplan\'s, so it is never '
          'overwritten; commplan writes its {name} sheet as "{tool_sheet}" instead (rename '
          "your sheet if you want the tool's sheet to have that name).").format(
              workbook=site.workbook.name, sheet=p.staff_sheet, name=name, tool_sheet=p.name)
        for name, p in places.items() if p.staff_sheet is not None
    ]


def remove_leftovers(site: Site) -> int:
    """Remove what a killed run left: `.commplan.*.tmp` beside the workbook, `.tmp-*.part`
    in the archive's customer folders, a ledger copy cut short. How many went.

    Only the customer folders changed since the last run that ended (its dated copy of the
    ledger) are looked into: a file added to a folder changes the folder's time.
    """
    from commplan_xl.store.ledger_backup import backup_folder, backups

    stem = site.workbook.stem
    candidates: list[Path] = []
    with contextlib.suppress(OSError):
        candidates += site.workbook.parent.glob(f".{stem}.*.tmp")
        # A ledger copy or restore cut short.
        candidates += backup_folder(site.home).glob(".commplan-ledger-*.tmp")
        candidates += site.home.glob(f".{site.ledger_path.name}.*.tmp")
    copies = backups(site.home)
    try:
        # Less 2 s: some file systems (FAT) keep times to 2 s.
        since = copies[-1].stat().st_mtime_ns - 2_000_000_000 if copies else None
    except OSError:
        since = None
    with contextlib.suppress(OSError), os.scandir(site.settings.archive_dir) as folders:
        for folder in folders:
            if folder.is_dir(follow_symlinks=False) and (
                    since is None or folder.stat(follow_symlinks=False).st_mtime_ns >= since):
                candidates += _parts_in(folder.path)
    removed = 0
    for path in candidates:
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed


def _parts_in(folder: str) -> list[Path]:
    """The staged mail files (`.tmp-*.part`) left in one customer folder."""
    with contextlib.suppress(OSError), os.scandir(folder) as files:
        return [Path(f.path) for f in files
                if f.name.startswith(".tmp-") and f.name.endswith(".part")]
    return []
