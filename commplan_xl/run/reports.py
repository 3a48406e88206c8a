"""What managers see: the Dashboard and Forecast sheets, and the summary mail after a run.

The Dashboard counts the ledger's events by the run's day over the last 30 days, lists the
failures waiting for a retry and the orders whose customer has no valid address. The
Forecast lists the mails the runs of the next 30 days would send, from the very schedule
the batch uses. The summary mail repeats the run's counts, what needs doing, and the
Dashboard figures, for the Settings' `report_to` addresses.

Sheet headers are English like the SentLog's (staff scripts read them); the mail is French.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from commplan_xl.core.schedule import is_limit_wait, split_ledger
from commplan_xl.excel.names import localise, sheet_key, workbook_language
from commplan_xl.excel.sheet_xml import Chart, ToolSheet
from commplan_xl.i18n import N_, _, ngettext, speaking
from commplan_xl.model import Decision, LedgerEntry, Model, Outcome, norm_key
from commplan_xl.problems import CommplanError, Problem, SendFailure, SendKind, WorkbookProblem
from commplan_xl.run.outcomes import RunFailure, RunReport
from commplan_xl.settings import Settings

if TYPE_CHECKING:
    from commplan_xl.mail.message import BuiltMessage
    from commplan_xl.mail.transport import Transport

DASHBOARD = "Dashboard"
FORECAST = "Forecast"
WINDOW_DAYS = 30
STATUSES = ("sent", "skipped", "failed", "uncertain")
DAY_HEADER = ("date", "sent", "skipped", "failed", "uncertain", "total")
PLAN_HEADER = ("plan (last 30 days)", "sent", "skipped", "failed", "uncertain", "total")
FAILURES_TITLE = "Failures waiting for a retry"
FAILURES_HEADER = ("order_id", "customer_id", "plan", "step", "due_date", "attempts", "reason")
UNREACHABLE_TITLE = "Orders whose customer has no valid address"
UNREACHABLE_HEADER = ("order_id", "customer_id", "email", "problem")
NONE_ROW = "(none)"
ALL_PLANS = "All plans"
# The side tables start in column H, one empty column right of the day table.
SIDE_COL = len(DAY_HEADER) + 1
FORECAST_HEADER = (
    "date", "order_id", "customer_id", "customer", "email", "plan", "step", "subject",
    "due_date", "note",
)
WARNING = "⚠ "

RETURNED = N_("returned")  # how a returned mail's detail starts (the server took it)
LedgerKey = tuple[str, str, int]


# ---------------------------------------------------------------- figures


@dataclass(frozen=True)
class Counts:
    """Outcomes by status."""

    sent: int = 0
    skipped: int = 0
    failed: int = 0
    uncertain: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.skipped + self.failed + self.uncertain

    def row(self) -> tuple[int, int, int, int, int]:
        return (self.sent, self.skipped, self.failed, self.uncertain, self.total)


@dataclass(frozen=True)
class WaitingFailure:
    """A message in ledger state `failed`: a later run retries it while within catch-up."""

    order_id: str
    customer_id: str
    plan: str
    step: int
    due_date: dt.date | None
    attempts: int
    reason: str


@dataclass(frozen=True)
class Unreachable:
    """An order whose customer has no valid address, and why."""

    order_id: str
    customer_id: str
    email: str
    problem: str


@dataclass(frozen=True)
class DashboardFigures:
    """Everything the Dashboard shows (and the summary mail repeats)."""

    today: dt.date
    days: tuple[tuple[dt.date, Counts], ...]  # the window's days, oldest first
    plans: tuple[tuple[str, Counts], ...]  # by plan display name, over the window
    failures: tuple[WaitingFailure, ...]
    unreachable: tuple[Unreachable, ...]

    @property
    def total(self) -> Counts:
        return _sum(c for _day, c in self.days)


def event_day(outcome: Outcome) -> dt.date:
    """The run day of an outcome: its `day` when the ledger gives it, else its clock date."""
    if outcome.day is not None:
        return outcome.day
    when = outcome.date
    return when.date() if isinstance(when, dt.datetime) else when


def _sum(counts: Iterable[Counts]) -> Counts:
    total = Counter[str]()
    for c in counts:
        total.update({s: getattr(c, s) for s in STATUSES})
    return Counts(**{s: total[s] for s in STATUSES})


def _counts(statuses: Counter[str]) -> Counts:
    return Counts(**{s: statuses[s] for s in STATUSES})


def dashboard_figures(
    events: Sequence[Outcome],
    *,
    today: dt.date,
    model: Model,
    ledger_state: Mapping[LedgerKey, LedgerEntry],
    problems: Sequence[WorkbookProblem],
    order_ids: Mapping[int, str] | None = None,
    days: int = WINDOW_DAYS,
) -> DashboardFigures:
    """The Dashboard's figures for the `days` days ending `today` (included).

    `order_ids` maps an Orders Excel row to its order id, to name the orders validate left
    out because of their customer's address; without it they are named by their row.
    """
    first = today - dt.timedelta(days=days - 1)
    by_day: dict[dt.date, Counter[str]] = {
        first + dt.timedelta(days=n): Counter() for n in range(days)
    }
    by_plan: dict[str, Counter[str]] = {}
    for o in events:
        day = event_day(o)
        if not first <= day <= today:
            continue
        by_day[day][o.status] += 1
        by_plan.setdefault(o.plan, Counter())[o.status] += 1
    return DashboardFigures(
        today=today,
        days=tuple((day, _counts(c)) for day, c in by_day.items()),
        plans=tuple((name, _counts(by_plan[name])) for name in sorted(by_plan, key=str.casefold)),
        failures=waiting_failures(ledger_state, model),
        unreachable=unreachable_orders(problems, ledger_state, model, order_ids or {}),
    )


def waiting_failures(
    ledger_state: Mapping[LedgerKey, LedgerEntry], model: Model
) -> tuple[WaitingFailure, ...]:
    """Every message in state `failed` (temporary), oldest due first."""
    customer_of = {norm_key(o.order_id): o.customer_id for o in model.orders}
    out = [
        WaitingFailure(
            order_id=e.order_id,
            customer_id=customer_of.get(norm_key(e.order_id), ""),
            plan=_plan_name(model, e.plan),
            step=e.step,
            due_date=e.due_date,
            attempts=e.attempts,
            reason=e.detail,
        )
        for e in split_ledger(ledger_state)[1].values()
        if e.state == "failed"
    ]
    out.sort(key=lambda f: (f.due_date or dt.date.min, f.order_id, f.step))
    return tuple(out)


def _plan_name(model: Model, key: str) -> str:
    plan = model.plans.get(key)
    return plan.name if plan is not None else key


def unreachable_orders(
    problems: Sequence[WorkbookProblem],
    ledger_state: Mapping[LedgerKey, LedgerEntry],
    model: Model,
    order_ids: Mapping[int, str],
) -> tuple[Unreachable, ...]:
    """Orders whose customer has no valid address.

    Two sources: Customers rows with an email problem (validate leaves that customer and
    its orders out of the model, reporting each order row), and messages the mail server
    refused for good (`failed_permanent`) while the customer's address is still the same.
    """
    email_problems: dict[int, list[str]] = {}
    for p in problems:
        if sheet_key(p.sheet) == "customers" and p.column == "email" and p.row is not None:
            email_problems.setdefault(p.row, []).append(str(p))
    out: list[Unreachable] = []
    for p in problems:
        if p.kind is not Problem.ORDER_CUSTOMER_HAS_PROBLEM or p.row is None:
            continue
        customer_row = p.values["customer_row"]
        if customer_row not in email_problems:
            continue
        out.append(Unreachable(
            order_id=order_ids.get(p.row) or _("(Orders row {row})").format(row=p.row),
            customer_id=str(p.values["customer_id"]),
            email="",
            problem="; ".join(email_problems[customer_row]),  # type: ignore[index]
        ))
    orders = {norm_key(o.order_id): o for o in model.orders}  # ids fold, as the ledger's
    refused: dict[str, list[LedgerEntry]] = {}
    for e in split_ledger(ledger_state)[1].values():  # failures are never among done ones
        if e.state != "failed_permanent":
            continue
        order = orders.get(norm_key(e.order_id))
        customer = model.customers.get(order.customer_id) if order else None
        if customer is not None and e.emails == ";".join(customer.emails):
            refused.setdefault(order.order_id, []).append(e)  # type: ignore[union-attr]
    for order_id in sorted(refused):
        entries = sorted(refused[order_id], key=lambda e: e.step)
        steps = ", ".join(str(e.step) for e in entries)
        detail = entries[-1].detail
        # A returned mail (bounce) says so: the server took it, then it came back.
        came_back = detail.startswith(("returned", _(RETURNED)))
        what = ngettext("the mail came back (step {steps})", "the mail came back (steps {steps})",
                        len(entries)) if came_back else ngettext(
            "the mail server refused the address (step {steps})",
            "the mail server refused the address (steps {steps})", len(entries))
        out.append(Unreachable(
            order_id=order_id,
            customer_id=orders[norm_key(order_id)].customer_id,
            email=entries[-1].emails,
            problem=_("{what}: {detail}").format(what=what.format(steps=steps), detail=detail),
        ))
    return tuple(out)


# ---------------------------------------------------------------- Dashboard sheet


def figures_sheet(figures: DashboardFigures) -> ToolSheet:
    """Lay the figures out: the day table in A:F (rows 2-31, oldest first, so the chart reads
    left to right), and from column H the totals by plan, then the failures waiting for a
    retry, then the orders without a valid address, one under the other.

    The side tables sit beside the day table rather than under it because the chart covers
    its columns down to the sheet's last row: rows under the days would become bars. When
    the side tables run longer than the 30 days, the chart only gains empty categories at
    its end (sheet_xml.Chart has no row range yet).
    """
    left = [(day, *c.row()) for day, c in figures.days]
    side: list[tuple[object, ...]] = [(name, *c.row()) for name, c in figures.plans]
    side.append((ALL_PLANS, *figures.total.row()))
    side += [(), (FAILURES_TITLE,), FAILURES_HEADER]
    side += [(f.order_id, f.customer_id, f.plan, f.step, f.due_date, f.attempts, f.reason)
             for f in figures.failures] or [(NONE_ROW,)]
    side += [(), (UNREACHABLE_TITLE,), UNREACHABLE_HEADER]
    side += [(u.order_id, u.customer_id, u.email or None, u.problem)
             for u in figures.unreachable] or [(NONE_ROW,)]
    blank = (None,) * len(DAY_HEADER)
    rows = [
        (*(left[i] if i < len(left) else blank), None,
         *(side[i] if i < len(side) else ()))
        for i in range(max(len(left), len(side)))
    ]
    return ToolSheet(
        name=DASHBOARD,
        header=(*DAY_HEADER, "", *PLAN_HEADER),
        rows=rows,
        widths={0: 12, 1: 9, 2: 9, 3: 9, 4: 10, 5: 9, len(DAY_HEADER): 3, SIDE_COL: 22},
        charts=(Chart("Mails per day (last 30 days)", 0, (1, 3, 4)),),
    )


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
        try:
            subject = render_message(step, context, locale=settings.locale, html=False).subject
        except CommplanError as exc:
            subject = WARNING + str(exc)
        else:
            for name in step.attachments:
                if name not in attachment_problems:
                    attachment_problems[name] = _attachment_problem(settings, name, step.row)
                if attachment_problems[name]:
                    subject = WARNING + str(attachment_problems[name])
                    break
        rows.append(ForecastRow(
            date=day, order_id=d.order_id, customer_id=customer.customer_id,
            customer=customer.name, email=";".join(customer.emails), plan=plan.name,
            step=d.step, subject=subject, due_date=d.due_date,
            note="" if d.reason == "due" else d.reason,
        ))
    return rows


def _waiting_row(model: Model, day: dt.date, d: Decision) -> ForecastRow:
    """The Forecast row of a mail that cannot be built yet (it waits; "⚠ why")."""
    customer = model.customers[d.customer_id]
    return ForecastRow(
        date=day, order_id=d.order_id, customer_id=customer.customer_id,
        customer=customer.name, email=";".join(customer.emails), plan=d.plan_name,
        step=d.step, subject=WARNING + d.reason, due_date=d.due_date, note="")


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
        rows=[(*r[:-1], r.note or None) for r in rows],
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


def report_sheets(site, ledger, *, today: dt.date) -> tuple[list[ToolSheet], DashboardFigures]:
    """The Dashboard and Forecast sheets of a run on `today`, and the Dashboard figures.

    `site` is a batch.Site, `ledger` an open Ledger after the run recorded its outcomes.
    The workbook's Orders sheet is read again only when some order was left out for its
    customer's address, to name it by its id.
    """
    state = ledger.state()
    events = ledger.events()
    figures = dashboard_figures(events, today=today, model=site.model,
                                ledger_state=state, problems=site.problems)
    unnamed = _("(Orders row {row})").split("{", 1)[0]
    if any(u.order_id.startswith(unnamed) for u in figures.unreachable):
        try:
            ids = order_ids_by_row(site.workbook)
        except CommplanError:
            ids = {}
        figures = dashboard_figures(events, today=today, model=site.model,
                                    ledger_state=state, problems=site.problems, order_ids=ids)
    lang = workbook_language(site.settings.locale)
    sheets = [localise(figures_sheet(figures), "dashboard", lang),
              localise(forecast_sheet(forecast_rows(site, state, today=today)), "forecast",
                       lang)]
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
    lines += ["", _("The details are in the {sentlog}, {dashboard} and {forecast} sheets of the "
                    "workbook.").format(sentlog="SentLog", dashboard=DASHBOARD,
                                        forecast=FORECAST)]
    return "\n".join(lines) + "\n"


def _figures_text(figures: DashboardFigures) -> list[str]:
    t = figures.total
    first = figures.days[0][0] if figures.days else figures.today
    lines = [
        _("Dashboard from {first} to {last}:").format(first=_date_fr(first),
                                                     last=_date_fr(figures.today)),
        _("Sent: {sent}, skipped: {skipped}, failed: {failed}, uncertain: {uncertain}").format(
            sent=t.sent, skipped=t.skipped, failed=t.failed, uncertain=t.uncertain),
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
    lines += ["", _("Orders whose customer has no valid address: {n}").format(
        n=len(figures.unreachable))]
    lines += [
        _("- Order {order} (customer {customer}): {problem}").format(
            order=u.order_id, customer=u.customer_id, problem=u.problem)
        for u in figures.unreachable
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
