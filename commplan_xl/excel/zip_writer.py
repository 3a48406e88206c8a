"""Writing the grafted zip: unchanged members copied as their compressed bytes, changed
ones deflated.
"""

from __future__ import annotations

import os
import struct
import time
import zipfile
import zlib
from concurrent.futures import Future
from pathlib import Path
from typing import BinaryIO

from commplan_xl.excel.package import Graft
from commplan_xl.i18n import _
from commplan_xl.problems import CommplanError


def deflate(data: bytes) -> tuple[int, bytes]:
    """(CRC-32, raw deflate) of a zip member."""
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    return zlib.crc32(data), packer.compress(data) + packer.flush()


class Deflating(bytes):
    """A part's bytes, with its deflated form being made in a thread meanwhile (zlib works
    without the GIL, and a year's SentLog is a long part to deflate)."""

    packed: Future[tuple[int, bytes]]


class _ZipWriter:
    """A minimal zip writer that can copy a member's compressed bytes as they are.

    zipfile can only write by compressing again, which for a 50,000-row staff sheet costs
    most of a second; copying the raw bytes keeps staff members identical and is instant.
    """

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.central: list[bytes] = []

    def _entry(self, name: str, method: int, date_time: tuple[int, ...], crc: int,
               csize: int, usize: int, external_attr: int, data: bytes,
               made_by: int = 20) -> None:
        encoded = name.encode("utf-8")
        flags = 0x800 if not name.isascii() else 0  # bit 11: the name is UTF-8
        year, month, day, hour, minute, second = date_time[:6]
        dos_date = (max(year, 1980) - 1980) << 9 | month << 5 | day
        dos_time = hour << 11 | minute << 5 | second // 2
        offset = self.out.tell()
        if max(offset, csize, usize) >= 0xFFFFFFFF or len(self.central) >= 0xFFFF:
            raise CommplanError(_("The workbook is too large to be written (over 4 GB)."))
        fields = (20, flags, method, dos_time, dos_date, crc, csize, usize, len(encoded))
        self.out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields, 0) + encoded)
        self.out.write(data)
        self.central.append(
            struct.pack("<4s6H3L5H2L", b"PK\x01\x02", made_by, *fields, 0, 0, 0, 0,
                        external_attr, offset) + encoded
        )

    def copy_raw(self, src: BinaryIO, info: zipfile.ZipInfo, name: str) -> None:
        """Copy member `info` of the zip open as `src` without decompressing it."""
        src.seek(info.header_offset)
        header = src.read(30)
        if header[:4] != b"PK\x03\x04" or info.flag_bits & 1:
            raise CommplanError(_("The workbook's zip structure is damaged or encrypted."))
        name_len, extra_len = struct.unpack("<2H", header[26:30])
        src.seek(info.header_offset + 30 + name_len + extra_len)
        data = src.read(info.compress_size)
        self._entry(name, info.compress_type, info.date_time, info.CRC, info.compress_size,
                    info.file_size, info.external_attr, data,
                    made_by=info.create_system << 8 | min(info.create_version, 63))

    def write(self, name: str, data: bytes, date_time: tuple[int, ...],
              external_attr: int = 0o600 << 16) -> None:
        """Add a member with `data` deflated."""
        crc, packed = data.packed.result() if isinstance(data, Deflating) else deflate(data)
        self._entry(name, zipfile.ZIP_DEFLATED, date_time, crc, len(packed),
                    len(data), external_attr, packed)


    def close(self) -> None:
        start = self.out.tell()
        directory = b"".join(self.central)
        self.out.write(directory)
        count = len(self.central)
        self.out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count,
                                   len(directory), start, 0))


def copy_zip(src: BinaryIO, zin: zipfile.ZipFile, out: Path, graft: Graft) -> None:
    """Write every member of `zin` to `out` in order, with the graft's changes.

    Unchanged members keep their compressed bytes. A removed member that is added again
    (the same chart rewritten) keeps its place.
    """
    removed = {name.lower() for name in graft.remove}
    added = {name.lower(): name for name in graft.add}
    with open(out, "wb") as f:
        writer = _ZipWriter(f)
        for info in zin.infolist():
            lower = info.filename.lower()
            readded = added.pop(lower, None)
            if lower in removed and readded is None:
                continue
            name = readded or info.filename
            data = graft.replace.get(name, graft.add.get(name))
            if data is not None:
                writer.write(name, data, info.date_time, info.external_attr)
            elif info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                writer.copy_raw(src, info, name)
            else:
                writer.write(name, zin.read(info), info.date_time, info.external_attr)
        stamp = time.localtime()[:6]
        for name in added.values():
            writer.write(name, graft.add[name], stamp)
        writer.close()
        f.flush()
        os.fsync(f.fileno())
