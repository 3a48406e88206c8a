"""What managers see: the SentLog, Dashboard and Forecast sheets, and the summary mail.

The SentLog shows the outcomes of the last `sentlog_days` run days. The Dashboard (built in
run/dashboard.py) counts the ledger's outcomes by the run's day over the last 30 days and
lists what needs a person. The Forecast lists the mails the runs of the next 30 days would
send, from the very schedule the batch uses. The summary mail repeats the run's counts and
the items to handle, for the Settings' `report_to` addresses.

The sheets are written in the workbook's language (excel/names.py); the mail is French.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from commplan_xl.core.schedule import is_limit_wait
from commplan_xl.excel.names import localise, workbook_language
from commplan_xl.excel.sheet_xml import PLAN_LIST, ToolSheet
from commplan_xl.i18n import N_, _, ngettext, speaking
from commplan_xl.model import Decision, LedgerEntry, Model
from commplan_xl.problems import CommplanError, SendFailure, SendKind
from commplan_xl.run.dashboard import (  # noqa: F401 - the Dashboard's names, also from here
    WINDOW_DAYS,
    DashboardFigures,
    ToHandle,
    dashboard_figures,
    figures_sheet,
    refused_items,
    to_handle_items,
)
from commplan_xl.run.outcomes import RunFailure, RunReport
from commplan_xl.settings import Settings

if TYPE_CHECKING:
    from commplan_xl.mail.message import BuiltMessage
    from commplan_xl.mail.transport import Transport

SENTLOG = "SentLog"
FORECAST = "Forecast"
FORECAST_HEADER = (
    "date", "order_id", "customer_id", "customer", "email", "plan", "step", "subject",
    "due_date", "note",
)
WARNING = "⚠ "

RETURNED = N_("returned")  # how a returned mail's detail starts (the server took it)
LedgerKey = tuple[str, str, int]


# ---------------------------------------------------------------- SentLog


def sentlog_sheet(rows: list[tuple], lang: str) -> ToolSheet:
    """The SentLog sheet (or a `commplan log` export) in `lang`: one row per outcome,
    oldest first."""
    from commplan_xl.store.sentlog import (
        SENTLOG_FORMATS,
        SENTLOG_HEADER,
        SENTLOG_WIDTHS,
        in_language,
    )

    return localise(ToolSheet(name=SENTLOG, header=SENTLOG_HEADER, rows=in_language(rows, lang),
                              widths=SENTLOG_WIDTHS, formats=SENTLOG_FORMATS), "sentlog", lang)


def plan_list_sheet(model: Model) -> ToolSheet:
    """The tool's hidden list of the plans, each once, for the Orders plan drop-down."""
    return ToolSheet(name=PLAN_LIST, header=("plan",), rows=[[p.name] for p in
                                                              model.plans.values()],
                     widths={0: 30}, filter_area=None, title_rows=0, hidden=True)


# ---------------------------------------------------------------- Forecast


class SiteLike(Protocol):
    """What the Forecast needs of a site (batch.Site fits)."""

    @property
    def model(self) -> Model: ...

    @property
    def settings(self) -> Settings: ...


class ForecastRow(NamedTuple):
    """One mail a coming run would send (a row of the Forecast sheet)."""

    date: dt.date  # the day of the run that sends it
    order_id: str
    customer_id: str
    customer: str
    email: str
    plan: str
    step: int
    subject: str  # rendered; "⚠ why" when the mail cannot be built
    due_date: dt.date
    note: str  # "" for a mail simply due, else the reason ("retry", "address changed")
    problem: str = ""  # why the mail cannot be built yet ("" when it can)


