"""Tables → the validated Model, its Settings and every problem at once.

A row with a problem is left out of the model; every other row stays in. Each problem names
its sheet, Excel row, column and cell, in a sentence staff can act on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import keyword
import operator
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from itertools import compress, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commplan_xl.core.units import UNIT_ROWS, english_hint, parse_unit
from commplan_xl.excel.read import Table, no_gc, normalise_header, parse_date, parse_yes_no
from commplan_xl.mail.attachments import resolve_attachment
from commplan_xl.model import (
    Customer,
    Model,
    Order,
    Plan,
    RowFields,
    Status,
    Step,
    norm_key,
)
from commplan_xl.problems import WorkbookProblem
from commplan_xl.settings import Settings, parse_settings, sheet_rows, unknown_key

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "settings": ("key", "value"),
    "plans": ("plan", "step", "delay", "unit", "subject", "body"),
    "customers": ("customer_id", "name", "email"),
    "orders": ("order_id", "customer_id", "plan", "start_date"),
    "variables": ("variable", "value"),
}
SHEET_TITLES = {
    "settings": "Settings", "plans": "Plans", "customers": "Customers", "orders": "Orders",
    "variables": "Variables",
}
REQUIRED_SHEETS = ("plans", "customers", "orders")
BUILTIN_NAMES = frozenset({"customer", "order", "plan", "step", "today", "sender"})
MAX_STEP = 10


def _fold(text: str) -> str:
    """norm_key without accents: how units and statuses are compared."""
    text = unicodedata.normalize("NFKD", norm_key(text))
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def _spellings(canonical: str, *names: str) -> dict[str, str]:
    return {_fold(name): canonical for name in names}


STATUSES: dict[str, Status] = {  # type: ignore[assignment]
    **_spellings("active", "active", "actif", "active", "en cours"),
    **_spellings("paused", "paused", "pause", "en pause", "suspendu", "suspendue"),
    **_spellings("cancelled", "cancelled", "canceled", "annulé", "annulée"),
    **_spellings("done", "done", "terminé", "terminée", "fini", "finie"),
}

_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_ADDRESS_SPLIT = re.compile(r"[;,]")


def is_email(address: str) -> bool:
    """A sane check of one address (no display name, no CR/LF)."""
    return _EMAIL.fullmatch(address) is not None


# Documentation domains (RFC 2606): addresses there reach nobody, or someone who never asked.
_EXAMPLE_DOMAIN = re.compile(r"@(?:[^@]*\.)?example\.(?:com|net|org)$|\.(?:example|invalid)$")


def is_example_address(address: str) -> bool:
    """An address at a documentation domain (example.com/.net/.org and their subdomains,
    the .example and .invalid top-level domains): the tool never sends to it."""
    return _EXAMPLE_DOMAIN.search(address.lower()) is not None


def split_emails(text: str) -> list[str]:
    """The addresses of an email cell: split on ";" or ",", trimmed, lower-cased."""
    if ";" not in text and "," not in text:
        text = text.strip().lower()
        return [text] if text else []
    return [a.strip().lower() for a in _ADDRESS_SPLIT.split(text) if a.strip()]


@dataclass
class _Sheet:
    """Collects the problems of one sheet, with its Excel places."""

    table: Table
    problems: list[WorkbookProblem]

    def add(self, row: int | None, column: str | None, message: str, *,
            message_level: bool = False) -> None:
        cell = self.table.cell(column, row) if column and row is not None else ""
        self.problems.append(WorkbookProblem(
            sheet=self.table.sheet, row=row, column=column, message=message,
            cell=cell or None, message_level=message_level,
        ))


def _text(value: object) -> str:
    """A cell as text (cells are already trimmed strings or dates)."""
    if type(value) is str:
        return value
    if isinstance(value, dt.datetime):
        return value.strftime("%d/%m/%Y %H:%M")
    if isinstance(value, dt.date):
        return value.strftime("%d/%m/%Y")
    return str(value)


def _number(text: str) -> float:
    return float(text.replace(",", ".").replace(" ", "").replace("\u00a0", ""))


def _whole_step(value: object) -> int:
    """A step number 1..10 from a cell, or ValueError."""
    text = _text(value).strip()
    if not text:
        raise ValueError("The step is empty; write a whole number from 1 to 10")
    try:
        number = _number(text)
    except ValueError:
        number = -1.0
    if not number.is_integer() or not 1 <= number <= MAX_STEP:
        raise ValueError(f'"{text}" is not a step number; write a whole number from 1 to 10')
    return int(number)


def _check_sheets(tables: Mapping[str, Table], problems: list[WorkbookProblem],
                  keys: Iterable[str] = REQUIRED_COLUMNS) -> set[str]:
    """Report missing sheets, columns and repeated headers of the sheets `keys`; return the
    usable ones."""
    usable: set[str] = set()
    for key in keys:
        required = REQUIRED_COLUMNS[key]
        table = tables.get(key) if key in tables else None
        if table is None:
            if key in REQUIRED_SHEETS:
                problems.append(WorkbookProblem(
                    SHEET_TITLES[key], None, None,
                    f"The workbook has no sheet {SHEET_TITLES[key]}; add it with the columns "
                    + ", ".join(required) + " in row 1.",
                ))
            continue
        sheet = _Sheet(table, problems)
        for column, letter in table.duplicate_columns:
            problems.append(WorkbookProblem(
                table.sheet, 1, column,
                f"Column {letter} repeats the column {column} (already column "
                f"{table.letters[column]}); rename or remove one of them.",
                cell=f"{letter}1",
            ))
        missing = [c for c in required if c not in table.letters]
        for column in missing:
            sheet.add(1, column, f"The column {column} is missing; add it to row 1.")
        if not missing:
            usable.add(key)
    return usable


def _settings(
    tables: Mapping[str, Table], usable: set[str], *, home: Path,
    environ: Mapping[str, str] | None, problems: list[WorkbookProblem],
) -> Settings:
    """Settings from the sheet and the environment, plus the sender and holidays checks."""
    env = os.environ if environ is None else environ
    raw: dict[str, tuple[str, int]] = {}
    table = tables.get("settings")
    found: list[WorkbookProblem] = []
    if table is not None and "settings" in usable:
        sheet = _Sheet(table, found)
        for row, values in table.rows:
            key = normalise_header(_text(values["key"]))
            if not key:
                sheet.add(row, "key", "The setting has a value but no key; write its name.")
            elif key in raw:
                sheet.add(row, "key", f"The setting {key} is already in row {raw[key][1]}; "
                          "keep only one.")
            elif (unknown := unknown_key(key, values["key"])) is not None:
                sheet.add(row, "key", unknown)
            else:
                raw[key] = (_text(values["value"]).strip(), row)
    settings, parsed = parse_settings(raw, home=home, environ=env)
    for problem in parsed:
        if table is not None and problem.row is not None and problem.column:
            problem = replace(problem, sheet=table.sheet,
                              cell=table.cell(problem.column, problem.row) or None)
        found.append(problem)
    sheet_name = table.sheet if table is not None else "Settings"
    rows = sheet_rows(raw, env)

    def bad(key: str, message: str) -> None:
        row = rows.get(key)
        cell = table.cell("value", row) if table is not None and row is not None else ""
        found.append(WorkbookProblem(sheet_name, row, "value", f"{key}: {message}",
                                     cell=cell or None))

    if not settings.sender_email:
        found.append(WorkbookProblem(
            sheet_name, None, "sender_email",
            "No sender address: add a row sender_email with the address mails come from, "
            "or set COMMPLAN_SENDER_EMAIL.",
        ))
    elif not is_email(settings.sender_email):
        bad("sender_email", f'"{settings.sender_email}" is not an email address.')
    if settings.holidays:
        from commplan_xl.core.offsets import business_calendar

        try:  # the calendar the run will use decides what is valid (case, old names)
            business_calendar(settings.holiday_country, settings.holiday_subdiv)
        except ValueError:
            bad("holidays", f'"{settings.holidays}" is not a country (and subdivision) the '
                "holidays library knows; write a country code such as FR, or FR-57 for "
                "Alsace-Moselle.")
            settings = replace(settings, holidays="")
    problems.extend(sorted(found, key=lambda p: (p.row is None, p.row or 0)))
    return settings


def _variables(tables: Mapping[str, Table], usable: set[str],
               problems: list[WorkbookProblem]) -> dict[str, str]:
    constants: dict[str, str] = {}
    table = tables.get("variables")
    if table is None or "variables" not in usable:
        return constants
    sheet = _Sheet(table, problems)
    first_row: dict[str, int] = {}
    for row, values in table.rows:
        raw_name = _text(values["variable"]).strip()
        name = normalise_header(raw_name)
        if not raw_name:
            sheet.add(row, "variable", "The variable has no name; write one (e.g. "
                      "company_phone) or clear the row.")
        elif not name.isidentifier() or keyword.iskeyword(name) or name in (
                "true", "false", "none"):
            sheet.add(row, "variable", f'"{raw_name}" cannot be a variable name; use letters, '
                      "digits and _, starting with a letter (e.g. company_phone).")
        elif name in BUILTIN_NAMES:
            sheet.add(row, "variable", f'"{raw_name}" is a built-in name ('
                      + ", ".join(sorted(BUILTIN_NAMES)) + "); choose another name.")
        elif name in first_row:
            sheet.add(row, "variable", f"The variable {name} is already in row "
                      f"{first_row[name]}; keep only one.")
        else:
            first_row[name] = row
            constants[name] = _text(values["value"])
    return constants


@dataclass
class _PlanRows:
    name: str
    steps: dict[int, Step]


def _compile(env: SandboxedEnvironment, source: str) -> str | None:
    """None when the template compiles, else the Jinja message with its line."""
    from jinja2 import TemplateSyntaxError

    try:
        env.parse(source)
    except TemplateSyntaxError as exc:
        return f"on line {exc.lineno}: {(exc.message or 'syntax error').rstrip('.')}"
    return None


def _plans(
    tables: Mapping[str, Table], usable: set[str], settings: Settings,
    problems: list[WorkbookProblem],
) -> tuple[dict[str, Plan], dict[str, int]]:
    """The valid plans by key, and the first row of every plan named (even if invalid)."""
    table = tables.get("plans")
    if table is None or "plans" not in usable:
        return {}, {}
    sheet = _Sheet(table, problems)
    orders = tables.get("orders")
    order_columns = set(orders.columns) if orders is not None else None
    # Imported here, not at the top: `due` warms it in a thread while the workbook parses.
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment()
    plans: dict[str, _PlanRows] = {}
    named: dict[str, int] = {}
    step_rows: dict[tuple[str, int], int] = {}
    has = table.letters.__contains__
    for row, values in table.rows:
        before = len(problems)
        name = _text(values["plan"]).strip()
        key = norm_key(name)
        if not name:
            sheet.add(row, "plan", "The plan name is empty; write the plan this step "
                      "belongs to.")
        else:
            named.setdefault(key, row)

        number = 0
        try:
            number = _whole_step(values["step"])
        except ValueError as exc:
            sheet.add(row, "step", str(exc) + ".")
        if name and number:
            first = step_rows.setdefault((key, number), row)
            if first != row:
                sheet.add(row, "step", f'Step {number} of plan "{name}" is already in row '
                          f"{first}; give each step its own number.")

        unit_text = _text(values["unit"]).strip()
        unit = parse_unit(unit_text)
        if unit is None:
            sheet.add(row, "unit", (f'"{unit_text}" is not a unit' if unit_text
                                    else "The unit is empty")
                      + f"; write {english_hint()}.")

        delay_text = _text(values["delay"]).strip()
        delay = 0.0
        try:
            delay = _number(delay_text)
            if delay != delay or delay in (float("inf"), float("-inf")):
                raise ValueError
        except ValueError:
            sheet.add(row, "delay", (f'"{delay_text}" is not a number' if delay_text
                                     else "The delay is empty")
                      + "; write how many units after the start date (e.g. 5).")
        else:
            if delay < 0:
                sheet.add(row, "delay", f'The delay "{delay_text}" is negative; write 0 '
                          "or more.")
            elif unit is not None and UNIT_ROWS[unit].whole and not delay.is_integer():
                sheet.add(row, "delay", f'The delay "{delay_text}" is not a whole number; '
                          "a delay in days must be whole (or use weeks or months).")

        from_column = "start_date"
        if has("from"):
            from_text = _text(values["from"]).strip()
            if from_text:
                from_column = normalise_header(from_text)
                if order_columns is not None and from_column not in order_columns:
                    sheet.add(row, "from", f'Orders has no column "{from_text}"; write the '
                              "name of a date column of Orders (e.g. start_date).")

        active = required = False
        for column, default in (("active", True), ("required", False)):
            value: bool = default
            if has(column):
                try:
                    value = parse_yes_no(values[column], default)
                except ValueError as exc:
                    sheet.add(row, column, str(exc) + ".")
            if column == "active":
                active = value
            else:
                required = value

        subject = _text(values["subject"])
        body = _text(values["body"])
        if not subject.strip():
            sheet.add(row, "subject", "The subject is empty; write the subject of this mail.")
        elif error := _compile(env, subject):
            sheet.add(row, "subject", f"The subject template has an error {error}.")
        if not body.strip():
            sheet.add(row, "body", "The body is empty; write the text of this mail.")
        elif error := _compile(env, body):
            sheet.add(row, "body", f"The body template has an error {error}.")

        attachments: list[str] = []
        if has("attachments"):
            for item in _text(values["attachments"]).split(";"):
                item = item.strip()
                if not item:
                    continue
                try:
                    path = resolve_attachment(settings.attachments_dir, item)
                except ValueError as exc:
                    sheet.add(row, "attachments", str(exc))
                    continue
                attachments.append(item)
                if not path.is_file():
                    # A message problem, not a row problem: the step stays scheduled.
                    sheet.add(row, "attachments",
                              f'The attachment "{item}" is not in the attachments folder '
                              f"{settings.attachments_dir}; add the file or fix its name.",
                              message_level=True)

        if any(not p.message_level for p in problems[before:]):
            continue
        plan = plans.setdefault(key, _PlanRows(name=name, steps={}))
        plan.steps[number] = Step(
            plan=plan.name, number=number, delay=delay, unit=unit,  # type: ignore[arg-type]
            subject=subject, body=body, from_column=from_column,
            attachments=tuple(attachments), active=active, required=required, row=row,
        )
    result = {
        key: Plan(name=p.name, steps=tuple(p.steps[n] for n in sorted(p.steps)))
        for key, p in plans.items()
    }
    return result, named


def _ids(sheet: _Sheet, row: int, column: str, value: object, first_row: dict[str, int],
         what: str) -> str | None:
    """The row's id, or None after reporting it empty or repeated (the first one stays)."""
    ident = _text(value).strip()
    if not ident:
        sheet.add(row, column, f"The {what} id is empty; write one.")
        return None
    first = first_row.setdefault(ident, row)
    if first != row:
        sheet.add(row, column, f'The {what} id "{ident}" is already used in row {first}; '
                  f"give each {what} its own id.")
        return None
    return ident


