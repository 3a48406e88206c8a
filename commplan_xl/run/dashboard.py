"""The Dashboard: what a manager sees at a glance, and what needs a person.

Top to bottom: the key figures with the chart of the last 30 days beside them, then
"To handle" (every message that needs a person, on every run until it is resolved, each
with what to do), then the totals per plan. The chart's day data sit in hidden columns far
right: no table of empty days in view.

Every word the sheet shows is in the tables below (LABELS, TO_HANDLE_KINDS), in English
and French; the sheet is written in the workbook's language.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from commplan_xl.core.schedule import split_ledger
from commplan_xl.excel.names import (
    LANGUAGES,
    Name,
    column_title,
    sheet_key,
    sheet_title,
    tool_header,
    tool_label,
    tool_sheet,
)
from commplan_xl.excel.sheet_xml import Chart, ToolSheet
from commplan_xl.i18n import _
from commplan_xl.model import LedgerEntry, Model, Outcome, norm_key
from commplan_xl.problems import Problem, WorkbookProblem

WINDOW_DAYS = 30
STATUSES = ("sent", "skipped", "failed", "uncertain")
LedgerKey = tuple[str, str, int]

# The sheet's words, in one place, in English and French (the workbook's language).
LABELS: dict[str, Name] = {
    # The title is the same every day: a locale change finds the sheet by its first row.
    "title": Name("Dashboard", "Tableau de bord"),
    "figures": Name("Key figures, run of {day}", "Chiffres clés, passage du {day}"),
    "sent_yesterday": Name("Sent yesterday", "Envoyés hier"),
    "sent_7": Name("Sent, last 7 days", "Envoyés, 7 derniers jours"),
    "sent_30": Name("Sent, last 30 days", "Envoyés, 30 derniers jours"),
    "retrying": Name("Waiting for a retry", "En attente d'un nouvel essai"),
    "to_handle": Name("To handle", "À traiter"),
    "planned_7": Name("Planned, next 7 days", "Prévus, 7 prochains jours"),
    "chart": Name("Mails per day, last 30 days", "Mails par jour, 30 derniers jours"),
    "to_handle_title": Name("To handle: messages that need a person ({count})",
                            "À traiter : les messages qui demandent une personne ({count})"),
    "nothing": Name("Nothing to handle.", "Rien à traiter."),
    "plans_title": Name("Totals per plan, last 30 days", "Totaux par plan, 30 derniers jours"),
    "all_plans": Name("All plans", "Tous les plans"),
    "day": Name("day", "jour"),
    "total": Name("total", "total"),
    "what": Name("what", "à traiter"),
    "todo": Name("what to do", "que faire"),
}
# The tables' headers: these words, or the tool sheets' own (names.tool_label: order_id...).
TO_HANDLE_HEADER = ("what", "order_id", "customer_id", "plan", "step", "due_date", "detail",
                    "todo")
PLAN_HEADER = ("plan", *STATUSES, "total")


def _label(word: str, lang: str) -> str:
    return LABELS[word](lang) if word in LABELS else tool_label(word, lang)


@dataclass(frozen=True)
class Kind:
    """One kind of item of the To handle list: its label and what to do, in English and
    French. `{resend}` stands for the resend command; `{customers}`, `{orders}` and
    `{hold_steps}` for those sheets and that column in the workbook's language."""

    label: str
    todo: str
    label_fr: str
    todo_fr: str


