"""Every variable a mail may use, with an example value, for `commplan variables`."""

from __future__ import annotations

import datetime as dt

from commplan_xl.i18n import N_, _
from commplan_xl.model import Customer, Order, Plan
from commplan_xl.run.site import Site, today_in

VARIABLE_LIST = "VariableList"  # the tool sheet listing them
VARIABLE_LIST_HEADER = ("variable", "example", "description")

BUILT_IN = (
    ("plan.name", N_("the plan's name")),
    ("step.number", N_("the step's number (1-10)")),
    ("step.due_date", N_("the day the message is due (use |date for a date in words)")),
    ("today", N_("the day of the run")),
    ("sender.name", N_("sender_name of Settings")),
    ("sender.email", N_("sender_email of Settings")),
)


def _show(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.strftime("%d/%m/%Y %H:%M")
    if isinstance(value, dt.date):
        return value.strftime("%d/%m/%Y")
    return str(value)


def variable_list(site: Site) -> list[tuple[str, str, str]]:
    """(name, example, description) for every built-in, column and site constant."""
    model, s = site.model, site.settings
    order = model.orders[0] if model.orders else None
    customer = model.customers.get(order.customer_id) if order else None
    if customer is None and model.customers:
        customer = next(iter(model.customers.values()))
    plan = model.plans.get(order.plan) if order else None
    today = today_in(s)
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
    rows = [(name, examples[name], _(desc)) for name, desc in BUILT_IN]
    if customer is not None:
        for column, value in customer.fields.items():
            rows.append((f"customer.{column}", _show(value), _("Customers column")))
    if order is not None:
        for column, value in order.fields.items():
            rows.append((f"order.{column}", _show(value), _("Orders column")))
    from commplan_xl.mail.render import ALIASES

    for alias, name in ALIASES.items():
        rows.append((f"{alias}.…", "", _("the same as {name}.… ({alias}.x is {name}.x)").format(
            name=name, alias=alias)))
    for name, value in model.constants.items():
        rows.append((name, value, _("Variables sheet")))
    return rows


EXAMPLE_ORDERS = 200  # the orders looked at for an example value of each column


def _placeholder(column: str) -> str:
    return f"[{column}]"


def _filled(value: object) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def example_parts(site: Site, plan: Plan, start: dt.date) -> tuple[Order, Customer]:
    """An order of `plan` whose dates are all `start`, with an example value in each
    column (the first filled one among the plan's orders, else "[column]"), and its
    customer: what `commplan plan` renders subjects with."""
    model = site.model
    orders = [o for o in model.orders if o.plan == plan.key] or list(model.orders)
    sample = orders[:EXAMPLE_ORDERS]
    # The header's columns (an empty sheet has them too) and each under its own name.
    columns = list(dict.fromkeys([*site.letters.get("orders", {}),
                                  *(sample[0].fields if sample else ())]))
    fields: dict[str, object] = {}
    for column in columns:
        found = (o.fields.get(column) for o in sample)
        fields[column] = next((v for v in found if _filled(v)), _placeholder(column))
    dates = {column: start for column in {"start_date", *(s.from_column for s in plan.steps)}}
    fields.update(dates)
    order_id = str(fields.get("order_id") or "[order_id]")
    customer = model.customers.get(sample[0].customer_id) if sample else None
    if customer is None:
        customer = next(iter(model.customers.values()), None)
    if customer is None:
        customer = Customer(customer_id="[customer_id]", name="[name]", emails=("[email]",))
    customer_columns = list(dict.fromkeys([*site.letters.get("customers", {}),
                                           *customer.fields]))
    customer_fields = {c: customer.fields.get(c) for c in customer_columns}
    customer_fields = {c: v if _filled(v) else _placeholder(c)
                       for c, v in customer_fields.items()}
    customer = Customer(customer_id=customer.customer_id, name=customer.name,
                        emails=customer.emails, fields=customer_fields)
    order = Order(order_id=order_id, customer_id=customer.customer_id, plan=plan.key,
                  dates=dates, fields=fields)
    return order, customer