def forecast_rows(
    site: SiteLike,
    ledger_state: Mapping[LedgerKey, LedgerEntry],
    *,
    today: dt.date,
    days: int = WINDOW_DAYS,
    start: dt.date | None = None,
) -> list[ForecastRow]:
    """Every mail the daily runs of the next `days` days would send, day by day.

    The Forecast is written at the end of today's run, with the ledger as that run left
    it: so it starts TOMORROW (`start` overrides, e.g. `today` before today's run) and
    lists nothing already sent, skipped or uncertain. Each run is assumed to go as decided
    (sends succeed, daily_limit waits move a mail to a later day), which is exactly what
    `schedule.forecast` simulates. A mail whose template cannot render or whose attachment
    is missing shows the reason in its subject cell, prefixed "⚠ ": that run would record
    it failed rather than send it.
    """
    from commplan_xl.core.schedule import forecast
    from commplan_xl.mail.render import build_context, render_message

    model, settings = site.model, site.settings
    first = start if start is not None else today + dt.timedelta(days=1)
    orders = {o.order_id: o for o in model.orders}
    attachment_problems: dict[str, str | None] = {}
    rows: list[ForecastRow] = []
    from commplan_xl.run.readiness import Readiness

    ready = Readiness(model, settings)
    waits_shown: set[tuple[str, str, int]] = set()  # a mail that cannot be built: once
    for day, d in forecast(model, ledger_state, start=first, days=days, settings=settings,
                           ready=ready):
        if d.action == "wait" and not is_limit_wait(d):
            if (d.order_id, d.plan, d.step) not in waits_shown:
                waits_shown.add((d.order_id, d.plan, d.step))
                rows.append(_waiting_row(model, day, d))
            continue
        if d.action != "send":
            continue
        order = orders[d.order_id]
        customer = model.customers[order.customer_id]
        plan = model.plans[d.plan]
        step = next(s for s in plan.steps if s.number == d.step)
        context = build_context(
            order=order, customer=customer, plan_name=plan.name, step_number=step.number,
            due_date=d.due_date, today=day, sender_name=settings.sender_name,
            sender_email=settings.sender_email, constants=model.constants,
        )
        problem = ""
        try:
            subject = render_message(step, context, locale=settings.locale, html=False).subject
        except CommplanError as exc:
            problem = str(exc)
        else:
            for name in step.attachments:
                if name not in attachment_problems:
                    attachment_problems[name] = _attachment_problem(settings, name, step.row)
                if attachment_problems[name]:
                    problem = str(attachment_problems[name])
                    break
        rows.append(ForecastRow(
            date=day, order_id=d.order_id, customer_id=customer.customer_id,
            customer=customer.name, email=";".join(customer.emails), plan=plan.name,
            step=d.step, subject=WARNING + problem if problem else subject,
            due_date=d.due_date, note="" if d.reason == "due" else d.reason, problem=problem,
        ))
    return rows


def _waiting_row(model: Model, day: dt.date, d: Decision) -> ForecastRow:
    """The Forecast row of a mail that cannot be built yet (it waits; "⚠ why")."""
    customer = model.customers[d.customer_id]
    return ForecastRow(
        date=day, order_id=d.order_id, customer_id=customer.customer_id,
        customer=customer.name, email=";".join(customer.emails), plan=d.plan_name,
        step=d.step, subject=WARNING + d.reason, due_date=d.due_date, note="",
        problem=d.reason)


def _attachment_problem(settings: Settings, name: str, plans_row: int) -> str | None:
    """Why a run could not attach `name` (paths.attachment_file's sentence), or None."""
    from commplan_xl.mail.attachments import attachment_file

    try:
        attachment_file(settings.attachments_dir, name, plans_row)
    except CommplanError as exc:
        return str(exc)
    return None


def forecast_sheet(rows: Sequence[ForecastRow]) -> ToolSheet:
    """The Forecast sheet: one row per coming mail, in the order the runs send them."""
    return ToolSheet(
        name=FORECAST,
        header=FORECAST_HEADER,
        rows=[(r.date, r.order_id, r.customer_id, r.customer, r.email, r.plan, r.step,
               r.subject, r.due_date, r.note or None) for r in rows],
        widths={"date": 12, "customer": 24, "email": 28, "subject": 60, "due_date": 12,
                "note": 18},
    )


# ---------------------------------------------------------------- wiring helpers


