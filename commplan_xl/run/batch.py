"""The batch: read → validate → schedule → render → send → record → SentLog.

This is the library behind the command line: each public function here is one command.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from commplan_xl.i18n import N_, _, ngettext
from commplan_xl.model import Customer, Decision, MessageRef, Model, Order, Plan, Step, norm_key
from commplan_xl.problems import (
    CommplanError,
    SendFailure,
    SendUncertain,
    WorkbookLocked,
    WorkbookProblem,
)
from commplan_xl.settings import Settings

if TYPE_CHECKING:
    from commplan_xl.excel.read import Table
    from commplan_xl.mail.smtp import AttachmentCache
    from commplan_xl.run.readiness import Readiness

log = logging.getLogger("commplan")

LEDGER_NAME = "commplan-ledger.sqlite3"
# After this many connection failures in a row the run stops trying (the server is down):
# the rest stay due for the next run instead of filling the log with failures.
MAX_CONNECTION_FAILURES = 3


@dataclass(frozen=True)
class Site:
    """A home folder with its workbook read and validated."""

    home: Path
    workbook: Path
    settings: Settings
    model: Model
    problems: tuple[WorkbookProblem, ...]
    stat: tuple[int, int] | None = None  # (size, mtime_ns) of the workbook when read
    # Column letters per sheet ("plans" -> {"body": "F"}), to name cells in problems.
    letters: dict[str, dict[str, str]] = field(default_factory=dict)

    def cell(self, sheet: str, column: str, row: int) -> str | None:
        letter = self.letters.get(sheet.casefold(), {}).get(column)
        return f"{letter}{row}" if letter else None

    @property
    def ledger_path(self) -> Path:
        return self.home / LEDGER_NAME


@dataclass
class RunReport:
    """What a run did, for the closing summary and the exit status."""

    today: dt.date
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    uncertain: int = 0
    waiting: int = 0
    not_tried: int = 0
    # Mails waiting for an empty cell to be filled: "Order O1 step 3 waits for X" each.
    held: list[str] = field(default_factory=list)
    dry_run: bool = False
    problems: tuple[WorkbookProblem, ...] = ()
    notes: list[str] = field(default_factory=list)  # sentences for people
    log_written: bool = True
    failures: list[str] = field(default_factory=list)
    returned: int = 0  # mails found returned (bounced) in the mailbox, or to review
    mailbox_error: str = ""  # why returned mails could not be read ("" when they were)

    @property
    def needs_attention(self) -> bool:
        return bool(
            self.failed or self.uncertain or self.problems or not self.log_written
            or self.not_tried or self.returned or self.mailbox_error
        )


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
    letters = {key: dict(t.letters) for key, t in tables.items()}
    return Site(home_path, wb, settings, model, tuple(problems), stat, letters)


def open_workbook(path: Path) -> Mapping[str, Table]:
    """Start reading the workbook's sheets (see workbook.open_tables)."""
    from commplan_xl.excel.read import open_tables

    # open_tables says when there is no workbook, and retries while Excel saves it (the
    # file briefly does not exist then): no check of the file before it.
    return open_tables(path)


def today_in(settings: Settings) -> dt.date:
    """Today's date in the site's time zone."""
    return dt.datetime.now(ZoneInfo(settings.timezone)).date()


def now_in(settings: Settings) -> dt.datetime:
    """The current local time in the site's time zone, without tzinfo, to the second."""
    return dt.datetime.now(ZoneInfo(settings.timezone)).replace(tzinfo=None, microsecond=0)


# ---------------------------------------------------------------- deciding

