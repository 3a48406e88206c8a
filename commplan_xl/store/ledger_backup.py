"""Dated copies of the ledger, made by each run, and putting one back.

The ledger is the one truth of what was sent: a lost or emptied ledger would send again
everything still within catch-up. Each run copies it before sending and again at its end
(SQLite's backup API, so the copy is whole even with a WAL beside the file) to
`ledger-backups/` in the home folder, one file per day, the newest few kept. `restore`
puts one back, keeping the ledger it replaces.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sqlite3
from pathlib import Path

from commplan_xl.i18n import _
from commplan_xl.problems import CommplanError

BACKUP_FOLDER = "ledger-backups"
KEEP_BACKUPS = 10
_DATED = re.compile(r"^commplan-ledger-(\d{4}-\d{2}-\d{2})\.sqlite3$")


def backup_folder(home: Path) -> Path:
    return Path(home) / BACKUP_FOLDER


def backups(home: Path) -> list[Path]:
    """The dated copies of the ledger, oldest first."""
    folder = backup_folder(home)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _DATED.match(p.name)), key=lambda p: p.name)


def is_current(db: sqlite3.Connection, home: Path) -> bool:
    """Whether the newest copy already holds what the open ledger `db` holds (the same last
    outcome, send attempt and returned mail: nothing happened since it was made)."""
    copies = backups(home)
    if not copies:
        return False
    try:
        copy = _read_only(copies[-1])
        try:
            return _fingerprint(copy) == _fingerprint(db)
        finally:
            copy.close()
    except sqlite3.Error:
        return False


def _fingerprint(db: sqlite3.Connection) -> tuple:
    """The newest row id of each table that only grows (each a primary-key look-up)."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master "
                                             "WHERE type = 'table'")}
    # The names come from the fixed tuple below, never from the file.
    return tuple(db.execute(f"SELECT coalesce(max(rowid), 0) FROM {name}").fetchone()[0]
                 if name in tables else None for name in ("events", "sends", "returned"))


def make_backup(db: sqlite3.Connection, home: Path, day: dt.date,
                keep: int = KEEP_BACKUPS) -> Path:
    """Copy the open ledger `db` to `ledger-backups/commplan-ledger-DAY.sqlite3` (a copy of
    the same day is replaced); the newest `keep` copies are kept."""
    folder = backup_folder(home)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"commplan-ledger-{day.isoformat()}.sqlite3"
    tmp = folder / f".{target.name}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        _copy_database(db, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    for old in backups(home)[:-keep] if keep > 0 else []:
        with contextlib.suppress(OSError):
            old.unlink()
    return target


def _copy_database(db: sqlite3.Connection, target: Path) -> None:
    """Copy the database `db` into the file `target` with SQLite's backup API, as a single
    file (no WAL beside it: the ledger turns WAL on again when it opens the file)."""
    copy = sqlite3.connect(target)
    try:
        db.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")
    finally:
        copy.close()


def describe(path: Path) -> str:
    """One line about a copy: its name, and how many outcomes it holds (or why unreadable)."""
    try:
        events, last = _summary(path)
    except sqlite3.Error as exc:
        return _("{name}  (cannot be read: {error})").format(name=path.name, error=exc)
    when = _(", the last on {day}").format(day=last[:10]) if last else ""
    return _("{name}  ({n} outcome(s) recorded{when})").format(name=path.name, n=events,
                                                               when=when)


def _summary(path: Path) -> tuple[int, str]:
    db = _read_only(path)
    try:
        count, last = db.execute("SELECT count(*), max(day) FROM events").fetchone()
    finally:
        db.close()
    return count, last or ""


def restore(ledger: Path, source: Path, *, now: dt.datetime) -> Path | None:
    """Put the copy `source` in place of the ledger at `ledger`.

    The current ledger, if it holds anything, is first kept beside the copies as
    `commplan-ledger-replaced-YYYYMMDD-HHMMSS.sqlite3`, its WAL included; that path is
    returned (None when there was nothing to keep). The caller holds the run lock.
    """
    source = Path(source)
    try:
        _summary(source)
    except sqlite3.Error as exc:
        raise CommplanError(_("{path} is not a commplan ledger ({error}); nothing was "
                              "changed.").format(path=source, error=exc)) from None
    kept = _keep_current(ledger, backup_folder(ledger.parent), now)
    for extra in _side_files(ledger):
        extra.unlink(missing_ok=True)
    tmp = ledger.with_name(f".{ledger.name}.restore.tmp")
    tmp.unlink(missing_ok=True)
    # Not immutable: a copy taken by hand may have its last changes in a WAL beside it.
    src = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True)
    try:
        _copy_database(src, tmp)
    finally:
        src.close()
    os.replace(tmp, ledger)
    return kept


def _read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes the file nor leaves a WAL or lock file beside it."""
    return sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro&immutable=1", uri=True)


def _side_files(ledger: Path) -> list[Path]:
    return [ledger.with_name(ledger.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def _keep_current(ledger: Path, folder: Path, now: dt.datetime) -> Path | None:
    """Move the current ledger (with what its WAL holds) aside; None if there is none."""
    if not ledger.exists() or ledger.stat().st_size == 0 and not any(
            p.exists() for p in _side_files(ledger)):
        ledger.unlink(missing_ok=True)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / f"commplan-ledger-replaced-{now:%Y%m%d-%H%M%S}.sqlite3"
    n = 1
    while kept.exists():  # two restores in one second: keep both
        n += 1
        kept = folder / f"commplan-ledger-replaced-{now:%Y%m%d-%H%M%S}-{n}.sqlite3"
    try:
        db = sqlite3.connect(ledger)
        try:
            _copy_database(db, kept)
        finally:
            db.close()
    except sqlite3.Error:
        # A damaged file: keep its bytes as they are, side files too.
        kept.unlink(missing_ok=True)
        os.replace(ledger, kept)
        for extra in _side_files(ledger):
            if extra.exists():
                os.replace(extra, kept.with_name(kept.name + extra.name[len(ledger.name):]))
        return kept
    ledger.unlink()
    return kept
