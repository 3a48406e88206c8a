"""(model, ledger state, today, settings) → decisions. Pure: never reads a clock or a file.

A message is one (order, step), whatever plan the order is on: the ledger knows it by the
order id folded as plan names are (`message_key`), so a plan renamed, an order moved to
another plan or its id's case changed never makes a sent or skipped step due again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Protocol

from commplan_xl.core.offsets import WEEKENDS_ONLY, Calendar, add_delay, business_calendar
from commplan_xl.i18n import N_, _
from commplan_xl.model import (
    Action,
    Customer,
    Decision,
    LedgerEntry,
    Model,
    Order,
    Plan,
    Status,
    Step,
    norm_key,
)
from commplan_xl.settings import Settings

LedgerKey = tuple[str, int]  # (order key: the id folded, step number)

# Ledger states after which a message is never decided again (never twice, ever).
DONE_STATES = frozenset({"sent", "skipped", "uncertain", "sending"})
# What each action leaves in the ledger when a run carries it out (for forecast).
STATE_AFTER = {Action.SEND: "sent", Action.SKIP: "skipped", Action.WAIT: "waiting"}

REASON_DUE = "due"
REASON_RETRY = "retry"
REASON_ADDRESS = "address changed"
REASON_MISSED = "missed"
REASON_LIMIT = "daily limit reached"
# The reason of a message that waits for an empty cell to be filled: "waiting for X".
WAITING_FOR = "waiting for "


_REASON_WORDS = {REASON_DUE: N_("due"), REASON_RETRY: N_("retry"),
                 REASON_ADDRESS: N_("address changed"), REASON_MISSED: N_("missed"),
                 REASON_LIMIT: N_("daily limit reached"), "daily limit": N_("daily limit")}
_SUPERSEDED = re.compile(r"superseded by step (\d+)")


def reason_text(reason: str) -> str:
    """A reason as decisions and the ledger keep it ("missed", "superseded by step 3",
    "waiting for X"), in the current language; any other text as it is."""
    if reason in _REASON_WORDS:
        return _(_REASON_WORDS[reason])
    if match := _SUPERSEDED.fullmatch(reason):
        return _("superseded by step {step}").format(step=match[1])
    if reason.startswith(WAITING_FOR):
        return _("waiting for {column}").format(column=reason.removeprefix(WAITING_FOR))
    return reason


def message_key(order_id: str, step: int) -> LedgerKey:
    """The ledger's key of a message: the order id folded (case and spaces), and the step."""
    return norm_key(order_id), step


def moved_orders(model: Model, recorded: Mapping[str, tuple[str, str]]
                 ) -> list[tuple[str, str, str]]:
    """(order id, old plan name, new plan name) of each order whose latest ledger record
    is under another plan than the one Orders gives it now."""
    if not recorded:
        return []
    out = []
    for order in model.orders_by_id:
        found = recorded.get(norm_key(order.order_id))
        if found is not None and found[0] != order.plan:
            plan = model.plans.get(order.plan)
            out.append((order.order_id, found[1], plan.name if plan else order.plan))
    return out


def superseded_reason(step: int) -> str:
    """The reason of a lower step skipped because `step` of the same order goes out."""
    return f"superseded by step {step}"


def is_limit_wait(decision: Decision) -> bool:
    """A wait for daily_limit (it keeps its place and is never missed), not a message
    that cannot be built yet."""
    return decision.action == Action.WAIT and decision.reason == REASON_LIMIT


def is_value_wait(decision: Decision) -> bool:
    """A message waiting for an empty cell to be filled ("waiting for date_de_livraison")."""
    return decision.action == Action.WAIT and decision.reason.startswith(WAITING_FOR)


class Readiness(Protocol):
    """Whether a due message can be built (templates, values, attachments, layout), so
    that one that cannot waits instead of superseding a lower step. The schedule asks;
    the answers come from outside (rendering is not pure)."""

    def step_wait(self, plan_key: str, step: Step) -> str | None:
        """Why no order can get this step now (a template or attachment problem), or None."""

    def reads_values(self, plan_key: str, step: Step) -> bool:
        """Whether the step's mail depends on the order's values (its cells)."""

    def order_wait(self, order: Order, customer: Customer, plan: Plan, step: Step,
                   due: dt.date) -> str | None:
        """Why this order's mail cannot be built ("waiting for X", a value a filter cannot
        format), or None; asked only when reads_values."""


