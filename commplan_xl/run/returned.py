"""Returned mails: read the sending mailbox, classify each new message, find the mail it
reports, record what it means.

A run (when `bounces` is yes) does this before it sends, so a mail that came back since
the last run is already `failed` when the schedule decides: a hard bounce (the address
does not exist) is not retried until the customer's address changes, a soft one (mailbox
full) is due again. `commplan bounces` does it alone. The mailbox is never changed, except
that handled reports move to `bounce_folder_done` when it is set.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from commplan_xl.i18n import N_, _
from commplan_xl.mail.bounces import TO_REVIEW, BounceReport, Kind, classify, match
from commplan_xl.mail.imap import Fetched, ImapConfig, ImapError, Mailbox, Position
from commplan_xl.problems import CommplanError
from commplan_xl.run.outcomes import retry_promise
from commplan_xl.settings import IMAP_PRESETS, Settings
from commplan_xl.store.ledger_reads import ReturnedMail, SentMail

log = logging.getLogger("commplan")

PASSWORD_ENV = "COMMPLAN_IMAP_PASSWORD"
SOFT_LIMIT = 3  # soft bounces in a row for one address that count as a hard one
# The order people should look at them in: the address is wrong first.
KIND_ORDER = ("hard", "sender_side", "to_review", "soft", "delayed")
NOT_RETRIED = N_("not retried: correct the address in the Customers sheet")
RETRIED = N_("will be retried by the next run")
REVIEW_LINE = N_("To review: a returned mail{said} names {who}, a customer's address, but no "
                 "mail commplan can find; look at it in the mailbox and resend by hand if "
                 "needed.")


@dataclass(frozen=True)
class Handled:
    """One returned mail that matters to people, as one line."""

    kind: str  # hard | soft | sender_side | delayed | to_review
    line: str  # "Order O1 step 2: returned: …" (or a sentence for one to review)
    changed: bool = True  # the mail it reports became failed
    order_id: str = ""  # the mail it reports ("" for one to review)
    step: int = 0


@dataclass
class ReadResult:
    """What reading the mailbox found."""

    read: int = 0  # new messages read
    handled: list[Handled] = field(default_factory=list)
    error: str = ""  # why the mailbox could not be read ("" when it was)
    moved: str = ""  # "moved" / "copied" to bounce_folder_done, or ""
    skipped: int = 0  # malformed reports, logged and skipped

    def ordered(self) -> list[Handled]:
        """Hard bounces first, then the sender side, those to review, soft, delayed."""
        return sorted(self.handled, key=lambda h: KIND_ORDER.index(h.kind))

    @property
    def failures(self) -> list[Handled]:
        """The returned mails that made a mail `failed`, and those to review."""
        return [h for h in self.ordered() if h.kind != "delayed" and
                (h.changed or h.kind == "to_review")]


# ---------------------------------------------------------------- settings


def login_user(settings: Settings) -> str:
    """Who reads the mailbox: imap_user, else the SMTP login, else the sender's address."""
    s = settings
    return s.imap_user.strip() or s.smtp_user.strip() or s.sender_email.strip()


def imap_host(settings: Settings) -> str:
    """imap_host, else the provider's (Microsoft 365, Gmail), else the SMTP host's
    "imap." twin (smtp.example.fr → imap.example.fr)."""
    s = settings
    if s.imap_host.strip():
        return s.imap_host.strip()
    preset = IMAP_PRESETS.get(s.smtp_auth)
    if preset:
        return preset
    host = s.smtp_host.strip()
    return "imap." + host[5:] if host.lower().startswith("smtp.") else host


def imap_password(settings: Settings, environ: Mapping[str, str] | None = None) -> str | None:
    """COMMPLAN_IMAP_PASSWORD, else the SMTP password (environment or keyring)."""
    from commplan_xl.mail.smtp_connection import smtp_password

    env = os.environ if environ is None else environ
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    smtp_user = settings.smtp_user.strip()
    user = login_user(settings)
    for name in dict.fromkeys(u for u in (smtp_user, user) if u):
        found = smtp_password(name, environ)
        if found:
            return found
    return None


