"""Whether a due mail can be built, as `run` would build it, answered for `due` and `run`
alike (schedule.Readiness): each plan step is checked once (templates read against the
workbook's columns, attachments, layout), each order only for what depends on its values
(an empty cell it prints, a value a filter must format), rendering it only then."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from commplan_xl.model import Customer, Model, Order, Plan, RowFields, Step
from commplan_xl.problems import CommplanError
from commplan_xl.settings import Settings

if TYPE_CHECKING:
    from commplan_xl.mail.render import RenderError

# Cells validation never leaves empty: no need to look for empty ones.
_NEVER_EMPTY = {"order": {"order_id", "customer_id", "plan"},
                "customer": {"customer_id", "name", "email"}}


@dataclass
class StepCheck:
    """What one plan step needs, found once."""

    problems: list[tuple[str, str]]  # (column of Plans, sentence): subject, body, …
    order_cells: tuple[str, ...] = ()  # Orders columns it prints
    customer_cells: tuple[str, ...] = ()
    formatted: tuple[tuple[str, str, str], ...] = ()  # (namespace, column, filter)
    whole: bool = False  # uses `order` or `customer` otherwise than by column: render
    empty_rows: frozenset[int] | None = None  # Orders value rows with an empty cell used
    empty_customers: frozenset[str] = frozenset()


class Readiness:
    """schedule.Readiness for one site: answers `due`, `run`, `check` and the Forecast."""

    def __init__(self, model: Model, settings: Settings, *,
                 columns: Mapping[str, Iterable[str]] | None = None) -> None:
        """`columns`: the header of each sheet ("orders", "customers"), when known (an
        empty sheet still has its columns); else the first row's."""
        from commplan_xl.mail.template_check import known_names

        self.model = model
        self.settings = settings
        first_order = model.orders[0] if model.orders else None
        first_customer = next(iter(model.customers.values()), None)
        self.columns: Mapping[str, Sequence[Any]] | None = None  # the Orders columns
        if first_order is not None and type(first_order.fields) is RowFields:
            self.columns = first_order.fields._columns
        headers = columns or {}
        self.known = known_names(
            [*headers.get("customers", ()),
             *(first_customer.fields if first_customer is not None else ())],
            [*headers.get("orders", ()),
             *(first_order.fields if first_order is not None else ())],
            model.constants)
        self._steps: dict[tuple[str, int], StepCheck] = {}
        self._empty_by_column: dict[str, frozenset[int]] = {}
        self._empty_by_customer_column: dict[str, frozenset[str]] = {}
        self._layout: Any = None

    # ------------------------------------------------------------ once per step

    @property
    def layout(self) -> Any:
        if self._layout is None:
            from commplan_xl.mail.layout import load_layout

            self._layout = load_layout(self.settings)
        return self._layout

    def check(self, plan_key: str, step: Step) -> StepCheck:
        """The step's StepCheck, made on first use."""
        key = (plan_key, step.number)
        found = self._steps.get(key)
        if found is None:
            found = self._steps[key] = self._make_check(step)
        return found

    def _make_check(self, step: Step) -> StepCheck:
        from jinja2 import TemplateSyntaxError

        from commplan_xl.mail.render import environment
        from commplan_xl.mail.template_check import ALIASES, template_problems, template_use

        env = environment(self.settings.locale)
        sources = [("subject", step.subject), ("body", step.body)]
        signature = self.layout.signature
        if signature.strip():
            sources.append(("signature", signature))
        problems: list[tuple[str, str]] = []
        order_cells: set[str] = set()
        customer_cells: set[str] = set()
        formatted: set[tuple[str, str, str]] = set()
        whole = False
        for part, source in sources:
            column = part if part != "signature" else "value"
            problems += [(column, p) for p in
                         template_problems(source, part, self.known, env.filters, env.tests)]
            try:
                use = template_use(source)
            except TemplateSyntaxError:
                continue
            order_cells.update(use.cells("order"))
            customer_cells.update(use.cells("customer"))
            formatted |= {(ALIASES.get(n, n), column, name) for n, column, name in use.filtered
                          if name in ("date", "money")}
            whole = whole or bool(use.whole)
        if self.layout.problem:
            problems.append(("layout", self.layout.problem))
        problems += self._attachment_problems(step)
        check = StepCheck(problems, tuple(sorted(order_cells - _NEVER_EMPTY["order"])),
                          tuple(sorted(customer_cells - _NEVER_EMPTY["customer"])),
                          tuple(sorted(formatted)), whole)
        self._find_empty(check)
        return check

    def _attachment_problems(self, step: Step) -> list[tuple[str, str]]:
        from commplan_xl.mail.attachments import attachment_file

        out = []
        for name in step.attachments:
            try:
                attachment_file(self.settings.attachments_dir, name, step.row)
            except CommplanError as exc:
                out.append(("attachments", str(exc)))
        return out

    def _find_empty(self, check: StepCheck) -> None:
        """The orders (by value row) and customers with an empty cell the step prints."""
        if self.columns is not None:
            rows: set[int] = set()
            for column in check.order_cells:
                rows |= self._empty_rows(column)
            check.empty_rows = frozenset(rows)
        customers: set[str] = set()
        for column in check.customer_cells:
            customers |= self._empty_customers(column)
        check.empty_customers = frozenset(customers)

    def _empty_customers(self, column: str) -> frozenset[str]:
        found = self._empty_by_customer_column.get(column)
        if found is None:
            found = self._empty_by_customer_column[column] = frozenset(
                cid for cid, c in self.model.customers.items()
                if _is_empty(c.fields.get(column)))
        return found

    def _empty_rows(self, column: str) -> frozenset[int]:
        found = self._empty_by_column.get(column)
        if found is None:
            values = self.columns.get(column) if self.columns is not None else None
            found = frozenset()
            if values is not None:
                blanks = {v for v in set(values) if _is_empty(v)}
                if blanks:
                    found = frozenset(i for i, v in enumerate(values) if v in blanks)
            self._empty_by_column[column] = found
        return found

    def step_wait(self, plan_key: str, step: Step) -> str | None:
        problems = self.check(plan_key, step).problems
        return problems[0][1] if problems else None

    def reads_values(self, plan_key: str, step: Step) -> bool:
        check = self.check(plan_key, step)
        if check.whole or check.formatted or check.empty_customers:
            return True
        if check.order_cells:
            return check.empty_rows is None or bool(check.empty_rows)
        return False

    # ------------------------------------------------------------ per order

    def order_wait(self, order: Order, customer: Customer, plan: Plan, step: Step,
                   due: dt.date) -> str | None:
        failure = self.order_failure(order, customer, plan, step, due)
        return None if failure is None else str(failure)

    def order_failure(self, order: Order, customer: Customer, plan: Plan, step: Step,
                      due: dt.date) -> RenderError | None:
        """Why this order's mail of the step cannot be made (its part and sentence), or
        None; rendered only when a cell it uses may be empty or unformattable."""
        check = self.check(plan.key, step)
        if not (check.whole or self._has_empty(check, order, customer)
                or self._unformattable(check, order, customer)):
            return None
        return self.render_failure(order, customer, plan, step, due)

    def _has_empty(self, check: StepCheck, order: Order, customer: Customer) -> bool:
        if customer.customer_id in check.empty_customers:
            return True
        fields = order.fields
        if check.empty_rows is not None and type(fields) is RowFields \
                and fields._columns is self.columns:
            return fields._index in check.empty_rows
        return any(_is_empty(fields.get(col)) and order.dates.get(col) is None
                   for col in check.order_cells)

    @staticmethod
    def _unformattable(check: StepCheck, order: Order, customer: Customer) -> bool:
        """Whether a cell given to `date` or `money` may not read as one (render to know)."""
        for namespace, column, name in check.formatted:
            fields = order.fields if namespace == "order" else customer.fields
            value = fields.get(column)
            if namespace == "order" and isinstance(order.dates.get(column), dt.date):
                continue
            if not _formattable(value, name):
                return True
        return False

    def render_problem(self, order: Order, customer: Customer, plan: Plan, step: Step,
                       due: dt.date, today: dt.date | None = None) -> str | None:
        """Render the step's subject, body and signature for this order: None when they
        render, else why not ("waiting for X" for an empty cell)."""
        failure = self.render_failure(order, customer, plan, step, due, today)
        return None if failure is None else str(failure)

    def render_failure(self, order: Order, customer: Customer, plan: Plan, step: Step,
                       due: dt.date, today: dt.date | None = None) -> RenderError | None:
        """The render error of this order's mail of the step (it carries its part), or None."""
        from commplan_xl.mail.render import RenderError, build_context, render_message

        s = self.settings
        context = build_context(
            order=order, customer=customer, plan_name=plan.name, step_number=step.number,
            due_date=due, today=today or due, sender_name=s.sender_name,
            sender_email=s.sender_email, constants=self.model.constants)
        try:
            render_message(step, context, locale=s.locale, html=False, layout=self.layout)
        except RenderError as exc:
            return exc
        return None


def _is_empty(value: Any) -> bool:
    return value is None or (type(value) is str and not value.strip())


def _formattable(value: Any, filter_name: str) -> bool:
    """Whether `date` or `money` surely formats `value` (an empty one waits anyway)."""
    if _is_empty(value):
        return True
    if filter_name == "date":
        if isinstance(value, dt.date):
            return True
        from commplan_xl.excel.read import parse_date

        try:
            parse_date(value)
        except (ValueError, TypeError):
            return False
        return True
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return True
    from commplan_xl.mail.render import FilterError, parse_amount

    try:
        parse_amount(value)
    except FilterError:
        return False
    return True