# One due message of a plan for one start date: (step number, step, due date, past catch-up).
_Due = tuple[int, Step, dt.date, bool]
# The due messages of a group of steps for one start date, and their numbers as bits.
_DueSet = tuple[tuple[_Due, ...], int]
# Due steps as bits, the decisions' ends (step, due date, action, reason) of an order
# without history, and the sends among them whose mail depends on the order's values:
# see _PlanView.settled.
_Settled = tuple[int, tuple[tuple[int, dt.date, Action, str], ...],
                 tuple[tuple[Step, dt.date], ...]]
_UNKNOWN = object()
_NOBODY = Customer(customer_id="", name="", emails=())


class _PlanView:
    """A plan as one decide() call walks it, for one `today`.

    Its active steps are grouped by the date column they count from; for each start date
    met, the steps already due on `today` are computed once and kept, so thousands of
    orders sharing a start date cost one dictionary look-up per column.
    """

    __slots__ = ("plan", "key", "groups", "columns", "by_starts", "today", "oldest",
                 "calendar", "ready", "static", "reads", "numbered", "business")

    def __init__(self, plan: Plan, *, today: dt.date, catch_up_days: int,
                 calendar: Calendar | None, ready: Readiness | None = None,
                 business: bool = False) -> None:
        self.plan = plan
        self.ready = ready
        # send_days "business": a message due on a day off goes on the next working day
        # (its due date, which catch-up counts from, stays the planned one).
        self.business = business
        self.static: dict[int, str | None] = {}  # step -> why no order can get it (once)
        self.reads: dict[int, bool] = {}  # step -> whether it depends on the values
        self.numbered = {step.number: step for step in plan.steps}
        self.key = plan.key
        self.today = today
        self.oldest = today - dt.timedelta(days=catch_up_days)  # due before this: missed
        self.calendar = calendar
        by_column: dict[str, list[Step]] = {}
        for step in plan.steps:
            if step.active:
                by_column.setdefault(step.from_column, []).append(step)
        self.groups: tuple[tuple[str, tuple[Step, ...], dict[dt.date, _DueSet]], ...]
        self.groups = tuple((col, tuple(steps), {}) for col, steps in by_column.items())
        self.columns = tuple(by_column)
        # Per order start dates (one per column): what an order with them has due today.
        self.by_starts: dict[tuple[dt.date | None, ...], _Settled] = {}

    def settled(self, starts: tuple[dt.date | None, ...]) -> _Settled:
        """For orders with these start dates (one per `columns`): the numbers of the steps
        due today as bits, and the end of each decision for such an order with no history
        (step, due date, action, reason): the same for every such order, made once."""
        found = self.by_starts.get(starts)
        if found is None:
            dates = dict(zip(self.columns, starts, strict=True))
            template = Order(order_id="", customer_id="", plan=self.key, dates=dates)
            fresh = _decide_order(template, _NOBODY, self, {}, {}, per_order=False)
            fresh.sort(key=_STEP)  # decide lists an order's decisions in step order
            checks = tuple((self.numbered[d.step], d.due_date) for d in fresh
                           if d.action == _SEND and self.reads_values(self.numbered[d.step]))
            found = self.by_starts[starts] = (
                self.due_bits(dates), tuple(tuple(d[4:]) for d in fresh), checks)
        return found

    def reads_values(self, step: Step) -> bool:
        """Whether the step's mail depends on an order's values (asked once per step)."""
        if self.ready is None:
            return False
        found = self.reads.get(step.number)
        if found is None:
            found = self.reads[step.number] = self.ready.reads_values(self.key, step)
        return found

    def wait_reason(self, order: Order, customer: Customer, step: Step, due: dt.date,
                    per_order: bool = True) -> str | None:
        """Why the step's mail cannot be built for this order (None: it can). The
        template and attachment checks are made once per step; `per_order` False leaves
        out what depends on the order's values."""
        ready = self.ready
        if ready is None:
            return None
        why = self.static.get(step.number, _UNKNOWN)
        if why is _UNKNOWN:
            why = self.static[step.number] = ready.step_wait(self.key, step)
        if why is not None:
            return why  # type: ignore[return-value]
        if per_order and self.reads_values(step):
            return ready.order_wait(order, customer, self.plan, step, due)
        return None

    def order_waits(self, order: Order, customer: Customer,
                    checks: tuple[tuple[Step, dt.date], ...]) -> bool:
        """Whether one of `checks` (sends of an order without history) waits for it."""
        order_wait = self.ready.order_wait  # type: ignore[union-attr]
        plan = self.plan
        return any(order_wait(order, customer, plan, step, due) is not None
                   for step, due in checks)

    def due_set(self, known: dict[dt.date, _DueSet], steps: tuple[Step, ...],
                start: dt.date) -> _DueSet:
        """`due_steps` of one group, computed once per start date."""
        found = known.get(start)
        if found is None:
            found = known[start] = self.due_steps(steps, start)
        return found

    def due_bits(self, dates: Mapping[str, dt.date | None]) -> int:
        """The numbers of the steps due today for an order with these dates, as bits."""
        bits = 0
        for column, steps, known in self.groups:
            start = dates.get(column)
            if start is not None:  # an empty `from` date: not due yet
                bits |= self.due_set(known, steps, start)[1]
        return bits

    def due_steps(self, steps: tuple[Step, ...], start: dt.date) -> _DueSet:
        """The steps of `steps` due on or before today when counting from `start`, and
        their numbers as bits (bit n for step n)."""
        out: list[_Due] = []
        bits = 0
        for step in steps:
            due = add_delay(start, step.delay, step.unit, self.calendar)
            goes = (self.calendar or WEEKENDS_ONLY).next_working_day(due) if self.business \
                else due
            if goes <= self.today:
                out.append((step.number, step, due, due < self.oldest))
                bits |= 1 << step.number
        return tuple(out), bits