def imap_config(settings: Settings, environ: Mapping[str, str] | None = None, *,
                token_provider=None) -> ImapConfig:
    """How to read the sending mailbox, with the same sign-in as sending."""
    from commplan_xl.mail import oauth

    s = settings
    password = tokens = None
    if s.smtp_auth.startswith("oauth2"):
        tokens = token_provider or oauth.provider_for(s, environ)
    else:
        password = imap_password(s, environ)
    return ImapConfig(
        host=imap_host(s), port=s.imap_port, security=s.imap_security,
        user=login_user(s), password=password, token_provider=tokens,
        folder=s.imap_folder.strip() or "INBOX", done_folder=s.bounce_folder_done.strip(),
        timeout=s.smtp_timeout,
    )


def check_imap(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """Log in to the mailbox and open its folder, reading nothing: a sentence, or
    CommplanError (ImapError) saying why not."""
    from commplan_xl.mail.imap import check_mailbox

    return check_mailbox(imap_config(settings, environ))


# ---------------------------------------------------------------- reading


def read_returned(settings: Settings, ledger, *, now: dt.datetime, day: dt.date,
                  environ: Mapping[str, str] | None = None,
                  config: ImapConfig | None = None) -> ReadResult:
    """Read the new messages of the mailbox and record the returned mails among them.

    Never raises for the mailbox: when it cannot be read, `error` says why in a sentence.
    """
    result = ReadResult()
    try:
        config = config or imap_config(settings, environ)
        with Mailbox(config) as box:
            _read(box, config, ledger, result, now=now, day=day,
                  catch_up_days=settings.catch_up_days)
    except CommplanError as exc:  # ImapError, or the sign-in (token) failing
        result.error = str(exc)
        log.warning("returned mails not read: %s", exc)
    return result


def _read(box: Mailbox, config: ImapConfig, ledger, result: ReadResult, *,
          now: dt.datetime, day: dt.date, catch_up_days: int) -> None:
    folder = config.folder
    known = ledger.mailbox_position(folder)
    since = Position(*known) if known else None
    first = ledger.first_mail_time()
    # A first read (or a rebuilt folder) skips what came before our first mail.
    since_date = (first.date() - dt.timedelta(days=1)) if first else day
    done: list[int] = []
    last: Fetched | None = None
    for mail in box.fetch_new(since, since_date=since_date):
        result.read += 1
        last = mail
        try:
            if _one(mail, folder, ledger, result, now=now, day=day,
                    catch_up_days=catch_up_days):
                done.append(mail.uid)
        except Exception:  # one odd message must never stop the run
            log.exception("returned mail %s (UID %d) skipped", folder, mail.uid)
            result.skipped += 1
    if last is not None:
        ledger.set_mailbox_position(folder, last.uidvalidity, last.uid, now=now)
    elif since is None or since.uidvalidity != box.uidvalidity:
        # Nothing new: start after what the folder holds now.
        ledger.set_mailbox_position(folder, box.uidvalidity, max(box.uidnext - 1, 0),
                                    now=now)
    if done and config.done_folder:
        try:
            result.moved = box.move_done(done)
        except ImapError as exc:  # the reports are recorded: only the tidying failed
            log.warning("returned mails not moved: %s", exc)
            result.error = _("the handled returned mails could not be moved: {error}").format(
                error=exc)


def _one(mail: Fetched, folder: str, ledger, result: ReadResult, *, now: dt.datetime,
         day: dt.date, catch_up_days: int) -> bool:
    """Handle one message read back; True when it is a report of ours now handled."""
    report = classify(mail.raw)
    if report.kind == Kind.UNREADABLE:
        log.warning("returned mail %s (UID %d) skipped, %s: %s", folder, mail.uid,
                    report.reason, report.subject)
        result.skipped += 1
        return False
    if report.kind in (Kind.AUTO_REPLY, Kind.NOT_A_BOUNCE):
        return False  # out of office, read receipts, replies: nothing changes
    found = match(report, ledger.sent_mails(), ledger.recipients())
    if found is None:
        return False  # not about a mail of ours: left alone
    base = ReturnedMail(folder=folder, uidvalidity=mail.uidvalidity, uid=mail.uid, kind="",
                        address=_address(report), status=_status(report),
                        reason=report.reason, subject=report.subject,
                        report_id=report.report_id)
    if found is TO_REVIEW:
        if not report.is_failure:
            return False
        if ledger.record_returned(_replace(base, kind="to_review"), now=now,
                                  day=day) != "known":
            result.handled.append(Handled("to_review", _review_line(report), changed=False))
        return False
    return _act(report, found, base, ledger, result, now=now, day=day,
                catch_up_days=catch_up_days)


def _act(report: BounceReport, sent: SentMail, base: ReturnedMail, ledger,
         result: ReadResult, *, now: dt.datetime, day: dt.date, catch_up_days: int) -> bool:
    """Record a returned mail matched to our mail `sent`."""
    kind = str(report.kind)
    where = _("Order {order} step {step}").format(order=sent.order_id, step=sent.step)
    if report.kind == Kind.DELAYED:
        log.info("%s: %s", where, report.reason)
        outcome = ledger.record_returned(_replace(base, kind=kind, send_id=sent.send_id),
                                         now=now, day=day)
        if outcome != "known":
            result.handled.append(Handled(kind, _("{what}: {detail}").format(
                what=where, detail=report.reason), changed=False, order_id=sent.order_id,
                step=sent.step))
        return True
    retried = retry_promise(catch_up_days, sent, day, _(RETRIED))
    state, detail = _failure(report, base.address, ledger, retried)
    if report.kind == Kind.SOFT and state == "failed_permanent":
        kind = "hard"
    item = _replace(base, kind=str(report.kind), send_id=sent.send_id, state=state,
                    detail=detail)
    outcome = ledger.record_returned(item, now=now, day=day)
    if outcome == "known":
        return True
    changed = outcome == "recorded"
    if changed:
        log.warning("%s returned: %s", where, detail)
    else:
        log.info("%s: a returned mail about an earlier send (nothing changed): %s", where,
                 report.reason)
    line = detail if changed else _("{reason} (about an earlier send: nothing changed)").format(
        reason=report.reason)
    result.handled.append(Handled(kind, _("{what}: {detail}").format(what=where, detail=line),
                                  changed=changed, order_id=sent.order_id, step=sent.step))
    return True


def _failure(report: BounceReport, address: str, ledger, retried: str) -> tuple[str, str]:
    """The reported mail's new state and its SentLog detail; `retried` says when the
    mail is tried again if it is."""
    then = _("{reason}; {what}")
    if report.kind == Kind.HARD:
        return "failed_permanent", then.format(reason=report.reason, what=_(NOT_RETRIED))
    if report.kind == Kind.SOFT:
        earlier = ledger.soft_in_a_row(address) if address else 0
        if earlier + 1 >= SOFT_LIMIT:
            return "failed_permanent", _("returned {n} times in a row: {reason}; {what}").format(
                n=earlier + 1, reason=report.reason, what=_(NOT_RETRIED))
        return "failed", then.format(reason=report.reason, what=retried)
    # The sender's side: the address is not blamed; the IT person fixes the account.
    return "failed", then.format(reason=report.reason, what=retried)


def _review_line(report: BounceReport) -> str:
    who = ", ".join(report.addresses) or _("one of our customers")
    said = _(' ("{subject}")').format(subject=report.subject) if report.subject else ""
    return _(REVIEW_LINE).format(said=said, who=who)


def _address(report: BounceReport) -> str:
    failed = [r for r in report.recipients if r.kind == report.kind]
    chosen = failed[0] if failed else (report.recipients[0] if report.recipients else None)
    return chosen.address if chosen else ""


def _status(report: BounceReport) -> str:
    failed = [r.status for r in report.recipients if r.kind == report.kind and r.status]
    return failed[0] if failed else ""


def _replace(item: ReturnedMail, **changes: object) -> ReturnedMail:
    return dataclasses.replace(item, **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------- for the run's report


def unread_sentence(error: str) -> str:
    """The one sentence a run says when the mailbox could not be read."""
    return _("Returned mails could not be read, so a mail that did not arrive may still show "
             "as sent: {error}.").format(error=error)
