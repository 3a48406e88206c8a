"""The batch: read → validate → schedule → render → send → record → SentLog.

This is the library behind the command line: each public function here is one command.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from commplan_xl.i18n import _, ngettext
from commplan_xl.model import Customer, Decision, MessageRef, Order, Plan, Step, norm_key
from commplan_xl.problems import (
    CommplanError,
    SendFailure,
    SendKind,
    WorkbookLocked,
    WorkbookProblem,
)
from commplan_xl.run.outcomes import CONTENT_NOT_RETRIED, RunFailure, RunReport, last_try
from commplan_xl.run.outcomes import retry_promise as outcome_promise
from commplan_xl.run.site import LEDGER_NAME, Site, now_in, today_in
from commplan_xl.settings import Settings

if TYPE_CHECKING:
    from commplan_xl.excel.read import Table
    from commplan_xl.mail.message import AttachmentCache, BuiltMessage
    from commplan_xl.mail.transport import Refusal, Transport
    from commplan_xl.run.readiness import Readiness
    from commplan_xl.run.reports import DashboardFigures
    from commplan_xl.store.archive import ArchiveIndex

__all__ = ["RunFailure", "RunReport", "Site", "load_site", "run"]

log = logging.getLogger("commplan")

# After this many connection failures in a row the run stops trying (the server is down):
# the rest stay due for the next run instead of filling the log with failures.
MAX_CONNECTION_FAILURES = 3


# ---------------------------------------------------------------- loading

def resolve_paths(home: Path | str | None, workbook: Path | str | None) -> tuple[Path, Path]:
    """The home folder and the workbook path.

    The home is --home, else COMMPLAN_HOME, else the folder above a `workbooks` folder
    holding the workbook given (a scheduled task starts in System32), else the current
    folder.
    """
    wb = Path(workbook).expanduser().absolute() if workbook else None
    chosen = home or os.environ.get("COMMPLAN_HOME")
    if chosen:
        home_path = Path(chosen).expanduser().absolute()
    elif wb is not None and wb.parent.name.casefold() == "workbooks":
        home_path = wb.parent.parent
    else:
        home_path = Path(".").absolute()
    return home_path, wb or home_path / "workbooks" / "commplan.xlsx"


def load_site(
    home: Path | str | None = None,
    workbook: Path | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    tables: Mapping[str, Table] | None = None,
) -> Site:
    """Read and validate the workbook of a home folder. `tables` is the workbook already
    being read (`open_workbook`), for a caller that starts other work meanwhile."""
    home_path, wb = resolve_paths(home, workbook)
    if tables is None:
        tables = open_workbook(wb)
    from commplan_xl.excel.validate import validate  # imported while the sheets parse

    try:
        st = wb.stat()
        stat: tuple[int, int] | None = (st.st_size, st.st_mtime_ns)
    except OSError:
        stat = None
    model, settings, problems = validate(tables, home=home_path, environ=environ)
    return Site(home_path, wb, settings, model, tuple(problems), stat,
                letters={key: _by_any_name(t, t.letters) for key, t in tables.items()},
                sheets={key: t.sheet for key, t in tables.items()},
                titles={key: _by_any_name(t, t.titles) for key, t in tables.items()})


def _by_any_name(table: Table, by_column: dict[str, str]) -> dict[str, str]:
    """`by_column` (letters, titles) by each column's key and by its header's own name too
    ("date_de_debut" as well as "start_date"), as templates know it: so a sheet without
    one valid row still says which names exist."""
    own = {name: by_column[column] for column, name in table.headers.items()
           if name not in by_column and column in by_column}
    return {**by_column, **own}


def open_workbook(path: Path) -> Mapping[str, Table]:
    """Start reading the workbook's sheets (see workbook.open_tables)."""
    from commplan_xl.excel.read import open_tables

    # open_tables says when there is no workbook, and retries while Excel saves it (the
    # file briefly does not exist then): no check of the file before it.
    return open_tables(path)


# ---------------------------------------------------------------- deciding

def site_decisions(site: Site, ledger_state: Mapping, *, today: dt.date,
                   sent_today: int = 0, ready: Readiness | None = None) -> list[Decision]:
    """What a run on `today` does with each due message; the same decisions for `due` and
    `run`: a mail that cannot be built (template, empty value, attachment, layout) waits
    and supersedes nothing."""
    from commplan_xl.core import schedule

    return schedule.decide(site.model, ledger_state, today=today, settings=site.settings,
                           sent_today=sent_today, ready=ready or readiness(site))


def readiness(site: Site) -> Readiness:
    """Whether each due mail of the site can be built (run.readiness)."""
    from commplan_xl.run.readiness import Readiness

    return Readiness(site.model, site.settings, columns=site.letters)


