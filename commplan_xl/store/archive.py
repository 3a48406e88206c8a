"""The archive: one folder per customer holding every mail sent, as .eml files.

Names must work on Windows (the usual home of the workbook) as well as elsewhere, and a
file once written is never overwritten: the archive is the proof of what was sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import unicodedata
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from commplan_xl.i18n import _
from commplan_xl.problems import CommplanError

# Characters Windows forbids in names, every control character, and the Unicode line breaks.
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f-\x9f\u2028\u2029]')
# Invisible format characters (bidi overrides and isolates, zero-width marks...): a name
# showing "exe.txt" must be what it is.
_FORMAT = frozenset({"Cf", "Cc", "Zl", "Zp", "Co", "Cs", "Cn"})
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in (*"123456789", "¹", "²", "³")}
)
_SEPARATOR = " - "
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,39}")  # a safe name as it is
_ID_LEN = 40


def safe_name(text: str, *, max_len: int = 60) -> str:
    """A file or folder name safe on Windows and elsewhere, at most `max_len` characters."""
    if max_len < 5:
        raise ValueError("max_len must be at least 5")
    text = unicodedata.normalize("NFC", str(text))
    if not text.isascii():
        text = "".join("_" if unicodedata.category(c) in _FORMAT else c for c in text)
    name = _cut(_UNSAFE.sub("_", text).strip(" ."), max_len)
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
    return safe_name(customer_id.replace(_SEPARATOR, " _ "), max_len=_ID_LEN)


def folder_id(customer_id: str) -> str:
    """The id part of a customer's folder name: the id itself when it is a safe name, else
    its readable safe form and a short hash of the exact id (`12_34 ~6ce83e70` for
    `12/34`), so two customers never share a folder."""
    sid = _safe_id(customer_id)
    if sid == customer_id:
        return sid
    return f"{_cut(sid, _ID_LEN - 10)} ~{_digest(customer_id)}"


class ArchiveIndex:
    """The customer folders of one archive folder, listed once per run.

    Without it every mail would list the whole archive to find its customer's folder:
    quadratic in the number of customers. A run holds the run lock, so nothing else adds
    folders meanwhile; the folders this index creates are added to it. `owners` (folder
    name -> the customer ids whose mails the ledger says are in it) settles, for the few
    ids an earlier version named alike, whose folder an existing one is.
    """

    def __init__(self, archive_dir: Path,
                 owners: Mapping[str, Collection[str]] | None = None) -> None:
        self.archive_dir = Path(archive_dir)
        self.owners = owners or {}
        self._by_id: dict[str, list[str]] | None = None
        self._folded: set[str] = set()  # every folder name, casefolded (Windows ignores case)
        self._checked: dict[str, Path] = {}  # folder name -> path, inside and existing
        self._real: dict[Path, Path] = {}  # folder -> its resolved path

    def _load(self) -> dict[str, list[str]]:
        if self._by_id is None:
            self._by_id = {}
            if self.archive_dir.is_dir():
                with os.scandir(self.archive_dir) as entries:
                    for entry in entries:
                        if entry.is_dir():
                            self._add(entry.name)
        return self._by_id

    def existing(self, sid: str, wanted: str, customer_id: str | None = None, *,
                 proven: bool = False) -> str | None:
        """The name of the folder already used for this id, if any (preferring `wanted`);
        never one the ledger says is another customer's. `proven`: only a folder the
        ledger says holds this customer's mails."""
        found = self._load().get(sid)
        if not found:
            return None
        if customer_id is not None and (self.owners or proven):
            found = [name for name in found if self._may_use(name, customer_id, proven)]
            if not found:
                return None
        return wanted if wanted in found else min(found)

    def _may_use(self, name: str, customer_id: str, proven: bool) -> bool:
        owners = self.owners.get(name)
        if not owners:
            return not proven
        if customer_id not in owners:
            return False
        # A folder an earlier version shared stays with the id it is named after.
        return len(owners) == 1 or name.split(_SEPARATOR, 1)[0] == customer_id

    def taken(self, name: str) -> bool:
        """Whether a folder of that name (ignoring case, as Windows does) exists."""
        self._load()
        return name.casefold() in self._folded

    def _add(self, name: str) -> None:
        assert self._by_id is not None
        self._folded.add(name.casefold())
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

    One folder per customer, never shared: an id that is not a safe name as it is (`12/34`,
    an id longer than 40 characters, a Windows device name...) carries a short hash of the
    exact id (`12_34 ~6ce83e70 - Dupont`), and so does a name another customer's folder
    has (ignoring case, as Windows does). The folder keeps its first name: if the
    customer's name changes, the existing folder of that id is reused so that the
    customer's archive stays together; so is a folder an earlier version named without the
    hash, unless the index's owners say it is another customer's. A run passes one `index`
    of `archive_dir` for all its mails.
    """
    archive_dir = Path(archive_dir)
    if index is None or index.archive_dir != archive_dir:
        index = ArchiveIndex(archive_dir)  # one listing, as a run's index makes it
    sid = folder_id(customer_id)
    sname = safe_name(name) if name.strip() else ""
    wanted = f"{sid}{_SEPARATOR}{sname}" if sname else sid
    chosen = index.existing(sid, wanted, customer_id)
    old = _safe_id(customer_id)
    if chosen is None and sid != old:
        # Named by an earlier version, without the hash: only if the ledger says so.
        chosen = index.existing(old, wanted, customer_id, proven=True)
    if chosen is None:
        chosen = wanted
        if index.taken(wanted):  # another customer's folder, or one differing by case
            sid = f"{_cut(old, _ID_LEN - 10)} ~{_digest(customer_id + '/case')}"
            chosen = f"{sid}{_SEPARATOR}{sname}" if sname else sid
    return index.folder(chosen, customer_id, create=create)


def _digest(text: str) -> str:
    return hashlib.blake2s(text.encode("utf-8"), digest_size=4).hexdigest()


def ids_to_settle(customer_ids: Iterable[str]) -> set[str]:
    """The ids whose folders' owners a run looks up in the ledger: those an earlier
    version named without a hash (`12/34`), and those it gave the same folder name as
    another id (`12/34` and `12_34`)."""
    by_old: dict[str, list[str]] = {}
    altered: set[str] = set()
    plain = _PLAIN_ID.fullmatch
    for customer_id in customer_ids:
        if plain(customer_id) and customer_id.upper() not in _RESERVED:
            sid = customer_id  # the usual id: its own safe name, no work
        else:
            sid = _safe_id(customer_id)
            if sid != customer_id:
                altered.add(customer_id)
        by_old.setdefault(sid.casefold(), []).append(customer_id)
    return altered | {c for ids in by_old.values() if len(ids) > 1 for c in ids}


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
