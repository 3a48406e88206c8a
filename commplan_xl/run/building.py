"""One message of a plan step made for one order: rendered, built, ready to send.

`prepare` is what the run, the dry run, `preview` and `resend` share; a run passes one
`RunCache` for all its messages.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from commplan_xl.i18n import _
from commplan_xl.model import Customer, Decision, Order, Plan, Step, norm_key
from commplan_xl.problems import CommplanError
from commplan_xl.run.site import Site

if TYPE_CHECKING:
    from commplan_xl.mail.message import AttachmentCache, BuiltMessage


def _attachment_cache() -> AttachmentCache:
    from commplan_xl.mail.message import AttachmentCache  # not at import: the CLI starts lighter

    return AttachmentCache()


@dataclass
class RunCache:
    """What a run works out once for all its messages: each step's checked attachment
    paths (by Plans row) and each attachment file, read and encoded."""

    paths: dict[int, list[Path]] = field(default_factory=dict)
    files: AttachmentCache = field(default_factory=_attachment_cache)


@dataclass(frozen=True)
class Prepared:
    """One message ready to send: its exact bytes and where it goes."""

    order: Order
    customer: Customer
    plan: Plan
    step: Step
    due_date: dt.date
    subject: str
    to: tuple[str, ...]
    message: BuiltMessage  # reads like an email.message.EmailMessage
    data: bytes


def find_step(site: Site, order_id: str, step_number: int) -> tuple[Order, Customer, Plan, Step]:
    """The order, its customer, plan and step, or a sentence saying what is missing."""
    key = norm_key(order_id)
    order = next((o for o in site.model.orders if norm_key(o.order_id) == key), None)
    if order is None:
        from commplan_xl.excel.names import sheet_key

        if any(sheet_key(p.sheet) == "orders" for p in site.problems):
            raise CommplanError(_('There is no order "{order}" in the Orders sheet (the Orders '
                                  "sheet has problems: run `commplan check`).").format(
                                      order=order_id))
        raise CommplanError(_('There is no order "{order}" in the Orders sheet.').format(
            order=order_id))
    plan = site.model.plans.get(order.plan)
    if plan is None:
        raise CommplanError(_('Order {order} uses plan "{plan}", which is not in Plans.').format(
            order=order.order_id, plan=order.plan))
    step = next((s for s in plan.steps if s.number == step_number), None)
    if step is None:
        numbers = ", ".join(str(s.number) for s in plan.steps)
        raise CommplanError(_('Plan "{plan}" has no step {step} (its steps are {numbers}).')
                            .format(plan=plan.name, step=step_number, numbers=numbers))
    customer = site.model.customers.get(order.customer_id)
    if customer is None:
        raise CommplanError(_("Order {order}'s customer {customer} is not in Customers.").format(
            order=order.order_id, customer=order.customer_id))
    return order, customer, plan, step


def prepare(
    site: Site,
    order: Order,
    customer: Customer,
    plan: Plan,
    step: Step,
    *,
    due_date: dt.date,
    today: dt.date,
    to: tuple[str, ...] | None = None,
    cache: RunCache | None = None,
) -> Prepared:
    """Render and build one message; raises CommplanError with a sentence if it cannot.
    A run passes one `cache` for all its messages."""
    from commplan_xl.mail.attachments import attachment_file
    from commplan_xl.mail.layout import load_layout
    from commplan_xl.mail.message import build_message, message_bytes
    from commplan_xl.mail.render import build_context, render_message

    s = site.settings
    context = build_context(
        order=order, customer=customer, plan_name=plan.name, step_number=step.number,
        due_date=due_date, today=today, sender_name=s.sender_name, sender_email=s.sender_email,
        constants=site.model.constants,
    )
    rendered = render_message(step, context, locale=s.locale, layout=load_layout(s))
    paths = cache.paths.get(step.row) if cache is not None else None
    if paths is None:
        paths = [attachment_file(s.attachments_dir, name, step.row)
                 for name in step.attachments]
        if cache is not None:
            cache.paths[step.row] = paths
    recipients = to if to is not None else customer.emails
    msg = build_message(
        rendered=rendered, sender_email=s.sender_email, sender_name=s.sender_name,
        reply_to=s.reply_to, to=list(recipients), attachments=paths,
        cache=cache.files if cache is not None else None,
    )
    return Prepared(order, customer, plan, step, due_date, rendered.subject, tuple(recipients),
                    msg, message_bytes(msg))


def parts(site: Site, orders: Mapping[str, Order], d: Decision
           ) -> tuple[Order, Customer, Plan, Step]:
    """The order, customer, plan and step a decision is about (`orders` by id)."""
    order = orders[d.order_id]
    plan = site.model.plans[d.plan]
    step = next(st for st in plan.steps if st.number == d.step)
    return order, site.model.customers[order.customer_id], plan, step
