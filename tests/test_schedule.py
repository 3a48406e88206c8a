"""What a run on one day decides (README "When a message is sent"), built from models in code."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commplan_xl.core.offsets import business_calendar, due_date
from commplan_xl.core.schedule import (
    REASON_LIMIT,
    apply_daily_limit,
    decide,
    decide_order,
    forecast,
    message_key,
    record,
)
from commplan_xl.model import Customer, Decision, LedgerEntry, Model, Order, Plan, Step
from commplan_xl.settings import Settings
from commplan_xl.store.ledger_snapshot import LedgerSnapshot

D = dt.date
START = D(2026, 6, 1)  # a Monday
PLAN = "Baie vitrée"
KEY = "baie vitrée"
EMAIL = "alice@example.com"


def step(number: int, delay: float, unit: str = "days", **kw) -> Step:
    return Step(plan=PLAN, number=number, delay=delay, unit=unit,  # type: ignore[arg-type]
                subject=f"s{number}", body="b", **kw)


# Step 1 due on June 6, step 2 on June 11, step 3 on July 1 (for a June 1 start).
STEPS = (step(1, 5), step(2, 10), step(3, 1, "months"))


def make_model(
    orders: list[Order] | None = None,
    *,
    steps: tuple[Step, ...] = STEPS,
    customers: list[Customer] | None = None,
) -> Model:
    if customers is None:
        customers = [Customer("C1", "Alice", (EMAIL,)), Customer("C2", "Bruno", ("b@x.fr",))]
    if orders is None:
        orders = [order()]
    return Model(
        plans={KEY: Plan(PLAN, steps)},
        customers={c.customer_id: c for c in customers},
        orders=tuple(orders),
        constants={},
    )


def order(order_id: str = "O1", start: D | None = START, **kw) -> Order:
    kw.setdefault("customer_id", "C1")
    return Order(order_id=order_id, plan=KEY, dates={"start_date": start}, **kw)


def conf(**kw) -> Settings:
    return Settings(home=Path("unused"), **kw)


def entry(state: str, step_number: int = 1, order_id: str = "O1", emails: str = EMAIL):
    return {message_key(order_id, step_number): LedgerEntry(
        order_id, KEY, step_number, state, emails=emails)}  # type: ignore[arg-type]


def run(model: Model, today: D, ledger=None, **kw) -> list[tuple[str, int, str, str]]:
    """decide() as (order_id, step, action, reason) tuples, in decision order."""
    sent_today = kw.pop("sent_today", 0)
    decisions = decide(model, ledger or {}, today=today, settings=conf(**kw),
                       sent_today=sent_today)
    return [(d.order_id, d.step, d.action, d.reason) for d in decisions]


# ------------------------------------------------------------------ due or not yet


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (D(2026, 6, 5), []),
        (D(2026, 6, 6), [("O1", 1, "send", "due")]),
        (D(2026, 6, 10), [("O1", 1, "send", "due")]),
        (D(2026, 6, 11), [("O1", 1, "skip", "superseded by step 2"), ("O1", 2, "send", "due")]),
        (D(2026, 6, 16), [("O1", 1, "skip", "missed"), ("O1", 2, "send", "due")]),
    ],
)
def test_due_when_due_date_reached(today, expected):
    """A message is decided on the first run whose day is on or after its due date."""
    assert run(make_model(), today) == expected


def test_empty_from_date_is_not_due():
    """An order whose `from` date is empty has nothing due, whatever the day."""
    model = make_model([order(start=None)])
    assert run(model, D(2027, 1, 1)) == []


def test_step_counts_from_its_own_column():
    """A step counting from another date column waits for that column to be filled."""
    steps = (step(1, 2, from_column="delivery_date"),)
    empty = Order("O1", "C1", KEY, dates={"start_date": START, "delivery_date": None})
    filled = empty._replace(dates={"start_date": START,
                               "delivery_date": D(2026, 6, 10)})
    assert run(make_model([empty], steps=steps), D(2026, 6, 20)) == []
    assert run(make_model([filled], steps=steps), D(2026, 6, 12)) == [("O1", 1, "send", "due")]


def test_business_days_use_the_settings_holidays():
    """With holidays FR, a business-day step skips French public holidays (May 1 2026)."""
    steps = (step(1, 1, "business_days"),)
    model = make_model([order(start=D(2026, 4, 30))], steps=steps)
    assert run(model, D(2026, 5, 1), holidays="") == [("O1", 1, "send", "due")]
    assert run(model, D(2026, 5, 1), holidays="FR") == []
    assert run(model, D(2026, 5, 4), holidays="FR") == [("O1", 1, "send", "due")]


# ------------------------------------------------------------------ catch-up


@pytest.mark.parametrize(
    ("catch_up_days", "today", "expected"),
    [
        (7, D(2026, 6, 13), ("O1", 1, "send", "due")),  # exactly 7 days late: still sent
        (7, D(2026, 6, 14), ("O1", 1, "skip", "missed")),  # 8 days late: missed
        (0, D(2026, 6, 6), ("O1", 1, "send", "due")),
        (0, D(2026, 6, 7), ("O1", 1, "skip", "missed")),
        (30, D(2026, 7, 6), ("O1", 1, "send", "due")),
    ],
)
def test_catch_up_days(catch_up_days, today, expected):
    """A message due more than catch_up_days before the run is skipped as missed."""
    model = make_model(steps=(step(1, 5),))
    assert run(model, today, catch_up_days=catch_up_days) == [expected]


# ------------------------------------------------------------------ superseded


def test_only_highest_step_sent_required_too_in_step_order():
    """Of several due steps only the highest is sent, plus required ones, sends in step order."""
    steps = (step(1, 1), step(2, 2, required=True), step(3, 3), step(4, 4))
    model = make_model(steps=steps)
    assert run(model, D(2026, 6, 5)) == [
        ("O1", 1, "skip", "superseded by step 4"),
        ("O1", 2, "send", "due"),
        ("O1", 3, "skip", "superseded by step 4"),
        ("O1", 4, "send", "due"),
    ]


def test_missed_steps_stay_missed_when_others_are_superseded():
    """A step past catch-up is missed, not superseded; the due ones follow the superseding rule."""
    steps = (step(1, 1), step(2, 10), step(3, 12))
    model = make_model(steps=steps)
    assert run(model, D(2026, 6, 14), catch_up_days=7) == [
        ("O1", 1, "skip", "missed"),
        ("O1", 2, "skip", "superseded by step 3"),
        ("O1", 3, "send", "due"),
    ]


def test_superseding_is_per_order():
    """Steps of different orders never supersede each other."""
    model = make_model([order("O1"), order("O2", customer_id="C2")], steps=(step(1, 5),))
    assert run(model, D(2026, 6, 6)) == [("O1", 1, "send", "due"), ("O2", 1, "send", "due")]


# ------------------------------------------------------------------ who gets nothing

BOTH_DUE = D(2026, 6, 11)  # steps 1 and 2 due within catch-up, step 3 not yet


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, [("O1", 1, "skip", "superseded by step 2"), ("O1", 2, "send", "due")]),
        ({"status": "paused"}, []),
        ({"status": "cancelled"}, []),
        ({"status": "done"}, []),
        ({"customer_id": "C404"}, []),
        ({"plan": "another plan"}, []),
        ({"hold_steps": frozenset({2})}, [("O1", 1, "send", "due")]),
        ({"hold_steps": frozenset({1, 2})}, []),
    ],
)
def test_orders_that_send_nothing(change, expected):
    """Paused, cancelled, done, unknown customer or plan send nothing; held steps are left out."""
    model = make_model([order()._replace(**change)])
    assert run(model, BOTH_DUE) == expected


def test_opted_out_customer_gets_nothing():
    """A customer who opted out gets no message."""
    customers = [Customer("C1", "Alice", (EMAIL,), opt_out=True)]
    assert run(make_model(customers=customers), BOTH_DUE) == []


def test_inactive_step_is_left_out():
    """An inactive plan step is never decided, and does not supersede the others."""
    steps = (step(1, 5), step(2, 10, active=False), step(3, 1, "months"))
    assert run(make_model(steps=steps), BOTH_DUE) == [("O1", 1, "send", "due")]


def test_resumed_order_sends_what_is_due_within_catch_up():
    """A paused order sends nothing; resumed, it sends what is due like any active order."""
    paused = make_model([order(status="paused")], steps=(step(1, 5),))
    active = make_model([order()], steps=(step(1, 5),))
    assert run(paused, D(2026, 6, 8)) == []
    assert run(active, D(2026, 6, 8)) == [("O1", 1, "send", "due")]
    assert run(active, D(2026, 6, 20)) == [("O1", 1, "skip", "missed")]


# ------------------------------------------------------------------ the ledger

WITHIN = D(2026, 6, 8)  # step 1 due June 6: 2 days late
PAST = D(2026, 6, 20)  # 14 days late


@pytest.mark.parametrize(
    ("state", "emails", "today", "expected"),
    [
        ("sent", EMAIL, WITHIN, []),
        ("sent", EMAIL, PAST, []),
        ("skipped", EMAIL, WITHIN, []),
        ("uncertain", EMAIL, WITHIN, []),
        ("sending", EMAIL, WITHIN, []),
        ("sent", "old@example.com", WITHIN, []),  # an address change never resends a sent one
        ("failed", EMAIL, WITHIN, [("O1", 1, "send", "retry")]),
        ("failed", EMAIL, PAST, [("O1", 1, "skip", "missed")]),
        ("failed_permanent", EMAIL, WITHIN, []),
        ("failed_permanent", EMAIL, PAST, []),
        ("failed_permanent", "old@example.com", WITHIN, [("O1", 1, "send", "address changed")]),
        ("failed_permanent", "old@example.com", PAST, [("O1", 1, "skip", "missed")]),
        ("waiting", "", WITHIN, [("O1", 1, "send", "due")]),
        ("waiting", "", PAST, [("O1", 1, "send", "due")]),  # waiting is never missed
    ],
)
def test_ledger_states(state, emails, today, expected):
    """Sent, skipped, uncertain and sending are final; failures retry or wait for a new address."""
    model = make_model(steps=(step(1, 5),))
    assert run(model, today, entry(state, emails=emails)) == expected


def test_address_compare_uses_every_address_in_order():
    """The addresses compared are the customer's list joined with ';', as the ledger keeps them."""
    customers = [Customer("C1", "Alice", ("a@x.fr", "b@x.fr"))]
    model = make_model(customers=customers, steps=(step(1, 5),))
    assert run(model, WITHIN, entry("failed_permanent", emails="a@x.fr;b@x.fr")) == []
    assert run(model, WITHIN, entry("failed_permanent", emails="a@x.fr")) == [
        ("O1", 1, "send", "address changed")
    ]


