"""Every variable a mail may use, with an example value, for `commplan variables`."""

from __future__ import annotations

import datetime as dt

from commplan_xl.run import batch

BUILT_IN = (
    ("plan.name", "the plan's name"),
    ("step.number", "the step's number (1-10)"),
    ("step.due_date", "the day the message is due (use |date for a French date)"),
    ("today", "the day of the run"),
    ("sender.name", "sender_name of Settings"),
    ("sender.email", "sender_email of Settings"),
)


def _show(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.strftime("%d/%m/%Y %H:%M")
    if isinstance(value, dt.date):
        return value.strftime("%d/%m/%Y")
    return str(value)


def variable_list(site: batch.Site) -> list[tuple[str, str, str]]:
    """(name, example, description) for every built-in, column and site constant."""
    model, s = site.model, site.settings
    order = model.orders[0] if model.orders else None
    customer = model.customers.get(order.customer_id) if order else None
    if customer is None and model.customers:
        customer = next(iter(model.customers.values()))
    plan = model.plans.get(order.plan) if order else None
    today = batch.today_in(s)
    due_example = today
    if order and plan and plan.steps:
        from commplan_xl.core.offsets import due_date
        from commplan_xl.core.schedule import settings_calendar

        due_example = due_date(plan.steps[0], order, settings_calendar(s)) or today
    examples = {
        "plan.name": plan.name if plan else "Baie vitrée",
        "step.number": str(plan.steps[0].number) if plan and plan.steps else "1",
        "step.due_date": _show(due_example),
        "today": _show(today),
        "sender.name": s.sender_name,
        "sender.email": s.sender_email,
    }
    rows = [(name, examples[name], desc) for name, desc in BUILT_IN]
    if customer is not None:
        for column, value in customer.fields.items():
            rows.append((f"customer.{column}", _show(value), "Customers column"))
    if order is not None:
        for column, value in order.fields.items():
            rows.append((f"order.{column}", _show(value), "Orders column"))
    from commplan_xl.mail.render import ALIASES

    for alias, name in ALIASES.items():
        rows.append((f"{alias}.…", "", f"the same as {name}.… ({alias}.x is {name}.x)"))
    for name, value in model.constants.items():
        rows.append((name, value, "Variables sheet"))
    return rows
