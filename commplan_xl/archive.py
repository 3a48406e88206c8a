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

from commplan_xl.errors import CommplanError

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


def customer_folder(
    archive_dir: Path, customer_id: str, name: str, *, create: bool = True
) -> Path:
    """The customer's folder inside `archive_dir`, e.g. `C0001 - Éloïse Lefèvre`.

    The folder keeps its first name: if the customer's name changes, the existing folder
    of that id is reused so that the customer's archive stays together.
    """
    archive_dir = Path(archive_dir)
    sid = _safe_id(customer_id)
    sname = safe_name(name) if name.strip() else ""
    wanted = f"{sid}{_SEPARATOR}{sname}" if sname else sid
    folder = archive_dir / (_existing(archive_dir, sid, wanted) or wanted)
    if not folder.resolve().is_relative_to(archive_dir.resolve()):
        raise CommplanError(
            f"The archive folder for customer {customer_id!r} would fall outside "
            f"{archive_dir}; nothing was written."
        )
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def _existing(archive_dir: Path, sid: str, wanted: str) -> str | None:
    """The name of the folder already used for this id, if any (preferring `wanted`)."""
    if not archive_dir.is_dir():
        return None
    prefix = sid + _SEPARATOR
    # Not glob: ids may hold `[`, `]` or `*`-like characters that glob would interpret.
    found = sorted(
        p.name
        for p in archive_dir.iterdir()
        if (p.name == sid or p.name.startswith(prefix)) and p.is_dir()
    )
    if wanted in found:
        return wanted
    return found[0] if found else None


def write_message(folder: Path, *, stem: str, data: bytes) -> Path:
    """Write `<stem>.eml` atomically in `folder`, never overwriting; return its path.

    If the name is taken, `<stem>-2.eml`, `<stem>-3.eml`, … is used instead.
    """
    folder = Path(folder)
    base = safe_name(stem, max_len=100)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        n = 1
        while True:
            target = folder / (f"{base}.eml" if n == 1 else f"{base}-{n}.eml")
            if _place(tmp, target):
                break
            n += 1
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(folder)
    return target


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


def _fsync_dir(folder: Path) -> None:
    """Make the new directory entry durable where the OS allows it (not on Windows)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def relative(path: Path, home: Path) -> str:
    """The path as SentLog shows it: relative to home with `/`, else absolute."""
    path, home = Path(path), Path(home)
    try:
        return path.resolve().relative_to(home.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()