def _memo(func: Callable[[str], Any]) -> Callable[[str], Any]:
    """`func` with a cache: a column holds few distinct plans, statuses or dates."""
    cache: dict[str, Any] = {}

    def cached(text: str) -> Any:
        try:
            return cache[text]
        except KeyError:
            result = cache[text] = func(text)
            return result

    return cached


def _date_or_error(value: object) -> dt.date | None | ValueError:
    try:
        return parse_date(value)
    except ValueError as exc:
        return exc


def _fields(values: dict[str, object], date_columns: set[str]) -> dict[str, Any]:
    """Every column's value for templates: dates parsed where the header says date."""
    fields: dict[str, Any] = dict(values)
    for column in date_columns:
        if column in fields:
            fields[column] = _field_date(fields[column])
    return fields


def _date_columns(columns: tuple[str, ...], extra: set[str]) -> set[str]:
    return {c for c in columns if c.endswith("date")} | (extra & set(columns))


def _record(cls: type, **values: Any) -> Any:
    """A frozen dataclass instance from every one of its fields, without its __init__.

    The generated __init__ of a frozen dataclass sets each field through
    object.__setattr__; filling __dict__ at once is about 3x cheaper, which counts on
    70,000 rows (the same trick as ledger._entry). Callers pass every field.
    """
    record = _new(cls)
    record.__dict__.update(values)
    return record


