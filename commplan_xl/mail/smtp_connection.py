"""The SMTP connection: open it (yagmail: host, port, SSL/STARTTLS), sign in (password or
OAuth2, the login exactly as written, never in clear unless smtp_security is `none`), close.

`mail/smtp.SmtpTransport` sends mails over it.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import socket
import ssl
from collections.abc import Mapping
from typing import Any, Self

from commplan_xl.i18n import _
from commplan_xl.mail import oauth
from commplan_xl.problems import SendFailure, SendKind
from commplan_xl.settings import Settings, clear_login, clear_login_sentence

PASSWORD_ENV = "COMMPLAN_SMTP_PASSWORD"
KEYRING_SERVICE = "commplan"


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


def reply_text(code: int, resp: bytes | str) -> str:
    text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
    return f"{code} {' '.join(text.split())}".strip()


def network_reason(exc: BaseException) -> str:
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
        return reply_text(exc.smtp_code, exc.smtp_error)
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


class SmtpConnection:
    """One SMTP connection and its sign-in; `SmtpTransport` sends mails over it."""

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def where(self) -> str:
        return f"{self.settings.smtp_host}:{self.settings.smtp_port}"

    def _fail(self, message: str, *, kind: SendKind, code: int | None = None,
              reply: str = "", recipient: str = "") -> SendFailure:
        return SendFailure(self._scrub(message), kind=kind, code=code,
                           reply=self._scrub(reply), recipient=recipient)

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

    def open(self) -> None:
        """Open and authenticate the connection (if not open yet)."""
        if self._smtp is not None:
            return
        s = self.settings
        user = self.login_user
        self._credentials(user)
        try:
            self._login(user)
        except SendFailure:
            self._drop()
            raise
        except smtplib.SMTPAuthenticationError as exc:
            self._drop()
            raise self._fail(
                oauth.explain_login_refusal(
                    exc.smtp_code, reply_text(exc.smtp_code, exc.smtp_error),
                    auth=s.smtp_auth, where=self.where, user=user),
                kind=SendKind.LOGIN_REFUSED, code=exc.smtp_code,
                reply=reply_text(exc.smtp_code, exc.smtp_error),
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            self._drop()
            what = "STARTTLS" if "STARTTLS" in str(exc).upper() else _("a login (AUTH)")
            if "XOAUTH2" in str(exc).upper():
                what = _("the OAuth2 login (AUTH XOAUTH2)")
            raise self._fail(
                _("the mail server {where} does not offer {what}: check smtp_security and "
                  "smtp_user in the Settings sheet").format(where=self.where, what=what),
                kind=SendKind.SETUP,
            ) from None
        except ssl.SSLError as exc:
            self._drop()
            raise self._fail(
                _("could not open a secure connection to the mail server {where} ({error}): "
                  "check smtp_security (ssl for port 465, starttls for 587)").format(
                      where=self.where, error=exc.reason or exc),
                kind=SendKind.SETUP,
            ) from None
        except socket.gaierror:
            self._drop()
            raise self._fail(
                _('could not find the mail server "{host}" (unknown host name): check '
                  "smtp_host in the Settings sheet").format(host=s.smtp_host),
                kind=SendKind.SETUP,
            ) from None
        except (TimeoutError, smtplib.SMTPServerDisconnected) as exc:
            self._drop()
            if network_reason(exc) != _("no answer in time"):
                raise self._fail(
                    _("the mail server {where} closed the connection while connecting: is "
                      "smtp_security right (ssl for port 465, starttls for 587)?").format(
                          where=self.where),
                    kind=SendKind.UNREACHABLE,
                ) from None
            raise self._fail(
                _("the mail server {where} did not answer within {seconds} s: is it running, "
                  "and are smtp_host, smtp_port and smtp_security right?").format(
                      where=self.where, seconds=f"{s.smtp_timeout:g}"),
                kind=SendKind.UNREACHABLE,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise self._fail(
                _("could not reach the mail server {where} ({why}): is it running?").format(
                    where=self.where, why=network_reason(exc)),
                kind=SendKind.UNREACHABLE,
            ) from None
        self.connections += 1

    def _credentials(self, user: str) -> None:
        """The token or password to log in with (SendFailure when there is none, or when
        it would go unencrypted with nobody having chosen so)."""
        s = self.settings
        if clear_login(s):
            raise self._fail(
                _("commplan did not log in to the mail server {where}: {why}").format(
                    where=self.where, why=clear_login_sentence(s.smtp_port)),
                kind=SendKind.SETUP)
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
                    kind=SendKind.SETUP,
                )

    def _login(self, user: str) -> None:
        import yagmail  # imported on first use: commands that send nothing start lighter

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
        # yagmail makes "apikey" or "DOMAIN\\user" into "apikey@gmail.com": log in as written.
        client.user = user
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
