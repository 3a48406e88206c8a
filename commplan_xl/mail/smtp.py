"""The SMTP transport: built mails sent over one authenticated connection.

yagmail opens the connection (host, port, SSL/STARTTLS, login); its own `send()` is not used
(it logs in again for every mail, and rebuilds messages): the exact bytes of each built
message are sent with SMTP commands issued one by one, so a dropped connection is retried
only when it is certain the server accepted nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from email.message import EmailMessage

from commplan_xl.i18n import N_, _
from commplan_xl.mail import oauth
from commplan_xl.mail.message import BuiltMessage, check_address, message_bytes
from commplan_xl.mail.smtp_connection import (
    SmtpConnection,
    network_reason,
    reply_text,
)
from commplan_xl.mail.transport import Outcome, Refusal
from commplan_xl.problems import SendFailure, SendKind, SendUncertain
from commplan_xl.settings import Settings

THROTTLE_WAITS_ENV = "COMMPLAN_THROTTLE_WAITS"
THROTTLE_WAITS = (30.0, 60.0, 120.0)  # a few minutes at most in all, per run
# After one final reply later than smtp_timeout, the next ones are awaited this many times
# longer.
SLOW_SERVER_PATIENCE = 10
_CRLF = b"\r\n"


class _Dropped(Exception):
    """The connection failed before the server could have accepted the message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SmtpTransport(SmtpConnection):
    """One SMTP connection for a whole run (a `Transport`). Use as
    `with SmtpTransport(settings) as transport:`.

    It connects on the first `send`, and reconnects once when the server hung up before it
    could have accepted a message. Failures are `SendFailure`s with a sentence for people:
    `open` raises them, `send` returns them in its Outcome.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        environ: Mapping[str, str] | None = None,
        token_provider: oauth.TokenProvider | None = None,
        throttle_waits: Sequence[float] | None = None,
    ) -> None:
        super().__init__(settings, environ=environ, token_provider=token_provider)
        self.sent = 0
        # The pauses (seconds) the run may wait in all when the server asks to slow down.
        self._throttle_waits = list(throttle_waits if throttle_waits is not None
                                    else _throttle_waits(environ))
        self._last_start = -1e9  # when the last mail started (time.monotonic)
        self._slow_server = False  # a final reply came later than smtp_timeout


    # -- context manager


    # -- connecting


    # -- sending

    def send(self, message: BuiltMessage | EmailMessage | bytes, *, sender: str,
             recipients: Sequence[str], before: Callable[[], object] | None = None,
             meanwhile: Callable[[], object] | None = None) -> Outcome:
        """Send one message; its Outcome says whether the server took it, and which
        recipients it refused. `before`, then `meanwhile`, run while the server reads the
        message, before its final dot (see `Transport.send`)."""
        hooks = _Hooks(before, meanwhile)
        try:
            return self._send(message_bytes(message), sender, recipients, hooks)
        except SendFailure as failure:
            with contextlib.suppress(SendFailure):  # the first failure is the one to tell
                hooks.run_before()
            return Outcome.failed(failure)

    def _send(self, data: bytes, sender: str, recipients: Sequence[str],
              hooks: _Hooks) -> Outcome:
        mail_from = check_address(sender)
        rcpts = [check_address(a) for a in recipients]
        if not rcpts:
            raise self._fail(_("the message has no recipient"), kind=SendKind.PERMANENT)
        while True:
            try:
                return self._attempt(data, mail_from, rcpts, hooks)
            except SendFailure as failure:
                if failure.kind is not SendKind.THROTTLED or not self._throttle_waits:
                    raise
                # Minutes of waiting: the caller's work is done before them, not after (so
                # the mail before this one is on record while the run waits).
                hooks.run_before()
                self._wait_for_throttle()

    def _wait_for_throttle(self) -> None:
        """Wait the next pause a throttling server asks for (the caller checks that one is
        left: once the run's pauses are spent, the mail stays due for the next run)."""
        time.sleep(self._throttle_waits.pop(0))

    def _pace(self) -> None:
        """Wait so that no more than max_per_minute mails start in any minute."""
        per_minute = self.settings.max_per_minute
        if per_minute:
            wait = self._last_start + 60.0 / per_minute - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._last_start = time.monotonic()

    def _attempt(self, data: bytes, mail_from: str, rcpts: list[str],
                 hooks: _Hooks) -> Outcome:
        """One try at handing the message over, reconnecting once if the line was dead."""
        for attempt in (1, 2):
            self.open()
            self._pace()
            try:
                refused = self._envelope(mail_from, rcpts, len(data), hooks)
            except _Dropped as exc:
                self._drop()
                if attempt == 2:
                    raise self._fail(
                        _("the mail server {where} hung up twice before taking the message "
                          "({why})").format(
                              where=self.where, why=exc.reason),
                        kind=SendKind.UNREACHABLE,
                    ) from None
                continue
            # From here on the server may have the message: never send it again by itself.
            return self._data(data, refused, hooks)
        raise AssertionError("unreachable")

    def _envelope(self, sender: str, rcpts: list[str], size: int,
                  hooks: _Hooks) -> list[Refusal]:
        """MAIL, RCPT and DATA: the refused recipients when the server is ready for the
        message. Raises _Dropped when the line is dead (nothing was sent)."""
        smtp = self._smtp
        assert smtp is not None
        try:
            smtp.ehlo_or_helo_if_needed()
            declared = f" SIZE={size}" if smtp.has_extn("size") else ""
            # putcmd, not smtp.mail/rcpt: the addresses are checked already, and smtplib's
            # quoteaddr would parse each again.
            smtp.putcmd("mail", f"FROM:<{sender}>{declared}")
            code, resp = smtp.getreply()
            if code == 421 and not is_throttling(code, reply_text(code, resp)):
                raise _Dropped(reply_text(code, resp))
            if code != 250:
                self._reset() if code != 421 else self._drop()
                raise self._mail_from_failure(sender, code, resp)
            refused = self._recipients(rcpts)
            code, resp = smtp.docmd("DATA")
            if code == 421:
                raise _Dropped(reply_text(code, resp))
            if code != 354:
                self._reset()
                raise self._reply_failure(N_("did not take the message"), code, resp)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Dropped(network_reason(exc)) from None
        return refused

    def _run(self, work: Callable[[], object]) -> None:
        """The caller's work while the server's answer is unread; if it raises, the line
        is dropped (the answer would be out of step) and that is raised."""
        try:
            work()
        except BaseException:
            self._drop()
            raise

    def _recipients(self, rcpts: list[str]) -> list[Refusal]:
        """RCPT for each address: those refused for good while others are taken; a
        SendFailure when all are refused, or any only for now (then nobody gets it now, so
        that a later run sends it to all at once)."""
        assert self._smtp is not None
        refused: list[Refusal] = []
        for rcpt in rcpts:
            code, resp = self._smtp.docmd("rcpt", f"TO:<{rcpt}>")
            if code == 421 and not is_throttling(code, reply_text(code, resp)):
                raise _Dropped(reply_text(code, resp))
            if code not in (250, 251):
                refused.append(Refusal(rcpt, code, reply_text(code, resp)))
        later = [r for r in refused if r.temporary]
        if later or len(refused) == len(rcpts):
            self._reset() if all(r.code != 421 for r in refused) else self._drop()
            raise self._refused_failure(later or refused)
        return refused

    def _data(self, data: bytes, refused: list[Refusal], hooks: _Hooks) -> Outcome:
        """The message itself; `before` and `meanwhile` while the server reads it; then
        the final dot and the server's answer."""
        smtp = self._smtp
        assert smtp is not None
        try:
            smtp.send(_dot_stuff(data))
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise self._lost_in_upload(exc) from None
        # The caller's work while the server reads the message, which it cannot take before
        # the final dot: if the work fails, the line is dropped and the mail is not sent.
        self._run(hooks.run_before)
        meanwhile, hooks.meanwhile = hooks.meanwhile, None  # once, even if tried again
        if meanwhile is not None:
            self._run(meanwhile)
        try:
            _check_alive(smtp.sock)
            # Up to here the server cannot have taken the message: only a loss after the
            # final dot leaves it uncertain.
            smtp.send(b"." + _CRLF)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise self._lost_in_upload(exc) from None
        try:
            code, resp = self._final_reply(smtp)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise self._uncertain(exc) from None
        if code != 250:
            if code == 421:
                self._drop()
            raise self._reply_failure(N_("did not take the message"), code, resp,
                                      after_data=True)
        self.sent += 1
        return Outcome.delivered(code, reply_text(code, resp), refused)

    def _lost_in_upload(self, exc: BaseException) -> SendFailure:
        self._drop()
        return self._fail(
            _("the connection to the mail server {where} was lost ({why}) before the whole "
              "message was handed over, so it was not sent").format(
                  where=self.where, why=network_reason(exc)),
            kind=SendKind.UNREACHABLE)

    def _final_reply(self, smtp: smtplib.SMTP) -> tuple[int, bytes]:
        """The server's answer to the whole message; once a run has seen it come too late,
        waited for longer (RFC 5321 allows minutes), so one slow server makes one uncertain
        mail, not one per mail."""
        if not self._slow_server or smtp.sock is None:
            return smtp.getreply()
        smtp.sock.settimeout(self.settings.smtp_timeout * SLOW_SERVER_PATIENCE)
        try:
            return smtp.getreply()
        finally:
            if smtp.sock is not None:
                smtp.sock.settimeout(self.settings.smtp_timeout)

    def _uncertain(self, exc: BaseException) -> SendUncertain:
        if network_reason(exc) == _("no answer in time"):
            self._slow_server = True
        self._drop()
        return SendUncertain(self._scrub(
            _("the connection to the mail server {where} failed ({why}) while the message was "
              "being handed over: it may or may not have been sent, so it will not be sent "
              "again automatically (check, then use `commplan resend`)").format(
                  where=self.where, why=network_reason(exc))
        ))

    def _reset(self) -> None:
        """RSET after a refusal so the next message starts clean; a dead line is dropped."""
        if self._smtp is None:
            return
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _reply_failure(self, what: str, code: int, resp: bytes | str, *,
                       after_data: bool = False) -> SendFailure:
        reply = reply_text(code, resp)
        if is_throttling(code, reply):
            kind = SendKind.THROTTLED
        elif 400 <= code < 500:
            kind = SendKind.TEMPORARY
        else:  # refused for good: after the data, for what the mail is, not an address
            kind = SendKind.CONTENT if after_data else SendKind.PERMANENT
        if kind is SendKind.CONTENT:
            text = _("the mail server refused the message itself ({reply}): its content or "
                     "the sending policy, not the address").format(reply=reply)
        else:
            text = _("the mail server {what} ({reply})").format(what=_(what), reply=reply)
        return self._fail(text, kind=kind, code=code, reply=reply)

    def _mail_from_failure(self, sender: str, code: int, resp: bytes | str) -> SendFailure:
        if code == 552 or 400 <= code < 500 or is_throttling(code, reply_text(code, resp)):
            # message too big, a temporary refusal, or a server asking to slow down
            return self._reply_failure(N_("did not take the message"), code, resp)
        # Any other refusal of the sender is the site's configuration, not this message:
        # temporary (retried once fixed) and a connection problem (the run stops trying).
        reply = reply_text(code, resp)
        return self._fail(
            _("the mail server refused the sender address {sender} ({reply}): check sender_email "
              "and smtp_user in the Settings sheet").format(sender=sender, reply=reply),
            kind=SendKind.SETUP, code=code, reply=reply,
        )

    def _refused_failure(self, refused: list[Refusal]) -> SendFailure:
        # Temporary when any address may still work later (4xx): a retry can reach it.
        temporary = any(r.temporary for r in refused)
        kind = SendKind.TEMPORARY if temporary else SendKind.PERMANENT
        if any(is_throttling(r.code, r.reply) for r in refused):
            kind = SendKind.THROTTLED
        return self._fail(
            "; ".join(str(r) for r in refused),
            kind=kind,
            code=refused[0].code, reply=refused[0].reply,
            recipient=", ".join(r.address for r in refused),
        )


class _Hooks:
    """The caller's work for one message: `before` runs once, `meanwhile` at most once."""

    def __init__(self, before: Callable[[], object] | None,
                 meanwhile: Callable[[], object] | None) -> None:
        self.before = before
        self.meanwhile = meanwhile

    def run_before(self) -> None:
        work, self.before = self.before, None
        if work is not None:
            work()


def _dot_stuff(data: bytes) -> bytes:
    """The DATA payload without its end: a leading "." doubled on each line, ended by
    CRLF (the final "." CRLF is sent on its own)."""
    # bytes.replace, not re.sub: much faster on a mail with an attachment.
    data = data.replace(b"\n.", b"\n..")
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(_CRLF):
        data += _CRLF
    return data


def _check_alive(sock: socket.socket | None) -> None:
    """Raise ConnectionResetError when the server already hung up (it closed the line
    while the message was being uploaded); cheap: no wait."""
    if sock is None:
        raise smtplib.SMTPServerDisconnected("not connected")
    try:
        readable, _w, _x = select.select([sock], [], [], 0)
        if readable and isinstance(sock, ssl.SSLSocket):
            return  # no peeking under TLS: a dead line shows on the final dot or reply
        if readable and not sock.recv(1, socket.MSG_PEEK):
            raise ConnectionResetError("closed by the server")
    except ValueError:  # a socket select cannot watch: nothing to learn here
        return


# Words and enhanced codes of the replies by which providers ask a sender to slow down
# (Microsoft 365 "SubmissionQuotaExceeded", Google "try again later", 4.5.3...).
_THROTTLE_WORDS = ("try again later", "quotaexceeded", "quota exceeded", "throttl",
                   "rate limit", "ratelimit", "too many messages", "sending limit",
                   "submission quota", "slow down")
_THROTTLE_CODES = re.compile(r"\b(4\.5\.3|4\.7\.\d+|5\.2\.0 storedrv\.submission)")


def is_throttling(code: int, reply: str) -> bool:
    """Whether a refusal asks the sender to slow down, whatever its code: temporary."""
    low = reply.lower()
    if any(word in low for word in _THROTTLE_WORDS):
        return True
    found = _THROTTLE_CODES.search(low)
    if found is None:
        return False
    # 4.7.x is also greylisting or a policy of one address: only with these base codes.
    return not found.group(1).startswith("4.7.") or code in (421, 450, 452)


def _throttle_waits(environ: Mapping[str, str] | None) -> list[float]:
    """The pauses a run may make for a throttling server: COMMPLAN_THROTTLE_WAITS
    (seconds, separated by commas), else half a minute, one, then two."""
    env = os.environ if environ is None else environ
    text = env.get(THROTTLE_WAITS_ENV, "")
    try:
        return [max(0.0, float(w)) for w in text.split(",") if w.strip()] if text else \
            list(THROTTLE_WAITS)
    except ValueError:
        return list(THROTTLE_WAITS)


def check_connection(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    token_provider: oauth.TokenProvider | None = None,
) -> str:
    """Connect, log in and quit, sending nothing: a sentence, or SendFailure."""
    with SmtpTransport(settings, environ=environ, token_provider=token_provider) as transport:
        transport.open()
        user = transport.login_user
    login = _('logged in as "{user}"').format(user=user) if user else _("no login")
    if settings.smtp_auth.startswith("oauth2"):
        login += _(" with OAuth2")
    security = {"ssl": "SSL", "starttls": "STARTTLS"}.get(settings.smtp_security,
                                                          _("no encryption"))
    return _("the mail server {host}:{port} answered ({security}, {login}); nothing was sent"
             ).format(host=settings.smtp_host, port=settings.smtp_port, security=security,
                      login=login)
