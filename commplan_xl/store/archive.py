"""The archive: one folder per customer holding every mail sent, as .eml files.

Names must work on Windows (the usual home of the workbook) as well as elsewhere, and a
file once written is never overwritten: the archive is the proof of what was sent.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path

from commplan_xl.i18n import _
from commplan_xl.problems import CommplanError

# Characters Windows forbids in names, every control character, and the Unicode line breaks.
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f-\x9f\u2028\u2029]')
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in (*"123456789", "¹", "²", "³")}
)
_SEPARATOR = " - "


def safe_name(text: str, *, max_len: int = 60) -> str:
    """A file or folder name safe on Windows and elsewhere, at most `max_len` characters."""
    if max_len < 5:
        raise ValueError("max_len must be at least 5")
    name = _cut(_UNSAFE.sub("_", unicodedata.normalize("NFC", str(text))).strip(" ."), max_len)
    stem, dot, ext = name.partition(".")
    # Windows reserves the device names even with an extension or trailing spaces.
    if stem.rstrip(" ").upper() in _RESERVED:
        name = _cut(f"{stem.rstrip(' ')}_{dot}{ext}", max_len)
    return name or "_"


def _cut(name: str, max_len: int) -> str:
    """At most `max_len` characters, never splitting a letter from its accent."""
    if len(name) > max_len:
        end = max_len
        while end > 1 and unicodedata.combining(name[end]):
            end -= 1
        name = name[:end]
    return name.rstrip(" .")


def _safe_id(customer_id: str) -> str:
    # " - " separates id from name in the folder name; keep it out of the id so that the
    # folder of customer "C1" is never mistaken for the folder of a customer "C1 - X".
    return safe_name(customer_id.replace(_SEPARATOR, " _ "), max_len=40)


class ArchiveIndex:
    """The customer folders of one archive folder, listed once per run.

    Without it every mail would list the whole archive to find its customer's folder:
    quadratic in the number of customers. A run holds the run lock, so nothing else adds
    folders meanwhile; the folders this index creates are added to it.
    """

    def __init__(self, archive_dir: Path) -> None:
        self.archive_dir = Path(archive_dir)
        self._by_id: dict[str, list[str]] | None = None
        self._checked: dict[str, Path] = {}  # folder name -> path, inside and existing
        self._real: dict[Path, Path] = {}  # folder -> its resolved path

    def existing(self, sid: str, wanted: str) -> str | None:
        """The name of the folder already used for this id, if any (preferring `wanted`)."""
        if self._by_id is None:
            self._by_id = {}
            if self.archive_dir.is_dir():
                with os.scandir(self.archive_dir) as entries:
                    for entry in entries:
                        if entry.is_dir():
                            self._add(entry.name)
        found = self._by_id.get(sid)
        if not found:
            return None
        return wanted if wanted in found else min(found)

    def _add(self, name: str) -> None:
        assert self._by_id is not None
        # Filed under every id it could belong to: `sid` itself and each text before a
        # " - " (an id may itself contain " - " after safe_name).
        keys = {name}
        at = name.find(_SEPARATOR)
        while at != -1:
            keys.add(name[:at])
            at = name.find(_SEPARATOR, at + 1)
        for key in keys:
            self._by_id.setdefault(key, []).append(name)

    def folder(self, name: str, customer_id: str, *, create: bool) -> Path:
        """`archive_dir / name`, checked to stay inside the archive (and created)."""
        known = self._checked.get(name)
        if known is not None:
            return known
        listed = self._by_id is not None and name in self._by_id.get(name, ())
        if create and not listed:
            # `name` is one safe_name (no separator, never "." or ".."): a folder made
            # here is a real child of the archive folder, no symlink to check.
            if self.archive_dir not in self._real:
                self.archive_dir.mkdir(parents=True, exist_ok=True)
            folder = self.archive_dir / name
            try:
                folder.mkdir()
            except FileExistsError:
                folder = _inside(self.archive_dir, name, customer_id,
                                 root=self.real(self.archive_dir))
            else:
                self._real[folder] = self.real(self.archive_dir) / name
            if self._by_id is not None:
                self._add(name)
        else:
            folder = _inside(self.archive_dir, name, customer_id,
                             root=self.real(self.archive_dir))
            if create:
                folder.mkdir(parents=True, exist_ok=True)
        if create:
            self._checked[name] = folder
        return folder

    def real(self, folder: Path) -> Path:
        """`folder.resolve()`, once per folder."""
        found = self._real.get(folder)
        if found is None:
            found = self._real[folder] = Path(folder).resolve()
        return found


def customer_folder(
    archive_dir: Path, customer_id: str, name: str, *, create: bool = True,
    index: ArchiveIndex | None = None,
) -> Path:
    """The customer's folder inside `archive_dir`, e.g. `C0001 - Éloïse Lefèvre`.

    The folder keeps its first name: if the customer's name changes, the existing folder
    of that id is reused so that the customer's archive stays together. A run passes one
    `index` of `archive_dir` for all its mails.
    """
    archive_dir = Path(archive_dir)
    sid = _safe_id(customer_id)
    sname = safe_name(name) if name.strip() else ""
    wanted = f"{sid}{_SEPARATOR}{sname}" if sname else sid
    if index is None or index.archive_dir != archive_dir:
        index = ArchiveIndex(archive_dir)  # one listing, as a run's index makes it
    return index.folder(index.existing(sid, wanted) or wanted, customer_id, create=create)


def _inside(archive_dir: Path, name: str, customer_id: str, *, root: Path) -> Path:
    folder = archive_dir / name
    if not folder.resolve().is_relative_to(root):
        raise CommplanError(_(
            'The archive folder for customer "{customer}" would fall outside {folder}; '
            "nothing was written.").format(customer=customer_id, folder=archive_dir))
    return folder


def write_message(folder: Path, *, stem: str, data: bytes) -> Path:
    """Write `<stem>.eml` atomically in `folder`, never overwriting; return its path.

    If the name is taken, `<stem>-2.eml`, `<stem>-3.eml`, … is used instead.
    """
    return place_message(stage_message(folder, data), stem=stem)


def stage_message(folder: Path, data: bytes) -> Path:
    """Write `data` to a hidden temporary file in `folder` (see place_message); return it.

    A run stages a mail while the server takes it, so creating the file costs no time.
    """
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
    try:
        # No fsync (it cost more than the send itself): a killed process loses nothing
        # that reached the page cache, the link in place_message keeps the file whole or
        # absent, and the ledger's WAL record, not this copy, is the truth of what was sent.
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except BaseException:
        discard_message(Path(tmp_name))
        raise
    return Path(tmp_name)


def place_message(tmp: Path, *, stem: str) -> Path:
    """Give the staged file `tmp` its name `<stem>.eml` (or `-2`, `-3`, …) in its folder."""
    base = safe_name(stem, max_len=100)
    try:
        n = 1
        while True:
            target = tmp.parent / (f"{base}.eml" if n == 1 else f"{base}-{n}.eml")
            if _place(tmp, target):
                return target
            n += 1
    except BaseException:
        discard_message(tmp)
        raise


def discard_message(tmp: Path) -> None:
    """Remove a staged file that will not be archived (the mail was not sent)."""
    with contextlib.suppress(OSError):
        tmp.unlink()


def _place(tmp: Path, target: Path) -> bool:
    """Move `tmp` to `target` unless `target` exists; False when it does."""
    try:
        # A hard link fails if the target exists: no window in which a file is overwritten.
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError:
        # File systems without hard links (FAT, some shares): check, then replace.
        if target.exists():
            return False
        os.replace(tmp, target)
        return True
    tmp.unlink()
    return True


def relative(path: Path, home: Path, *, index: ArchiveIndex | None = None) -> str:
    """The path as SentLog shows it: relative to home with `/`, else absolute.

    With the run's `index`, folders are resolved once (`path` must then be a file, not a
    symlink, as write_message makes).
    """
    path, home = Path(path), Path(home)
    if index is not None:
        real, real_home = index.real(path.parent) / path.name, index.real(home)
    else:
        real, real_home = path.resolve(), home.resolve()
    try:
        return real.relative_to(real_home).as_posix()
    except ValueError:
        return real.as_posix()