def decide(site: Site, ledger_state: Mapping, *, today: dt.date, sent_today: int = 0,
           ready: Readiness | None = None) -> list[Decision]:
    """What a run on `today` does with each due message; the same decisions for `due` and
    `run`: a mail that cannot be built (template, empty value, attachment, layout) waits
    and supersedes nothing."""
    from commplan_xl.core.schedule import decide as schedule_decide

    return schedule_decide(site.model, ledger_state, today=today, settings=site.settings,
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
    return decide(site, state, today=day, sent_today=sent_on(day))


# ---------------------------------------------------------------- rendering one message

def _attachment_cache() -> AttachmentCache:
    from commplan_xl.mail.smtp import AttachmentCache  # not at import: the CLI starts lighter

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
    message: object  # mailer.BuiltMessage: reads like an email.message.EmailMessage
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
    from commplan_xl.mail.render import build_context, render_message
    from commplan_xl.mail.smtp import build_message, message_bytes

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
    msg.wire  # noqa: B018 - made now: a run prepares while the server takes the mail before
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
    mailer_factory: Callable[[Settings], object] | None = None,
    new_ledger: bool = False,
) -> RunReport:
    """Send what is due, archive each mail, record every outcome, then rebuild the SentLog.

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
            for entry in ledger.recover(now_in(site.settings), day=day):
                report.uncertain += 1
                report.notes.append(_(
                    "Order {order} step {step} is uncertain: the last run stopped while sending "
                    "it. Check with the customer, then use `commplan resend {order} {step}` if "
                    "it did not arrive.").format(order=entry.order_id, step=entry.step))
            if site.settings.bounces:  # first, so a returned mail counts in today's plan
                read_returned(site, ledger, report, day)
            extra = _send_all(site, ledger, day, report, limit, progress, mailer_factory)
            write_sentlog(site, ledger, report, extra_sheets=extra)
            _copy_ledger(site, ledger, day, report)  # the day's copy holds today's sends
    return report


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
    report.failures[:0] = [h.line for h in failures]  # before the run's own failures
    if found.error:
        report.mailbox_error = found.error
        report.notes.append(returned.unread_sentence(found.error))
    if found.skipped:
        report.notes.append(f"{found.skipped} message(s) of the mailbox could not be read as "
                            "returned mails and were skipped (see commplan.log).")


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
            report.failures.append(_("Order {order} step {step}: {detail}").format(
                order=d.order_id, step=d.step, detail=d.reason))
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
                report.failures.append(_("Order {order} step {step}: {detail}").format(
                    order=d.order_id, step=d.step, detail=exc))
    return report


def _held(d: Decision) -> str:
    """The sentence of a mail waiting for an empty cell to be filled."""
    from commplan_xl.core.schedule import WAITING_FOR

    return _("Order {order} step {step} is waiting for {column}: it goes once the cell is "
             "filled.").format(order=d.order_id, step=d.step,
                               column=d.reason[len(WAITING_FOR):])


def _not_built(site: Site, ledger, report: RunReport, d: Decision, message: MessageRef,
               why: str, now: dt.datetime, day: dt.date) -> None:
    """Record a mail that could not be built (a template or attachment problem) failed:
    retried by the next runs once fixed, while within catch-up."""
    detail = _("{error}; {promise}").format(
        error=why, promise=retry_promise(site, d, day, _("will be retried once fixed")))
    ledger.record_failure_before_send(message, detail=detail, now=now, day=day)
    report.failed += 1
    report.failures.append(_("Order {order} step {step}: {detail}").format(
        order=d.order_id, step=d.step, detail=detail))
    log.warning("%s", _("order {order} step {step} customer {customer}: {outcome}").format(
        order=d.order_id, step=d.step, customer=d.customer_id,
        outcome=_("not sent: {detail}").format(detail=detail)))


def _send_all(site, ledger, day, report, limit, progress, mailer_factory) -> list:
    from commplan_xl.core.schedule import is_limit_wait, is_value_wait
    from commplan_xl.mail.render import WaitingForValue
    from commplan_xl.mail.smtp import Mailer
    from commplan_xl.store.archive import ArchiveIndex, discard_message, ids_to_settle, relative

    s = site.settings
    settle = ids_to_settle(site.model.customers)
    archive_index = ArchiveIndex(s.archive_dir, owners=ledger.archive_owners(settle))
    decisions = decide(site, ledger.state(), today=day, sent_today=ledger.sent_on(day))
    flagged = ledger.flagged_addresses() if s.bounces else {}  # known not to exist
    sends = [i for i, d in enumerate(decisions) if d.action == "send"]
    total = len(sends) if limit is None else min(len(sends), limit)
    cache = RunCache()
    orders = {o.order_id: o for o in site.model.orders}
    connection_failures = 0
    stopped = False
    accepted = 0  # mails the server took
    # While the server takes a mail (a few ms for a 50 KB attachment), the run does its own
    # work instead of waiting: it names the mail's archive file and builds the next mail.
    # While the server reads the next mail's first command, the mail before is recorded
    # sent and the next one `sending` (in that order: a kill leaves at most one mail
    # uncertain, as without the overlap).
    ahead: dict[int, Prepared | Exception] = {}  # decision index -> built in advance
    unrecorded: list[tuple[Decision, int, str, dict[str, str]]] = []  # at most one

    def record_sent() -> None:
        """Mark the mail the server took last sent (its archive file is in place)."""
        while unrecorded:
            d, token, archive_file, refused = unrecorded.pop()
            ledger.finish(token, status="sent", detail="; ".join(refused.values()),
                          archive_file=archive_file, now=now_in(s), day=day)
            log_mail(site, d, _("sent"))
            report.sent += 1
            if progress:
                progress(report.sent, total)

    def build(i: int) -> Prepared:
        """Decision i's mail, built in advance or now; raises CommplanError if it cannot."""
        found = ahead.pop(i, None)
        if found is None:
            d = decisions[i]
            order, customer, plan, step = _parts(site, orders, d)
            return prepare(site, order, customer, plan, step, due_date=d.due_date, today=day,
                           cache=cache)
        if isinstance(found, Exception):
            raise found
        return found

    def build_next(i: int) -> None:
        """Build the mail of the next send after decision i (kept with its error if any)."""
        at = bisect.bisect_right(sends, i)
        if at == len(sends) or (limit is not None and accepted + 1 >= limit):
            return
        try:
            ahead[sends[at]] = build(sends[at])
        except Exception as exc:  # raised again in its turn, after this mail is recorded
            ahead[sends[at]] = exc

    def one(i: int, d: Decision, stopped: bool) -> bool:
        """Carry out decision i; whether the run has stopped trying the server."""
        nonlocal accepted, connection_failures
        order, customer, _plan, _step = _parts(site, orders, d)
        emails = ";".join(customer.emails)
        now = now_in(s)
        message = MessageRef(order_id=d.order_id, customer_id=customer.customer_id,
                             plan=d.plan_name, plan_key=d.plan, step=d.step,
                             due_date=d.due_date, emails=emails)
        if d.action != "send" or stopped or (limit is not None and accepted >= limit):
            record_sent()  # the SentLog keeps the decisions' order
            if d.action == "skip":
                ledger.record_skip(message, reason=d.reason, now=now, day=day)
                report.skipped += 1
            elif is_value_wait(d):  # nothing recorded: it goes once the cell is filled
                report.held.append(_held(d))
            elif d.action == "wait" and not is_limit_wait(d):
                _not_built(site, ledger, report, d, message, d.reason, now, day)
            elif stopped:
                report.not_tried += 1
            else:
                ledger.record_waiting(message, now=now, day=day)
                report.waiting += 1
            return stopped
        if flagged and _blocked(ledger, message, customer, flagged, report, now, day):
            record_sent()
            return stopped
        try:
            prepared = build(i)
        except WaitingForValue as exc:
            record_sent()
            report.held.append(_held(d._replace(reason=str(exc))))
            return stopped
        except CommplanError as exc:
            record_sent()
            _not_built(site, ledger, report, d, message, str(exc), now, day)
            return stopped
        staged = stager.submit(_stage, site, customer, prepared, archive_index)
        tokens: list[int] = []

        def begin() -> None:
            record_sent()
            tokens.append(ledger.begin(message, subject=prepared.subject, now=now, day=day,
                                       **_mail_ids(prepared)))

        placed: Path | None = None
        try:
            handed = mailer.hand_over(prepared.message, from_addr=s.sender_email,
                                      to_addrs=list(prepared.to), meanwhile=begin)
            # The server has the whole mail: name its archive file (removed again if the
            # server refuses it; a kill before its answer leaves it beside an uncertain
            # mail, never a sent one), and build the next mail.
            placed = _place_staged(d, staged, day)
            archive_file = relative(placed, site.home, index=archive_index)
            build_next(i)
            refused = handed.reply()
        except BaseException as exc:
            if placed is not None:
                discard_message(placed)
            else:
                _unstage(staged)
            if not isinstance(exc, SendFailure):
                raise
            connection_failures = connection_failures + 1 if exc.connection else 0
            return _send_failed(site, ledger, day, report, d, tokens[0], exc,
                                connection_failures)
        connection_failures = 0
        accepted += 1
        unrecorded.append((d, tokens[0], archive_file, refused))
        return stopped

    factory = mailer_factory or Mailer
    # One thread writes each mail's archive file while the server takes the mail (new
    # folders and files cost ~0.5 ms each on ext4, about what the whole send costs us).
    with factory(s) as mailer, ThreadPoolExecutor(1, "commplan-archive") as stager:
        try:
            for i, d in enumerate(decisions):
                stopped = one(i, d, stopped)
            record_sent()
        finally:
            if unrecorded:  # an error stops the run: the mail the server took is recorded
                last = unrecorded[-1][0]
                try:
                    record_sent()
                except Exception:  # the error stopping the run is the one to report
                    log.exception("%s", _(
                        "could not record order {order} step {step} as sent (the next run "
                        "calls it uncertain)").format(order=last.order_id, step=last.step))
        from commplan_xl.run import reports as reporting

        try:
            extra, figures = reporting.report_sheets(site, ledger, today=day)
        except Exception as exc:  # the managers' view must never cost the SentLog
            log.exception("%s", _("the Dashboard and Forecast sheets were not built"))
            report.notes.append(_("The Dashboard and Forecast sheets could not be built: "
                                  "{error}").format(error=exc))
            extra, figures = [], None
        reporting.send_summary(mailer, s, report, figures)
    log.info("%s", _("run of {date}: {sent} sent, {skipped} skipped, {failed} failed, "
                     "{waiting} waiting").format(date=f"{day:%d/%m/%Y}", sent=report.sent,
                                                 skipped=report.skipped, failed=report.failed,
                                                 waiting=report.waiting))
    return extra