def order_ids_by_row(workbook: Path) -> dict[int, str]:
    """Orders Excel row -> order id, read from the workbook (for orders validate left out)."""
    from commplan_xl.excel.read import read_tables

    table = read_tables(Path(workbook), only=("Orders",)).get("orders")
    if table is None or "order_id" not in table.columns:
        return {}
    return {row: str(values.get("order_id", "")).strip() for row, values in table.rows}


def waiting_items(coming: Sequence[ForecastRow], *, today: dt.date) -> list[ToHandle]:
    """The mails due by `today` that cannot be built (an empty cell they use, a template
    or attachment problem): the Forecast lists each once with why."""
    return [ToHandle("waiting_value", r.order_id, r.customer_id, r.plan, r.step, r.due_date,
                     r.problem)
            for r in coming if r.problem and r.due_date <= today]


def report_sheets(site, ledger, *, today: dt.date) -> tuple[list[ToolSheet], DashboardFigures]:
    """The Dashboard and Forecast sheets of a run on `today`, and the Dashboard figures.

    `site` is a batch.Site, `ledger` an open Ledger after the run recorded its outcomes.
    Only the window's outcomes are read from the ledger. The workbook's Orders sheet is
    read again only when some order was left out for its customer's address, to name it
    by its id.
    """
    state = ledger.state()
    first = today - dt.timedelta(days=WINDOW_DAYS - 1)
    events = ledger.log_events(first=first, last=today)
    coming = forecast_rows(site, state, today=today)
    planned_7 = sum(1 for r in coming if r.date <= today + dt.timedelta(days=7))
    held_since = today - dt.timedelta(days=site.settings.catch_up_days)
    items = to_handle_items(ledger.entries_in("failed_permanent", "uncertain"), site.model,
                            today=today, held_since=held_since, settings=site.settings,
                            returned=ledger.returned_messages(),
                            content_refused=ledger.content_refused_messages())
    items += refused_items(ledger.refused_recipients(), site.model)
    items += waiting_items(coming, today=today)

    def figures_with(ids: Mapping[int, str] | None) -> DashboardFigures:
        return dashboard_figures(events, today=today, model=site.model, ledger_state=state,
                                 problems=site.problems, order_ids=ids, to_handle=items,
                                 planned_7=planned_7)

    figures = figures_with(None)
    if not all(u.named for u in figures.unreachable):
        try:
            ids = order_ids_by_row(site.workbook)
        except CommplanError:
            ids = {}
        figures = figures_with(ids)
    lang = workbook_language(site.settings.locale)
    sheets = [figures_sheet(figures, lang),
              localise(forecast_sheet(coming), "forecast", lang), plan_list_sheet(site.model)]
    return sheets, figures


# ---------------------------------------------------------------- summary mail


def _date_fr(day: dt.date | None) -> str:
    return f"{day:%d/%m/%Y}" if day else ""


def summary_subject(run_report: RunReport) -> str:
    """E.g. "commplan — 27/11/2026 : 12 envoyés, 1 échec" (in the current language)."""
    r = run_report
    parts = [ngettext("{n} sent", "{n} sent", r.sent).format(n=r.sent),
             ngettext("{n} failure", "{n} failures", r.failed).format(n=r.failed)]
    if r.uncertain:
        parts.append(ngettext("{n} uncertain", "{n} uncertain", r.uncertain).format(
            n=r.uncertain))
    test = _(" (test, nothing sent)") if r.dry_run else ""
    return _("commplan — {date}{test}: {counts}").format(
        date=_date_fr(r.today), test=test, counts=", ".join(parts))