def decide(
    model: Model,
    ledger: Mapping[LedgerKey, LedgerEntry],
    *,
    today: dt.date,
    settings: Settings,
    sent_today: int = 0,
    calendar: Calendar | None = None,
    ready: Readiness | None = None,
) -> list[Decision]:
    """Every message a run on `today` acts on, sorted by (due_date, order_id, step).

    `ledger` maps (order key, step) (see `message_key`) to what the ledger knows;
    `sent_today` is how many messages were already sent today (they count against
    `daily_limit`). `calendar` None means the calendar of `settings.holidays`. `ready`
    says which mails can be built: one that cannot waits and supersedes nothing (None:
    every mail can).
    """
    cal = calendar if calendar is not None else settings_calendar(settings)
    decisions: list[Decision] = []
    extend = decisions.extend
    done, ledger = split_ledger(ledger)
    done_of = done.get
    with_history = {key[0] for key in ledger}  # orders with open entries
    fold = norm_key
    for order, customer, view in _sendable(model, today, settings, cal, ready):
        bits, fresh, checks = view.settled(tuple(map(order.dates.get, view.columns)))
        order_key = fold(order.order_id)
        finished = done_of(order_key, 0)
        # Most orders of a usual morning have every due step done: two integers say so,
        # before any per-step work.
        if not bits & ~finished:
            continue
        if (not finished and not order.hold_steps and order_key not in with_history
                and not (checks and view.order_waits(order, customer, checks))):
            # No history (a first run): the decisions every order with these dates gets.
            head = (order.order_id, order.customer_id, view.key, view.plan.name)
            extend(Decision(*head, *rest) for rest in fresh)
            continue
        found = _decide_order(order, customer, view, ledger, done)
        if found:
            found.sort(key=_STEP)
            extend(found)
    decisions = apply_daily_limit(decisions, settings.daily_limit, sent_today)
    # By (due_date, order_id, step): orders are walked by id and each one's decisions
    # come by step, so one stable sort on the date is enough (cheaper than a sort on the
    # three for a first run's many decisions).
    decisions.sort(key=_DUE)
    return decisions


def _sendable(
    model: Model, today: dt.date, settings: Settings, calendar: Calendar | None,
    ready: Readiness | None = None,
) -> Iterator[tuple[Order, Customer, _PlanView]]:
    """Active orders of customers who have not opted out, on a known plan, with its view."""
    business = settings.send_days == "business"
    views = {
        key: _PlanView(plan, today=today, catch_up_days=settings.catch_up_days,
                       calendar=calendar, ready=ready, business=business)
        for key, plan in model.plans.items()
    }
    customer_of = model.customers.get
    view_of = views.get
    active = Status.ACTIVE
    for order in model.orders_by_id:
        if order.status != active:
            continue
        customer = customer_of(order.customer_id)
        if customer is None or customer.opt_out:
            continue
        view = view_of(order.plan)
        if view is not None:
            yield order, customer, view