# The kinds, in the order the list shows them. Other checks add a kind here and make
# ToHandle items of it (refused recipients, messages waiting for a value, returned mails).
TO_HANDLE_KINDS: dict[str, Kind] = {
    "failed_required": Kind(
        "Permanent failure, required step",
        "Correct the address in {customers} (the next run sends it again), or reach the "
        "customer another way and then `{resend}`.",
        "Échec définitif, étape obligatoire",
        "corrigez l'adresse dans {customers} (le passage suivant le renvoie), ou joignez le "
        "client autrement puis lancez `{resend}`."),
    "failed": Kind(
        "Permanent failure",
        "Correct the address in {customers}: the next run sends it again.",
        "Échec définitif",
        "corrigez l'adresse dans {customers} : le passage suivant le renvoie."),
    "content": Kind(
        "Refused for its content",
        "The mail server refused the mail itself (its content or a sending policy, see the "
        "detail), not the address: change the step's text or attachment, or ask the mail "
        "provider, then `{resend}`.",
        "Refusé pour son contenu",
        "le serveur de mail a refusé le mail lui-même (son contenu ou une règle d'envoi, "
        "voir le détail), pas l'adresse : modifiez le texte ou la pièce jointe de l'étape, "
        "ou interrogez le fournisseur de mail, puis lancez `{resend}`."),
    "uncertain": Kind(
        "Uncertain: may not have arrived",
        "Ask the customer; if it did not arrive, `{resend}` (never resent by itself). "
        "Listed for 30 days.",
        "Incertain : peut-être pas arrivé",
        "demandez au client ; s'il ne l'a pas reçu, lancez `{resend}` (jamais renvoyé "
        "tout seul). Listé 30 jours."),
    "refused": Kind(
        "Recipient refused",
        "Check the address with the customer and correct it in {customers}.",
        "Destinataire refusé",
        "vérifiez l'adresse avec le client et corrigez-la dans {customers}."),
    "no_address": Kind(
        "No valid address",
        "Correct the customer's email in {customers} (`commplan check` shows the cell).",
        "Pas d'adresse valide",
        "corrigez l'e-mail du client dans {customers} (`commplan check` montre la cellule)."),
    "waiting_value": Kind(
        "Waiting: cannot be built",
        "Fill the empty cell it uses, or fix what the detail says (`commplan check` shows "
        "where): the next run sends it.",
        "En attente : ne peut pas être préparé",
        "remplissez la cellule vide qu'il utilise, ou corrigez ce que dit le détail "
        "(`commplan check` montre où) : le passage suivant l'envoie."),
    "returned": Kind(
        "Returned mail",
        "Check the address with the customer and correct it in {customers}.",
        "Mail revenu",
        "vérifiez l'adresse avec le client et corrigez-la dans {customers}."),
    "held_due": Kind(
        "Held step now due",
        "Remove the step from {hold_steps} in {orders} to send it, or leave it held.",
        "Étape suspendue arrivée à échéance",
        "retirez l'étape de {hold_steps} dans {orders} pour l'envoyer, ou laissez-la suspendue."),
}

UNCERTAIN_LISTED_DAYS = 30


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
    named: bool = True  # False when the id is not known yet: "(Orders row N)" stands for it