def _send_failed(site: Site, ledger, day: dt.date, report: RunReport, d: Decision,
                 token: int, exc: SendFailure, connection_failures: int) -> bool:
    """Record a send that failed; True when the run should stop trying the server."""
    s = site.settings
    if isinstance(exc, SendUncertain):
        # The server may have the mail: never resend it by itself.
        ledger.recover(now_in(s), day=day)
        report.uncertain += 1
        report.failures.append(_("Order {order} step {step} is uncertain: {detail}").format(
            order=d.order_id, step=d.step, detail=exc))
        log_mail(site, d, _("uncertain: {detail}").format(detail=exc), logging.WARNING)
    else:
        status = "failed" if exc.temporary else "failed_permanent"
        detail = (_("{error}; {promise}").format(
            error=_without_promise(str(exc)),
            promise=retry_promise(site, d, day, _("will be retried by the next run")))
            if exc.temporary else _("{error}; not retried: correct the address").format(error=exc))
        ledger.finish(token, status=status, detail=detail, archive_file="",
                      now=now_in(s), day=day)
        report.failed += 1
        report.failures.append(_("Order {order} step {step}: {detail}").format(
            order=d.order_id, step=d.step, detail=detail))
        log_mail(site, d, _("failed: {detail}").format(detail=detail), logging.WARNING)
    if connection_failures < MAX_CONNECTION_FAILURES:
        return False
    later = (_("the other mails stay due and the next run sends them") if s.catch_up_days
             else _("the other mails stay due today only (catch_up_days is 0): run again today "
                    "once the server works, or they count as missed tomorrow"))
    report.notes.append(_("The mail server failed {n} times in a row, so this run stopped "
                          "trying; {later}.").format(n=connection_failures, later=later))
    return True