def test_sent_higher_step_does_not_block_lower_due_step_decisions():
    """Superseding looks only at the messages left to send in this run."""
    ledger = entry("sent", step_number=2)
    assert run(make_model(), BOTH_DUE, ledger) == [("O1", 1, "send", "due")]


def test_retry_is_superseded_by_a_newer_due_step():
    """A temporary failure due again with a higher step is superseded like any due message."""
    ledger = entry("failed", step_number=1)
    assert run(make_model(), BOTH_DUE, ledger) == [
        ("O1", 1, "skip", "superseded by step 2"),
        ("O1", 2, "send", "due"),
    ]


# ------------------------------------------------------------------ daily limit


def five_orders() -> Model:
    """O1..O5 starting June 1..5, one 5-day step: due June 6..10."""
    return make_model(
        [order(f"O{i}", START + dt.timedelta(days=i - 1)) for i in range(1, 6)],
        steps=(step(1, 5),),
    )


@pytest.mark.parametrize(
    ("limit", "sent_today", "sends"),
    [
        (None, 0, ["O1", "O2", "O3", "O4", "O5"]),
        (3, 0, ["O1", "O2", "O3"]),
        (3, 1, ["O1", "O2"]),
        (3, 3, []),
        (3, 9, []),
        (0, 0, []),
        (10, 0, ["O1", "O2", "O3", "O4", "O5"]),
    ],
)
def test_daily_limit_sends_oldest_first(limit, sent_today, sends):
    """daily_limit counts today's earlier sends; the rest wait, the oldest due sent first."""
    out = run(five_orders(), D(2026, 6, 10), daily_limit=limit, sent_today=sent_today)
    assert [o for o, _s, action, _r in out if action == "send"] == sends
    waits = [(o, r) for o, _s, action, r in out if action == "wait"]
    assert waits == [(o, REASON_LIMIT) for o in ["O1", "O2", "O3", "O4", "O5"] if o not in sends]


