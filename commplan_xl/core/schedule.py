"""(model, ledger state, today, settings) → decisions. Pure: never reads a clock or a file.

A message is one (order, step), whatever plan the order is on: the ledger knows it by the
order id folded as plan names are (`message_key`), so a plan renamed, an order moved to
another plan or its id's case changed never makes a sent or skipped step due again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import repeat
from operator import itemgetter

from commplan_xl.core.offsets import Calendar, add_delay, business_calendar
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


# One due message of a plan for one start date: (step number, step, due date, past catch-up).
_Due = tuple[int, Step, dt.date, bool]
# The due messages of a group of steps for one start date, and their numbers as bits.
_DueSet = tuple[tuple[_Due, ...], int]
# Due steps as bits, and the decisions' ends (step, due date, action, reason) of an order
# without history: see _PlanView.settled.
_Settled = tuple[int, tuple[tuple[int, dt.date, Action, str], ...]]
_NOBODY = Customer(customer_id="", name="", emails=())


class _PlanView:
    """A plan as one decide() call walks it, for one `today`.

    Its active steps are grouped by the date column they count from; for each start date
    met, the steps already due on `today` are computed once and kept, so thousands of
    orders sharing a start date cost one dictionary look-up per column.
    """

    __slots__ = ("plan", "key", "groups", "columns", "by_starts", "today", "oldest",
                 "calendar")

    def __init__(self, plan: Plan, *, today: dt.date, catch_up_days: int,
                 calendar: Calendar | None) -> None:
        self.plan = plan
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
            fresh = _decide_order(template, _NOBODY, self, {}, {})
            fresh.sort(key=_STEP)  # decide lists an order's decisions in step order
            found = self.by_starts[starts] = (
                self.due_bits(dates), tuple(tuple(d[4:]) for d in fresh))
        return found

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
            if due <= self.today:
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
) -> list[Decision]:
    """Every message a run on `today` acts on, sorted by (due_date, order_id, step).

    `ledger` maps (order key, step) (see `message_key`) to what the ledger knows;
    `sent_today` is how many messages were already sent today (they count against
    `daily_limit`). `calendar` None means the calendar of `settings.holidays`.
    """
    cal = calendar if calendar is not None else settings_calendar(settings)
    decisions: list[Decision] = []
    extend = decisions.extend
    done, ledger = split_ledger(ledger)
    done_of = done.get
    with_history = {key[0] for key in ledger}  # orders with open entries
    fold = norm_key
    for order, customer, view in _sendable(model, today, settings.catch_up_days, cal):
        bits, fresh = view.settled(tuple(map(order.dates.get, view.columns)))
        order_key = fold(order.order_id)
        finished = done_of(order_key, 0)
        # Most orders of a usual morning have every due step done: two integers say so,
        # before any per-step work (50,000 orders: about half the time of this loop).
        if not bits & ~finished:
            continue
        if not finished and not order.hold_steps and order_key not in with_history:
            # No history (a first run): the decisions every order with these dates gets.
            head = (order.order_id, order.customer_id, view.key, view.plan.name)
            extend(map(_tuple_new, repeat(Decision), map(head.__add__, fresh)))
            continue
        found = _decide_order(order, customer, view, ledger, done)
        if found:
            found.sort(key=_STEP)
            extend(found)
    decisions = apply_daily_limit(decisions, settings.daily_limit, sent_today)
    # By (due_date, order_id, step): orders are walked by id and each one's decisions
    # come by step, so one stable sort on the date is enough (a first run sorts 200,000
    # decisions: a third of the time of a sort on the three).
    decisions.sort(key=_DUE)
    return decisions


def _sendable(
    model: Model, today: dt.date, catch_up_days: int, calendar: Calendar | None
) -> Iterator[tuple[Order, Customer, _PlanView]]:
    """Active orders of customers who have not opted out, on a known plan, with its view."""
    views = {
        key: _PlanView(plan, today=today, catch_up_days=catch_up_days, calendar=calendar)
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
    """(done steps, the other entries): done steps map an order key to a bit mask, bit n
    set when step n is done.

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
) -> list[Decision]:
    """The decisions for one order, before the daily limit (status and opt-out not checked)."""
    view = _PlanView(plan, today=today, catch_up_days=catch_up_days, calendar=calendar)
    done, others = split_ledger(ledger)
    return _decide_order(order, customer, view, others, done)


def _decide_order(
    order: Order,
    customer: Customer,
    view: _PlanView,
    ledger: Mapping[LedgerKey, LedgerEntry],
    done: Mapping[str, int],
) -> list[Decision]:
    """The decisions for one order, before the daily limit. `done` and `ledger` are what
    `split_ledger` gives: done steps as bits, and the other entries."""
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
                    if emails is None:
                        emails = ";".join(customer.emails)
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
    # tuple.__new__ with the fields in Decision's order: a first run over an old base builds
    # hundreds of thousands of these, and the NamedTuple's own __new__ adds a call to each.
    out = [
        _tuple_new(Decision, (order_id, customer_id, plan_key, name, number, due, _SKIP,
                              REASON_MISSED))
        for number, due in missed
    ]
    if sends:
        top = max(step.number for step, _due, _reason in sends)
        superseded = superseded_reason(top)
        for step, due, reason in sends:
            if step.number == top or step.required:
                out.append(_tuple_new(Decision, (order_id, customer_id, plan_key, name,
                                                 step.number, due, _SEND, reason)))
            else:
                out.append(_tuple_new(Decision, (order_id, customer_id, plan_key, name,
                                                 step.number, due, _SKIP, superseded)))
    return out


_tuple_new = tuple.__new__
_SEND, _SKIP = Action.SEND, Action.SKIP
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
) -> list[tuple[dt.date, Decision]]:
    """What the daily runs from `start` to `start + days - 1` would do, as (run day, decision).

    Each run is assumed to do what it decides (sends succeed, skips and waits are recorded),
    so a message shows up once as sent or skipped, after any days it waits.
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
        for order, customer, view in _sendable(model, last, settings.catch_up_days, cal)
        if _decide_order(order, customer, view, others, done)
    )
    model = dataclasses.replace(model, orders=open_orders)
    # A simulated send or skip is done, as a run leaves it: in the done steps (a copy),
    # so the next days settle its order by the bits as decide does for real ones.
    state = _Split(dict(done), dict(others))
    out: list[tuple[dt.date, Decision]] = []
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        for d in decide(model, state, today=day, settings=settings, calendar=cal):
            out.append((day, d))
            key = message_key(d.order_id, d.step)
            if d.action == Action.WAIT:
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
