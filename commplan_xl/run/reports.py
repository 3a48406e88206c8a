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
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from commplan_xl.core.schedule import split_ledger
from commplan_xl.excel.sheet_xml import Chart, ToolSheet
from commplan_xl.model import LedgerEntry, Model, Outcome
from commplan_xl.problems import CommplanError, SendFailure, WorkbookProblem
from commplan_xl.settings import Settings

if TYPE_CHECKING:
    from email.message import EmailMessage

    from commplan_xl.run.batch import RunReport

SENTLOG = "SentLog"
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

# How validate.py phrases an order left out because its customer's row has a problem.
_BAD_CUSTOMER = re.compile(r'customer "([^"]*)" has a problem in Customers row (\d+)')
_FAILURE = re.compile(r"^Order (\S+) step (\d+)")
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
    customer_of = {o.order_id: o.customer_id for o in model.orders}
    out = [
        WaitingFailure(
            order_id=e.order_id,
            customer_id=customer_of.get(e.order_id, ""),
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
        if p.sheet == "Customers" and p.column == "email" and p.row is not None:
            email_problems.setdefault(p.row, []).append(str(p))
    out: list[Unreachable] = []
    for p in problems:
        if p.sheet != "Orders" or p.column != "customer_id" or p.row is None:
            continue
        found = _BAD_CUSTOMER.search(p.message)
        if not found or int(found.group(2)) not in email_problems:
            continue
        out.append(Unreachable(
            order_id=order_ids.get(p.row) or f"(Orders row {p.row})",
            customer_id=found.group(1),
            email="",
            problem="; ".join(email_problems[int(found.group(2))]),
        ))
    orders = {o.order_id: o for o in model.orders}
    refused: dict[str, list[LedgerEntry]] = {}
    for e in split_ledger(ledger_state)[1].values():  # failures are never among done ones
        if e.state != "failed_permanent":
            continue
        order = orders.get(e.order_id)
        customer = model.customers.get(order.customer_id) if order else None
        if customer is not None and e.emails == ";".join(customer.emails):
            refused.setdefault(e.order_id, []).append(e)
    for order_id in sorted(refused):
        entries = sorted(refused[order_id], key=lambda e: e.step)
        steps = ", ".join(str(e.step) for e in entries)
        word = "steps" if len(entries) > 1 else "step"
        out.append(Unreachable(
            order_id=order_id,
            customer_id=orders[order_id].customer_id,
            email=entries[-1].emails,
            problem=f"the mail server refused the address ({word} {steps}): "
                    f"{entries[-1].detail}",
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


# ---------------------------------------------------------------- SentLog


def sentlog_sheet(rows: Sequence[Sequence[object]], name: str = SENTLOG) -> ToolSheet:
    """The SentLog sheet (or a `commplan log` export): one row per outcome, oldest first."""
    from commplan_xl.store.sentlog import SENTLOG_FORMATS, SENTLOG_HEADER, SENTLOG_WIDTHS

    return ToolSheet(name=name, header=SENTLOG_HEADER, rows=rows, widths=SENTLOG_WIDTHS,
                     formats=SENTLOG_FORMATS)


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
    for day, d in forecast(model, ledger_state, start=first, days=days, settings=settings):
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
    if any(u.order_id.startswith("(Orders row") for u in figures.unreachable):
        try:
            ids = order_ids_by_row(site.workbook)
        except CommplanError:
            ids = {}
        figures = dashboard_figures(events, today=today, model=site.model,
                                    ledger_state=state, problems=site.problems, order_ids=ids)
    sheets = [figures_sheet(figures), forecast_sheet(forecast_rows(site, state, today=today))]
    return sheets, figures


# ---------------------------------------------------------------- summary mail


def _plural(n: int, word: str, plural: str | None = None) -> str:
    """French agreement: 0 and 1 take the singular."""
    return f"{n} {word if n <= 1 else (plural or word + 's')}"


def _date_fr(day: dt.date | None) -> str:
    return f"{day:%d/%m/%Y}" if day else ""


def summary_subject(run_report: RunReport) -> str:
    """E.g. "commplan — 27/11/2026 : 12 envoyés, 1 échec"."""
    r = run_report
    parts = [_plural(r.sent, "envoyé"), _plural(r.failed, "échec")]
    if r.uncertain:
        parts.append(_plural(r.uncertain, "incertain"))
    test = " (essai, rien envoyé)" if r.dry_run else ""
    return f"commplan — {_date_fr(r.today)}{test} : {', '.join(parts)}"


def what_to_do(failure: str, catch_up_days: int | None = None) -> str:
    """The advice for one line of RunReport.failures, read from how batch words it."""
    text = failure.casefold()
    found = _FAILURE.match(failure)
    resend = f"commplan resend {found.group(1)} {found.group(2)}" if found else \
        "commplan resend COMMANDE ÉTAPE"
    if "uncertain" in text:
        return (f"vérifiez avec le client s'il a reçu ce mail ; sinon lancez `{resend}` "
                "(il n'est jamais renvoyé tout seul).")
    if "not retried" in text:
        return ("l'adresse a été refusée : corrigez-la dans la feuille Customers ; le mail "
                "repartira au passage suivant.")
    if "once fixed" in text:
        return ("corrigez le modèle ou la pièce jointe dans le classeur (`commplan check` "
                "montre où) ; le passage suivant le réessaie.")
    within = f" pendant {catch_up_days} jours après l'échéance" if catch_up_days else ""
    return f"rien à faire : les passages suivants le réessaient{within}."


def summary_text(
    settings: Settings, run_report: RunReport, figures: DashboardFigures | None
) -> str:
    """The plain-text body of the summary mail."""
    r = run_report
    lines = [f"Passage du {_date_fr(r.today)}" + (" (essai : rien n'a été envoyé)"
                                                   if r.dry_run else ""), ""]
    lines += [
        f"Envoyés : {r.sent}",
        f"Ignorés (manqués ou remplacés) : {r.skipped}",
        f"Échecs : {r.failed}",
        f"Incertains : {r.uncertain}",
    ]
    if r.waiting:
        lines.append(f"En attente (limite quotidienne atteinte) : {r.waiting}")
    if r.not_tried:
        lines.append(f"Non tentés (serveur de mail injoignable) : {r.not_tried}")
    if r.failures:
        lines += ["", "À traiter :"]
        for failure in r.failures:
            lines.append(f"- {failure}")
            lines.append(f"  Que faire : {what_to_do(failure, settings.catch_up_days)}")
    if r.notes:
        lines += ["", "Remarques :"]
        lines += [f"- {note}" for note in r.notes]
    if r.problems:
        lines += ["", f"Le classeur a {_plural(len(r.problems), 'problème')} : les lignes "
                  "concernées sont laissées de côté. Lancez `commplan check` pour les voir."]
    if figures is not None:
        lines += ["", *_figures_text(figures)]
    lines += ["", "Le détail est dans les feuilles SentLog, Dashboard et Forecast du classeur."]
    return "\n".join(lines) + "\n"


def _figures_text(figures: DashboardFigures) -> list[str]:
    t = figures.total
    first = figures.days[0][0] if figures.days else figures.today
    lines = [
        f"Tableau de bord du {_date_fr(first)} au {_date_fr(figures.today)} :",
        f"Envoyés : {t.sent}, ignorés : {t.skipped}, échecs : {t.failed}, "
        f"incertains : {t.uncertain}",
    ]
    for name, c in figures.plans:
        lines.append(f"- {name} : {_plural(c.sent, 'envoyé')}, {_plural(c.failed, 'échec')}")
    lines += ["", f"Échecs en attente d'un nouvel essai : {len(figures.failures)}"]
    lines += [
        f"- Commande {f.order_id} étape {f.step} (échéance {_date_fr(f.due_date)}) : {f.reason}"
        for f in figures.failures
    ]
    lines += ["", f"Commandes dont le client n'a pas d'adresse valide : "
              f"{len(figures.unreachable)}"]
    lines += [
        f"- Commande {u.order_id} (client {u.customer_id}) : {u.problem}"
        for u in figures.unreachable
    ]
    return lines


def summary_message(
    settings: Settings,
    run_report: RunReport,
    *,
    dashboard_figures: DashboardFigures | None = None,
) -> EmailMessage:
    """The summary mail to `settings.report_to`, from the sender of customer mails.

    Raises SendFailure when `report_to` is empty (callers check `settings.report_to`).
    """
    from commplan_xl.mail.render import Rendered, text_to_html
    from commplan_xl.mail.smtp import build_message

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
    mailer, settings: Settings, run_report: RunReport, figures: DashboardFigures | None
) -> bool:
    """Send the summary mail over the run's `mailer`; False when there is no `report_to`
    or it failed (then a note on the report says so: the customers' mails are unaffected)."""
    if not settings.report_to or run_report.dry_run:
        return False
    try:
        msg = summary_message(settings, run_report, dashboard_figures=figures)
        mailer.send(msg, from_addr=settings.sender_email, to_addrs=list(settings.report_to))
    except SendFailure as exc:
        run_report.notes.append(
            f"The summary mail to {', '.join(settings.report_to)} could not be sent: {exc}"
        )
        return False
    return True