def test_daily_limit_ties_break_on_order_then_step():
    """Messages due the same day are taken by order id, then step number."""
    steps = (step(1, 5, required=True), step(2, 5))
    model = make_model([order("O2"), order("O1")], steps=steps)
    out = run(model, D(2026, 6, 6), daily_limit=3)
    assert out == [
        ("O1", 1, "send", "due"),
        ("O1", 2, "send", "due"),
        ("O2", 1, "send", "due"),
        ("O2", 2, "wait", REASON_LIMIT),
    ]


def test_waiting_messages_are_not_missed_later():
    """A message that waited for the daily limit is still sent long after catch-up."""
    model = five_orders()
    ledger: dict = {}
    day = D(2026, 6, 10)
    sent_days: dict[str, D] = {}
    for _ in range(30):
        for d in decide(model, ledger, today=day, settings=conf(daily_limit=1,
                                                                 catch_up_days=4)):
            ledger[message_key(d.order_id, d.step)] = record(d, model)
            assert d.reason != "missed"
            if d.action == "send":
                sent_days[d.order_id] = day
        day += dt.timedelta(days=7)  # runs a week apart: everything is long past catch-up
    assert sent_days == {f"O{i}": D(2026, 6, 10) + dt.timedelta(days=7 * (i - 1))
                         for i in range(1, 6)}