def read_ledger(home: Path) -> tuple[Mapping, Callable[[dt.date], int]]:
    """The ledger's state and a sent-on-day counter, read only; empty when there is none."""
    from commplan_xl.store.ledger import Ledger

    path = home / LEDGER_NAME
    if not path.exists():
        return {}, lambda day: 0
    with Ledger(path) as ledger:
        state = ledger.state()
        state.plans = ledger.recorded_plans()  # for the notes of orders moved to a plan
        counts = ledger.sent_per_day()
    return state, lambda day: counts.get(day.isoformat(), 0)


def prefetch_ledger(home: Path) -> Future:
    """Start reading the ledger in a thread (SQLite works without the GIL) while the
    workbook is read; `.result()` gives what `read_ledger` gives."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(read_ledger, home)
    pool.shutdown(wait=False)
    return future


def due(site: Site, *, today: dt.date | None = None,
        ledger: tuple[Mapping, Callable[[dt.date], int]] | None = None) -> list[Decision]:
    """What a run on `today` would send and skip; changes nothing (the ledger is only read)."""
    day = today or today_in(site.settings)
    state, sent_on = ledger if ledger is not None else read_ledger(site.home)
    return site_decisions(site, state, today=day, sent_today=sent_on(day))


# ---------------------------------------------------------------- rendering one message

def _attachment_cache() -> AttachmentCache:
    from commplan_xl.mail.message import AttachmentCache  # not at import: the CLI starts lighter

    return AttachmentCache()


@dataclass
class RunCache:
    """What a run works out once for all its messages: each step's checked attachment
    paths (by Plans row) and each attachment file, read and encoded."""

    paths: dict[int, list[Path]] = field(default_factory=dict)
    files: AttachmentCache = field(default_factory=_attachment_cache)


@dataclass(frozen=True)
class Prepared:
    """One message ready to send: its exact bytes and where it goes."""

    order: Order
    customer: Customer
    plan: Plan
    step: Step
    due_date: dt.date
    subject: str
    to: tuple[str, ...]
    message: BuiltMessage  # reads like an email.message.EmailMessage
    data: bytes


def find_step(site: Site, order_id: str, step_number: int) -> tuple[Order, Customer, Plan, Step]:
    """The order, its customer, plan and step, or a sentence saying what is missing."""
    key = norm_key(order_id)
    order = next((o for o in site.model.orders if norm_key(o.order_id) == key), None)
    if order is None:
        from commplan_xl.excel.names import sheet_key

        if any(sheet_key(p.sheet) == "orders" for p in site.problems):
            raise CommplanError(_('There is no order "{order}" in the Orders sheet (the Orders '
                                  "sheet has problems: run `commplan check`).").format(
                                      order=order_id))
        raise CommplanError(_('There is no order "{order}" in the Orders sheet.').format(
            order=order_id))
    plan = site.model.plans.get(order.plan)
    if plan is None:
        raise CommplanError(_('Order {order} uses plan "{plan}", which is not in Plans.').format(
            order=order.order_id, plan=order.plan))
    step = next((s for s in plan.steps if s.number == step_number), None)
    if step is None:
        numbers = ", ".join(str(s.number) for s in plan.steps)
        raise CommplanError(_('Plan "{plan}" has no step {step} (its steps are {numbers}).')
                            .format(plan=plan.name, step=step_number, numbers=numbers))
    customer = site.model.customers.get(order.customer_id)
    if customer is None:
        raise CommplanError(_("Order {order}'s customer {customer} is not in Customers.").format(
            order=order.order_id, customer=order.customer_id))
    return order, customer, plan, step


def prepare(
    site: Site,
    order: Order,
    customer: Customer,
    plan: Plan,
    step: Step,
    *,
    due_date: dt.date,
    today: dt.date,
    to: tuple[str, ...] | None = None,
    cache: RunCache | None = None,
) -> Prepared:
    """Render and build one message; raises CommplanError with a sentence if it cannot.
    A run passes one `cache` for all its messages."""
    from commplan_xl.mail.attachments import attachment_file
    from commplan_xl.mail.layout import load_layout
    from commplan_xl.mail.message import build_message, message_bytes
    from commplan_xl.mail.render import build_context, render_message

    s = site.settings
    context = build_context(
        order=order, customer=customer, plan_name=plan.name, step_number=step.number,
        due_date=due_date, today=today, sender_name=s.sender_name, sender_email=s.sender_email,
        constants=site.model.constants,
    )
    rendered = render_message(step, context, locale=s.locale, layout=load_layout(s))
    paths = cache.paths.get(step.row) if cache is not None else None
    if paths is None:
        paths = [attachment_file(s.attachments_dir, name, step.row)
                 for name in step.attachments]
        if cache is not None:
            cache.paths[step.row] = paths
    recipients = to if to is not None else customer.emails
    msg = build_message(
        rendered=rendered, sender_email=s.sender_email, sender_name=s.sender_name,
        reply_to=s.reply_to, to=list(recipients), attachments=paths,
        cache=cache.files if cache is not None else None,
    )
    return Prepared(order, customer, plan, step, due_date, rendered.subject, tuple(recipients),
                    msg, message_bytes(msg))


# ---------------------------------------------------------------- the run

def run(
    site: Site,
    *,
    today: dt.date | None = None,
    dry_run: bool = False,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    transport_factory: Callable[[Settings], Transport] | None = None,
    new_ledger: bool = False,
) -> RunReport:
    """Send what is due, archive each mail, record every outcome, then rebuild the SentLog
    and the managers' sheets from the ledger, and send the summary mail.

    Refuses (CommplanError, nothing sent) to start a new ledger where the workbook or the
    archive shows earlier sends, unless `new_ledger` confirms a fresh start.
    """
    from commplan_xl.ops.runlock import run_lock
    from commplan_xl.store.ledger import Ledger

    day = today or today_in(site.settings)
    report = RunReport(today=day, dry_run=dry_run, problems=site.problems)
    if not site.settings.sender_email:
        raise CommplanError(_(
            "No sender address: fill `sender_email` in the Settings sheet (or set "
            "COMMPLAN_SENDER_EMAIL), then run again."))
    with run_lock(site.home):
        if dry_run:
            from commplan_xl.run.history import missing_ledger_message

            stop = None if new_ledger else missing_ledger_message(
                site, _("so a real run would stop without sending anything"))
            if stop:
                report.notes.append(stop)
            return _dry_run(site, day, report, limit)
        _before_sending(site, new_ledger)
        with Ledger(site.ledger_path) as ledger:
            _copy_ledger(site, ledger, day, report, unless_current=True)  # a safety net
            _recover(site, ledger, day, report)
            if site.settings.bounces:  # first, so a returned mail counts in today's plan
                read_returned(site, ledger, report, day)
            with _transport(site.settings, transport_factory) as transport:
                _SendLoop(site, ledger, transport, day, report).run(limit, progress)
                extra, figures = _report_sheets(site, ledger, day, report)
                _send_summary_once(transport, site.settings, ledger, report, figures)
            write_sentlog(site, ledger, report, extra_sheets=extra)
            _copy_ledger(site, ledger, day, report)  # the day's copy holds today's sends
    return report


SUMMARY_MARK = "summary_mail"


def _send_summary_once(transport: Transport, settings: Settings, ledger, report: RunReport,
                       figures: DashboardFigures | None) -> None:
    """The summary mail, once a day: a same-day rerun sends another only when it sent
    mails or found a failure the day's summary did not tell (kept in the ledger)."""
    import json

    from commplan_xl.run.reports import send_summary

    told = {f"{f.order_id}/{f.step}/{f.kind.value}" for f in report.failures}
    try:
        before = json.loads(ledger.mark(SUMMARY_MARK) or "{}")
    except ValueError:
        before = {}
    if before.get("day") == report.today.isoformat():
        earlier = set(before.get("told", []))
        if not (report.sent or report.uncertain or told - earlier):
            return
        told |= earlier
    if send_summary(transport, settings, report, figures):
        ledger.set_mark(SUMMARY_MARK, json.dumps({"day": report.today.isoformat(),
                                                  "told": sorted(told)}))