def split_ledger(
    ledger: Mapping[LedgerKey, LedgerEntry],
) -> tuple[Mapping[str, int], Mapping[LedgerKey, LedgerEntry]]:
    """(done steps, the other entries): done steps map an order key to a bit mask,
    bit n set when step n is done.

    The ledger's LedgerSnapshot keeps done messages (the bulk of a long-lived ledger) packed
    that way already: one look-up per order instead of one per step, and most orders of a
    usual morning are settled by comparing two integers. Any other mapping is split here.
    """
    done = getattr(ledger, "done_steps", None)
    others = getattr(ledger, "open", None)
    if isinstance(done, dict) and isinstance(others, dict):
        return done, others
    steps: dict[str, int] = {}
    rest: dict[LedgerKey, LedgerEntry] = {}
    for key, entry in ledger.items():
        if entry.state in DONE_STATES:
            steps[key[0]] = steps.get(key[0], 0) | 1 << key[1]
        else:
            rest[key] = entry
    return steps, rest


def settings_calendar(settings: Settings) -> Calendar:
    """The business-day calendar named by the Settings sheet's `holidays`."""
    return business_calendar(settings.holiday_country, settings.holiday_subdiv)


def decide_order(
    order: Order,
    customer: Customer,
    plan: Plan,
    ledger: Mapping[LedgerKey, LedgerEntry],
    *,
    today: dt.date,
    catch_up_days: int,
    calendar: Calendar | None = None,
    ready: Readiness | None = None,
    business_days_only: bool = False,
) -> list[Decision]:
    """The decisions for one order, before the daily limit (status and opt-out not checked).
    `business_days_only`: send_days "business"."""
    view = _PlanView(plan, today=today, catch_up_days=catch_up_days, calendar=calendar,
                     ready=ready, business=business_days_only)
    done, others = split_ledger(ledger)
    return _decide_order(order, customer, view, others, done)


def _decide_order(
    order: Order,
    customer: Customer,
    view: _PlanView,
    ledger: Mapping[LedgerKey, LedgerEntry],
    done: Mapping[str, int],
    *,
    per_order: bool = True,
) -> list[Decision]:
    """The decisions for one order, before the daily limit. `done` and `ledger` are what
    `split_ledger` gives: done steps as bits, and the other entries. `per_order` False
    leaves out the readiness checks that depend on the order's values."""
    dates = order.dates
    order_id = order.order_id
    plan_key = view.key
    order_key = norm_key(order_id)
    finished = done.get(order_key, 0)
    missed: list[tuple[int, dt.date]] = []
    sends: list[tuple[Step, dt.date, str]] = []
    emails: str | None = None
    for column, steps, known in view.groups:
        start = dates.get(column)
        if start is None:  # an empty `from` date: not due yet
            continue
        due_steps, due_bits = view.due_set(known, steps, start)
        if not due_bits & ~finished:  # every due step done: the usual order of a morning
            continue
        hold = order.hold_steps
        for number, step, due, late in due_steps:
            if finished >> number & 1 or (hold and number in hold):
                continue
            entry = ledger.get((order_key, number))
            reason = REASON_DUE
            if entry is not None:
                state = entry.state
                if state in DONE_STATES:
                    continue
                if state == "waiting":
                    # Held back by daily_limit: it keeps its place and is never missed.
                    sends.append((step, due, reason))
                    continue
                if state == "failed_permanent":
                    emails = emails or ";".join(customer.emails)  # once per order, mostly
                    if entry.emails == emails:
                        continue
                    reason = REASON_ADDRESS
                elif state == "failed":
                    reason = REASON_RETRY
            if late:
                missed.append((number, due))
            else:
                sends.append((step, due, reason))
    if not missed and not sends:
        return []
    customer_id, name = order.customer_id, view.plan.name
    out = [
        Decision(order_id, customer_id, plan_key, name, number, due, _SKIP, REASON_MISSED)
        for number, due in missed
    ]
    if sends:
        head = (order_id, customer_id, plan_key, name)
        out += _sends(order, customer, view, sends, head, per_order)
    return out