def test_apply_daily_limit_keeps_skips():
    """The daily limit only turns sends into waits; skips stay skips."""
    skip = Decision("O1", "C1", KEY, PLAN, 1, START, "skip", "missed")
    send = Decision("O1", "C1", KEY, PLAN, 2, START, "send", "due")
    assert apply_daily_limit([skip, send], 0) == [
        skip, send._replace(action="wait", reason=REASON_LIMIT)
    ]


# ------------------------------------------------------------------ shape of the result


def test_decisions_sorted_and_carry_names():
    """Decisions come sorted by (due date, order id, step) and carry plan key and display name."""
    model = make_model([order("O2", D(2026, 6, 1)), order("O1", D(2026, 6, 3))],
                       steps=(step(1, 5, required=True), step(2, 6)))
    decisions = decide(model, {}, today=D(2026, 6, 9), settings=conf())
    assert [(d.due_date, d.order_id, d.step) for d in decisions] == sorted(
        (d.due_date, d.order_id, d.step) for d in decisions
    )
    assert {(d.plan, d.plan_name, d.customer_id) for d in decisions} == {(KEY, PLAN, "C1")}


def test_decide_order_alone():
    """decide_order decides one order's messages without the daily limit."""
    model = make_model()
    out = decide_order(model.orders[0], model.customers["C1"], model.plans[KEY], {},
                       today=BOTH_DUE, catch_up_days=7, calendar=business_calendar("", None))
    assert [(d.step, d.action) for d in out] == [(1, "skip"), (2, "send")]


# ------------------------------------------------------------------ forecast


def test_forecast_runs_day_by_day():
    """forecast shows each message once, on the run day it goes out, as if every run sent it."""
    model = make_model()
    out = forecast(model, {}, start=D(2026, 6, 1), days=40, settings=conf())
    assert [(day, d.step, d.action) for day, d in out] == [
        (D(2026, 6, 6), 1, "send"),
        (D(2026, 6, 11), 2, "send"),
        (D(2026, 7, 1), 3, "send"),
    ]


def test_forecast_waits_for_the_daily_limit_and_starts_from_the_ledger():
    """forecast carries waits to the next days and leaves out what the ledger already has."""
    ledger = entry("sent", order_id="O1")
    out = forecast(five_orders(), ledger, start=D(2026, 6, 10), days=5,
                   settings=conf(daily_limit=2))
    sends = [(day.day, d.order_id) for day, d in out if d.action == "send"]
    assert sends == [(10, "O2"), (10, "O3"), (11, "O4"), (11, "O5")]
    assert [(day.day, d.order_id) for day, d in out if d.action == "wait"] == [(10, "O4"),
                                                                            (10, "O5")]


# ------------------------------------------------------------------ properties

BASE = D(2026, 3, 2)
OUTCOMES = ("sent", "failed", "failed_permanent", "uncertain")


