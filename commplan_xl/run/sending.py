"""The send loop: each due mail built, recorded `sending`, handed to the transport,
archived and recorded, one after the other; and the archive file of a mail sent.

A kill at any point leaves at most the one mail being sent `sending` (called uncertain by
the next run), never a duplicate.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from commplan_xl.i18n import _
from commplan_xl.model import Customer, Decision, MessageRef
from commplan_xl.problems import CommplanError, SendFailure, SendKind
from commplan_xl.run.building import Prepared, RunCache, parts, prepare
from commplan_xl.run.outcomes import (
    CONTENT_NOT_RETRIED,
    RunFailure,
    RunReport,
    last_try,
    retry_promise,
)
from commplan_xl.run.site import Site, now_in

if TYPE_CHECKING:
    from commplan_xl.mail.transport import Refusal, Transport
    from commplan_xl.store.archive import ArchiveIndex

log = logging.getLogger("commplan")

# After this many connection failures in a row the run stops trying (the server is down):
# the rest stay due for the next run instead of filling the log with failures.
MAX_CONNECTION_FAILURES = 3


def held_sentence(d: Decision) -> str:
    """The sentence of a mail waiting for an empty cell to be filled."""
    from commplan_xl.core.schedule import WAITING_FOR

    return _("Order {order} step {step} is waiting for {column}: it goes once the cell is "
             "filled.").format(order=d.order_id, step=d.step,
                               column=d.reason[len(WAITING_FOR):])


@dataclass
class _InFlight:
    """The mail being sent: which it is, and its archive file (being written by the stager,
    then named once the server has the mail) and ledger token."""

    decision: Decision
    message: MessageRef
    prepared: Prepared
    staged: Future[Path]
    token: int | None = None
    archived: Path | None = None
    placed: bool = False  # the archive file's naming was tried (the server has the mail)
    archive_error: str = ""  # why the archive file could not be named


class SendLoop:
    """One run's decisions carried out in order. Each mail is one sequence: build, ledger
    begin, transport send (its archive file written and named meanwhile), ledger finish;
    so a kill leaves at most the one mail being sent `sending` (called uncertain by the
    next run), never a duplicate."""

    def __init__(self, site: Site, ledger, transport: Transport, day: dt.date,
                 report: RunReport) -> None:
        from commplan_xl.store.archive import ArchiveIndex, ids_to_settle

        self.site = site
        self.settings = site.settings
        self.ledger = ledger
        self.transport = transport
        self.day = day
        self.report = report
        self.cache = RunCache()
        owners = ledger.archive_owners(ids_to_settle(site.model.customers))
        self.archive_index = ArchiveIndex(site.settings.archive_dir, owners=owners)
        # Addresses a returned mail showed not to exist: no mail goes to them.
        self.flagged: Mapping[str, str] = (ledger.flagged_addresses() if site.settings.bounces
                                           else {})
        self.orders = {o.order_id: o for o in site.model.orders}
        self.limit: int | None = None
        self.accepted = 0  # mails the server took
        self.connection_failures = 0  # in a row
        self.stopped = False  # the server failed too often: the rest stay due
        self.sends: list[Decision] = []  # the decisions to send, in order
        self.sends_seen = 0  # how many of them the loop has reached
        self.stager: ThreadPoolExecutor | None = None  # writes the archive files
        self.in_flight: _InFlight | None = None  # the mail being sent
        self.staged_ahead: tuple[Decision, Future[Path]] | None = None  # its archive file
        # The mail the server took last, until recorded `sent` (see finish_pending).
        self.pending: tuple[_InFlight, int, Sequence[Refusal], str] | None = None
        # The next mail, built while the server takes the one before (or the error).
        self.ahead: tuple[Decision, Prepared | CommplanError] | None = None

    def run(self, decisions: Sequence[Decision], limit: int | None,
            progress: Callable[[int, int], None] | None) -> None:
        """Carry out `decisions` (the run's, in order); `progress(sent, total)` after each
        mail sent."""
        self.limit = limit
        self.sends = [d for d in decisions if d.action == "send"]
        total = len(self.sends) if limit is None else min(len(self.sends), limit)
        # A thread writes each mail's archive file while the mail is sent: creating a
        # folder and a file costs about what the whole send does.
        with ThreadPoolExecutor(1, "commplan-archive") as self.stager:
            try:
                for d in decisions:
                    self.sends_seen += d.action == "send"
                    if d.action == "send" and not self.stopped and not self.limit_reached():
                        if self.send(d) and progress:
                            progress(self.report.sent, total)
                    else:
                        self.record_not_sent(d)
            finally:
                self.finish_pending()
                if self.staged_ahead is not None:  # built ahead, then not sent
                    _discard_staged(self.staged_ahead[1])
        r = self.report
        log.info("%s", _("run of {date}: {sent} sent, {skipped} skipped, {failed} failed, "
                         "{waiting} waiting").format(date=f"{self.day:%d/%m/%Y}", sent=r.sent,
                                                     skipped=r.skipped, failed=r.failed,
                                                     waiting=r.waiting))

    def limit_reached(self, ahead: int = 0) -> bool:
        return self.limit is not None and self.accepted + ahead >= self.limit

    def key(self, d: Decision) -> MessageRef:
        """Which mail a ledger record is about."""
        customer = self.site.model.customers[self.orders[d.order_id].customer_id]
        return MessageRef(order_id=d.order_id, customer_id=customer.customer_id,
                          plan=d.plan_name, plan_key=d.plan, step=d.step,
                          due_date=d.due_date, emails=";".join(customer.emails))

    def record_not_sent(self, d: Decision) -> None:
        """A skip, a mail waiting for a value (nothing recorded: it goes once the cell is
        filled), one that cannot be built, one left for later (daily limit), or one not
        tried (server down)."""
        from commplan_xl.core.schedule import is_limit_wait, is_value_wait

        self.finish_pending()  # the SentLog keeps the decisions' order
        now = now_in(self.settings)
        if d.action == "skip":
            self.ledger.record_skip(self.key(d), reason=d.reason, now=now, day=self.day)
            self.report.skipped += 1
        elif is_value_wait(d):
            self.report.held.append(held_sentence(d))
        elif d.action == "wait" and not is_limit_wait(d):
            self.not_built(d, self.key(d), d.reason)
        elif self.stopped:
            self.report.not_tried += 1
        else:
            self.ledger.record_waiting(self.key(d), now=now, day=self.day)
            self.report.waiting += 1

    def build(self, d: Decision) -> Prepared:
        """The decision's mail, built ahead or now; raises CommplanError if it cannot."""
        ahead, self.ahead = self.ahead, None
        if ahead is not None and ahead[0] is d:
            if isinstance(ahead[1], CommplanError):
                raise ahead[1]
            return ahead[1]
        order, customer, plan, step = parts(self.site, self.orders, d)
        return prepare(self.site, order, customer, plan, step, due_date=d.due_date,
                       today=self.day, cache=self.cache)

    def send(self, d: Decision) -> bool:
        """Build, record, send, archive and record one mail; whether the server took it."""
        from commplan_xl.mail.render import WaitingForValue
        from commplan_xl.store.archive import relative

        message = self.key(d)
        if self.flagged and self.blocked(d, message):
            return False
        try:
            prepared = self.build(d)
        except WaitingForValue as exc:
            self.report.held.append(held_sentence(d._replace(reason=str(exc))))
            return False
        except CommplanError as exc:
            self.not_built(d, message, str(exc))
            return False
        self.in_flight = _InFlight(d, message, prepared, self.stage(d, prepared))
        try:
            # The server reads each mail in about the time the run needs to record it in the
            # ledger, name its archive file and build the next mail: doing that while it
            # reads (before the final dot, so the mail is not sent if that fails), not
            # between its replies, keeps a run near the server's pace.
            outcome = self.transport.send(
                prepared.message, sender=self.settings.sender_email,
                recipients=list(prepared.to), before=self.begin_in_ledger,
                meanwhile=self.while_the_server_takes_it)
            if outcome.failure is None and not self.in_flight.placed:
                self.while_the_server_takes_it()  # a transport that did not call it
        except BaseException:
            self.finish_pending()
            self.drop_archive_file()
            raise
        token = self.in_flight.token
        assert token is not None
        if outcome.failure is not None:
            self.drop_archive_file()
            self.failed(d, token, outcome.failure)
            return False
        self.connection_failures = 0
        self.accepted += 1
        self.report.sent += 1
        archived = self.in_flight.archived
        # Recorded while the server reads the next mail (begin_in_ledger), not now: still
        # before the server can take that mail, so a kill leaves at most one mail
        # `sending`.
        self.pending = (self.in_flight, token, outcome.refused, "" if archived is None else
                        relative(archived, self.site.home, index=self.archive_index))
        return True

    def finish_pending(self) -> None:
        """Record `sent` the mail the server took last, if not recorded yet."""
        pending, self.pending = self.pending, None
        if pending is not None:
            flight, token, refused, archive_file = pending
            self.finish_sent(flight, token, refused, archive_file=archive_file)

    def begin_in_ledger(self) -> None:
        """Record the mail in flight `sending`, before the server can take it; then make
        sure its archive file is written (else it is not sent: SendFailure, temporary)."""
        assert self.in_flight is not None
        self.finish_pending()
        f = self.in_flight
        f.token = self.ledger.begin(f.message, subject=f.prepared.subject,
                                    now=now_in(self.settings), day=self.day,
                                    **mail_ids(f.prepared))
        try:
            f.staged.result()
        except OSError as exc:
            raise SendFailure(_(
                "not sent: its copy could not be written in the archive folder {folder} "
                "({error}); check that this folder exists and can be written to").format(
                    folder=self.settings.archive_dir, error=exc.strerror or exc),
                kind=SendKind.TEMPORARY) from None

    def while_the_server_takes_it(self) -> None:
        """Name the archive file of the mail in flight (removed again if the server refuses
        the mail), then build the next mail."""
        from commplan_xl.store.archive import place_message

        assert self.in_flight is not None
        f = self.in_flight
        f.placed = True
        try:
            f.archived = place_message(f.staged.result(),
                                       stem=archive_stem(self.day, f.decision))
        except OSError as exc:  # the server has the mail: its copy is a note, not a doubt
            f.archive_error = str(exc.strerror or exc)
        if self.sends_seen < len(self.sends) and not self.limit_reached(ahead=1):
            upcoming = self.sends[self.sends_seen]
            try:
                self.ahead = (upcoming, self.build(upcoming))
            except CommplanError as exc:  # raised again in its turn
                self.ahead = (upcoming, exc)
            else:
                # Its archive file too: it must be written before that mail goes out.
                self.staged_ahead = (upcoming, self.stage(upcoming, self.ahead[1]))

    def stage(self, d: Decision, prepared: Prepared) -> Future[Path]:
        """The mail's archive file being written by the stager (started ahead, or now)."""
        ahead, self.staged_ahead = self.staged_ahead, None
        if ahead is not None:
            if ahead[0] is d:
                return ahead[1]
            _discard_staged(ahead[1])
        assert self.stager is not None
        return self.stager.submit(_stage, self.site, prepared, self.archive_index)

    def drop_archive_file(self) -> None:
        """Remove the archive file of a mail the server did not take (or may not have)."""
        from commplan_xl.store.archive import discard_message

        assert self.in_flight is not None
        if self.in_flight.archived is not None:
            discard_message(self.in_flight.archived)
            return
        try:
            tmp = self.in_flight.staged.result()
        except Exception:  # nothing was written; the send's own error is the one to report
            return
        discard_message(tmp)

    def finish_sent(self, flight: _InFlight, token: int, refused: Sequence[Refusal], *,
                    archive_file: str) -> None:
        """Record a mail the server took; the recipients it refused for good are named
        and listed for a person, and a copy that could not be archived is said."""
        d = flight.decision
        parts = []
        if refused:
            parts.append(_("sent, but not to {addresses}: {why}").format(
                addresses=", ".join(r.address for r in refused),
                why="; ".join(str(r) for r in refused)))
        if flight.archive_error:
            note = _("sent; its copy could not be kept in the archive ({error})").format(
                error=flight.archive_error)
            parts.append(note)
            self.report.notes.append(_("Order {order} step {step} was {note}.").format(
                order=d.order_id, step=d.step, note=note))
        detail = "; ".join(parts)
        self.ledger.finish(token, status="sent", detail=detail, archive_file=archive_file,
                           now=now_in(self.settings), day=self.day)
        if refused:
            self.ledger.record_refused(token, [(r.address, r.reply) for r in refused])
            self.report.refused += 1
            self.report.failures.append(RunFailure(d.order_id, d.step,
                                                   SendKind.RECIPIENT_REFUSED, detail))
        log_mail(self.site, d, detail or _("sent"))

    def not_built(self, d: Decision, message: MessageRef, why: str) -> None:
        """The mail could not be made (template, attachment, address): failed, retried by
        the next runs once fixed while within catch-up."""
        self.finish_pending()
        last = last_try(self.settings.catch_up_days, d.due_date, self.day)
        detail = _("{error}; {promise}").format(error=why, promise=retry_promise(
            self.settings.catch_up_days, d, self.day, _("will be retried once fixed")))
        self.ledger.record_failure_before_send(message, detail=detail, worded=True,
                                               now=now_in(self.settings), day=self.day)
        self.report.failed += 1
        self.report.failures.append(RunFailure(d.order_id, d.step, SendKind.NOT_BUILT, detail,
                                               last_try=last))
        log_mail(self.site, d, _("not sent: {detail}").format(detail=detail), logging.WARNING)

    def blocked(self, d: Decision, message: MessageRef) -> bool:
        """Record, without sending, a mail to an address a returned mail showed not to
        exist; False when the customer has no such address."""
        from commplan_xl.run.returned import NOT_RETRIED

        self.finish_pending()
        customer = self.site.model.customers[self.orders[d.order_id].customer_id]
        bad = next((a for a in customer.emails if a.lower() in self.flagged), None)
        if bad is None:
            return False
        detail = _("not sent: a mail to {address} came back, the address does not exist "
                   "({reason}); {not_retried}").format(
                       address=bad, reason=self.flagged[bad.lower()], not_retried=NOT_RETRIED)
        self.ledger.record_blocked(message, detail=detail, now=now_in(self.settings),
                                   day=self.day)
        self.report.failed += 1
        self.report.failures.append(RunFailure(d.order_id, d.step, SendKind.PERMANENT, detail))
        return True

    def failed(self, d: Decision, token: int, exc: SendFailure) -> None:
        """Record a send that failed; stop trying the server after a few connection
        failures in a row."""
        self.finish_pending()
        _record_failure(self.site, self.ledger, self.day, self.report, d, token, exc)
        if exc.kind is SendKind.THROTTLED and not self.stopped:
            self.stopped = True  # the waits the run may make are spent
            self.report.notes.append(_(
                "The mail server still asked to slow down after the run waited ({reply}); "
                "the other mails stay due and the next run sends them.").format(
                    reply=exc.reply or exc))
        self.connection_failures = self.connection_failures + 1 if exc.connection else 0
        if self.connection_failures >= MAX_CONNECTION_FAILURES and not self.stopped:
            self.stopped = True
            later = (_("the other mails stay due and the next run sends them")
                     if self.settings.catch_up_days else
                     _("the other mails stay due today only (catch_up_days is 0): run again "
                       "today once the server works, or they count as missed tomorrow"))
            self.report.notes.append(_("The mail server failed {n} times in a row, so this run "
                                       "stopped trying; {later}.").format(
                                           n=self.connection_failures, later=later))


def _record_failure(site: Site, ledger, day: dt.date, report: RunReport,
                    d: Decision, token: int, exc: SendFailure) -> None:
    """Record a send that failed in the ledger and the report."""
    if exc.kind is SendKind.UNCERTAIN:
        # The server may have the mail: never resend it by itself.
        ledger.recover(now_in(site.settings), day=day)
        report.uncertain += 1
        report.failures.append(RunFailure(d.order_id, d.step, exc.kind, str(exc)))
        log_mail(site, d, _("uncertain: {detail}").format(detail=exc), logging.WARNING)
        return
    last = exc.temporary and last_try(site.settings.catch_up_days, d.due_date, day)
    status = "failed" if exc.temporary else "failed_permanent"
    if exc.temporary:
        detail = _("{error}; {promise}").format(
            error=exc, promise=retry_promise(site.settings.catch_up_days, d, day,
                                             _("will be retried by the next run")))
    elif exc.kind is SendKind.CONTENT:
        detail = _("{error}; {not_retried}").format(error=exc, not_retried=_(CONTENT_NOT_RETRIED))
        ledger.record_content_refused(token, exc.reply)
    else:
        detail = _("{error}; not retried: correct the address").format(error=exc)
    ledger.finish(token, status=status, detail=detail, archive_file="", worded=True,
                  now=now_in(site.settings), day=day)
    report.failed += 1
    report.failures.append(RunFailure(d.order_id, d.step, exc.kind, detail, last_try=last))
    log_mail(site, d, _("failed: {detail}").format(detail=detail), logging.WARNING)


def log_mail(site: Site, d: Decision, outcome: str, level: int = logging.INFO) -> None:
    """One line of commplan.log for one mail: order, step, customer, outcome."""
    if not log.isEnabledFor(level):
        return
    customer = site.model.customers.get(d.customer_id)
    who = f"{customer.name} <{', '.join(customer.emails)}>" if customer else ""
    log.log(level, "%s", _("order {order} step {step} customer {customer} {who}: {outcome}")
            .format(order=d.order_id, step=d.step, customer=d.customer_id, who=who,
                    outcome=outcome))


def mail_ids(prepared: Prepared) -> dict[str, str]:
    """The Message-ID and reference of a built mail, for the ledger."""
    return {"message_id": prepared.message.message_id, "ref": prepared.message.ref}


def _discard_staged(staged: Future[Path]) -> None:
    """Remove an archive file staged for a mail that is not sent."""
    from commplan_xl.store.archive import discard_message

    try:
        discard_message(staged.result())
    except Exception:  # nothing was written
        return


def _stage(site: Site, prepared: Prepared, index: ArchiveIndex) -> Path:
    """The mail's bytes in a temporary file of its customer's folder (in the stager)."""
    from commplan_xl.store.archive import customer_folder, stage_message

    customer = prepared.customer
    folder = customer_folder(site.settings.archive_dir, customer.customer_id, customer.name,
                             index=index)
    return stage_message(folder, prepared.data)


def archive_mail(site: Site, customer: Customer, d: Decision, prepared: Prepared,
                  day: dt.date, index: ArchiveIndex | None = None) -> Path:
    """Write the mail to its customer's folder; `index` is the run's listing of the
    archive folder."""
    from commplan_xl.store.archive import customer_folder, write_message

    folder = customer_folder(site.settings.archive_dir, customer.customer_id, customer.name,
                             index=index)
    return write_message(folder, stem=archive_stem(day, d), data=prepared.data)


def archive_stem(day: dt.date, d: Decision) -> str:
    """The archived mail's file name without .eml: day, order and step."""
    return f"{day.isoformat()}_{d.order_id}_step-{d.step}"