_new = object.__new__


def _customers(tables: Mapping[str, Table], usable: set[str],
               problems: list[WorkbookProblem]) -> tuple[dict[str, Customer], dict[str, int]]:
    """The valid customers by id, and the row of every id seen (even if invalid)."""
    table = tables.get("customers")
    if table is None or "customers" not in usable:
        return {}, {}
    sheet = _Sheet(table, problems)
    customers: dict[str, Customer] = {}
    first_row: dict[str, int] = {}
    date_columns = _date_columns(table.columns, set())
    has_opt_out = "opt_out" in table.letters

    def checked_row(row: int, values: dict[str, object]) -> None:
        """Every check of one row, each problem reported; adds the customer when valid."""
        before = len(problems)
        ident = _ids(sheet, row, "customer_id", values["customer_id"], first_row, "customer")
        text = _text(values["email"])
        emails = split_emails(text)
        if not emails:
            sheet.add(row, "email", "The email is empty; write the customer's address.")
        for address in emails:
            if not is_email(address):
                sheet.add(row, "email", f'"{address}" is not an email address; fix it '
                          "(several addresses are separated by ;).")
            elif is_example_address(address):
                sheet.add(row, "email", f'"{address}" is an example address (a documentation '
                          "domain): it is never sent to; write the customer's real address.")
        opt_out = False
        if has_opt_out:
            try:
                opt_out = parse_yes_no(values["opt_out"], False)
            except ValueError as exc:
                sheet.add(row, "opt_out", str(exc) + ".")
        if ident is None or len(problems) > before:
            return
        customers[ident] = _record(
            Customer, customer_id=ident, name=_text(values["name"]).strip(),
            emails=tuple(emails), opt_out=opt_out, fields=_fields(values, date_columns),
            row=row,
        )

    # The usual row (text id seen once, one valid address, a known yes/no) takes the short
    # path below; any other row goes through checked_row, which reports its problems.
    # Table cells are already trimmed, so text needs no strip here.
    yes_no: dict[object, bool] = {"": False}
    for row, values in table.rows:
        ident = values["customer_id"]
        email = values["email"]
        opt_out = yes_no.get(values["opt_out"]) if has_opt_out else False
        if opt_out is None:
            with contextlib.suppress(ValueError):
                opt_out = yes_no[values["opt_out"]] = parse_yes_no(values["opt_out"], False)
        name = values["name"]
        if (opt_out is None or type(ident) is not str or not ident
                or type(email) is not str or "," in email or ";" in email
                or type(name) is not str
                or first_row.setdefault(ident, row) != row):
            checked_row(row, values)
            continue
        address = email.lower()
        if not address or _EMAIL.fullmatch(address) is None or is_example_address(address):
            checked_row(row, values)
            continue
        customers[ident] = _record(
            Customer, customer_id=ident, name=name, emails=(address,), opt_out=opt_out,
            fields=_fields(values, date_columns) if date_columns else dict(values), row=row,
        )
    return customers, first_row


