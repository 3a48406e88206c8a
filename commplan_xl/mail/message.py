"""Each mail as the exact bytes that are archived and sent: headers, a text/plain part with
an HTML alternative, attachments.

Built here rather than by the email package or yagmail (a true plain part, proper attachment
types and names, a unique Message-ID, at a small part of the email package's cost).
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.utils
import mimetypes
import re
import secrets
import urllib.parse
from collections.abc import Sequence
from datetime import datetime
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, cast

from commplan_xl.i18n import _
from commplan_xl.mail.bounces import REF_HEADER, new_ref
from commplan_xl.mail.render import InlineImage, Rendered, fold_line
from commplan_xl.problems import SendFailure, SendKind

_CRLF = b"\r\n"

class _Loaded(NamedTuple):
    """One attachment file as every mail carries it."""

    data: bytes  # the file's bytes
    ctype: str  # e.g. "application/pdf"
    body: bytes  # base64 in 76-character CRLF lines, encoded once per run


class AttachmentCache:
    """Attachments by path, read and base64-encoded once per run (every mail of a step
    carries the same files)."""

    def __init__(self) -> None:
        self._data: dict[Path, _Loaded] = {}

    def load(self, path: Path) -> _Loaded:
        """The file's bytes, MIME type and encoded body."""
        key = Path(path)
        loaded = self._data.get(key)
        if loaded is None:
            loaded = _load(key)
            self._data[key] = loaded
        return loaded


def _load(path: Path) -> _Loaded:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        where = path.resolve()
        raise SendFailure(
            _('the attachment "{name}" is missing from {folder}: add the file or correct the '
              "attachments column of the Plans sheet").format(name=where.name,
                                                              folder=where.parent),
            kind=SendKind.NOT_BUILT,
        ) from None
    except OSError as exc:
        raise SendFailure(
            _('the attachment "{name}" could not be read ({error})').format(
                name=path.name, error=exc.strerror or exc),
            kind=SendKind.NOT_BUILT,
        ) from None
    ctype, encoding = mimetypes.guess_type(path.name)
    if ctype is None or encoding is not None or "/" not in ctype:
        ctype = "application/octet-stream"  # unknown, or compressed (.tar.gz)
    return _Loaded(data, ctype, base64.encodebytes(data).replace(b"\n", _CRLF))


@lru_cache(maxsize=8192)
def check_address(address: str) -> str:
    """The address as the envelope and headers will carry it, or a permanent SendFailure.

    A non-ASCII domain is turned into its ASCII (IDNA) form; a non-ASCII local part is
    refused because few servers accept it. (Cached: a run checks each address twice.)
    """
    text = address.strip()

    def bad(why: str) -> SendFailure:
        return SendFailure(
            _('"{address}" is not a valid email address ({why}): correct the customer\'s email')
            .format(address=text, why=why),
            kind=SendKind.PERMANENT, recipient=text,
        )

    if not text or any(ord(ch) < 32 or ord(ch) == 127 for ch in text) or " " in text:
        raise bad(_("empty, or with spaces or line breaks") if text else _("empty"))
    local, sep, domain = text.rpartition("@")
    if not sep or not local or not domain or "." not in domain.strip("."):
        raise bad(_("it needs a name, @ and a domain like example.com"))
    if not local.isascii():
        raise bad(_("accented letters before the @ are not accepted by most mail servers"))
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise bad(_("the domain is not valid")) from None
    if _PLAIN_ADDRESS.fullmatch(f"{local}@{domain}"):
        return f"{local}@{domain}"  # what Address gives for these, far cheaper
    try:
        parsed = Address(addr_spec=f"{local}@{domain}")
    except Exception:  # the email package raises several kinds for a malformed address
        raise bad(_("it does not follow the rules of email addresses")) from None
    if parsed.addr_spec != f"{local}@{domain}":
        raise bad(_("it does not follow the rules of email addresses"))
    return parsed.addr_spec


# A dot-atom before and after the @ with the usual domain characters: the common case.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
)


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"