def _transport(settings: Settings, factory: Callable[[Settings], Transport] | None
               ) -> Transport:
    """The run's transport: SMTP unless a factory is given."""
    if factory is not None:
        return factory(settings)
    from commplan_xl.mail.smtp import SmtpTransport

    return SmtpTransport(settings)


def _recover(site: Site, ledger, day: dt.date, report: RunReport) -> None:
    """Call the mails a killed run left `sending` uncertain, with a note for each."""
    for entry in ledger.recover(now_in(site.settings), day=day):
        report.uncertain += 1
        report.notes.append(_(
            "Order {order} step {step} is uncertain: the last run stopped while sending "
            "it. Check with the customer, then use `commplan resend {order} {step}` if "
            "it did not arrive.").format(order=entry.order_id, step=entry.step))


def _report_sheets(site: Site, ledger, day: dt.date, report: RunReport
                   ) -> tuple[list, DashboardFigures | None]:
    """The Dashboard and Forecast sheets and their figures, from the ledger after the loop;
    none (and a note) when they cannot be built: they must never cost the SentLog."""
    from commplan_xl.run.reports import report_sheets

    try:
        return report_sheets(site, ledger, today=day)
    except Exception as exc:
        log.exception("%s", _("the Dashboard and Forecast sheets were not built"))
        report.notes.append(_("The Dashboard and Forecast sheets could not be built: "
                              "{error}").format(error=exc))
        return [], None


