"""Build each mail with the standard library and send it over one SMTP connection.

yagmail opens the connection (host, port, SSL/STARTTLS, login); its own `send()` is not used
(see DESIGN.md, "Known pitfalls"): messages are built here and their exact bytes are sent
with SMTP commands issued one by one, so a dropped connection is retried only when it is
certain the server accepted nothing.
"""

from __future__ import annotations

import contextlib
import email.policy
import email.utils
import mimetypes
import os
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping, MutableMapping, Sequence
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from commplan_xl import oauth
from commplan_xl.errors import SendFailure, SendUncertain
from commplan_xl.render import Rendered, fold_line
from commplan_xl.settings import Settings

PASSWORD_ENV = "COMMPLAN_SMTP_PASSWORD"
KEYRING_SERVICE = "commplan"
_CRLF = b"\r\n"


# ---------------------------------------------------------------- building messages


class AttachmentCache:
    """File bytes by path, read once per run (1,000 mails share one 50 KB PDF).

    `storage` lets a caller keep the bytes in its own dict across calls.
    """

    def __init__(self, storage: MutableMapping[Path, bytes] | None = None) -> None:
        self._data: MutableMapping[Path, bytes] = {} if storage is None else storage

    def read(self, path: Path) -> bytes:
        key = Path(path).resolve()
        data = self._data.get(key)
        if data is None:
            try:
                data = key.read_bytes()
            except FileNotFoundError:
                raise SendFailure(
                    f'the attachment "{key.name}" is missing from {key.parent}: add the file'
                    " or correct the attachments column of the Plans sheet",
                    temporary=True,
                ) from None
            except OSError as exc:
                raise SendFailure(
                    f'the attachment "{key.name}" could not be read ({exc.strerror or exc})',
                    temporary=True,
                ) from None
            self._data[key] = data
        return data


def check_address(address: str) -> str:
    """The address as the envelope and headers will carry it, or a permanent SendFailure.

    A non-ASCII domain is turned into its ASCII (IDNA) form; a non-ASCII local part is
    refused because few servers accept it.
    """
    text = address.strip()

    def bad(why: str) -> SendFailure:
        return SendFailure(
            f'"{text}" is not a valid email address ({why}): correct the customer\'s email',
            temporary=False,
        )

    if not text or any(ord(ch) < 32 or ord(ch) == 127 for ch in text) or " " in text:
        raise bad("empty, or with spaces or line breaks" if text else "empty")
    local, sep, domain = text.rpartition("@")
    if not sep or not local or not domain or "." not in domain.strip("."):
        raise bad("it needs a name, @ and a domain like example.com")
    if not local.isascii():
        raise bad("accented letters before the @ are not accepted by most mail servers")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise bad("the domain is not valid") from None
    try:
        parsed = Address(addr_spec=f"{local}@{domain}")
    except Exception:  # the email package raises several kinds for a malformed address
        raise bad("it does not follow the rules of email addresses") from None
    if parsed.addr_spec != f"{local}@{domain}":
        raise bad("it does not follow the rules of email addresses")
    return parsed.addr_spec


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"