def _orders(
    tables: Mapping[str, Table], usable: set[str], plans: dict[str, Plan],
    plan_rows: dict[str, int], customers: dict[str, Customer], customer_rows: dict[str, int],
    problems: list[WorkbookProblem], *, by_column: bool = True,
) -> tuple[Order, ...]:
    """The valid orders, in row order. `by_column=False` checks every row one by one (the
    reference the tests hold the column-wise checks to)."""
    table = tables.get("orders")
    if table is None or "orders" not in usable:
        return ()
    sheet = _Sheet(table, problems)
    plans_usable = "plans" in usable
    customers_usable = "customers" in usable
    # Columns each plan counts from with an active step: a bad date there fails the row.
    checked: dict[str, set[str]] = {
        key: {s.from_column for s in plan.steps if s.active} | {"start_date"}
        for key, plan in plans.items()
    }
    all_from = {s.from_column for p in plans.values() for s in p.steps} | {"start_date"}
    from_columns = tuple(sorted(all_from & set(table.columns)))
    date_columns = _date_columns(table.columns, set(from_columns))
    other_dates = date_columns - set(from_columns)
    has_status = "status" in table.letters
    has_hold = "hold_steps" in table.letters
    first_row: dict[str, int] = {}
    orders: list[Order] = []
    names = [f'"{p.name}"' for p in plans.values()]
    known_plans = ("write one of " + ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
                   + "." if names else "add the plan to Plans or fix the name.")
    plan_key_of = _memo(norm_key)
    status_of = _memo(lambda text: STATUSES.get(_fold(text)))
    date_of = _memo(_date_or_error)

    def order_of(row: int, values: dict[str, object], ident: str, customer_id: str,
                 plan_key: str, status: Status, dates: dict[str, dt.date | None],
                 hold: frozenset[int]) -> Order:
        fields = _fields(values, other_dates) if other_dates else dict(values)
        for column, date in dates.items():
            fields[column] = "" if date is None else date
        return Order(order_id=ident, customer_id=customer_id, plan=plan_key, status=status,
                     dates=dates, fields=fields, hold_steps=hold, row=row)

    def checked_row(row: int, values: dict[str, object]) -> None:
        """Every check of one row, each problem reported; adds the order when valid."""
        before = len(problems)
        ident = _ids(sheet, row, "order_id", values["order_id"], first_row, "order")

        customer_id = _text(values["customer_id"]).strip()
        if not customer_id:
            sheet.add(row, "customer_id", "The customer id is empty; write the customer's "
                      "id from Customers.")
        elif customer_id not in customers:
            if customer_id in customer_rows:
                sheet.add(row, "customer_id", f'The customer "{customer_id}" has a problem in '
                          f"Customers row {customer_rows[customer_id]}; fix that row first.")
            elif customers_usable:
                sheet.add(row, "customer_id", f'There is no customer "{customer_id}" in '
                          "Customers; add the customer or fix the id.")

        plan_name = _text(values["plan"]).strip()
        plan_key = plan_key_of(plan_name)
        if not plan_name:
            sheet.add(row, "plan", "The plan is empty; write the name of a plan from Plans.")
        elif plan_key not in plans:
            if plan_key in plan_rows:
                sheet.add(row, "plan", f'The plan "{plan_name}" has problems in Plans (row '
                          f"{plan_rows[plan_key]}); fix them first.")
            elif plans_usable:
                sheet.add(row, "plan", f'There is no plan "{plan_name}" in Plans; '
                          + known_plans)

        dates: dict[str, dt.date | None] = {}
        needed = checked.get(plan_key, {"start_date"})
        for column in from_columns:
            value = values[column]
            date = value if type(value) is dt.date else date_of(_text(value))
            if isinstance(date, ValueError):
                dates[column] = None
                if column in needed:
                    sheet.add(row, column, f"{date}.")
            else:
                dates[column] = date
        if dates.get("start_date") is None and values["start_date"] == "":
            sheet.add(row, "start_date", "The start date is empty; write the date the "
                      "order starts (e.g. 05/03/2026).")

        status: Status = "active"
        if has_status:
            status_text = _text(values["status"]).strip()
            if status_text:
                found = status_of(status_text)
                if found is None:
                    sheet.add(row, "status", f'"{status_text}" is not a status; write active, '
                              "paused, cancelled or done (empty means active).")
                else:
                    status = found

        hold: frozenset[int] = frozenset()
        if has_hold:
            hold_text = _text(values["hold_steps"]).strip()
            if hold_text:
                try:
                    hold = frozenset(_whole_step(p) for p in re.split(r"[;,\s]+", hold_text)
                                     if p)
                except ValueError:
                    sheet.add(row, "hold_steps", f'"{hold_text}" is not a list of steps; write '
                              "step numbers from 1 to 10 separated by ; (e.g. 3;4).")

        if ident is None or len(problems) > before or plan_key not in plans \
                or customer_id not in customers:
            return
        orders.append(order_of(row, values, ident, customer_id, plan_key, status, dates, hold))

    # The usual row is settled by the column-wise checks below (C-level maps, no Python code
    # per row): a text id seen first there, a known customer and plan, good dates, a known
    # status, no held steps. Any other row goes through checked_row, which reports its
    # problems. Table cells are already trimmed.
    numbers = table.numbers
    data = table.data
    if not by_column:
        for index, row in enumerate(numbers):
            checked_row(row, table.values(index))
        return tuple(orders)
    if not numbers:
        return ()
    ids = data["order_id"]
    all_text = set(map(type, ids)) == {str}
    keys = ids if all_text else [v if type(v) is str else _text(v).strip() for v in ids]
    firsts = list(map(first_row.setdefault, keys, numbers))  # as checked_row's _ids would
    plan_keys: dict[object, str] = {}  # plan cell -> key, for known plans only
    for name in set(data["plan"]):
        if type(name) is str and name and plan_key_of(name) in plans:
            plan_keys[name] = plan_key_of(name)
    plan_col = list(map(plan_keys.get, data["plan"]))
    status_col: list[Status | None] | repeat[Status] = repeat("active")
    if has_status:
        statuses: dict[object, Status | None] = {"": "active"}
        for text in set(data["status"]):
            if type(text) is str and text:
                statuses[text] = status_of(text)
        status_col = list(map(statuses.get, data["status"]))
    checks = [
        map(bool, ids) if all_text else map(_is_text, ids), map(operator.eq, firsts, numbers),
        map(customers.__contains__, data["customer_id"]),
        map(operator.is_not, plan_col, repeat(None)),
    ]
    if has_status:
        checks.append(map(operator.is_not, status_col, repeat(None)))
    if has_hold:
        checks.append(map(operator.not_, data["hold_steps"]))
    date_cols: list[list[dt.date | None]] = []
    for column in from_columns:
        cells = data[column]
        parsed = {v: date_of(_text(v)) for v in set(cells) if type(v) is not dt.date}
        bad = {v for v, date in parsed.items() if isinstance(date, ValueError)}
        if column == "start_date":
            bad |= {v for v, date in parsed.items() if date is None}  # empty
            checks.append(map(operator.not_, map(bad.__contains__, cells)))
        elif bad:  # a bad date fails the row only where its plan counts from the column
            counts = {key for key, used in checked.items() if column in used}
            checks.append(map(operator.not_, map(operator.and_,
                                                 map(bad.__contains__, cells),
                                                 map(counts.__contains__, plan_col))))
        good = {v: (None if isinstance(date, ValueError) else date)
                for v, date in parsed.items()}
        date_cols.append(list(map(good.get, cells, cells)))
    ok = list(map(all, zip(*checks, strict=True)))
    fields_data = dict(data)
    for column, dates in zip(from_columns, date_cols, strict=True):
        fields_data[column] = ["" if date is None else date for date in dates]
    for column in other_dates:
        fields_data[column] = list(map(_field_date, data[column]))
    all_ok = all(ok)
    pick = (lambda values: values) if all_ok else (lambda values: compress(values, ok))
    fields = map(RowFields, repeat(fields_data), pick(range(len(numbers))))
    # start_date is a required column: there is always one date column here.
    dates = map(dict, map(zip, repeat(from_columns), zip(*map(pick, date_cols), strict=True)))
    good_orders = list(map(_tuple_new, repeat(Order), zip(
        pick(keys), pick(data["customer_id"]), pick(plan_col),
        pick(status_col) if has_status else repeat("active"), dates, fields,
        repeat(frozenset()), pick(numbers),
    )))
    if all_ok:
        return tuple(good_orders)
    for index in compress(range(len(numbers)), map(operator.not_, ok)):
        checked_row(numbers[index], table.values(index))
    orders.extend(good_orders)
    orders.sort(key=_ROW)
    return tuple(orders)