def _copy_ledger(site: Site, ledger, day: dt.date, report: RunReport, *,
                 unless_current: bool = False) -> None:
    """Keep the day's dated copy of the ledger (nothing for a ledger still empty; with
    `unless_current`, nothing when the newest copy already holds the ledger as it is); a
    copy that cannot be made is said, never a reason to stop."""
    import sqlite3

    from commplan_xl.store.ledger_backup import backup_folder, is_current, make_backup

    if ledger.is_empty() or (unless_current and is_current(ledger.db, site.home)):
        return
    try:
        make_backup(ledger.db, site.home, day)
    except (OSError, sqlite3.Error) as exc:
        log.warning("no dated copy of the ledger: %s", exc)
        note = _("The dated copy of the ledger could not be made in {folder} ({error}); check "
                 "that folder.").format(folder=backup_folder(site.home), error=exc)
        if note not in report.notes:
            report.notes.append(note)


def _before_sending(site: Site, new_ledger: bool) -> None:
    """Clear a killed run's leftovers; stop before a new ledger is started over earlier
    sends (see run.history)."""
    from commplan_xl.run import history

    removed = history.remove_leftovers(site)
    if removed:
        log.info("removed %d temporary file(s) a stopped run left", removed)
    if not new_ledger:
        message = history.missing_ledger_message(site)
        if message:
            raise CommplanError(message)


def read_returned(site: Site, ledger, report: RunReport, day: dt.date) -> None:
    """Read the mailbox for returned mails, record them and tell the report."""
    from commplan_xl.run import returned

    found = returned.read_returned(site.settings, ledger, now=now_in(site.settings), day=day)
    failures = found.failures
    report.returned += len(failures)
    # Before the run's own failures; each line names its mail already.
    report.failures[:0] = [RunFailure(h.order_id, h.step, _RETURNED_KINDS[h.kind], h.line,
                                      named=False) for h in failures]
    if found.error:
        report.mailbox_error = found.error
        report.notes.append(returned.unread_sentence(found.error))
    if found.skipped:
        report.notes.append(f"{found.skipped} message(s) of the mailbox could not be read as "
                            "returned mails and were skipped (see commplan.log).")


# What each kind of returned mail asks of people, as the summary's advice tells them apart.
_RETURNED_KINDS = {"hard": SendKind.PERMANENT, "soft": SendKind.TEMPORARY,
                   "sender_side": SendKind.SENDER_SIDE, "to_review": SendKind.TO_REVIEW}


def _parts(site: Site, orders: Mapping[str, Order], d: Decision
           ) -> tuple[Order, Customer, Plan, Step]:
    """The order, customer, plan and step a decision is about (`orders` by id)."""
    order = orders[d.order_id]
    plan = site.model.plans[d.plan]
    step = next(st for st in plan.steps if st.number == d.step)
    return order, site.model.customers[order.customer_id], plan, step


def _dry_run(site: Site, day: dt.date, report: RunReport, limit: int | None) -> RunReport:
    from commplan_xl.core.schedule import is_limit_wait, is_value_wait

    decisions = due(site, today=day)
    orders = {o.order_id: o for o in site.model.orders}
    cache = RunCache()
    sends = 0
    for d in decisions:
        if d.action == "skip":
            report.skipped += 1
        elif is_value_wait(d):
            report.held.append(_held(d))
        elif d.action == "wait" and not is_limit_wait(d):
            report.failed += 1
            report.failures.append(RunFailure(d.order_id, d.step, SendKind.NOT_BUILT,
                                              d.reason))
        elif d.action == "wait" or (limit is not None and sends >= limit):
            report.waiting += 1
        else:
            try:
                prepare(site, *_parts(site, orders, d), due_date=d.due_date, today=day,
                        cache=cache)
                sends += 1
                report.sent += 1
            except CommplanError as exc:
                report.failed += 1
                report.failures.append(RunFailure(d.order_id, d.step, SendKind.NOT_BUILT,
                                                  str(exc)))
    return report


def _held(d: Decision) -> str:
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