@dataclass(frozen=True)
class ToHandle:
    """One message (or order) that needs a person, of a kind of TO_HANDLE_KINDS."""

    kind: str
    order_id: str
    customer_id: str = ""
    plan: str = ""
    step: int | None = None
    due_date: dt.date | None = None
    detail: str = ""

    @property
    def resend(self) -> str:
        step = self.step if self.step is not None else "STEP"
        return f"commplan resend {self.order_id} {step}"

    def todo(self, *, french: bool = False) -> str:
        kind = TO_HANDLE_KINDS[self.kind]
        lang = "fr" if french else "en"
        return (kind.todo_fr if french else kind.todo).format(
            resend=self.resend, customers=sheet_title("customers", lang),
            orders=sheet_title("orders", lang),
            hold_steps=column_title("orders", "hold_steps", lang))

    def label(self, lang: str) -> str:
        kind = TO_HANDLE_KINDS[self.kind]
        return kind.label_fr if lang == "fr" else kind.label

    def todo_sentence(self, lang: str) -> str:
        """What to do, as a sentence of its own (the sheet's cell)."""
        text = self.todo(french=lang == "fr")
        return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class DashboardFigures:
    """Everything the Dashboard shows (and the summary mail repeats)."""

    today: dt.date
    days: tuple[tuple[dt.date, Counts], ...]  # the window's days, oldest first
    plans: tuple[tuple[str, Counts], ...]  # by plan display name, over the window
    failures: tuple[WaitingFailure, ...]
    unreachable: tuple[Unreachable, ...]
    to_handle: tuple[ToHandle, ...] = ()
    planned_7: int = 0  # mails the next 7 days' runs would send

    @property
    def total(self) -> Counts:
        return _sum(c for _day, c in self.days)

    def sent_since(self, days: int) -> int:
        """Mails sent on the last `days` run days, today included."""
        first = self.today - dt.timedelta(days=days - 1)
        return sum(c.sent for day, c in self.days if day >= first)

    @property
    def sent_yesterday(self) -> int:
        yesterday = self.today - dt.timedelta(days=1)
        return sum(c.sent for day, c in self.days if day == yesterday)


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
    to_handle: Sequence[ToHandle] = (),
    planned_7: int = 0,
) -> DashboardFigures:
    """The Dashboard's figures for the `days` days ending `today` (included).

    `order_ids` maps an Orders Excel row to its order id, to name the orders validate left
    out because of their customer's address; without it they are named by their row.
    `to_handle` are the items found in the ledger and the workbook (`to_handle_items`);
    the orders without a valid address are added to them here.
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
    unreachable = unreachable_orders(problems, order_ids or {})
    items = [*to_handle, *(ToHandle("no_address", u.order_id, u.customer_id, detail=u.problem)
                           for u in unreachable)]
    order = list(TO_HANDLE_KINDS)
    items.sort(key=lambda t: (order.index(t.kind), t.due_date or dt.date.min, t.order_id,
                              t.step or 0))
    return DashboardFigures(
        today=today,
        days=tuple((day, _counts(c)) for day, c in by_day.items()),
        plans=tuple((name, _counts(by_plan[name])) for name in sorted(by_plan, key=str.casefold)),
        failures=waiting_failures(ledger_state, model),
        unreachable=unreachable,
        to_handle=tuple(items),
        planned_7=planned_7,
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
            plan=plan_name(model, e.plan),
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


def plan_name(model: Model, key: str) -> str:
    plan = model.plans.get(key)
    return plan.name if plan is not None else key


def unreachable_orders(problems: Sequence[WorkbookProblem], order_ids: Mapping[int, str]
                       ) -> tuple[Unreachable, ...]:
    """Orders validate left out because their customer's row has an email problem (it
    reports each order row of that customer)."""
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
            named=p.row in order_ids,
        ))
    return tuple(out)


def to_handle_items(entries: Iterable[LedgerEntry], model: Model, *, today: dt.date,
                    held_since: dt.date, settings=None,
                    returned: Collection[tuple[str, int]] = (),
                    content_refused: Collection[tuple[str, int]] = ()) -> list[ToHandle]:
    """The items the ledger and the workbook hold: permanent failures (until resent or
    sent again), uncertain mails (for UNCERTAIN_LISTED_DAYS), and held steps that fell due
    from `held_since` to `today`.

    `entries` are the ledger's messages in state failed_permanent or uncertain;
    `returned` the (order key, step) of those whose mail came back (a hard bounce),
    `content_refused` of those the server refused for their content or a policy.
    """
    orders = {norm_key(o.order_id): o for o in model.orders}  # ids fold, as the ledger's
    items: list[ToHandle] = []
    oldest_uncertain = today - dt.timedelta(days=UNCERTAIN_LISTED_DAYS)
    for e in entries:
        order = orders.get(norm_key(e.order_id))
        customer_id = order.customer_id if order is not None else ""
        if e.state == "uncertain":
            if e.updated is not None and e.updated.date() < oldest_uncertain:
                continue
            kind = "uncertain"
        elif (norm_key(e.order_id), e.step) in returned:
            kind = "returned"
        elif (norm_key(e.order_id), e.step) in content_refused:  # the mail, not an address
            kind = "content"
        else:
            kind = "failed_required" if _required(model, e.plan, e.step) else "failed"
        items.append(ToHandle(kind, e.order_id, customer_id, plan_name(model, e.plan), e.step,
                              e.due_date, f"{e.emails}: {e.detail}" if e.emails else e.detail))
    items += held_steps_due(model, today=today, since=held_since, settings=settings)
    return items


def refused_items(refusals: Iterable[tuple[LedgerEntry, str, str]], model: Model
                  ) -> list[ToHandle]:
    """The addresses refused for good while a mail went to the customer's others
    (`Ledger.refused_recipients`), until the address leaves the customer's emails or the
    mail is sent again."""
    orders = {norm_key(o.order_id): o for o in model.orders}
    items = []
    for e, address, reply in refusals:
        order = orders.get(norm_key(e.order_id))
        customer = model.customers.get(order.customer_id) if order is not None else None
        if customer is not None and address.lower() not in {a.lower() for a in customer.emails}:
            continue  # corrected
        items.append(ToHandle("refused", e.order_id, order.customer_id if order else "",
                              plan_name(model, e.plan), e.step, e.due_date,
                              f"{address}: {reply}"))
    return items


def _required(model: Model, plan_key: str, number: int) -> bool:
    plan = model.plans.get(plan_key)
    return plan is not None and any(s.number == number and s.required for s in plan.steps)


def held_steps_due(model: Model, *, today: dt.date, since: dt.date, settings=None
                   ) -> list[ToHandle]:
    """The steps an active order holds (`hold_steps`) whose due date is from `since` to
    `today`: a person decides whether they go."""
    from commplan_xl.core.offsets import due_date

    calendar = None
    if settings is not None:
        from commplan_xl.core.schedule import settings_calendar

        calendar = settings_calendar(settings)
    out = []
    for order in model.orders:
        if not order.hold_steps or order.status != "active":
            continue
        plan = model.plans.get(order.plan)
        if plan is None:
            continue
        for step in plan.steps:
            if step.number not in order.hold_steps or not step.active:
                continue
            due = due_date(step, order, calendar)
            if due is not None and since <= due <= today:
                out.append(ToHandle("held_due", order.order_id, order.customer_id, plan.name,
                                    step.number, due, f"hold_steps: {step.number}"))
    return out


# ---------------------------------------------------------------- the sheet

# The chart's day data: hidden columns from here on (far right, out of the printed page).
DATA_COL = 26  # column AA


WIDTHS = {0: 34, 1: 14, 2: 12, 3: 16, 4: 11, 5: 11, 6: 44, 7: 56}


def _lines(text: str, width: float) -> int:
    """About how many lines `text` takes wrapped in a column `width` characters wide."""
    per_line = max(int(width * 1.1), 1)  # the sheet's font is narrower than a character
    return sum(max(1, -(-len(part) // per_line)) for part in text.split("\n"))


def _header(lang: str) -> tuple[str, ...]:
    """The sheet's first row: its title, and the names of the chart's hidden day data."""
    return (LABELS["title"](lang), *([None] * (DATA_COL - 1)),  # type: ignore[list-item]
            *(_label(word, lang) for word in ("day", *STATUSES)))


def figures_sheet(figures: DashboardFigures, lang: str = "en") -> ToolSheet:
    """Lay the figures out in `lang`: the title; the key figures in A:B with the chart
    beside them; "To handle" (a table with a filter); the totals per plan; the chart's day
    data hidden in columns AA:AE."""
    def L(word: str) -> str:  # noqa: N802 - reads like the table it looks up
        return LABELS[word](lang)

    rows: list[list[object]] = []
    styles: dict[tuple[int, int], str] = {}
    heights: dict[int, float] = {1: 24}

    def put(values: Sequence[object], style: str | None = None, *, cells: str | None = None
            ) -> int:
        rows.append(list(values))
        r = len(rows) + 1  # Excel row (the header is row 1)
        if style:
            for i, v in enumerate(values):
                if v is not None:
                    styles[r, i] = style
        if cells:
            styles[r, 1] = cells
        return r

    put([L("figures").format(day=f"{figures.today:%d/%m/%Y}")], "subtitle")
    for label, value in (
        (L("sent_yesterday"), figures.sent_yesterday),
        (L("sent_7"), figures.sent_since(7)),
        (L("sent_30"), figures.sent_since(WINDOW_DAYS)),
        (L("retrying"), len(figures.failures)),
        (L("to_handle"), len(figures.to_handle)),
        (L("planned_7"), figures.planned_7),
    ):
        heights[put([label, value], cells="figure")] = 22
    while len(rows) < 16:  # the chart's height beside the figures
        put([])
    put([L("to_handle_title").format(count=len(figures.to_handle))], "subtitle")
    table_top = put([_label(word, lang) for word in TO_HANDLE_HEADER], "header")
    for item in figures.to_handle:
        todo = item.todo_sentence(lang)
        r = put([item.label(lang), item.order_id, item.customer_id or None, item.plan or None,
                 item.step, item.due_date, item.detail or None, todo])
        for col in (0, 1, 2, 3, 4, 6, 7):  # top-aligned, the long ones wrapped
            styles[r, col] = "wrap"
        lines = max(_lines(item.detail, WIDTHS[6]), _lines(todo, WIDTHS[7]))
        if lines > 1:
            heights[r] = 15 * lines
    if not figures.to_handle:
        put([L("nothing")])
    table_bottom = len(rows) + 1
    put([])
    put([L("plans_title")], "subtitle")
    put([_label(word, lang) for word in PLAN_HEADER], "header")
    for name, c in figures.plans:
        put([name, *c.row()])
    put([L("all_plans"), *figures.total.row()], "subtitle")
    _put_day_data(rows, figures)
    last = 1 + len(figures.days)
    return ToolSheet(
        name=tool_sheet("dashboard", lang),
        header=_header(lang),
        rows=rows,
        widths={**WIDTHS, **{DATA_COL + i: 9 for i in range(5)}},
        heights=heights,
        styles=styles,
        header_style="title",
        frozen_rows=0,
        filter_area=(table_top, 0, table_bottom, len(TO_HANDLE_HEADER) - 1),
        title_rows=0,
        hidden_cols=tuple(range(DATA_COL, DATA_COL + 5)),
        charts=(Chart(L("chart"), DATA_COL, tuple(range(DATA_COL + 1, DATA_COL + 5)),
                      kind="stacked", first_row=2, last_row=last, anchor=(2, 1),
                      size=(17.5, 7.8)),),
        former=_former(lang),
    )


# The first row of the Dashboard an earlier commplan wrote (its table of days).
EARLIER_HEADER = ("date", *STATUSES, "total")


def _former(lang: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The Dashboard's other names and first rows: in the other language (a locale change
    renames it) and as an earlier commplan wrote it (still the tool's sheet)."""
    out = [(tool_sheet("dashboard", other), _header(other)) for other in LANGUAGES
           if other != lang]
    out += [(tool_sheet("dashboard", each), tool_header(EARLIER_HEADER, each))
            for each in LANGUAGES]
    return tuple(out)


def dashboard_spec(lang: str) -> ToolSheet:
    """The Dashboard as the tool would write it in `lang`, without its rows: its name, first
    row and former names (what `check` compares the workbook's sheets with)."""
    return ToolSheet(name=tool_sheet("dashboard", lang), header=_header(lang), rows=(),
                     former=_former(lang))


def _put_day_data(rows: list[list[object]], figures: DashboardFigures) -> None:
    """The chart's data in the hidden columns, one row per day from row 2 (their names
    are in the header row, see `figures_sheet`)."""
    while len(rows) < len(figures.days):
        rows.append([])
    for row, (day, c) in zip(rows, figures.days, strict=False):
        row.extend([None] * (DATA_COL - len(row)))
        row.extend([f"{day:%d/%m}", c.sent, c.skipped, c.failed, c.uncertain])