_ROW = operator.attrgetter("row")
_tuple_new = tuple.__new__


def _is_text(value: object) -> bool:
    return type(value) is str and value != ""


def _field_date(value: object) -> object:
    """A cell of a date column that no step counts from, for templates: a date when it
    reads as one, else as it is (rendering says if that matters)."""
    if value == "" or isinstance(value, dt.date):
        return value
    try:
        return parse_date(value)
    except ValueError:
        return value


def validate(
    tables: Mapping[str, Table],
    *,
    home: Path,
    environ: Mapping[str, str] | None = None,
) -> tuple[Model, Settings, list[WorkbookProblem]]:
    """The valid part of the workbook as a Model, its Settings, and every problem found.

    `tables` may still be parsing (`workbook.open_tables`): Customers is checked first, while
    the big Orders sheet parses, and Orders is looked at last. Problems are listed sheet by
    sheet all the same: structure, Settings, Variables, Plans, Customers, Orders.
    """
    found: dict[str, list[WorkbookProblem]] = {key: [] for key in REQUIRED_COLUMNS}
    structure: dict[str, list[WorkbookProblem]] = {key: [] for key in REQUIRED_COLUMNS}
    usable: set[str] = set()
    for key in ("customers", "settings", "variables"):
        usable |= _check_sheets(tables, structure[key], [key])
    with no_gc():
        customers, customer_rows = _customers(tables, usable, found["customers"])
    settings = _settings(tables, usable, home=home, environ=environ,
                         problems=found["settings"])
    constants = _variables(tables, usable, found["variables"])
    # Plans checks its `from` columns against Orders' headers: from here on, Orders is
    # parsed.
    for key in ("plans", "orders"):
        usable |= _check_sheets(tables, structure[key], [key])
    plans, plan_rows = _plans(tables, usable, settings, found["plans"])
    with no_gc():
        orders = _orders(tables, usable, plans, plan_rows, customers, customer_rows,
                         found["orders"])
    problems = [p for key in REQUIRED_COLUMNS for p in structure[key]]
    problems += [p for key in ("settings", "variables", "plans", "customers", "orders")
                 for p in found[key]]
    model = Model(plans=plans, customers=customers, orders=orders, constants=constants)
    return model, settings, problems
