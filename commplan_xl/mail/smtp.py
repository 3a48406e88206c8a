"""Build each mail with the standard library and send it over one SMTP connection.

yagmail opens the connection (host, port, SSL/STARTTLS, login); its own `send()` is not used
(see DESIGN.md, "Known pitfalls"): messages are built here and their exact bytes are sent
with SMTP commands issued one by one, so a dropped connection is retried only when it is
certain the server accepted nothing.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.policy
import email.utils
import mimetypes
import os
import re
import secrets
import smtplib
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, cast

from commplan_xl.i18n import N_, _
from commplan_xl.mail import oauth
from commplan_xl.mail.bounces import REF_HEADER, new_ref
from commplan_xl.mail.render import InlineImage, Rendered, fold_line
from commplan_xl.problems import SendFailure, SendUncertain
from commplan_xl.settings import Settings

PASSWORD_ENV = "COMMPLAN_SMTP_PASSWORD"
KEYRING_SERVICE = "commplan"
_CRLF = b"\r\n"


# ---------------------------------------------------------------- building messages


class _Loaded(NamedTuple):
    """One attachment file as every mail carries it."""

    data: bytes  # the file's bytes
    ctype: str  # e.g. "application/pdf"
    body: bytes  # base64 in 76-character CRLF lines, encoded once per run


class AttachmentCache:
    """Attachments by path, read and base64-encoded once per run (1,000 mails share one
    50 KB PDF)."""

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
            temporary=True,
        ) from None
    except OSError as exc:
        raise SendFailure(
            _('the attachment "{name}" could not be read ({error})').format(
                name=path.name, error=exc.strerror or exc),
            temporary=True,
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
            temporary=False,
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
        return f"{local}@{domain}"  # what Address gives for these, at 1/50 of the cost
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

    __slots__ = ("data", "_parsed", "_wire", "message_id", "ref")

    def __init__(self, data: bytes, *, message_id: str = "", ref: str = "") -> None:
        self.data = data
        self.message_id = message_id  # "<…>", unique per mail: bounces name it
        self.ref = ref  # the X-Commplan-Ref value, our own reference for bounces
        self._parsed: EmailMessage | None = None
        self._wire: bytes | None = None

    @property
    def wire(self) -> bytes:
        """The bytes as SMTP's DATA carries them (dot-stuffed, ended by CRLF . CRLF), made
        once: a run makes them while the server takes the mail before."""
        if self._wire is None:
            self._wire = _dot_stuff(self.data)
        return self._wire

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

    Assembled here rather than by the email package, which costs ~20 ms per mail with a
    50 KB attachment (header parsing, re-encoding the attachment, writing it line by
    line); the structure is the one `EmailMessage.add_attachment` makes. Header values
    are folded to one line, so no data can add a header. Every mail carries a unique
    Message-ID and our reference header (`ref`, a fresh one when not given), which a
    returned mail quotes.
    """
    if not to:
        raise SendFailure(_("the customer has no email address"), temporary=False)
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
    between two words. (email.header.Header takes ~0.5 ms for a subject: this ~20 µs.)"""
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


# ---------------------------------------------------------------- the connection


def smtp_password(user: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The SMTP password from COMMPLAN_SMTP_PASSWORD, else the keyring; never a prompt."""
    env = os.environ if environ is None else environ
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    try:
        import keyring

        return keyring.get_password(KEYRING_SERVICE, user)
    except Exception:  # no keyring backend on this machine: same as no password stored
        return None