def build_message(
    *,
    rendered: Rendered,
    sender_email: str,
    sender_name: str,
    reply_to: str,
    to: Sequence[str],
    attachments: Sequence[Path],
    domain: str | None = None,
    cache: AttachmentCache | MutableMapping[Path, bytes] | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """The complete mail: text/plain + HTML alternative, then the attachments.

    Header values are folded to one line, so no data can add a header.
    """
    if not to:
        raise SendFailure("the customer has no email address", temporary=False)
    sender = check_address(sender_email)
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = Address(display_name=fold_line(sender_name), addr_spec=sender)
    msg["To"] = tuple(Address(addr_spec=check_address(a)) for a in to)
    if reply_to.strip():
        msg["Reply-To"] = Address(addr_spec=check_address(reply_to))
    msg["Date"] = email.utils.format_datetime(date or email.utils.localtime())
    msg["Message-ID"] = email.utils.make_msgid(domain=domain or _domain(sender))
    msg["Subject"] = fold_line(rendered.subject)
    # Quoted-printable keeps every line short and 7-bit: any server accepts it.
    msg.set_content(rendered.text, cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    reader = cache if isinstance(cache, AttachmentCache) else AttachmentCache(cache)
    for path in attachments:
        data = reader.read(Path(path))
        ctype, encoding = mimetypes.guess_type(Path(path).name)
        if ctype is None or encoding is not None or "/" not in ctype:
            ctype = "application/octet-stream"  # unknown, or compressed (.tar.gz)
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=Path(path).name)
    return msg


def message_bytes(msg: EmailMessage) -> bytes:
    """The exact bytes that are archived and sent (CRLF line endings)."""
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
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, TimeoutError | socket.timeout) or "timed out" in str(exc):
        return "no answer in time"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "connection closed by the server"
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply_text(exc.smtp_code, exc.smtp_error)
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


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
        password: str | None = None,
        token_provider: oauth.TokenProvider | None = None,
    ) -> None:
        self.settings = settings
        self._environ = environ
        self._password = password
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
                    f'there is no SMTP password for the user "{user}": set the environment'
                    f" variable {PASSWORD_ENV}, or store it in the system keyring (service"
                    f' "{KEYRING_SERVICE}", user "{user}")',
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
            what = "STARTTLS" if "STARTTLS" in str(exc).upper() else "a login (AUTH)"
            if "XOAUTH2" in str(exc).upper():
                what = "the OAuth2 login (AUTH XOAUTH2)"
            raise self._fail(
                f"the mail server {self.where} does not offer {what}: check smtp_security"
                " and smtp_user in the Settings sheet",
                temporary=True, connection=True,
            ) from None
        except ssl.SSLError as exc:
            self._drop()
            raise self._fail(
                f"could not open a secure connection to the mail server {self.where}"
                f" ({exc.reason or exc}): check smtp_security (ssl for port 465, starttls"
                " for 587)",
                temporary=True, connection=True,
            ) from None
        except socket.gaierror:
            self._drop()
            raise self._fail(
                f'could not find the mail server "{s.smtp_host}" (unknown host name):'
                " check smtp_host in the Settings sheet",
                temporary=True, connection=True,
            ) from None
        except (TimeoutError, smtplib.SMTPServerDisconnected) as exc:
            self._drop()
            if _why(exc) != "no answer in time":
                raise self._fail(
                    f"the mail server {self.where} closed the connection while connecting:"
                    " is smtp_security right (ssl for port 465, starttls for 587)?",
                    temporary=True, connection=True,
                ) from None
            raise self._fail(
                f"the mail server {self.where} did not answer within {s.smtp_timeout:g} s:"
                " is it running, and are smtp_host, smtp_port and smtp_security right?",
                temporary=True, connection=True,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise self._fail(
                f"could not reach the mail server {self.where} ({_why(exc)}): is it running?",
                temporary=True, connection=True,
            ) from None
        self.connections += 1

    def _open(self, user: str) -> None:
        import yagmail  # only mailer.py knows SMTP; keep `import commplan_xl.mailer` light

        s = self.settings
        # Always a timeout: a silent server must never hang a scheduled run.
        kwargs: dict[str, Any] = {"timeout": s.smtp_timeout if s.smtp_timeout > 0 else 30.0}
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
        msg: EmailMessage | bytes,
        *,
        from_addr: str,
        to_addrs: Sequence[str],
    ) -> dict[str, str]:
        """Send one message; returns the refused addresses (address -> sentence) when some
        recipients were accepted. Raises SendFailure (or SendUncertain) otherwise."""
        data = message_bytes(msg) if isinstance(msg, EmailMessage) else bytes(msg)
        sender = check_address(from_addr)
        rcpts = [check_address(a) for a in to_addrs]
        if not rcpts:
            raise self._fail("the message has no recipient", temporary=False)
        for attempt in (1, 2):
            self.connect()
            try:
                refused = self._transaction(sender, rcpts, data)
            except _Dropped as exc:
                self._drop()
                if attempt == 2:
                    raise self._fail(
                        f"the mail server {self.where} hung up twice before taking the"
                        f" message ({exc.reason}); it will be tried again on the next run",
                        temporary=True, connection=True,
                    ) from None
                continue
            self.sent += 1
            return refused
        raise AssertionError("unreachable")

    def _transaction(self, sender: str, rcpts: list[str], data: bytes) -> dict[str, str]:
        smtp = self._smtp
        assert smtp is not None
        try:
            smtp.ehlo_or_helo_if_needed()
            options = [f"SIZE={len(data)}"] if smtp.has_extn("size") else []
            code, resp = smtp.mail(sender, options)
            if code == 421:
                raise _Dropped(_reply_text(code, resp))
            if code != 250:
                self._reset()
                raise self._mail_from_failure(sender, code, resp)
            refused: dict[str, tuple[int, str]] = {}
            for rcpt in rcpts:
                code, resp = smtp.rcpt(rcpt)
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
                raise self._reply_failure("did not take the message", code, resp)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Dropped(_why(exc)) from None
        # From here on the server may have the message: never send it again automatically.
        try:
            smtp.send(_dot_stuff(data))
            code, resp = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise SendUncertain(
                f"the connection to the mail server {self.where} failed ({_why(exc)}) while"
                " the message was being handed over: it may or may not have been sent, so it"
                " will not be sent again automatically (check, then use `commplan resend`)",
                temporary=False, connection=True,
            ) from None
        if code != 250:
            if code == 421:
                self._drop()
            raise self._reply_failure("did not take the message", code, resp)
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
            f"the mail server {what} ({_reply_text(code, resp)})"
            + ("; it will be tried again on the next run" if temporary else ""),
            temporary=temporary,
        )

    def _mail_from_failure(self, sender: str, code: int, resp: bytes | str) -> SendFailure:
        if code == 552 or 400 <= code < 500:  # message too big, or a temporary refusal
            return self._reply_failure("did not take the message", code, resp)
        # Any other refusal of the sender is the site's configuration, not this message:
        # temporary (retried once fixed) and a connection problem (the run stops trying).
        return self._fail(
            f"the mail server refused the sender address {sender}"
            f" ({_reply_text(code, resp)}): check sender_email and smtp_user in the Settings"
            " sheet",
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
        return (
            f"the mail server refused the address {address} for now ({reply}): it will be"
            " tried again on the next run"
        )
    return f"the mail server refused the address {address} ({reply}): correct the customer's email"


def _dot_stuff(data: bytes) -> bytes:
    """The DATA payload: a leading "." doubled on each line, ended by CRLF "." CRLF."""
    data = re.sub(rb"(?m)^\.", b"..", data)
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
    login = f'logged in as "{user}"' if user else "no login"
    if settings.smtp_auth.startswith("oauth2"):
        login += " with OAuth2"
    security = {"ssl": "SSL", "starttls": "STARTTLS"}.get(settings.smtp_security, "no encryption")
    return (
        f"the mail server {settings.smtp_host}:{settings.smtp_port} answered ({security},"
        f" {login}); nothing was sent"
    )