def what_to_do(failure: RunFailure, catch_up_days: int | None = None) -> str:
    """The advice for one failure of the run, chosen by its kind."""
    resend = f"commplan resend {failure.order_id} {failure.step}"
    # Past catch-up (always with catch_up_days 0) no later day's run retries a failure:
    # never promise it.
    last_day = failure.last_try or catch_up_days == 0
    next_run = (_("no run will try it again (catch_up_days is past): run `{resend}` once it "
                  "is fixed").format(resend=resend) if last_day
                else _("the next run tries again"))
    if failure.kind is SendKind.TO_REVIEW:
        return _("open this returned mail in the sending mailbox: it names a customer but no "
                 "mail commplan can find; send again by hand if needed.")
    if failure.kind is SendKind.SENDER_SIDE:
        return _("the sending account was refused, not the customer's address: the IT person "
                 "must check the right to send on behalf of the sender and the domain's "
                 "SPF/DKIM records; {next_run}.").format(next_run=next_run)
    if failure.kind is SendKind.UNCERTAIN:
        return _("check with the customer whether this mail arrived; if not, run `{resend}` "
                 "(it is never sent again by itself).").format(resend=resend)
    if failure.kind is SendKind.RECIPIENT_REFUSED:
        return _("the mail went to the customer's other addresses; check the refused address "
                 "with the customer and correct it in the Customers sheet (then `{resend}` if "
                 "the mail must reach it).").format(resend=resend)
    if failure.kind is SendKind.CONTENT:
        return _("the mail server refused the mail itself (its content or a sending policy), "
                 "not the address: change the step's text or attachment, or ask the mail "
                 "provider why, then run `{resend}`.").format(resend=resend)
    if failure.kind is SendKind.PERMANENT:
        if catch_up_days == 0:
            return _("the address was refused: correct it in the Customers sheet, then run "
                     "`{resend}` (catch_up_days is 0: no run will send it again).").format(
                         resend=resend)
        return _("the address was refused: correct it in the Customers sheet; the mail goes "
                 "out again on the next run.")
    if failure.kind is SendKind.NOT_BUILT:
        return _("correct the template or the attachment in the workbook (`commplan check` "
                 "shows where); {next_run}.").format(next_run=next_run)
    if last_day:
        return _("it will not be tried again after today: {next_run}.").format(
            next_run=next_run)
    if catch_up_days:
        return ngettext(
            "nothing to do: the next runs try again for {n} day after the due date.",
            "nothing to do: the next runs try again for {n} days after the due date.",
            catch_up_days).format(n=catch_up_days)
    return _("nothing to do: the next runs try again.")


def summary_text(
    settings: Settings, run_report: RunReport, figures: DashboardFigures | None
) -> str:
    """The plain-text body of the summary mail (in the current language)."""
    r = run_report
    lines = [_("Run of {date}").format(date=_date_fr(r.today))
             + (_(" (test: nothing was sent)") if r.dry_run else ""), ""]
    lines += [
        _("Sent: {n}").format(n=r.sent),
        _("Skipped (missed or superseded): {n}").format(n=r.skipped),
        _("Failed: {n}").format(n=r.failed),
        _("Uncertain: {n}").format(n=r.uncertain),
    ]
    if r.waiting:
        lines.append(_("Waiting (daily limit reached): {n}").format(n=r.waiting))
    if r.not_tried:
        lines.append(_("Not tried (mail server unreachable): {n}").format(n=r.not_tried))
    if r.returned:
        lines.append(_("Returned mails (not delivered): {n}").format(n=r.returned))
    if r.held:
        lines += ["", _("Waiting for a value (an empty cell; the mail goes as soon as it is "
                        "filled):"), *(f"- {line}" for line in r.held)]
    if r.failures:
        lines += ["", _("To deal with:")]
        for failure in r.failures:
            lines.append(f"- {failure}")
            lines.append("  " + _("What to do: {advice}").format(
                advice=what_to_do(failure, settings.catch_up_days)))
    if r.notes:
        lines += ["", _("Notes:")]
        lines += [f"- {note}" for note in r.notes]
    if r.problems:
        n = len(r.problems)
        lines += ["", ngettext(
            "The workbook has {n} problem: the rows concerned are left out. Run `commplan "
            "check` to see them.",
            "The workbook has {n} problems: the rows concerned are left out. Run `commplan "
            "check` to see them.", n).format(n=n)]
    if figures is not None:
        lines += ["", *_figures_text(figures)]
    from commplan_xl.excel.names import tool_sheet
    from commplan_xl.i18n import current

    lang = current()
    lines += ["", _("The details are in the {sentlog}, {dashboard} and {forecast} sheets of the "
                    "workbook.").format(sentlog=tool_sheet("sentlog", lang),
                                        dashboard=tool_sheet("dashboard", lang),
                                        forecast=tool_sheet("forecast", lang))]
    return "\n".join(lines) + "\n"


