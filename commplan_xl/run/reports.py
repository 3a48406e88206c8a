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
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from commplan_xl.core.schedule import is_limit_wait
from commplan_xl.excel.names import localise, workbook_language
from commplan_xl.excel.sheet_xml import PLAN_LIST, ToolSheet
from commplan_xl.model import Decision, LedgerEntry, Model
from commplan_xl.problems import CommplanError, SendFailure
from commplan_xl.run.dashboard import (  # noqa: F401 - the Dashboard's names, also from here
    WINDOW_DAYS,
    DashboardFigures,
    ToHandle,
    dashboard_figures,
    figures_sheet,
    to_handle_items,
)
from commplan_xl.settings import Settings

if TYPE_CHECKING:
    from email.message import EmailMessage

    from commplan_xl.run.batch import RunReport

SENTLOG = "SentLog"
FORECAST = "Forecast"
FORECAST_HEADER = (
    "date", "order_id", "customer_id", "customer", "email", "plan", "step", "subject",
    "due_date", "note",
)
WARNING = "⚠ "

_FAILURE = re.compile(r"^Order (\S+) step (\d+)")
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


def waiting_items(coming: Sequence[ForecastRow], *, today: dt.date) -> list[ToHandle]:
    """The mails due by `today` that cannot be built (an empty cell they use, a template
    or attachment problem): the Forecast lists each once with why."""
    return [ToHandle("waiting_value", r.order_id, r.customer_id, r.plan, r.step, r.due_date,
                     r.subject[len(WARNING):])
            for r in coming if r.subject.startswith(WARNING) and r.due_date <= today]


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
                            today=today, held_since=held_since, settings=site.settings)
    items += waiting_items(coming, today=today)

    def figures_with(ids: Mapping[int, str] | None) -> DashboardFigures:
        return dashboard_figures(events, today=today, model=site.model, ledger_state=state,
                                 problems=site.problems, order_ids=ids, to_handle=items,
                                 planned_7=planned_7)

    figures = figures_with(None)
    if any(u.order_id.startswith("(Orders row") for u in figures.unreachable):
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
    if text.startswith("to review"):
        return ("ouvrez ce mail revenu dans la boîte d'envoi : il nomme un client mais aucun "
                "mail que commplan retrouve ; renvoyez à la main si besoin.")
    if "sending account" in text:
        return ("le compte d'envoi a été refusé, pas l'adresse du client : l'informaticien "
                "doit vérifier le droit d'envoyer au nom de l'expéditeur et les "
                "enregistrements SPF/DKIM du domaine ; le passage suivant le réessaie.")
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
    if r.returned:
        lines.append(f"Mails revenus (non distribués) : {r.returned}")
    if r.held:
        lines += ["", "En attente d'une valeur (une cellule vide, le mail part dès qu'elle est "
                  "remplie) :", *(f"- {line}" for line in r.held)]
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
    """The Dashboard in the mail: the items to handle (every day until resolved), then the
    counts of the last 30 days."""
    from commplan_xl.run.dashboard import TO_HANDLE_KINDS

    lines = [f"À traiter (jusqu'à résolution) : {len(figures.to_handle)}"]
    for item in figures.to_handle:
        what = TO_HANDLE_KINDS[item.kind].label_fr
        step = f" étape {item.step}" if item.step is not None else ""
        due = f" (échéance {_date_fr(item.due_date)})" if item.due_date else ""
        lines.append(f"- {what} : commande {item.order_id}{step}{due}"
                     + (f" — {item.detail}" if item.detail else ""))
        lines.append(f"  Que faire : {item.todo(french=True)}")
    t = figures.total
    first = figures.days[0][0] if figures.days else figures.today
    lines += [
        "",
        f"Tableau de bord du {_date_fr(first)} au {_date_fr(figures.today)} :",
        f"Envoyés : {t.sent} (hier : {figures.sent_yesterday}, 7 derniers jours : "
        f"{figures.sent_since(7)}), ignorés : {t.skipped}, échecs : {t.failed}, "
        f"incertains : {t.uncertain}",
        f"En attente d'un nouvel essai : {len(figures.failures)} ; prévus les 7 prochains "
        f"jours : {figures.planned_7}",
    ]
    for name, c in figures.plans:
        lines.append(f"- {name} : {_plural(c.sent, 'envoyé')}, {_plural(c.failed, 'échec')}")
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
