"""The batch: read → validate → schedule → render → send → record → SentLog.

This is the library behind the command line: each public function here is one command.
One message is made in `run/building.py`; the send loop itself is `run/sending.py`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from commplan_xl.i18n import _, ngettext
from commplan_xl.model import Customer, Decision, MessageRef, Order, Plan, Step
from commplan_xl.problems import (
    CommplanError,
    SendFailure,
    SendKind,
    WorkbookLocked,
    WorkbookProblem,
)
from commplan_xl.run.building import Prepared, RunCache, find_step, parts, prepare
from commplan_xl.run.outcomes import RunFailure, RunReport
from commplan_xl.run.sending import SendLoop, archive_mail, held_sentence, mail_ids
from commplan_xl.run.site import LEDGER_NAME, Site, now_in, today_in
from commplan_xl.settings import Settings

if TYPE_CHECKING:
    from commplan_xl.excel.read import Table
    from commplan_xl.mail.transport import Transport
    from commplan_xl.run.readiness import Readiness
    from commplan_xl.run.reports import DashboardFigures

__all__ = ["RunFailure", "RunReport", "Site", "load_site", "run"]

log = logging.getLogger("commplan")



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
                letters={key: t.by_any_name(t.letters) for key, t in tables.items()},
                sheets={key: t.sheet for key, t in tables.items()},
                titles={key: t.by_any_name(t.titles) for key, t in tables.items()})


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
                decisions = site_decisions(site, ledger.state(), today=day,
                                           sent_today=ledger.sent_on(day))
                SendLoop(site, ledger, transport, day, report).run(decisions, limit, progress)
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
            report.held.append(held_sentence(d))
        elif d.action == "wait" and not is_limit_wait(d):
            report.failed += 1
            report.failures.append(RunFailure(d.order_id, d.step, SendKind.NOT_BUILT,
                                              d.reason))
        elif d.action == "wait" or (limit is not None and sends >= limit):
            report.waiting += 1
        else:
            try:
                prepare(site, *parts(site, orders, d), due_date=d.due_date, today=day,
                        cache=cache)
                sends += 1
                report.sent += 1
            except CommplanError as exc:
                report.failed += 1
                report.failures.append(RunFailure(d.order_id, d.step, SendKind.NOT_BUILT,
                                                  str(exc)))
    return report


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
                             day=day, **mail_ids(prepared))
        with _transport(s, transport_factory) as transport:
            outcome = transport.send(prepared.data, sender=s.sender_email,
                                     recipients=list(prepared.to))
        d = Decision(order.order_id, customer.customer_id, plan.key, plan.name, step.number,
                     due_on, "send", "resend")
        if outcome.failure is None:
            from commplan_xl.store.archive import ArchiveIndex, ids_to_settle, relative

            owners = ledger.archive_owners(ids_to_settle(site.model.customers))
            index = ArchiveIndex(s.archive_dir, owners=owners)
            archive_file = relative(archive_mail(site, customer, d, prepared, day, index),
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