@st.composite
def worlds(draw):
    """A small model: one plan of 1-4 steps, 1-4 orders of 2 customers, random flags."""
    n_steps = draw(st.integers(1, 4))
    steps = tuple(
        step(
            n,
            draw(st.sampled_from([0, 1, 3, 5, 10, 20])),
            draw(st.sampled_from(["days", "business_days", "weeks"])),
            required=draw(st.booleans()),
            active=draw(st.booleans()) or n == 1,
        )
        for n in range(1, n_steps + 1)
    )
    orders = [
        order(
            f"O{i}",
            BASE + dt.timedelta(days=draw(st.integers(0, 20))),
            customer_id=draw(st.sampled_from(["C1", "C2"])),
            status=draw(st.sampled_from(["active", "active", "active", "paused"])),
            hold_steps=frozenset(draw(st.sets(st.integers(1, 4), max_size=1))),
        )
        for i in range(1, draw(st.integers(1, 4)) + 1)
    ]
    opt_out = draw(st.booleans()) and draw(st.booleans())
    customers = [Customer("C1", "A", ("a@x.fr",)), Customer("C2", "B", ("b@x.fr",), opt_out)]
    return make_model(orders, steps=steps, customers=customers)


def eligible(model: Model) -> dict[tuple[str, int], D]:
    """Every message a run may ever act on, with its due date."""
    out = {}
    for o in model.orders:
        customer = model.customers[o.customer_id]
        if o.status != "active" or customer.opt_out:
            continue
        for s in model.plans[o.plan].steps:
            due = due_date(s, o, None)
            if s.active and s.number not in o.hold_steps and due is not None:
                out[message_key(o.order_id, s.number)] = due
    return out


@settings(max_examples=150, deadline=None)
@given(
    model=worlds(),
    run_days=st.lists(st.integers(0, 90), min_size=1, max_size=12, unique=True).map(sorted),
    limit=st.none() | st.integers(0, 3),
    catch_up=st.integers(0, 6),
    data=st.data(),
)
def test_never_sent_twice_and_limit_respected(model, run_days, limit, catch_up, data):
    """Across any runs and outcomes a message succeeds at most once; runs respect the limit."""
    ledger: dict = {}
    final: set = set()
    delivered: Counter = Counter()
    for offset in run_days:
        sent_today = data.draw(st.integers(0, 2))
        # Now and then a customer changes address, which re-opens permanent failures only.
        if data.draw(st.booleans()):
            c2 = model.customers["C2"]
            customers = dict(model.customers, C2=dataclasses.replace(c2, emails=("new@x.fr",)))
            model = dataclasses.replace(model, customers=customers)
        decisions = decide(model, ledger, today=BASE + dt.timedelta(days=offset),
                           settings=conf(daily_limit=limit, catch_up_days=catch_up),
                           sent_today=sent_today)
        # The ledger file's packed state decides the same as the plain entries.
        assert decide(model, LedgerSnapshot.of(ledger), today=BASE + dt.timedelta(days=offset),
                      settings=conf(daily_limit=limit, catch_up_days=catch_up),
                      sent_today=sent_today) == decisions
        keys = [message_key(d.order_id, d.step) for d in decisions]
        assert len(keys) == len(set(keys))
        assert decisions == sorted(decisions, key=lambda d: (d.due_date, d.order_id, d.step))
        sends = [d for d in decisions if d.action == "send"]
        if limit is not None:
            assert len(sends) <= max(0, limit - sent_today)
        for d, key in zip(decisions, keys, strict=True):
            assert key not in final
            new = record(d, model)
            if d.action == "send":
                outcome = data.draw(st.sampled_from(OUTCOMES))
                new = dataclasses.replace(new, state=outcome)
                if outcome in ("sent", "uncertain"):
                    delivered[key] += 1
            if new.state in ("sent", "uncertain", "skipped"):
                final.add(key)
            ledger[key] = new
    assert all(count == 1 for count in delivered.values())


@settings(max_examples=100, deadline=None)
@given(model=worlds(), limit=st.none() | st.integers(1, 2), catch_up=st.integers(0, 6))
def test_every_message_ends_sent_or_skipped(model, limit, catch_up):
    """Run every day: each due message is decided until it is sent or skipped, never lost."""
    messages = eligible(model)
    ledger: dict = {}
    horizon = max(messages.values(), default=BASE) + dt.timedelta(days=len(messages) + 2)
    day = BASE
    while day <= horizon:
        decisions = decide(model, ledger, today=day,
                           settings=conf(daily_limit=limit, catch_up_days=catch_up))
        decided = {message_key(d.order_id, d.step) for d in decisions}
        pending = {k for k, due in messages.items() if due <= day
                   and ledger.get(k, LedgerEntry(k[0], KEY, k[1], "waiting")).state
                   == "waiting"}
        assert pending <= decided  # nothing due and unfinished is silently dropped
        assert decided <= set(messages)  # and nothing else is decided
        for d in decisions:
            ledger[message_key(d.order_id, d.step)] = record(d, model)
        day += dt.timedelta(days=1)
    assert set(ledger) == set(messages)
    assert {e.state for e in ledger.values()} <= {"sent", "skipped"}