class _SendLoop:
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

    def run(self, limit: int | None, progress: Callable[[int, int], None] | None) -> None:
        """Carry out every decision; `progress(sent, total)` after each mail sent."""
        decisions = site_decisions(self.site, self.ledger.state(), today=self.day,
                           sent_today=self.ledger.sent_on(self.day))
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
            self.report.held.append(_held(d))
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
        order, customer, plan, step = _parts(self.site, self.orders, d)
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
            self.report.held.append(_held(d._replace(reason=str(exc))))
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
                                    **_mail_ids(f.prepared))
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
                                       stem=_archive_stem(self.day, f.decision))
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
        last = _last_try(self.settings, d, self.day)
        detail = _("{error}; {promise}").format(error=why, promise=retry_promise(
            self.settings, d, self.day, _("will be retried once fixed")))
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
    last = exc.temporary and _last_try(site.settings, d, day)
    status = "failed" if exc.temporary else "failed_permanent"
    if exc.temporary:
        detail = _("{error}; {promise}").format(
            error=exc, promise=retry_promise(site.settings, d, day,
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


def _last_try(settings: Settings, d: Decision, day: dt.date) -> bool:
    """Whether no later day's run tries the message again (past catch_up_days)."""
    return last_try(settings.catch_up_days, d.due_date, day)


def retry_promise(settings: Settings, d: Decision, day: dt.date, promise: str) -> str:
    """`promise` (a later run retries the message) when a later day's run still may (see
    outcomes.retry_promise)."""
    return outcome_promise(settings.catch_up_days, d.order_id, d.step, d.due_date, day,
                           promise)


def _mail_ids(prepared: Prepared) -> dict[str, str]:
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


def _archive_file(site: Site, customer: Customer, d: Decision, prepared: Prepared,
                  day: dt.date, index: ArchiveIndex | None = None) -> Path:
    """Write the mail to its customer's folder; `index` is the run's listing of the
    archive folder."""
    from commplan_xl.store.archive import customer_folder, write_message

    folder = customer_folder(site.settings.archive_dir, customer.customer_id, customer.name,
                             index=index)
    return write_message(folder, stem=_archive_stem(day, d), data=prepared.data)


def _archive_stem(day: dt.date, d: Decision) -> str:
    """The archived mail's file name without .eml: day, order and step."""
    return f"{day.isoformat()}_{d.order_id}_step-{d.step}"


# ---------------------------------------------------------------- SentLog

# Excel stops at 1,048,576 rows: the sheet shows the newest outcomes; the ledger keeps all.
SENTLOG_MAX_ROWS = 1_048_575


def sentlog_rows(ledger, first_day: dt.date | None = None) -> list[tuple]:
    """The SentLog rows from the ledger's events of the run days from `first_day` on,
    oldest first (the newest when too many)."""
    return ledger.sentlog_rows(first_day)[-SENTLOG_MAX_ROWS:]


def write_sentlog(site: Site, ledger, report: RunReport | None = None, *,
                  extra_sheets: list | tuple = ()) -> bool:
    """Rebuild the SentLog sheet (its last `sentlog_days` days, in the workbook's language,
    with the report sheets given) from the ledger; False (with a note) when the file is
    open."""
    from commplan_xl.run.reports import sentlog_sheet

    day = report.today if report is not None else today_in(site.settings)
    first = day - dt.timedelta(days=site.settings.sentlog_days - 1)
    sheet = sentlog_sheet(sentlog_rows(ledger, first), site_language(site))
    try:
        write_sheets(site, [sheet, *extra_sheets])
    except WorkbookLocked as exc:
        note = _("{error}. The mails were sent; the SentLog will be completed on the next run "
                 "once the workbook is closed.").format(error=exc)
        log.warning("%s", note)
        if report is not None:
            report.log_written = False
            report.notes.append(note)
        return False
    return True


def site_language(site: Site) -> str:
    """The language of the site's workbook, which its tool sheets are written in."""
    from commplan_xl.excel.names import workbook_language

    return workbook_language(site.settings.locale)


def tool_sheet_specs(site: Site) -> list:
    """The tool's sheets as it would write them in the site's language (no rows): their
    names, headers and names in the other languages."""
    from commplan_xl.excel.names import localise
    from commplan_xl.excel.sheet_xml import ToolSheet
    from commplan_xl.run import reports
    from commplan_xl.run.dashboard import dashboard_spec
    from commplan_xl.run.variables import VARIABLE_LIST, VARIABLE_LIST_HEADER
    from commplan_xl.store.sentlog import SENTLOG_HEADER

    lang = site_language(site)
    english = (("sentlog", "SentLog", SENTLOG_HEADER),
               ("forecast", reports.FORECAST, reports.FORECAST_HEADER),
               ("variablelist", VARIABLE_LIST, VARIABLE_LIST_HEADER))
    specs = [localise(ToolSheet(name=name, header=header, rows=()), key, lang)
             for key, name, header in english]
    return [specs[0], dashboard_spec(lang), *specs[1:]]


def write_sheets(site: Site, sheets: list) -> None:
    """Write the tool's own sheets into the workbook (a dated backup kept first)."""
    from commplan_xl.excel.graft import write_tool_sheets

    write_tool_sheets(site.workbook, sheets, expected_stat=site.stat,
                      backup_dir=site.home / "workbooks" / "backups")


# ---------------------------------------------------------------- returned mails alone

def bounces(site: Site, *, today: dt.date | None = None):
    """`commplan bounces`: read the mailbox for returned mails and record them, sending
    nothing; then rebuild the SentLog and Dashboard. (ReadResult, SentLog written)."""
    from commplan_xl.ops.runlock import run_lock
    from commplan_xl.run import reports as reporting
    from commplan_xl.run import returned
    from commplan_xl.store.ledger import Ledger

    day = today or today_in(site.settings)
    with run_lock(site.home), Ledger(site.ledger_path) as ledger:
        found = returned.read_returned(site.settings, ledger, now=now_in(site.settings),
                                       day=day)
        try:
            extra, _figures = reporting.report_sheets(site, ledger, today=day)
        except Exception:  # the managers' view must never cost the SentLog
            log.exception("Dashboard/Forecast not built")
            extra = []
        written = write_sentlog(site, ledger, extra_sheets=extra)
    return found, written


# ---------------------------------------------------------------- one message on purpose

def _prepare_one(site: Site, order: Order, customer: Customer, plan: Plan, step: Step, *,
                 due_date: dt.date, today: dt.date, to: tuple[str, ...] | None = None
                 ) -> Prepared:
    """`prepare` for a command about one message: an empty cell is said in full."""
    from commplan_xl.mail.render import WaitingForValue

    try:
        return prepare(site, order, customer, plan, step, due_date=due_date, today=today, to=to)
    except WaitingForValue as exc:
        raise CommplanError(_(
            "Order {order} step {step} cannot be made yet: it is waiting for {column}, which "
            "is empty for this order. Fill the cell, or give the template a fallback "
            '({fallback}).').format(order=order.order_id, step=step.number, column=exc.column,
                                    fallback='{{ ...|default("…") }}')) from None


def preview(site: Site, order_id: str, step_number: int, *, to: str | None = None,
            today: dt.date | None = None,
            transport_factory: Callable[[Settings], Transport] | None = None) -> list[Path]:
    """Render one message to files to look at, or send it to a test address (nothing recorded)."""
    from commplan_xl.core.offsets import due_date as compute_due
    from commplan_xl.core.schedule import settings_calendar
    from commplan_xl.excel.validate import split_emails
    from commplan_xl.store.archive import safe_name

    day = today or today_in(site.settings)
    order, customer, plan, step = find_step(site, order_id, step_number)
    due_on = compute_due(step, order, settings_calendar(site.settings)) or day
    recipients = tuple(split_emails(to)) if to else None
    prepared = _prepare_one(site, order, customer, plan, step, due_date=due_on, today=day,
                            to=recipients)
    if to:
        with _transport(site.settings, transport_factory) as transport:
            transport.send(prepared.message, sender=site.settings.sender_email,
                           recipients=list(prepared.to)).checked()
        return []
    folder = site.home / "previews"
    folder.mkdir(parents=True, exist_ok=True)
    stem = safe_name(f"{order.order_id}_step-{step.number}", max_len=100)
    eml = folder / f"{stem}.eml"
    eml.write_bytes(prepared.data)
    html_path = folder / f"{stem}.html"
    html_path.write_text(preview_html(prepared.message), encoding="utf-8")
    return [eml, html_path]


def preview_html(message) -> str:
    """The mail's HTML part as a page a browser shows alone: each image the mail carries
    inline (`cid:`, the logo) put in as a `data:` URI."""
    import base64

    html_part = message.get_body(preferencelist=("html",))
    if html_part is None:
        return ""
    page = html_part.get_content()
    for part in message.walk():
        cid = (part.get("Content-ID") or "").strip().strip("<>")
        if cid and f"cid:{cid}" in page:
            data = base64.b64encode(part.get_payload(decode=True) or b"").decode("ascii")
            page = page.replace(f"cid:{cid}", f"data:{part.get_content_type()};base64,{data}")
    return page


def resend(site: Site, order_id: str, step_number: int, *, today: dt.date | None = None,
           transport_factory: Callable[[Settings], Transport] | None = None) -> RunReport:
    """Send one message again on purpose; the ledger records it as a resend."""
    from commplan_xl.core.offsets import due_date as compute_due
    from commplan_xl.core.schedule import settings_calendar
    from commplan_xl.ops.runlock import run_lock
    from commplan_xl.store.ledger import Ledger

    day = today or today_in(site.settings)
    report = RunReport(today=day)
    order, customer, plan, step = find_step(site, order_id, step_number)
    if customer.opt_out:
        raise CommplanError(_("Customer {customer} has opted out: nothing was sent.").format(
            customer=customer.customer_id))
    due_on = compute_due(step, order, settings_calendar(site.settings)) or day
    prepared = _prepare_one(site, order, customer, plan, step, due_date=due_on, today=day)
    s = site.settings
    with run_lock(site.home), Ledger(site.ledger_path) as ledger:
        message = MessageRef(order_id=order.order_id, customer_id=customer.customer_id,
                             plan=plan.name, plan_key=plan.key, step=step.number,
                             due_date=due_on, emails=";".join(customer.emails))
        token = ledger.begin(message, subject=prepared.subject, now=now_in(s), resend=True,
                             day=day, **_mail_ids(prepared))
        with _transport(s, transport_factory) as transport:
            outcome = transport.send(prepared.data, sender=s.sender_email,
                                     recipients=list(prepared.to))
        d = Decision(order.order_id, customer.customer_id, plan.key, plan.name, step.number,
                     due_on, "send", "resend")
        if outcome.failure is None:
            from commplan_xl.store.archive import ArchiveIndex, ids_to_settle, relative

            owners = ledger.archive_owners(ids_to_settle(site.model.customers))
            index = ArchiveIndex(s.archive_dir, owners=owners)
            archive_file = relative(_archive_file(site, customer, d, prepared, day, index),
                                    site.home, index=index)
            ledger.finish(token, status="sent", detail=_("resent on request"), worded=True,
                          archive_file=archive_file, now=now_in(s), day=day)
            report.sent += 1
        else:
            _resend_failed(ledger, s, day, report, d, token, outcome.failure)
        write_sentlog(site, ledger, report)
    return report


def _resend_failed(ledger, settings: Settings, day: dt.date, report: RunReport, d: Decision,
                   token: int, exc: SendFailure) -> None:
    """Record a resend that failed; the person named the mail, so the sentence does not."""
    failure = RunFailure(d.order_id, d.step, exc.kind, str(exc), named=False)
    report.failures.append(failure)
    if exc.kind is SendKind.UNCERTAIN:
        ledger.recover(now_in(settings), day=day)
        report.uncertain += 1
        return
    ledger.finish(token, status="failed" if exc.temporary else "failed_permanent",
                  detail=_("resend failed: {error}").format(error=exc), archive_file="",
                  worded=True, now=now_in(settings), day=day)
    report.failed += 1


# ---------------------------------------------------------------- a plan's dates

@dataclass(frozen=True)
class PlanLine:
    """One step of a plan for an order whose dates are a given day (`commplan plan`)."""

    step: Step
    due: dt.date  # the planned due date
    goes: dt.date  # the day it is sent (the next business day with send_days business)
    subject: str  # rendered on example values (the template itself when it cannot be)
    problem: str | None  # why its mail cannot be made, or None


def plan_lines(site: Site, plan: Plan, start: dt.date) -> list[PlanLine]:
    """Every step of `plan` for an order whose dates are `start`, in date order, each
    subject rendered on example values, and each step's problem when it has one."""
    from commplan_xl.core.offsets import add_delay
    from commplan_xl.core.schedule import settings_calendar
    from commplan_xl.mail.render import RenderError, build_context, render_subject
    from commplan_xl.run.variables import example_parts

    s = site.settings
    calendar = settings_calendar(s)
    ready = readiness(site)
    order, customer = example_parts(site, plan, start)
    lines: list[PlanLine] = []
    for step in plan.steps:
        due_on = add_delay(start, step.delay, step.unit, calendar)
        goes = calendar.next_working_day(due_on) if s.send_days == "business" else due_on
        problem = ready.step_wait(plan.key, step)
        subject = step.subject
        try:
            context = build_context(
                order=order, customer=customer, plan_name=plan.name, step_number=step.number,
                due_date=due_on, today=goes, sender_name=s.sender_name,
                sender_email=s.sender_email, constants=site.model.constants)
            subject = render_subject(step.subject, context, locale=s.locale)
        except RenderError as exc:
            problem = problem or str(exc)
        lines.append(PlanLine(step, due_on, goes, subject, problem))
    lines.sort(key=lambda line: (line.goes, line.step.number))
    return lines


# ---------------------------------------------------------------- check

def check_messages(site: Site, *, today: dt.date | None = None, max_per_step: int = 3,
                   ledger: tuple[Mapping, Callable[[dt.date], int]] | None = None
                   ) -> list[WorkbookProblem]:
    """Every template problem of every active plan step, whether an order uses it yet or
    not (each at its Plans cell, all of a row's at once); the values some orders' mails
    cannot be made with (a filter that cannot format one); and the mails due on `today`
    that wait for an empty cell, at that cell. Validate reports missing attachment files."""
    from commplan_xl.mail.layout import layout_problems

    day = today or today_in(site.settings)
    ready = readiness(site)
    problems: list[WorkbookProblem] = []
    by_plan: dict[str, list[Order]] = {}
    for o in site.model.orders:
        by_plan.setdefault(o.plan, []).append(o)
    for plan in site.model.plans.values():
        for step in plan.steps:
            if not step.active:
                continue
            found = [(column, sentence) for column, sentence in ready.check(plan.key, step).problems
                     if column in ("subject", "body")]
            problems += [site.problem("plans", step.row, column, sentence, message_level=True)
                         for column, sentence in found]
            if not ready.check(plan.key, step).problems:
                problems += _value_problems(site, ready, plan, step, by_plan.get(plan.key, []),
                                            day, max_per_step)
    problems += _waiting_problems(site, due(site, today=day, ledger=ledger))
    example = _example_context(site, day)
    return problems + layout_problems(site.settings, example)


def _value_problems(site: Site, ready: Readiness, plan: Plan, step: Step,
                    orders: list[Order], day: dt.date, max_per_step: int
                    ) -> list[WorkbookProblem]:
    """The orders whose values the step's mail cannot be made with (an empty cell is not
    one: it waits), grouped by sentence, at most `max_per_step` sentences."""
    from commplan_xl.mail.render import WaitingForValue

    failing: list[tuple[str, str, str]] = []  # (order id, sentence, part)
    if ready.reads_values(plan.key, step):
        for order in orders:
            customer = site.model.customers.get(order.customer_id)
            if customer is None:
                continue
            failure = ready.order_failure(order, customer, plan, step, day)
            if failure is not None and not isinstance(failure, WaitingForValue):
                failing.append((order.order_id, str(failure), failure.part))
    problems: list[WorkbookProblem] = []
    shown: set[str] = set()
    for order_id, message, part in failing:
        if message in shown:
            continue
        if len(shown) >= max_per_step:
            break
        shown.add(message)
        others = sum(1 for _o, m, _p in failing if m == message) - 1
        more = ngettext(" (and {n} other order)", " (and {n} other orders)",
                        others).format(n=others) if others else ""
        column = "subject" if part == "subject" else "body"
        problems.append(site.problem(
            "plans", step.row, column, _("order {order}{more}: {message}").format(
                order=order_id, more=more, message=message), message_level=True))
    return problems


def _waiting_problems(site: Site, decisions: list[Decision]) -> list[WorkbookProblem]:
    """The due mails waiting for an empty cell, each at that cell (Orders or Customers)."""
    from commplan_xl.core.schedule import WAITING_FOR, is_value_wait

    orders = {o.order_id: o for o in site.model.orders}
    problems: list[WorkbookProblem] = []
    for d in decisions:
        if not is_value_wait(d):
            continue
        column = d.reason[len(WAITING_FOR):]
        order = orders[d.order_id]
        customer = site.model.customers.get(order.customer_id)
        sheet, row = "orders", order.row
        if column not in order.fields and customer is not None and column in customer.fields:
            sheet, row = "customers", customer.row
        problems.append(site.problem(
            sheet, row, column,
            _('order {order}, step {step} of "{plan}" (due {date}) is waiting for {column}: '
              "the cell is empty. Fill it and the next run sends the mail, or give the "
              "template a fallback ({fallback}).").format(
                  order=d.order_id, step=d.step, plan=d.plan_name,
                  date=f"{d.due_date:%d/%m/%Y}", column=column,
                  fallback='{{ ...|default("…") }}'),
            message_level=True))
    return problems


def _example_context(site: Site, day: dt.date) -> dict | None:
    """One order's variables, to try the layout and the signature with."""
    from commplan_xl.mail.render import build_context

    s = site.settings
    for order in site.model.orders:
        customer = site.model.customers.get(order.customer_id)
        plan = site.model.plans.get(order.plan)
        if customer is not None and plan is not None and plan.steps:
            return build_context(
                order=order, customer=customer, plan_name=plan.name,
                step_number=plan.steps[0].number, due_date=day, today=day,
                sender_name=s.sender_name, sender_email=s.sender_email,
                constants=site.model.constants)
    return None


def stale_lock_note(workbook: Path) -> str | None:
    """A sentence about an Excel/LibreOffice lock file beside the workbook, if there is one."""
    from commplan_xl.excel.safe_replace import lock_file

    lock = lock_file(workbook)
    if lock is None:
        return None
    try:
        made = dt.datetime.fromtimestamp(lock.stat().st_mtime)
        age = dt.datetime.now() - made
        since = _(" (it dates from {when})").format(when=f"{made:%d/%m/%Y %H:%M}")
    except OSError:
        age, since = dt.timedelta(0), ""
    stale = (_(" It is more than a day old, so Excel probably crashed and left it behind.")
             if age > dt.timedelta(days=1) else "")
    return _(
        "{workbook} looks open in Excel or LibreOffice: {lock_name} is beside it{since}."
        "{stale} While it is there, commplan sends mails but cannot write the SentLog. If "
        "nobody has the workbook open (check every PC that uses it), delete {lock} and the "
        "next run completes the log.").format(workbook=workbook.name, lock_name=lock.name,
                                              since=since, stale=stale, lock=lock)
