"""One `commplan run` at a time per home folder.

The lock is an OS file lock (fcntl on Unix, msvcrt on Windows, through filelock), so the
operating system releases it when the process dies, even after a kill: a crashed run never
blocks the next morning's run. The holder writes its pid and start time into a separate
info file, which only serves the message shown to a second run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from commplan_xl.i18n import _
from commplan_xl.problems import CommplanError, RunLocked

LOCK_NAME = "commplan-run.lock"
INFO_NAME = "commplan-run.info"


@contextlib.contextmanager
def run_lock(home: Path) -> Iterator[None]:
    """Hold the home folder's run lock for the `with` block; RunLocked at once if taken."""
    home = Path(home)
    if not home.is_dir():
        raise CommplanError(_("The home folder {home} does not exist.").format(home=home))
    lock = FileLock(home / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunLocked(_locked_message(home)) from None
    info = home / INFO_NAME
    try:
        started = dt.datetime.now().astimezone().isoformat(sep=" ", timespec="seconds")
        with contextlib.suppress(OSError):  # the note is for people; the lock is what counts
            info.write_text(f"{os.getpid()}\n{started}\n", encoding="utf-8")
        yield
    finally:
        with contextlib.suppress(OSError):
            info.unlink()
        lock.release()


def _locked_message(home: Path) -> str:
    try:
        pid, started = (home / INFO_NAME).read_text(encoding="utf-8").splitlines()[:2]
    except (OSError, ValueError):
        # The holder has not written its note yet (or could not): say what we know.
        return _("Another commplan run is already working on {home}; wait for it to finish."
                 ).format(home=home)
    return _("Another commplan run is already working on {home} (started {started}, pid "
             "{pid}); wait for it to finish.").format(home=home, started=started, pid=pid)