def log_mail(site: Site, d: Decision, outcome: str, level: int = logging.INFO) -> None:
    """One line of commplan.log for one mail: order, step, customer, outcome."""
    if not log.isEnabledFor(level):
        return
    customer = site.model.customers.get(d.customer_id)
    who = f"{customer.name} <{', '.join(customer.emails)}>" if customer else ""
    log.log(level, "%s", _("order {order} step {step} customer {customer} {who}: {outcome}")
            .format(order=d.order_id, step=d.step, customer=d.customer_id, who=who,
                    outcome=outcome))


# The promise of a retry that a failure's sentence ends with (English, or as translated).
_PROMISES = (N_("; it will be tried again on the next run"),
             ": it will be tried again on the next run")


def retry_promise(site: Site, d: Decision, day: dt.date, promise: str) -> str:
    """`promise` (a later run retries the message) when a later day's run still may:
    with catch_up_days 0 (or a due date at the end of the window) it says the truth."""
    last = d.due_date + dt.timedelta(days=site.settings.catch_up_days)
    if last > day:
        return promise
    return _("will not be retried after today (catch_up_days is {days}); once fixed, "
             "`commplan resend {order} {step}` sends it").format(
                 days=site.settings.catch_up_days, order=d.order_id, step=d.step)


def _without_promise(text: str) -> str:
    """The failure's sentence without the promise of a retry (the caller says when)."""
    for promise in _PROMISES:
        text = text.replace(promise, "").replace(_(promise), "")
    return text