class BuiltMessage:
    """A mail as the exact bytes archived and sent.

    For people and tests who look inside, it reads like an `EmailMessage` (`msg["Subject"]`,
    `get_body`, `iter_attachments`, …): the bytes are parsed the first time it is asked.
    """

    __slots__ = ("data", "_parsed", "message_id", "ref")

    def __init__(self, data: bytes, *, message_id: str = "", ref: str = "") -> None:
        self.data = data
        self.message_id = message_id  # "<…>", unique per mail: bounces name it
        self.ref = ref  # the X-Commplan-Ref value, our own reference for bounces
        self._parsed: EmailMessage | None = None

    @property
    def parsed(self) -> EmailMessage:
        if self._parsed is None:
            self._parsed = cast(EmailMessage, BytesParser(policy=email.policy.default)
                                .parsebytes(self.data))
        return self._parsed

    def __getitem__(self, name: str) -> Any:
        return self.parsed[name]

    def __getattr__(self, name: str) -> Any:  # get_body, iter_attachments, get_content, …
        return getattr(self.parsed, name)

    def __bytes__(self) -> bytes:
        return self.data

    def as_bytes(self, *_args: Any, **_kw: Any) -> bytes:
        return self.data


def build_message(
    *,
    rendered: Rendered,
    sender_email: str,
    sender_name: str,
    reply_to: str,
    to: Sequence[str],
    attachments: Sequence[Path],
    domain: str | None = None,
    cache: AttachmentCache | None = None,
    date: datetime | None = None,
    ref: str | None = None,
) -> BuiltMessage:
    """The complete mail: text/plain + HTML alternative (with the images it shows inline),
    then the attachments.

    Assembled here rather than by the email package, which is slow with an attachment
    (header parsing, re-encoding the attachment, writing it line by line); the structure
    is the one `EmailMessage.add_attachment` makes. Header values are folded to one
    line, so no data can add a header. Every mail carries a unique Message-ID and our
    reference header (`ref`, a fresh one when not given), which a returned mail quotes.
    """
    if not to:
        raise SendFailure(_("the customer has no email address"), kind=SendKind.PERMANENT)
    sender = check_address(sender_email)
    headers = [
        _from_header(fold_line(sender_name), sender),
        _address_header("To", [check_address(a) for a in to]),
    ]
    if reply_to.strip():
        headers.append(_address_header("Reply-To", [check_address(reply_to)]))
    message_id = email.utils.make_msgid(domain=domain or _domain(sender))
    ref = fold_line(ref) if ref else new_ref()
    headers += [
        "Date: " + email.utils.format_datetime(date or email.utils.localtime()),
        "Message-ID: " + message_id,
        f"{REF_HEADER}: {ref}",
        _text_header("Subject", fold_line(rendered.subject)),
        "MIME-Version: 1.0",
    ]
    ids = {"message_id": message_id, "ref": ref}
    alt = _boundary()
    reader = cache if cache is not None else AttachmentCache()
    # Quoted-printable keeps every line short and 7-bit: any server accepts it.
    html_part = _TEXT_HEAD % b"html" + _qp(rendered.html)
    if rendered.images:
        html_part = _related(html_part, rendered.images, reader)
    body = b"".join((
        b"--", alt, b"\r\n", _TEXT_HEAD % b"plain", _qp(rendered.text),
        b"\r\n--", alt, b"\r\n", html_part,
        b"\r\n--", alt, b"--\r\n",
    ))
    alt_type = b'Content-Type: multipart/alternative; boundary="%s"\r\n' % alt
    head = "\r\n".join(headers).encode("ascii") + b"\r\n"
    if not attachments:
        return BuiltMessage(head + alt_type + b"\r\n" + body, **ids)
    mixed = _boundary()
    chunks = [head, b'Content-Type: multipart/mixed; boundary="%s"\r\n\r\n' % mixed,
              b"--", mixed, b"\r\n", alt_type, b"\r\n", body]
    for path in attachments:
        loaded = reader.load(Path(path))
        chunks += [
            b"\r\n--", mixed, b"\r\nContent-Type: ", loaded.ctype.encode("ascii"),
            b"\r\nContent-Transfer-Encoding: base64\r\n",
            _disposition(Path(path).name).encode("ascii"), b"\r\n\r\n", loaded.body,
        ]
    chunks += [b"\r\n--", mixed, b"--\r\n"]
    return BuiltMessage(b"".join(chunks), **ids)


