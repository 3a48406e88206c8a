"""Read the sending mailbox over IMAP (standard library `imaplib`), never changing its mail.

The folder is opened read-only (EXAMINE) and bodies are fetched with `BODY.PEEK[]`, so
nothing is marked `\\Seen`, flagged or deleted. What has been read is remembered by the
caller as a `Position` (the folder's UIDVALIDITY and the highest UID handled); when the
server reports another UIDVALIDITY the folder was rebuilt and reading starts again from
its first message. A handled message may be moved to a "done" folder: `UID MOVE` when the
server offers MOVE, otherwise `UID COPY` and the original stays where it is.

    config = ImapConfig(host="outlook.office365.com", user="shop@x.fr", password="…")
    with Mailbox(config) as box:
        for mail in box.fetch_new(previous_position):
            ...                                   # mail.uidvalidity, mail.uid, mail.raw
        box.move_done([mail.uid, ...])            # only when config.done_folder is set

Every failure is an `ImapError` with a `kind` and one plain sentence.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import imaplib
import re
import socket
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from commplan_xl.i18n import _
from commplan_xl.problems import CommplanError

__all__ = [
    "ImapConfig", "ImapError", "Fetched", "Position", "Mailbox", "TokenSource",
    "security_for", "read_new", "check_mailbox", "xoauth2_bytes", "mutf7",
    "UNREACHABLE", "TLS", "INSECURE", "SETTING", "SIGN_IN", "LOGIN", "FOLDER", "PROTOCOL",
]

# ImapError kinds
UNREACHABLE = "unreachable"  # unknown host, refused connection, no answer in time, dropped
TLS = "tls"  # the secure connection could not be made (certificate, wrong security for port)
INSECURE = "insecure"  # a login would go without TLS and imap_security is not explicitly none
SETTING = "setting"  # imap_security is not one of ssl, starttls, none
SIGN_IN = "sign_in"  # no password, or the OAuth2 token could not be had
LOGIN = "login"  # the server refused the login
FOLDER = "folder"  # imap_folder or bounce_folder_done does not exist
PROTOCOL = "protocol"  # the server answered something unexpected

PORT_SECURITY = {993: "ssl", 143: "starttls"}
SECURITIES = ("ssl", "starttls", "none")
_CHUNK = 25  # messages per UID FETCH: bounded memory whatever the mailbox holds


class TokenSource(Protocol):
    """Gives an OAuth2 access token (the mail/oauth providers fit)."""

    def token(self) -> str: ...


class ImapError(CommplanError):
    """The mailbox could not be read; `kind` is one of the kinds above."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ImapConfig:
    """Where and how to read the mailbox."""

    host: str
    port: int = 993
    security: str = ""  # "ssl" | "starttls" | "none"; empty: from the port (993 ssl, 143 starttls)
    user: str = ""
    password: str | None = field(default=None, repr=False)
    # OAuth2 (XOAUTH2) instead of a password: an object whose token() gives the access token.
    token_provider: TokenSource | None = field(default=None, repr=False, compare=False)
    folder: str = "INBOX"
    done_folder: str = ""  # empty: handled messages stay where they are
    timeout: float = 30.0
    # Bytes read of each message at most: a report comes first and the returned original
    # (with our attachments) last, so the start is enough to classify a big one.
    max_bytes: int = 1_000_000
    # Only for tests or a private CA: the default verifies the certificate against the system.
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Position:
    """What has been read in a folder: its UIDVALIDITY and the highest UID handled."""

    uidvalidity: int
    uid: int


@dataclass(frozen=True)
class Fetched:
    """One message read from the mailbox, exactly as the server holds it (up to max_bytes)."""

    uidvalidity: int
    uid: int
    raw: bytes
    size: int = 0  # the whole message's size on the server (RFC822.SIZE)

    @property
    def truncated(self) -> bool:
        return self.size > len(self.raw)

    @property
    def position(self) -> Position:
        return Position(self.uidvalidity, self.uid)


def security_for(config: ImapConfig) -> tuple[str, bool]:
    """(security, explicit): the configured one, else the one the port implies.

    A port other than 993 and 143 with no security set gives ("none", False): the
    connection is plain and no login is sent on it.
    """
    chosen = config.security.strip().lower()
    if chosen:
        if chosen not in SECURITIES:
            raise ImapError(
                _('imap_security "{value}" is not one of ssl, starttls, none').format(
                    value=config.security),
                kind=SETTING)
        return chosen, True
    return PORT_SECURITY.get(config.port, "none"), False