class _Dropped(Exception):
    """The connection failed before the server could have accepted the message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reply_text(code: int, resp: bytes | str) -> str:
    text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
    return f"{code} {' '.join(text.split())}".strip()


def _why(exc: BaseException) -> str:
    """A few words for a network error, e.g. "connection refused"."""
    if isinstance(exc, ConnectionRefusedError):
        return _("connection refused")
    if isinstance(exc, ConnectionResetError):
        return _("connection reset")
    if isinstance(exc, TimeoutError | socket.timeout) or "timed out" in str(exc):
        return _("no answer in time")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return _("connection closed by the server")
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply_text(exc.smtp_code, exc.smtp_error)
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


class HandedOver:
    """A message the server has whole, its answer not read yet (see `Mailer.hand_over`)."""

    def __init__(self, mailer: Mailer, refused: dict[str, tuple[int, str]]) -> None:
        self._mailer = mailer
        self._refused = refused

    def reply(self) -> dict[str, str]:
        """The refused addresses when the server took the message; raises SendFailure when
        it refused it, SendUncertain when the line failed before its answer."""
        return self._mailer._final_reply(self._refused)


class Mailer:
    """One SMTP connection for a whole run. Use as `with Mailer(settings) as mailer:`.

    It connects on the first `send`, and reconnects once when the server hung up before it
    could have accepted a message. Failures are `SendFailure`s with a sentence for people.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        environ: Mapping[str, str] | None = None,
        token_provider: oauth.TokenProvider | None = None,
    ) -> None:
        self.settings = settings
        self._environ = environ
        self._password: str | None = None  # looked up on first connect
        # OAuth2 (smtp_auth oauth2-*): chosen from the settings on first connect unless given.
        self._tokens = token_provider
        self._token = ""
        self._client: Any = None  # the yagmail client owning the connection
        self._smtp: smtplib.SMTP | None = None
        self.connections = 0  # opened so far (for reports and tests)
        self.sent = 0

    # -- context manager

    def __enter__(self) -> Mailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def where(self) -> str:
        return f"{self.settings.smtp_host}:{self.settings.smtp_port}"

    def _fail(self, message: str, *, temporary: bool, connection: bool = False) -> SendFailure:
        return SendFailure(self._scrub(message), temporary=temporary, connection=connection)

    def _scrub(self, text: str) -> str:
        """The password or token never appears in a sentence, even if a server echoed it."""
        for secret in (self._password, self._token):
            if secret and len(secret) >= 3:
                text = text.replace(secret, "***")
        return text

    @property
    def login_user(self) -> str:
        """Who logs in: smtp_user, or for OAuth2 the sender's address when it is empty."""
        user = self.settings.smtp_user.strip()
        if not user and self.settings.smtp_auth.startswith("oauth2"):
            return self.settings.sender_email.strip()
        return user

    # -- connecting

    def connect(self) -> None:
        """Open and authenticate the connection (if not open yet)."""
        if self._smtp is not None:
            return
        s = self.settings
        user = self.login_user
        if s.smtp_auth.startswith("oauth2"):
            # The token comes first: a sign-in problem is reported without touching SMTP.
            if self._tokens is None:
                self._tokens = oauth.provider_for(s, self._environ)
            self._token = self._tokens.token()
        elif user and self._password is None:
            self._password = smtp_password(user, self._environ)
            if not self._password:
                raise self._fail(
                    _('there is no SMTP password for the user "{user}": set the environment '
                      'variable {variable}, or store it in the system keyring (service '
                      '"{service}", user "{user}")').format(
                          user=user, variable=PASSWORD_ENV, service=KEYRING_SERVICE),
                    temporary=True, connection=True,
                )
        try:
            self._open(user)
        except SendFailure:
            self._drop()
            raise
        except smtplib.SMTPAuthenticationError as exc:
            self._drop()
            raise self._fail(
                oauth.explain_login_refusal(
                    exc.smtp_code, _reply_text(exc.smtp_code, exc.smtp_error),
                    auth=s.smtp_auth, where=self.where, user=user),
                temporary=True, connection=True,
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            self._drop()
            what = "STARTTLS" if "STARTTLS" in str(exc).upper() else _("a login (AUTH)")
            if "XOAUTH2" in str(exc).upper():
                what = _("the OAuth2 login (AUTH XOAUTH2)")
            raise self._fail(
                _("the mail server {where} does not offer {what}: check smtp_security and "
                  "smtp_user in the Settings sheet").format(where=self.where, what=what),
                temporary=True, connection=True,
            ) from None
        except ssl.SSLError as exc:
            self._drop()
            raise self._fail(
                _("could not open a secure connection to the mail server {where} ({error}): "
                  "check smtp_security (ssl for port 465, starttls for 587)").format(
                      where=self.where, error=exc.reason or exc),
                temporary=True, connection=True,
            ) from None
        except socket.gaierror:
            self._drop()
            raise self._fail(
                _('could not find the mail server "{host}" (unknown host name): check '
                  "smtp_host in the Settings sheet").format(host=s.smtp_host),
                temporary=True, connection=True,
            ) from None
        except (TimeoutError, smtplib.SMTPServerDisconnected) as exc:
            self._drop()
            if _why(exc) != _("no answer in time"):
                raise self._fail(
                    _("the mail server {where} closed the connection while connecting: is "
                      "smtp_security right (ssl for port 465, starttls for 587)?").format(
                          where=self.where),
                    temporary=True, connection=True,
                ) from None
            raise self._fail(
                _("the mail server {where} did not answer within {seconds} s: is it running, "
                  "and are smtp_host, smtp_port and smtp_security right?").format(
                      where=self.where, seconds=f"{s.smtp_timeout:g}"),
                temporary=True, connection=True,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise self._fail(
                _("could not reach the mail server {where} ({why}): is it running?").format(
                    where=self.where, why=_why(exc)),
                temporary=True, connection=True,
            ) from None
        self.connections += 1

    def _open(self, user: str) -> None:
        import yagmail  # only mailer.py knows SMTP; keep `import commplan_xl.mail.smtp` light

        s = self.settings
        # Always a timeout: a silent server must never hang a scheduled run.
        kwargs: dict[str, Any] = {"timeout": s.smtp_timeout}
        if s.smtp_security == "ssl":
            # smtplib's default SSL context does not check the certificate: use one that does.
            kwargs["context"] = ssl.create_default_context()
        starttls: bool | dict[str, Any] = False
        if s.smtp_security == "starttls":
            starttls = {"context": ssl.create_default_context()}
        use_token = s.smtp_auth.startswith("oauth2")
        skip_login = not user or use_token
        client = yagmail.SMTP(
            user=user or None,
            password=self._password if not skip_login else None,
            host=s.smtp_host,
            port=s.smtp_port,
            smtp_starttls=starttls,
            smtp_ssl=s.smtp_security == "ssl",
            smtp_skip_login=skip_login,
            # yagmail checks only that the login looks like an address; "apikey"-style
            # logins are fine, and recipients are checked here (check_address).
            soft_email_validation=False,
            **kwargs,
        )
        client.set_logging(None)  # yagmail logs to stderr by default
        self._client = client
        client.login()  # connects (with the timeout), STARTTLS, AUTH unless skipped
        self._smtp = client.smtp
        if use_token:
            self._xoauth2_login(user, self._token)

    def _xoauth2_login(self, user: str, token: str) -> None:
        """`AUTH XOAUTH2` with the provider's token (Microsoft 365, Gmail)."""
        smtp = self._smtp
        assert smtp is not None
        smtp.ehlo_or_helo_if_needed()
        if "XOAUTH2" not in smtp.esmtp_features.get("auth", "").upper().split():
            raise smtplib.SMTPNotSupportedError("AUTH XOAUTH2 not offered")
        code, resp = smtp.docmd("AUTH", "XOAUTH2 " + oauth.xoauth2_string(user, token))
        if code == 334:
            # Gmail answers a refused token with a challenge holding the error; an empty
            # line ends the exchange with the final refusal.
            code, resp = smtp.docmd("")
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, resp)

    def _drop(self) -> None:
        """Forget the connection without waiting for a polite goodbye."""
        smtp, self._smtp = self._smtp, None
        client, self._client = self._client, None
        if client is not None:
            client.is_closed = True  # its __del__ must not QUIT a dead socket later
            smtp = smtp or client.smtp
        if smtp is not None:
            with contextlib.suppress(OSError):
                smtp.close()

    def close(self) -> None:
        """QUIT politely when connected, then forget the connection."""
        if self._smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()
        self._drop()

    # -- sending

    def send(
        self,
        msg: BuiltMessage | EmailMessage | bytes,
        *,
        from_addr: str,
        to_addrs: Sequence[str],
    ) -> dict[str, str]:
        """Send one message; returns the refused addresses (address -> sentence) when some
        recipients were accepted. Raises SendFailure (or SendUncertain) otherwise."""
        return self.hand_over(msg, from_addr=from_addr, to_addrs=to_addrs).reply()

    def hand_over(
        self,
        msg: BuiltMessage | EmailMessage | bytes,
        *,
        from_addr: str,
        to_addrs: Sequence[str],
        meanwhile: Callable[[], object] | None = None,
    ) -> HandedOver:
        """`send` in two halves: give the server the whole message, and return without
        waiting for its answer; `.reply()` reads it. In between, the caller may work (not
        send) while the server takes the message. Raises what `send` raises before the
        message is handed over.

        `meanwhile` runs once, while the server reads the first command for this message
        (nothing of the message is sent yet): by the time hand_over returns or raises a
        SendFailure, it has run. If it raises, that is raised and the line is dropped.
        """
        pending = meanwhile

        def run_pending() -> None:
            nonlocal pending
            if pending is not None:
                work, pending = pending, None
                try:
                    work()
                except BaseException:
                    self._drop()  # the server's answer to MAIL is still unread: start over
                    raise

        try:
            return self._hand_over(msg, from_addr, to_addrs, run_pending)
        except SendFailure:
            run_pending()
            raise

    def _hand_over(self, msg: BuiltMessage | EmailMessage | bytes, from_addr: str,
                   to_addrs: Sequence[str], meanwhile: Callable[[], None]) -> HandedOver:
        data = message_bytes(msg)
        wire = msg.wire if isinstance(msg, BuiltMessage) else _dot_stuff(data)
        sender = check_address(from_addr)
        rcpts = [check_address(a) for a in to_addrs]
        if not rcpts:
            raise self._fail(_("the message has no recipient"), temporary=False)
        for attempt in (1, 2):
            self.connect()
            try:
                refused = self._envelope(sender, rcpts, len(data), meanwhile)
            except _Dropped as exc:
                self._drop()
                if attempt == 2:
                    raise self._fail(
                        _("the mail server {where} hung up twice before taking the message "
                          "({why}); it will be tried again on the next run").format(
                              where=self.where, why=exc.reason),
                        temporary=True, connection=True,
                    ) from None
                continue
            # From here on the server may have the message: never send it again by itself.
            try:
                assert self._smtp is not None
                self._smtp.send(wire)
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                raise self._uncertain(exc) from None
            return HandedOver(self, refused)
        raise AssertionError("unreachable")

    def _envelope(self, sender: str, rcpts: list[str], size: int,
                  meanwhile: Callable[[], None]) -> dict[str, tuple[int, str]]:
        """MAIL, RCPT and DATA: the refused recipients when the server is ready for the
        message. Raises _Dropped when the line is dead (nothing was sent). `meanwhile`
        runs while the server reads MAIL."""
        smtp = self._smtp
        assert smtp is not None
        try:
            smtp.ehlo_or_helo_if_needed()
            declared = f" SIZE={size}" if smtp.has_extn("size") else ""
            # putcmd, not smtp.mail/rcpt: the addresses are checked already, and smtplib's
            # quoteaddr would parse each again (0.1 ms).
            smtp.putcmd("mail", f"FROM:<{sender}>{declared}")
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Dropped(_why(exc)) from None
        meanwhile()  # outside the try: its own OSError is not a dropped line
        try:
            code, resp = smtp.getreply()
            if code == 421:
                raise _Dropped(_reply_text(code, resp))
            if code != 250:
                self._reset()
                raise self._mail_from_failure(sender, code, resp)
            refused: dict[str, tuple[int, str]] = {}
            for rcpt in rcpts:
                code, resp = smtp.docmd("rcpt", f"TO:<{rcpt}>")
                if code == 421:
                    raise _Dropped(_reply_text(code, resp))
                if code not in (250, 251):
                    refused[rcpt] = (code, _reply_text(code, resp))
            if len(refused) == len(rcpts):
                self._reset()
                raise self._refused_failure(refused)
            code, resp = smtp.docmd("DATA")
            if code == 421:
                raise _Dropped(_reply_text(code, resp))
            if code != 354:
                self._reset()
                raise self._reply_failure(N_("did not take the message"), code, resp)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Dropped(_why(exc)) from None
        return refused

    def _uncertain(self, exc: BaseException) -> SendUncertain:
        self._drop()
        return SendUncertain(
            _("the connection to the mail server {where} failed ({why}) while the message was "
              "being handed over: it may or may not have been sent, so it will not be sent "
              "again automatically (check, then use `commplan resend`)").format(
                  where=self.where, why=_why(exc)),
            temporary=False, connection=True,
        )

    def _final_reply(self, refused: dict[str, tuple[int, str]]) -> dict[str, str]:
        """The server's answer to a handed-over message (see `hand_over`)."""
        smtp = self._smtp
        if smtp is None:
            raise self._uncertain(OSError(_("the connection was closed")))
        try:
            code, resp = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise self._uncertain(exc) from None
        if code != 250:
            if code == 421:
                self._drop()
            raise self._reply_failure(N_("did not take the message"), code, resp)
        self.sent += 1
        return {addr: _refused_sentence(addr, text) for addr, (_c, text) in refused.items()}

    def _reset(self) -> None:
        """RSET after a refusal so the next message starts clean; a dead line is dropped."""
        if self._smtp is None:
            return
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _reply_failure(self, what: str, code: int, resp: bytes | str) -> SendFailure:
        temporary = 400 <= code < 500
        return self._fail(
            _("the mail server {what} ({reply})").format(what=_(what),
                                                         reply=_reply_text(code, resp))
            + (_("; it will be tried again on the next run") if temporary else ""),
            temporary=temporary,
        )

    def _mail_from_failure(self, sender: str, code: int, resp: bytes | str) -> SendFailure:
        if code == 552 or 400 <= code < 500:  # message too big, or a temporary refusal
            return self._reply_failure(N_("did not take the message"), code, resp)
        # Any other refusal of the sender is the site's configuration, not this message:
        # temporary (retried once fixed) and a connection problem (the run stops trying).
        return self._fail(
            _("the mail server refused the sender address {sender} ({reply}): check sender_email "
              "and smtp_user in the Settings sheet").format(sender=sender,
                                                            reply=_reply_text(code, resp)),
            temporary=True, connection=True,
        )

    def _refused_failure(self, refused: dict[str, tuple[int, str]]) -> SendFailure:
        # Temporary when any address may still work later (4xx): a retry can reach it.
        temporary = any(400 <= code < 500 for code, _t in refused.values())
        sentences = "; ".join(_refused_sentence(a, t) for a, (_c, t) in refused.items())
        return self._fail(sentences, temporary=temporary)


def _refused_sentence(address: str, reply: str) -> str:
    code = reply[:3]
    if code.startswith("4"):
        return _("the mail server refused the address {address} for now ({reply}): it will be "
                 "tried again on the next run").format(address=address, reply=reply)
    return _("the mail server refused the address {address} ({reply}): correct the "
             "customer's email").format(address=address, reply=reply)


def _dot_stuff(data: bytes) -> bytes:
    """The DATA payload: a leading "." doubled on each line, ended by CRLF "." CRLF."""
    # bytes.replace, not re.sub: ~20x faster on a 70 KB mail.
    data = data.replace(b"\n.", b"\n..")
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(_CRLF):
        data += _CRLF
    return data + b"." + _CRLF


def check_connection(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    token_provider: oauth.TokenProvider | None = None,
) -> str:
    """Connect, log in and quit, sending nothing: a sentence, or SendFailure."""
    with Mailer(settings, environ=environ, token_provider=token_provider) as mailer:
        mailer.connect()
        user = mailer.login_user
    login = _('logged in as "{user}"').format(user=user) if user else _("no login")
    if settings.smtp_auth.startswith("oauth2"):
        login += _(" with OAuth2")
    security = {"ssl": "SSL", "starttls": "STARTTLS"}.get(settings.smtp_security,
                                                          _("no encryption"))
    return _("the mail server {host}:{port} answered ({security}, {login}); nothing was sent"
             ).format(host=settings.smtp_host, port=settings.smtp_port, security=security,
                      login=login)