@settings(max_examples=100, deadline=None)
@given(model=worlds(), limit=st.none() | st.integers(0, 2), first=st.integers(0, 40),
       days=st.integers(0, 30), done=st.integers(0, 40))
def test_forecast_matches_running_every_day(model, limit, first, days, done):
    """forecast equals deciding on every day in turn with the whole model and the ledger."""
    conf_ = conf(daily_limit=limit)
    # A ledger that already holds some history: the runs of the first `done` days.
    ledger: dict = {}
    for offset in range(done):
        for d in decide(model, ledger, today=BASE + dt.timedelta(days=offset), settings=conf_):
            ledger[message_key(d.order_id, d.step)] = record(d, model)
    start = BASE + dt.timedelta(days=done + first)
    expected = []
    state = dict(ledger)
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        for d in decide(model, state, today=day, settings=conf_):
            expected.append((day, d))
            state[message_key(d.order_id, d.step)] = record(d, model)
    assert forecast(model, ledger, start=start, days=days, settings=conf_) == expected
    assert forecast(model, LedgerSnapshot.of(ledger), start=start, days=days,
                    settings=conf_) == expected


# ------------------------------------------------------------------ mails that cannot be built


class Blocked:
    """A Readiness that says some steps cannot be built for every order, and some for one
    order only (as an empty cell would)."""

    def __init__(self, steps: dict[int, str], orders: dict[tuple[str, int], str]) -> None:
        self.steps, self.orders = steps, orders

    def step_wait(self, plan_key: str, step: Step) -> str | None:
        return self.steps.get(step.number)

    def reads_values(self, plan_key: str, step: Step) -> bool:
        return any(number == step.number for _o, number in self.orders)

    def order_wait(self, order: Order, customer: Customer, plan: Plan, step: Step,
                   due: D) -> str | None:
        return self.orders.get((order.order_id, step.number))


def test_a_step_that_cannot_be_built_waits_and_supersedes_nothing():
    """The highest step that can be built is sent; steps above it wait with their reason,
    lower ones are superseded by it, required ones are sent (or wait) all the same."""
    steps = (step(1, 1), step(2, 2, required=True), step(3, 3), step(4, 4))
    model = make_model([order("O1"), order("O2")], steps=steps)
    ready = Blocked({4: "the body uses x"}, {("O1", 3): "waiting for delivery",
                                             ("O2", 2): "waiting for amount"})
    decisions = decide(model, {}, today=D(2026, 6, 5), settings=conf(), ready=ready)
    assert sorted((d.order_id, d.step, d.action, d.reason) for d in decisions) == [
        ("O1", 1, "skip", "superseded by step 2"),
        ("O1", 2, "send", "due"),
        ("O1", 3, "wait", "waiting for delivery"),
        ("O1", 4, "wait", "the body uses x"),
        ("O2", 1, "skip", "superseded by step 3"),
        ("O2", 2, "wait", "waiting for amount"),
        ("O2", 3, "send", "due"),
        ("O2", 4, "wait", "the body uses x"),
    ]


def test_a_waiting_step_is_decided_again_each_day_until_missed():
    """A mail that cannot be built is decided again each day (nothing is kept for it, unlike
    a daily_limit wait): a later step supersedes it, or it is missed after catch-up."""
    ready = Blocked({}, {("O1", 1): "waiting for delivery"})
    days = forecast(make_model(), {}, start=D(2026, 6, 6), days=6, settings=conf(),
                    ready=ready)
    assert [(day.day, d.step, d.action, d.reason) for day, d in days] == [
        *((n, 1, "wait", "waiting for delivery") for n in range(6, 11)),
        (11, 1, "skip", "superseded by step 2"),
        (11, 2, "send", "due"),
    ]
    only_step_1 = make_model(steps=(step(1, 5),))
    days = forecast(only_step_1, {}, start=D(2026, 6, 13), days=2, settings=conf(),
                    ready=ready)
    assert [(day.day, d.action, d.reason) for day, d in days] == [
        (13, "wait", "waiting for delivery"), (14, "skip", "missed")]