_TEXT_HEAD = (b'Content-Type: text/%s; charset="utf-8"\r\n'
              b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")


def _related(html_part: bytes, images: Sequence[InlineImage], reader: AttachmentCache) -> bytes:
    """The HTML part with the images it shows by `cid:` (the logo), as multipart/related:
    each image inline, with its Content-ID, so no mail program lists it as an attachment."""
    rel = _boundary()
    head = b'Content-Type: multipart/related; type="text/html"; boundary="%s"\r\n\r\n--' % rel
    chunks = [head, rel, b"\r\n", html_part]
    for image in images:
        loaded = reader.load(image.path)
        name = image.path.name if image.path.name.isascii() else "logo" + image.path.suffix
        name = re.sub(r'[^A-Za-z0-9._-]', "_", name)
        chunks += [
            b"\r\n--", rel, b"\r\nContent-Type: ", loaded.ctype.encode("ascii"),
            b"\r\nContent-Transfer-Encoding: base64\r\nContent-ID: <",
            image.cid.encode("ascii", "replace"),
            b'>\r\nContent-Disposition: inline; filename="', name.encode("ascii"),
            b'"\r\n\r\n', loaded.body,
        ]
    return b"".join([*chunks, b"\r\n--", rel, b"--\r\n"])


def _boundary() -> bytes:
    # "=_" never occurs in quoted-printable ("=" is followed by hex digits or a line
    # break) nor in base64, so no body line can look like the boundary.
    return b"=_" + secrets.token_hex(12).encode("ascii")


def _qp(text: str) -> bytes:
    """Quoted-printable, CRLF lines, ending with a line break (as the email package does)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    return binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", _CRLF)


def _needs_encoding(text: str) -> bool:
    return not text.isascii() or "=?" in text or any(ord(ch) < 32 or ord(ch) == 127
                                                      for ch in text)


def _text_header(name: str, value: str) -> str:
    """`Name: value`, RFC 2047-encoded when not plain ASCII, folded at 78 columns."""
    if _needs_encoding(value):
        return f"{name}: {_encoded_words(value)}"
    folded = Header(value, "us-ascii", header_name=name).encode(linesep="\r\n")
    return f"{name}: {folded}"


# RFC 2047 "Q" encoding for a header's text: letters and digits stay, a space becomes "_",
# anything else "=XX" per UTF-8 byte.
_Q_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_WORD_TEXT = 48  # encoded characters per word: "=?utf-8?q?" + 48 + "?=" fits any line


def _q(ch: str) -> str:
    if ch in _Q_SAFE:
        return ch
    if ch == " ":
        return "_"
    return "".join(f"={b:02X}" for b in ch.encode("utf-8"))


def _encoded_words(text: str) -> str:
    """`text` as RFC 2047 encoded words, one per folded line; a character is never split
    between two words. (email.header.Header is much slower for a subject.)"""
    words: list[str] = []
    current = ""
    for ch in text:
        piece = _q(ch)
        if len(current) + len(piece) > _WORD_TEXT:
            words.append(current)
            current = ""
        current += piece
    words.append(current)
    return "\r\n ".join(f"=?utf-8?q?{w}?=" for w in words)


@lru_cache(maxsize=64)
def _from_header(name: str, address: str) -> str:
    if not name:
        return f"From: {address}"
    # Once per run, so the email package's own folding of a display name is affordable
    # (encoded words split inside a phrase read back with a stray space otherwise).
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = Address(display_name=name, addr_spec=address)
    return msg.as_string().rstrip("\r\n")


def _address_header(name: str, addresses: Sequence[str]) -> str:
    """`Name: a, b, …`, folded between addresses (they were checked: no line breaks)."""
    lines = [f"{name}: {addresses[0]}"]
    for address in addresses[1:]:
        if len(lines[-1]) + len(address) + 2 > 78:
            lines[-1] += ","
            lines.append(" " + address)
        else:
            lines[-1] += ", " + address
    return "\r\n".join(lines)


@lru_cache(maxsize=256)
def _disposition(filename: str) -> str:
    """The attachment's Content-Disposition; an accented or long name per RFC 2231."""
    if filename.isascii() and not _needs_encoding(filename) and len(filename) <= 60:
        return f'Content-Disposition: attachment; filename="{email.utils.quote(filename)}"'
    encoded = "utf-8''" + urllib.parse.quote(filename, safe="", encoding="utf-8")
    pieces: list[str] = []
    while encoded:
        cut = min(len(encoded), 60)
        # Never split a %XX escape between two pieces.
        pct = encoded.rfind("%", max(cut - 2, 0), cut)
        if cut < len(encoded) and pct != -1:
            cut = pct
        pieces.append(encoded[:cut])
        encoded = encoded[cut:]
    if len(pieces) == 1:
        return f"Content-Disposition: attachment;\r\n filename*={pieces[0]}"
    params = ";\r\n".join(f" filename*{i}*={p}" for i, p in enumerate(pieces))
    return f"Content-Disposition: attachment;\r\n{params}"


def message_bytes(msg: BuiltMessage | EmailMessage | bytes) -> bytes:
    """The exact bytes that are archived and sent (CRLF line endings)."""
    if isinstance(msg, BuiltMessage):
        return msg.data
    if isinstance(msg, bytes | bytearray):
        return bytes(msg)
    return msg.as_bytes(policy=email.policy.SMTP)