def _blocked(ledger, message: MessageRef, customer: Customer, flagged: Mapping[str, str],
             report: RunReport, now: dt.datetime, day: dt.date) -> bool:
    """Record, without sending, a mail to an address a returned mail showed not to exist;
    False when the customer has no such address."""
    from commplan_xl.run.returned import NOT_RETRIED

    bad = next((a for a in customer.emails if a.lower() in flagged), None)
    if bad is None:
        return False
    detail = _("not sent: a mail to {address} came back, the address does not exist "
               "({reason}); {not_retried}").format(address=bad, reason=flagged[bad.lower()],
                                                   not_retried=NOT_RETRIED)
    ledger.record_blocked(message, detail=detail, now=now, day=day)
    report.failed += 1
    report.failures.append(_("Order {order} step {step}: {detail}").format(
        order=message.order_id, step=message.step, detail=detail))
    return True


def _mail_ids(prepared: Prepared) -> dict[str, str]:
    """The Message-ID and reference of a built mail, for the ledger."""
    return {"message_id": getattr(prepared.message, "message_id", ""),
            "ref": getattr(prepared.message, "ref", "")}


def _archive(site: Site, customer: Customer, d: Decision, prepared: Prepared, day: dt.date,
             index=None) -> str:
    """Write the mail to its customer's folder; `index` (archive.ArchiveIndex) is the
    run's listing of the archive folder."""
    from commplan_xl.store.archive import customer_folder, relative, write_message

    folder = customer_folder(site.settings.archive_dir, customer.customer_id, customer.name,
                             index=index)
    path = write_message(folder, stem=_archive_stem(day, d), data=prepared.data)
    return relative(path, site.home, index=index)


def _stage(site: Site, customer: Customer, prepared: Prepared, index) -> Path:
    """The mail's bytes in a temporary file of its customer's folder (in the stager)."""
    from commplan_xl.store.archive import customer_folder, stage_message

    folder = customer_folder(site.settings.archive_dir, customer.customer_id, customer.name,
                             index=index)
    return stage_message(folder, prepared.data)


def _unstage(staged: Future) -> None:
    """Drop the staged file of a mail that was not sent (or whose staging failed)."""
    from commplan_xl.store.archive import discard_message

    try:
        tmp = staged.result()
    except Exception:  # nothing was staged; the send's own error is the one to report
        return
    discard_message(tmp)