def _figures_text(figures: DashboardFigures) -> list[str]:
    """The Dashboard in the mail (in the current language): the items to handle, every day
    until resolved, then the counts of the last 30 days."""
    from commplan_xl.i18n import current

    lang = current()
    lines = [_("To handle (until resolved): {n}").format(n=len(figures.to_handle))]
    for item in figures.to_handle:
        line = _("- {what}: order {order}").format(what=item.label(lang), order=item.order_id)
        if item.step is not None:
            line += " " + _("step {step}").format(step=item.step)
        if item.due_date:
            line += " " + _("(due {date})").format(date=_date_fr(item.due_date))
        lines.append(line + (f" — {item.detail}" if item.detail else ""))
        lines.append("  " + _("What to do: {advice}").format(advice=item.todo(
            french=lang == "fr")))
    t = figures.total
    first = figures.days[0][0] if figures.days else figures.today
    lines += [
        "",
        _("Dashboard from {first} to {last}:").format(first=_date_fr(first),
                                                     last=_date_fr(figures.today)),
        _("Sent: {sent}, skipped: {skipped}, failed: {failed}, uncertain: {uncertain}").format(
            sent=t.sent, skipped=t.skipped, failed=t.failed, uncertain=t.uncertain),
        _("Sent yesterday: {yesterday}, over the last 7 days: {week}; planned for the next 7 "
          "days: {planned}").format(yesterday=figures.sent_yesterday,
                                    week=figures.sent_since(7), planned=figures.planned_7),
    ]
    for name, c in figures.plans:
        lines.append(_("- {plan}: {sent}, {failed}").format(
            plan=name, sent=ngettext("{n} sent", "{n} sent", c.sent).format(n=c.sent),
            failed=ngettext("{n} failure", "{n} failures", c.failed).format(n=c.failed)))
    lines += ["", _("Failures waiting for a retry: {n}").format(n=len(figures.failures))]
    lines += [
        _("- Order {order} step {step} (due {date}): {reason}").format(
            order=f.order_id, step=f.step, date=_date_fr(f.due_date), reason=f.reason)
        for f in figures.failures
    ]
    return lines


def summary_message(
    settings: Settings,
    run_report: RunReport,
    *,
    dashboard_figures: DashboardFigures | None = None,
) -> BuiltMessage:
    """The summary mail to `settings.report_to`, from the sender of customer mails.

    Raises SendFailure when `report_to` is empty (callers check `settings.report_to`).
    """
    from commplan_xl.mail.message import build_message
    from commplan_xl.mail.render import Rendered, text_to_html

    with speaking(settings.locale):
        subject = summary_subject(run_report)
        text = summary_text(settings, run_report, dashboard_figures)
    lang = settings.locale.split("_")[0].split("-")[0] or "fr"
    rendered = Rendered(subject=subject, text=text,
                        html=text_to_html(text, title=subject, lang=lang))
    return build_message(
        rendered=rendered, sender_email=settings.sender_email,
        sender_name=settings.sender_name or "commplan", reply_to="",
        to=list(settings.report_to), attachments=[],
    )


def send_summary(
    transport: Transport, settings: Settings, run_report: RunReport,
    figures: DashboardFigures | None,
) -> bool:
    """Send the summary mail over the run's `transport`; False when there is no `report_to`
    or it failed (then a note on the report says so: the customers' mails are unaffected)."""
    if not settings.report_to or run_report.dry_run:
        return False
    try:
        msg = summary_message(settings, run_report, dashboard_figures=figures)
    except SendFailure as exc:
        failure: SendFailure | None = exc
    else:
        failure = transport.send(msg, sender=settings.sender_email,
                                 recipients=list(settings.report_to)).failure
    if failure is not None:
        run_report.notes.append(_("The summary mail to {to} could not be sent: {error}").format(
            to=", ".join(settings.report_to), error=failure))
        return False
    return True