def xoauth2_bytes(user: str, token: str) -> bytes:
    """The XOAUTH2 initial response before base64: user=…^Aauth=Bearer …^A^A."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


class Mailbox:
    """One IMAP session on the configured folder. Use as `with Mailbox(config) as box:`."""

    def __init__(self, config: ImapConfig) -> None:
        self.config = config
        self._conn: imaplib.IMAP4 | None = None
        self._secret = ""
        self.uidvalidity = 0
        self.uidnext = 0
        self.exists = 0
        self._writable = False

    def __enter__(self) -> Mailbox:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connecting

    def open(self) -> None:
        """Connect, log in and open the folder read-only (once)."""
        if self._conn is not None:
            return
        security, explicit = security_for(self.config)
        if security == "none" and not explicit:
            raise ImapError(
                _("the mailbox server {where} would get the login without encryption: set "
                  "imap_security to ssl (port 993) or starttls (port 143), or to none to "
                  "allow it on purpose").format(where=self.config.where), kind=INSECURE)
        try:
            self._conn = self._connect(security)
            self._login()
            self._select(writable=False)
        except ImapError:
            self._drop()
            raise
        except (imaplib.IMAP4.error, ssl.SSLError, OSError) as exc:
            self._drop()
            raise self._connection_error(exc) from None

    def _context(self) -> ssl.SSLContext:
        return self.config.ssl_context or ssl.create_default_context()

    def _connect(self, security: str) -> imaplib.IMAP4:
        c = self.config
        if security == "ssl":
            return imaplib.IMAP4_SSL(c.host, c.port, ssl_context=self._context(),
                                     timeout=c.timeout)
        conn = imaplib.IMAP4(c.host, c.port, timeout=c.timeout)
        if security == "starttls":
            if "STARTTLS" not in conn.capabilities:
                with contextlib.suppress(imaplib.IMAP4.error, OSError):
                    conn.logout()
                raise ImapError(
                    _("the mailbox server {where} does not offer STARTTLS: check "
                      "imap_security (ssl for port 993, starttls for 143)").format(
                          where=c.where), kind=TLS)
            conn.starttls(ssl_context=self._context())
        return conn

    def _login(self) -> None:
        c = self.config
        conn = self._conn
        assert conn is not None
        try:
            if c.token_provider is not None:
                self._secret = self._token()
                conn.authenticate("XOAUTH2", _XOAuth2(c.user, self._secret))
            else:
                if not c.password:
                    raise ImapError(
                        _('there is no password for the mailbox user "{user}"').format(
                            user=c.user), kind=SIGN_IN)
                self._secret = c.password
                conn.login(c.user, c.password)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            raise ImapError(self._refusal(_text(exc)), kind=LOGIN) from None

    def _token(self) -> str:
        assert self.config.token_provider is not None
        try:
            return self.config.token_provider.token()
        except CommplanError as exc:
            raise ImapError(str(exc), kind=SIGN_IN) from None

    def _refusal(self, reply: str) -> str:
        c = self.config
        head = _('the mailbox server {where} refused the login of "{user}" ({reply})').format(
            where=c.where, user=c.user, reply=reply)
        low = reply.lower()
        if c.token_provider is not None and _is_microsoft(c.host):
            hint = _("the app needs the Office 365 Exchange Online application permission "
                     "IMAP.AccessAsApp (admin consent) and access to this mailbox "
                     "(Add-MailboxPermission); imap_user must be the mailbox address")
        elif c.token_provider is not None:
            hint = _("the token was not accepted for this address; check imap_user")
        elif "application-specific" in low or "web browser" in low or "for imap" in low:
            hint = _("Gmail needs IMAP turned on in its settings and an app password (with "
                     "2-step verification), or the Google sign-in (oauth2-google)")
        elif _is_microsoft(c.host):
            hint = _("Microsoft 365 usually refuses passwords for IMAP: use the Microsoft "
                     "sign-in (oauth2-microsoft) with the IMAP.AccessAsApp permission")
        elif "logindisabled" in low or "plaintext" in low:
            hint = _("the server wants an encrypted connection first: check imap_security")
        else:
            hint = _("check imap_user and the password")
        return self._scrub(_("{head}: {advice}").format(head=head, advice=hint))

    def _select(self, *, writable: bool) -> None:
        conn = self._conn
        assert conn is not None
        typ, data = conn.select(_quote(self.config.folder), readonly=not writable)
        if typ != "OK":
            raise ImapError(
                _('the folder "{folder}" does not exist in the mailbox "{user}" on {where} '
                  "({reply}): check imap_folder").format(
                      folder=self.config.folder, user=self.config.user,
                      where=self.config.where, reply=_text(data)), kind=FOLDER)
        self._writable = writable
        self.exists = int((data or [b"0"])[0] or 0)
        self.uidvalidity = _number(conn.response("UIDVALIDITY")[1])
        self.uidnext = _number(conn.response("UIDNEXT")[1])

    def _connection_error(self, exc: BaseException) -> ImapError:
        where = self.config.where
        if isinstance(exc, socket.gaierror):
            return ImapError(
                _('could not find the mailbox server "{host}" (unknown host name): check '
                  "imap_host").format(host=self.config.host), kind=UNREACHABLE)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return ImapError(
                _("the certificate of the mailbox server {where} could not be verified "
                  "({error}): check that imap_host is the server's own name").format(
                      where=where, error=exc.verify_message or exc.reason), kind=TLS)
        if isinstance(exc, ssl.SSLError):
            reason = getattr(exc, "reason", None) or exc
            return ImapError(
                _("could not open a secure connection to the mailbox server {where} "
                  "({error}): check imap_security (ssl for port 993, starttls for 143)")
                .format(where=where, error=reason), kind=TLS)
        if isinstance(exc, TimeoutError):
            return ImapError(
                _("the mailbox server {where} did not answer within {seconds} s: check "
                  "imap_host and imap_port").format(
                      where=where, seconds=f"{self.config.timeout:g}"), kind=UNREACHABLE)
        if isinstance(exc, ConnectionRefusedError):
            return ImapError(
                _("could not reach the mailbox server {where} (connection refused): check "
                  "imap_host and imap_port").format(where=where), kind=UNREACHABLE)
        if isinstance(exc, imaplib.IMAP4.abort | OSError):
            return ImapError(
                _("the mailbox server {where} closed the connection ({reply})").format(
                    where=where, reply=self._scrub(_text(exc))), kind=UNREACHABLE)
        return ImapError(
            _("the mailbox server {where} gave an unexpected answer ({reply})").format(
                where=where, reply=self._scrub(_text(exc))), kind=PROTOCOL)

    def _scrub(self, text: str) -> str:
        if self._secret and len(self._secret) >= 3:
            text = text.replace(self._secret, "***")
        return text

    # -- reading

    def new_uids(self, since: Position | None = None, *,
                 since_date: dt.date | None = None) -> list[int]:
        """UIDs after `since` (all of them when its UIDVALIDITY is not the folder's).

        `since_date` limits a read from the beginning to messages received on or after that
        day (a first read of a full mailbox).
        """
        after = since.uid if since is not None and since.uidvalidity == self.uidvalidity else 0
        criteria = [f"UID {after + 1}:*"]
        if after == 0 and since_date is not None:
            criteria.append(f"SINCE {_imap_date(since_date)}")
        data = self._command("SEARCH", *criteria)
        uids = sorted({int(n) for chunk in data if chunk for n in chunk.split()})
        # "n:*" also matches the highest UID when n is beyond it: keep only what is new.
        return [uid for uid in uids if uid > after]

    def fetch_new(self, since: Position | None = None, *,
                  since_date: dt.date | None = None) -> Iterator[Fetched]:
        """Each message after `since`, oldest first, read without marking it seen."""
        uids = self.new_uids(since, since_date=since_date)
        for start in range(0, len(uids), _CHUNK):
            yield from self._fetch(uids[start:start + _CHUNK])

    def _fetch(self, uids: list[int]) -> Iterator[Fetched]:
        part = f"BODY.PEEK[]<0.{self.config.max_bytes}>" if self.config.max_bytes else (
            "BODY.PEEK[]")
        data = self._command("FETCH", _uid_set(uids), f"(UID RFC822.SIZE {part})")
        found: dict[int, tuple[bytes, int]] = {}
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                uid = re.search(rb"UID (\d+)", item[0])
                size = re.search(rb"RFC822\.SIZE (\d+)", item[0])
                if uid:
                    found[int(uid.group(1))] = (item[1], int(size.group(1)) if size else 0)
        for uid in uids:
            if uid in found:  # a message expunged meanwhile by someone else is just absent
                raw, size = found[uid]
                yield Fetched(self.uidvalidity, uid, raw, size or len(raw))

    def _plain(self, call: Any, *args: Any, **kw: Any) -> Any:
        """Run one imaplib call; a broken connection or a BAD answer becomes an ImapError."""
        try:
            return call(*args, **kw)
        except (imaplib.IMAP4.error, OSError) as exc:
            self._drop()
            raise self._connection_error(exc) from None

    def _command(self, command: str, *args: str) -> list:
        conn = self._conn
        if conn is None:
            raise ImapError(_("the mailbox is not open"), kind=PROTOCOL)
        try:
            typ, data = conn.uid(command, *args)
        except (imaplib.IMAP4.error, OSError) as exc:
            self._drop()
            raise self._connection_error(exc) from None
        if typ != "OK":
            raise ImapError(
                _("the mailbox server {where} refused UID {command} ({reply})").format(
                    where=self.config.where, command=command, reply=_text(data)),
                kind=PROTOCOL)
        return data

    # -- moving handled reports

    def capabilities(self) -> set[str]:
        conn = self._conn
        if conn is None:
            return set()
        typ, data = self._plain(conn.capability)
        return set(_text(data).upper().split()) if typ == "OK" else set(conn.capabilities)

    def move_done(self, uids: Iterable[int]) -> str:
        """Move these messages to `done_folder`; returns "moved", "copied" or "" (none set).

        With MOVE the messages leave the folder; without it they are only copied, since
        removing them would mean deleting mail.
        """
        wanted = sorted(set(uids))
        done = self.config.done_folder.strip()
        if not done or not wanted:
            return ""
        conn = self._conn
        if conn is None:
            raise ImapError(_("the mailbox is not open"), kind=PROTOCOL)
        typ, data = self._plain(conn.list, '""', _quote(done))
        if typ != "OK" or not [d for d in data if d]:
            raise ImapError(
                _('the folder "{folder}" named in bounce_folder_done does not exist in the '
                  'mailbox "{user}": create it or empty the setting').format(
                      folder=done, user=self.config.user), kind=FOLDER)
        has_move = "MOVE" in self.capabilities()
        if has_move and not self._writable:
            self._plain(self._select, writable=True)  # MOVE needs the folder read-write
        self._command("MOVE" if has_move else "COPY", _uid_set(wanted), _quote(done))
        return "moved" if has_move else "copied"

    # -- closing

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                conn.shutdown()

    def close(self) -> None:
        """Log out politely (CLOSE is never sent: it would expunge)."""
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                conn.logout()
        self._conn = None


class _XOAuth2:
    """imaplib authenticator: the XOAUTH2 string first, then an empty answer to the error
    challenge a refusing server (Gmail, Dovecot) sends before its final NO."""

    def __init__(self, user: str, token: str) -> None:
        self._first = xoauth2_bytes(user, token)
        self._sent = False

    def __call__(self, _challenge: bytes) -> bytes:
        if self._sent:
            return b""
        self._sent = True
        return self._first


def read_new(config: ImapConfig, since: Position | None = None, *,
             since_date: dt.date | None = None) -> list[Fetched]:
    """Open the mailbox, read every message after `since`, log out."""
    with Mailbox(config) as box:
        return list(box.fetch_new(since, since_date=since_date))


def check_mailbox(config: ImapConfig) -> str:
    """Log in and open the folder; a sentence saying so (for `check --smtp`)."""
    security, _explicit = security_for(config)
    with Mailbox(config) as box:
        count = box.exists
    how = {"ssl": "SSL", "starttls": "STARTTLS"}.get(security, _("no encryption"))
    return _('the mailbox server {where} answered ({how}) and "{user}" logged in; the folder '
             '"{folder}" holds {n} message(s)').format(where=config.where, how=how,
                                                       user=config.user, folder=config.folder,
                                                       n=count)


def _is_microsoft(host: str) -> bool:
    return host.lower().endswith(("office365.com", "outlook.com"))


def _text(value: object) -> str:
    if isinstance(value, list | tuple):
        return " ".join(_text(v) for v in value if v is not None)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip()
    if isinstance(value, BaseException):
        return _text(value.args[0]) if value.args else type(value).__name__
    return str(value).strip()


def _number(data: list | None) -> int:
    for item in data or []:
        if item:
            with contextlib.suppress(ValueError):
                return int(item)
    return 0


def _quote(folder: str) -> str:
    """A folder name as IMAP wants it: modified UTF-7 ("Traités" → "Trait&AOk-s"), quoted."""
    name = mutf7(folder)
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mutf7(name: str) -> str:
    """IMAP's modified UTF-7 for folder names (RFC 3501, 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            packed = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            out.append("&" + packed.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def _uid_set(uids: list[int]) -> str:
    """Compact UID set: 1:3,7,9:10."""
    parts: list[str] = []
    run: list[int] = []
    for uid in sorted(uids):
        if run and uid == run[-1] + 1:
            run.append(uid)
            continue
        if run:
            parts.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [uid]
    if run:
        parts.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _imap_date(day: dt.date) -> str:
    return f"{day.day:02d}-{_MONTHS[day.month - 1]}-{day.year}"