def _place_staged(d: Decision, staged: Future, day: dt.date) -> Path:
    """Name the staged file of a mail the server has; its path."""
    from commplan_xl.store.archive import place_message

    return place_message(staged.result(), stem=_archive_stem(day, d))


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
            today: dt.date | None = None, mailer_factory=None) -> list[Path]:
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
        from commplan_xl.mail.smtp import Mailer

        with (mailer_factory or Mailer)(site.settings) as mailer:
            mailer.send(prepared.message, from_addr=site.settings.sender_email,
                        to_addrs=list(prepared.to))
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
           mailer_factory=None) -> RunReport:
    """Send one message again on purpose; the ledger records it as a resend."""
    from commplan_xl.core.offsets import due_date as compute_due
    from commplan_xl.core.schedule import settings_calendar
    from commplan_xl.mail.smtp import Mailer
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
        with (mailer_factory or Mailer)(s) as mailer:
            try:
                mailer.send(prepared.data, from_addr=s.sender_email,
                            to_addrs=list(prepared.to))
            except SendUncertain as exc:
                ledger.recover(now_in(s), day=day)
                report.uncertain += 1
                report.failures.append(str(exc))
                write_sentlog(site, ledger, report)
                return report
            except SendFailure as exc:
                ledger.finish(token, status="failed" if exc.temporary else "failed_permanent",
                              detail=_("resend failed: {error}").format(error=exc),
                              archive_file="", now=now_in(s), day=day)
                report.failed += 1
                report.failures.append(str(exc))
                write_sentlog(site, ledger, report)
                return report
        d = Decision(order.order_id, customer.customer_id, plan.key, plan.name, step.number,
                     due_on, "send", "resend")
        from commplan_xl.store.archive import ArchiveIndex, ids_to_settle

        owners = ledger.archive_owners(ids_to_settle(site.model.customers))
        archive_file = _archive(site, customer, d, prepared, day,
                                index=ArchiveIndex(s.archive_dir, owners=owners))
        ledger.finish(token, status="sent", detail=_("resent on request"),
                      archive_file=archive_file, now=now_in(s), day=day)
        report.sent += 1
        write_sentlog(site, ledger, report)
    return report


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
            problems += [WorkbookProblem("Plans", step.row, column, sentence,
                                         cell=site.cell("Plans", column, step.row),
                                         message_level=True) for column, sentence in found]
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
    from commplan_xl.core.schedule import WAITING_FOR

    failing: list[tuple[str, str]] = []
    if ready.reads_values(plan.key, step):
        for order in orders:
            customer = site.model.customers.get(order.customer_id)
            if customer is None:
                continue
            why = ready.order_wait(order, customer, plan, step, day)
            if why is not None and not why.startswith(WAITING_FOR):
                failing.append((order.order_id, why))
    problems: list[WorkbookProblem] = []
    shown: set[str] = set()
    for order_id, message in failing:
        if message in shown:
            continue
        if len(shown) >= max_per_step:
            break
        shown.add(message)
        others = sum(1 for _o, m in failing if m == message) - 1
        more = ngettext(" (and {n} other order)", " (and {n} other orders)",
                        others).format(n=others) if others else ""
        column = ("subject" if message.startswith(("the subject", _("the subject")))
                  else "body")
        problems.append(WorkbookProblem(
            "Plans", step.row, column, _("order {order}{more}: {message}").format(
                order=order_id, more=more, message=message),
            cell=site.cell("Plans", column, step.row), message_level=True))
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
        sheet, row = "Orders", order.row
        if column not in order.fields and customer is not None and column in customer.fields:
            sheet, row = "Customers", customer.row
        problems.append(WorkbookProblem(
            sheet, row, column,
            _('order {order}, step {step} of "{plan}" (due {date}) is waiting for {column}: '
              "the cell is empty. Fill it and the next run sends the mail, or give the "
              "template a fallback ({fallback}).").format(
                  order=d.order_id, step=d.step, plan=d.plan_name,
                  date=f"{d.due_date:%d/%m/%Y}", column=column,
                  fallback='{{ ...|default("…") }}'),
            cell=site.cell(sheet, column, row), message_level=True))
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