def _sends(order: Order, customer: Customer, view: _PlanView,
           sends: list[tuple[Step, dt.date, str]], head: tuple[str, str, str, str],
           per_order: bool) -> list[Decision]:
    """The due, unsent messages of one order: the highest step whose mail can be built is
    sent; steps above it wait (they cannot be built), lower ones are skipped as superseded,
    except required ones, which are sent too (or wait)."""
    waits: dict[int, str] = {}
    top = 0
    for step, due, _reason in sorted(sends, key=_FIRST_NUMBER, reverse=True):
        why = view.wait_reason(order, customer, step, due, per_order)
        if why is None:
            top = step.number
            break
        waits[step.number] = why
    superseded = superseded_reason(top)
    out: list[Decision] = []
    for step, due, reason in sends:
        number = step.number
        action = _SEND
        if number in waits:
            action, reason = _WAIT, waits[number]
        elif number != top:
            if not step.required:
                action, reason = _SKIP, superseded
            elif (why := view.wait_reason(order, customer, step, due, per_order)) is not None:
                action, reason = _WAIT, why
        out.append(Decision(*head, number, due, action, reason))
    return out


def _first_number(send: tuple[Step, dt.date, str]) -> int:
    return send[0].number


_FIRST_NUMBER = _first_number


_SEND, _SKIP, _WAIT = Action.SEND, Action.SKIP, Action.WAIT
# Sorting key of decisions: (due_date, order_id, step), by position in Decision.
_order_key: Callable[[Decision], tuple[dt.date, str, int]] = itemgetter(5, 0, 4)
_STEP, _DUE = itemgetter(4), itemgetter(5)  # Decision.step, Decision.due_date


def apply_daily_limit(
    decisions: Sequence[Decision], daily_limit: int | None, sent_today: int = 0
) -> list[Decision]:
    """Turn the sends beyond `daily_limit - sent_today` into waits, oldest due sent first."""
    out = list(decisions)
    if daily_limit is None:
        return out
    room = max(0, daily_limit - sent_today)
    sends = sorted((i for i, d in enumerate(out) if d.action == Action.SEND),
                   key=lambda i: _order_key(out[i]))
    for i in sends[room:]:
        out[i] = out[i]._replace(action=Action.WAIT, reason=REASON_LIMIT)
    return out


def forecast(
    model: Model,
    ledger: Mapping[LedgerKey, LedgerEntry],
    *,
    start: dt.date,
    days: int,
    settings: Settings,
    calendar: Calendar | None = None,
    ready: Readiness | None = None,
) -> list[tuple[dt.date, Decision]]:
    """What the daily runs from `start` to `start + days - 1` would do, as (run day, decision).

    Each run is assumed to do what it decides (sends succeed, skips and daily_limit waits
    are recorded), so a message shows up once as sent or skipped, after any days it waits.
    A message that cannot be built shows up as a wait on each day until it is missed.
    """
    if days <= 0:
        return []
    cal = calendar if calendar is not None else settings_calendar(settings)
    last = start + dt.timedelta(days=days - 1)
    # Orders with nothing left open by the last day decide nothing on any day: leave them out
    # once, instead of walking all of them on every simulated day.
    done, others = split_ledger(ledger)
    open_orders = tuple(
        order
        for order, customer, view in _sendable(model, last, settings, cal)
        if _decide_order(order, customer, view, others, done, per_order=False)
    )
    model = dataclasses.replace(model, orders=open_orders)
    # A simulated send or skip is done, as a run leaves it: in the done steps (a copy),
    # so the next days settle its order by the bits as decide does for real ones.
    state = _Split(dict(done), dict(others))
    out: list[tuple[dt.date, Decision]] = []
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        for d in decide(model, state, today=day, settings=settings, calendar=cal,
                        ready=ready):
            out.append((day, d))
            key = message_key(d.order_id, d.step)
            if d.action == Action.WAIT:
                if d.reason == REASON_LIMIT:
                    state.open[key] = record(d, model)
            else:
                state.open.pop(key, None)
                state.done_steps[key[0]] = state.done_steps.get(key[0], 0) | 1 << d.step
    return out


class _Split:
    """Done steps and other entries, as `split_ledger` reads them from the ledger's
    LedgerSnapshot."""

    def __init__(self, done: dict[str, int], others: dict) -> None:
        self.done_steps = done
        self.open = others


def record(decision: Decision, model: Model) -> LedgerEntry:
    """The ledger entry a run leaves after carrying out `decision` as decided."""
    customer = model.customers.get(decision.customer_id)
    return LedgerEntry(
        order_id=decision.order_id,
        plan=decision.plan,
        step=decision.step,
        state=STATE_AFTER[decision.action],  # type: ignore[arg-type]
        due_date=decision.due_date,
        emails=";".join(customer.emails) if customer else "",
        detail=decision.reason,
    )
