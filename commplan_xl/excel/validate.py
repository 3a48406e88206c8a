"""Tables → the validated Model, its Settings and every problem at once.

A row with a problem is left out of the model; every other row stays in. Each problem is a
WorkbookProblem: its kind, its sheet, Excel row, column and cell, and the values its sentence
names. Plans, Settings and Variables hold a few rows and are checked row by row; Customers
and Orders hold thousands, and each of their rules is checked over whole columns.
"""

from __future__ import annotations

import datetime as dt
import keyword
import math
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import pandas as pd

from commplan_xl.core.units import UNIT_ROWS, Unit, parse_unit
from commplan_xl.excel import names
from commplan_xl.excel.read import Table, no_gc, normalise_header, parse_date, parse_yes_no
from commplan_xl.i18n import _
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
from commplan_xl.problems import CellError, Problem, WorkbookProblem
from commplan_xl.settings import Settings, parse_settings, sheet_rows, unknown_key

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "settings": ("key", "value"),
    "plans": ("plan", "step", "delay", "unit", "subject", "body"),
    "customers": ("customer_id", "name", "email"),
    "orders": ("order_id", "customer_id", "plan", "start_date"),
    "variables": ("variable", "value"),
}
SHEET_TITLES = {key: name.en for key, name in names.SHEETS.items()}
REQUIRED_SHEETS = ("plans", "customers", "orders")
BUILTIN_NAMES = frozenset({"customer", "order", "plan", "step", "today", "sender",
                           "client", "commande", "etape", "expediteur"})
MAX_STEP = 10


def _fold(text: str) -> str:
    """norm_key without accents: how units and statuses are compared."""
    text = unicodedata.normalize("NFKD", norm_key(text))
    return "".join(ch for ch in text if not unicodedata.combining(ch))


STATUSES: dict[str, Status] = {
    _fold(spelling): Status(status)
    for status, name in names.STATUSES.items() for spelling in name.spellings()
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
    """Collects the problems of one sheet, with their Excel places.

    `add` reports one problem at once; `flag` reports a rule's problems over whole columns,
    kept aside until `done` lists them row by row (each row's in the order of its checks).
    """

    table: Table
    problems: list[WorkbookProblem]
    pending: list[tuple[int, WorkbookProblem]] = field(default_factory=list)

    def problem(self, row: int | None, column: str | None, kind: Problem | str,
                values: Mapping[str, object], message_level: bool = False) -> WorkbookProblem:
        cell = self.table.cell(column, row) if column and row is not None else ""
        return WorkbookProblem(self.table.sheet, row, column, kind, values, cell=cell or None,
                               message_level=message_level,
                               header=self.table.titles.get(column) if column else None)

    def add(self, row: int | None, column: str | None, kind: Problem | str, *,
            message_level: bool = False, **values: object) -> None:
        self.problems.append(self.problem(row, column, kind, values, message_level))

    def add_error(self, row: int, column: str, error: CellError) -> None:
        self.add(row, column, error.kind, **error.values)

    def add_later(self, row: int, column: str, kind: Problem, **values: object) -> None:
        """Report one problem with those `flag` reports (listed by `done`)."""
        self.pending.append((row, self.problem(row, column, kind, values)))

    def flag(self, where: pd.Series, column: str, kind: Problem,
             **values: pd.Series | object) -> None:
        """Report `kind` at each row where `where` holds; a Series value is read at the row."""
        for row in where.index[where.to_numpy(dtype=bool)].tolist():
            found = {name: value.at[row] if isinstance(value, pd.Series) else value
                     for name, value in values.items()}
            self.pending.append((row, self.problem(row, column, kind, found)))

    def flag_errors(self, read: pd.Series, where: pd.Series, column: str) -> None:
        """Report the CellError of `read` at each row where `where` holds."""
        for row, error in read[where].items():
            self.pending.append((row, self.problem(row, column, error.kind, error.values)))

    def done(self) -> set[int]:
        """List the flagged problems row by row; return the rows that have one."""
        self.pending.sort(key=itemgetter(0))  # stable: a row's problems keep their order
        self.problems.extend(problem for _row, problem in self.pending)
        return {row for row, _problem in self.pending}


def _text(value: object) -> str:
    """A cell as text (cells are already trimmed strings or dates)."""
    if type(value) is str:
        return value
    if isinstance(value, dt.datetime):
        return value.strftime("%d/%m/%Y %H:%M")
    if isinstance(value, dt.date):
        return value.strftime("%d/%m/%Y")
    return str(value)


def _texts(column: pd.Series) -> pd.Series:
    """A column as text: cells are trimmed strings already, or dates."""
    if pd.api.types.infer_dtype(column, skipna=False) == "string":
        return column
    return column.map(_text)


def _per_value(column: pd.Series, func: Callable[[Any], Any]) -> pd.Series:
    """`func` of each cell of `column`, called once per distinct value (a column repeats a
    few plans, statuses and dates over thousands of rows)."""
    distinct = column.unique()
    results = pd.Series(list(map(func, distinct)), index=pd.Index(distinct, dtype=object),
                        dtype=object)
    return column.map(results)


def _is_error(column: pd.Series) -> pd.Series:
    return column.map(type).eq(CellError)


def _number(text: str) -> float:
    return float(text.replace(",", ".").replace(" ", "").replace("\u00a0", ""))


def _whole_step(value: object) -> int:
    """A step number 1..10 from a cell, or CellError."""
    text = _text(value).strip()
    if not text:
        raise CellError(Problem.STEP_EMPTY)
    try:
        number = _number(text)
    except ValueError:
        number = -1.0
    if not number.is_integer() or not 1 <= number <= MAX_STEP:
        raise CellError(Problem.STEP_NOT_A_NUMBER, text=text)
    return int(number)


def _sheet_names(tables: Mapping[str, Table]) -> list[str]:
    """The names of the workbook's input sheets, without waiting for any to parse."""
    chosen = getattr(tables, "sheet_names", None)
    if chosen is not None:
        return list(chosen)
    return [table.sheet for table in tables.values()]


def _language_of_names(written: Iterable[str], spelled: Callable[[str], names.Name | None],
                       default: str) -> str:
    """The language names are written in: the one with more names only it spells, else
    `default`."""
    votes = {"fr": 0, "en": 0}
    for text in written:
        name = spelled(text)
        if name is None or names.fold(name.en) == names.fold(name.fr):
            continue
        folded = names.fold(text)
        if folded == names.fold(name.en):
            votes["en"] += 1
        elif folded in {names.fold(s) for s in (name.fr, *name.also)}:
            votes["fr"] += 1
    if votes["fr"] != votes["en"]:
        return "fr" if votes["fr"] > votes["en"] else "en"
    return default


def _workbook_language(tables: Mapping[str, Table]) -> str:
    """The language the input sheets are named in (French when they do not say)."""
    return _language_of_names(_sheet_names(tables),
                              lambda n: names.SHEETS.get(names.sheet_key(n)),
                              names.DEFAULT_LANGUAGE)


def _table_language(key: str, table: Table, default: str) -> str:
    """The language a sheet's headers are written in (its name's, when they do not say)."""
    columns = names.COLUMNS.get(key, {})
    own = [table.headers.get(c, c) for c in table.columns]
    by_sheet = _language_of_names([table.sheet], lambda n: names.SHEETS.get(key), default)
    return _language_of_names(own, lambda h: columns.get(names.column_key(key, h)), by_sheet)


def _check_sheets(tables: Mapping[str, Table], problems: list[WorkbookProblem],
                  keys: Iterable[str] = REQUIRED_COLUMNS) -> set[str]:
    """Report missing sheets, columns and repeated headers of the sheets `keys`; return the
    usable ones. A missing sheet or column is named in the language of the workbook's
    sheet names, or of the sheet's headers."""
    usable: set[str] = set()
    for key in keys:
        required = REQUIRED_COLUMNS[key]
        table = tables.get(key) if key in tables else None
        if table is None:
            if key in REQUIRED_SHEETS:
                lang = _workbook_language(tables)
                title = names.sheet_title(key, lang)
                problems.append(WorkbookProblem(
                    title, None, None, Problem.NO_SHEET,
                    {"sheet": title,
                     "columns": ", ".join(names.column_titles(key, required, lang))},
                ))
            continue
        sheet = _Sheet(table, problems)
        _repeated_columns(table, problems)
        missing = [c for c in required if c not in table.letters]
        lang = _table_language(key, table, _workbook_language(tables)) if missing else ""
        for column in missing:
            title = names.column_title(key, column, lang)
            sheet.problems.append(WorkbookProblem(
                table.sheet, 1, column, Problem.MISSING_COLUMN, {"name": title},
                header=title if title != column else None))
        if not missing:
            usable.add(key)
    return usable


def _repeated_columns(table: Table, problems: list[WorkbookProblem]) -> None:
    """Report headers repeated, or written twice in two spellings (`email`, `courriel`)."""
    for column, letter in table.duplicate_columns:
        problems.append(WorkbookProblem(
            table.sheet, 1, column, Problem.REPEATED_COLUMN,
            {"letter": letter, "column": table.headers.get(column, column),
             "first_letter": table.letters[column]},
            cell=f"{letter}1", header=table.headers.get(column),
        ))
    for clash in table.clashes:
        problems.append(WorkbookProblem(
            table.sheet, 1, clash.key, Problem.SAME_MEANING_COLUMNS,
            {"first": clash.first, "first_letter": clash.first_at, "other": clash.other,
             "letter": clash.other_at},
            cell=f"{clash.other_at}1", header=clash.other,
        ))


def _sheet_clashes(tables: Mapping[str, Table]) -> list[WorkbookProblem]:
    """Two sheets that mean the same ("Customers" and "Clients"): the second is ignored."""
    return [
        WorkbookProblem(clash.other, None, None, Problem.SAME_MEANING_SHEETS,
                        {"first": clash.first, "other": clash.other})
        for clash in getattr(tables, "sheet_clashes", ())
    ]


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
                sheet.add(row, "key", _("The setting has a value but no key; write its name."))
            elif key in raw:
                sheet.add(row, "key", _("The setting {key} is already in row {row}; keep only "
                                        "one.").format(key=key, row=raw[key][1]))
            elif (unknown := unknown_key(key, values["key"])) is not None:
                sheet.add(row, "key", unknown)
            else:
                raw[key] = (_text(values["value"]).strip(), row)
    settings, parsed = parse_settings(raw, home=home, environ=env)
    value_header = table.titles.get("value") if table is not None else None
    for problem in parsed:
        if table is not None and problem.row is not None and problem.column:
            problem = replace(problem, sheet=table.sheet,
                              cell=table.cell(problem.column, problem.row) or None,
                              header=table.titles.get(problem.column))
        found.append(problem)
    sheet_name = table.sheet if table is not None else "Settings"
    rows = sheet_rows(raw, env)

    def bad(key: str, message: str) -> None:
        row = rows.get(key)
        cell = table.cell("value", row) if table is not None and row is not None else ""
        found.append(WorkbookProblem(sheet_name, row, "value", f"{key}: {message}",
                                     cell=cell or None, header=value_header))

    if not settings.sender_email:
        found.append(WorkbookProblem(
            sheet_name, None, "sender_email",
            _("No sender address: add a row sender_email with the address mails come from, "
              "or set COMMPLAN_SENDER_EMAIL."),
        ))
    elif not is_email(settings.sender_email):
        bad("sender_email", _('"{address}" is not an email address.').format(
            address=settings.sender_email))
    if names.language_of(settings.locale) is None:
        row = rows.get("locale")
        cell = table.cell("value", row) if table is not None and row is not None else ""
        found.append(WorkbookProblem(sheet_name, row, "value", Problem.LOCALE_NOT_SPOKEN,
                                     {"locale": settings.locale}, cell=cell or None,
                                     header=value_header))
        settings = replace(settings, locale="fr_FR")
    if settings.holidays:
        from commplan_xl.core.offsets import business_calendar

        try:  # the calendar the run will use decides what is valid (case, old names)
            business_calendar(settings.holiday_country, settings.holiday_subdiv)
        except ValueError:
            bad("holidays", _('"{text}" is not a country (and subdivision) the holidays '
                              "library knows; write a country code such as FR, or FR-57 for "
                              "Alsace-Moselle.").format(text=settings.holidays))
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
            sheet.add(row, "variable", Problem.VARIABLE_NO_NAME)
        elif not name.isidentifier() or keyword.iskeyword(name) or name in (
                "true", "false", "none"):
            sheet.add(row, "variable", Problem.VARIABLE_BAD_NAME, name=raw_name)
        elif name in BUILTIN_NAMES:
            sheet.add(row, "variable", Problem.VARIABLE_BUILT_IN, name=raw_name,
                      built_in=", ".join(sorted(BUILTIN_NAMES)))
        elif name in first_row:
            sheet.add(row, "variable", Problem.VARIABLE_REPEATED, name=name,
                      first_row=first_row[name])
        else:
            first_row[name] = row
            constants[name] = _text(values["value"])
    return constants


# ---------------------------------------------------------------- Plans (a few rows)


@dataclass
class _PlanRows:
    name: str
    steps: dict[int, Step]


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
    plans: dict[str, _PlanRows] = {}
    named: dict[str, int] = {}
    step_rows: dict[tuple[str, int], int] = {}
    for row, values in table.rows:
        before = len(problems)
        name = _text(values["plan"]).strip()
        if name:
            named.setdefault(norm_key(name), row)
        else:
            sheet.add(row, "plan", Problem.PLAN_NAME_EMPTY)
        number = _plan_step(sheet, row, values, name, step_rows)
        unit = _plan_unit(sheet, row, values)
        delay = _plan_delay(sheet, row, values, unit)
        from_column = _plan_from(sheet, row, values, order_columns)
        active = _yes_no(sheet, row, values, "active", True)
        required = _yes_no(sheet, row, values, "required", False)
        subject, body = _plan_templates(sheet, row, values)
        attachments = _plan_attachments(sheet, row, values, settings.attachments_dir)
        if any(not p.message_level for p in problems[before:]):
            continue
        plan = plans.setdefault(norm_key(name), _PlanRows(name=name, steps={}))
        plan.steps[number] = Step(
            plan=plan.name, number=number, delay=delay, unit=unit,  # type: ignore[arg-type]
            subject=subject, body=body, from_column=from_column, attachments=attachments,
            active=active, required=required, row=row,
        )
    result = {
        key: Plan(name=p.name, steps=tuple(p.steps[n] for n in sorted(p.steps)))
        for key, p in plans.items()
    }
    return result, named


def _plan_step(sheet: _Sheet, row: int, values: Mapping[str, object], name: str,
               step_rows: dict[tuple[str, int], int]) -> int:
    """The step number (0 when it is not one), each step once per plan."""
    try:
        number = _whole_step(values["step"])
    except CellError as error:
        sheet.add_error(row, "step", error)
        return 0
    if name:
        first = step_rows.setdefault((norm_key(name), number), row)
        if first != row:
            sheet.add(row, "step", Problem.STEP_REPEATED, step=number, plan=name,
                      first_row=first)
    return number


def _plan_unit(sheet: _Sheet, row: int, values: Mapping[str, object]) -> Unit | None:
    text = _text(values["unit"]).strip()
    unit = parse_unit(text)
    if unit is None:
        sheet.add(row, "unit", Problem.UNIT_UNKNOWN if text else Problem.UNIT_EMPTY, text=text)
    return unit


def _plan_delay(sheet: _Sheet, row: int, values: Mapping[str, object],
                unit: Unit | None) -> float:
    """The delay: a number, 0 or more, whole when counted in days."""
    text = _text(values["delay"]).strip()
    try:
        delay = _number(text)
    except ValueError:
        delay = float("nan")
    if not math.isfinite(delay):
        sheet.add(row, "delay", Problem.DELAY_NOT_A_NUMBER if text else Problem.DELAY_EMPTY,
                  text=text)
        return 0.0
    if delay < 0:
        sheet.add(row, "delay", Problem.DELAY_NEGATIVE, text=text)
    elif unit is not None and UNIT_ROWS[unit].whole and not delay.is_integer():
        sheet.add(row, "delay", Problem.DELAY_NOT_WHOLE, text=text)
    return delay


def _plan_from(sheet: _Sheet, row: int, values: Mapping[str, object],
               order_columns: set[str] | None) -> str:
    """The Orders date column the delay counts from (start_date when the cell is empty)."""
    text = _text(values.get("from", "")).strip()
    if not text:
        return "start_date"
    column = names.column_key("orders", text)
    if order_columns is not None and column not in order_columns:
        sheet.add(row, "from", Problem.FROM_UNKNOWN, text=text)
    return column


def _yes_no(sheet: _Sheet, row: int, values: Mapping[str, object], column: str,
            default: bool) -> bool:
    try:
        return parse_yes_no(values.get(column, ""), default)
    except CellError as error:
        sheet.add_error(row, column, error)
        return default


def _plan_templates(sheet: _Sheet, row: int, values: Mapping[str, object]) -> tuple[str, str]:
    """The subject and body sources, each reported when empty. What a template says (its
    syntax, its variables) is its message's problem, not the row's: `check` reports it and
    the step waits (run.readiness)."""
    sources = []
    for part, empty in (("subject", Problem.SUBJECT_EMPTY), ("body", Problem.BODY_EMPTY)):
        source = _text(values[part])
        sources.append(source)
        if not source.strip():
            sheet.add(row, part, empty)
    return sources[0], sources[1]


def _plan_attachments(sheet: _Sheet, row: int, values: Mapping[str, object],
                      folder: Path) -> tuple[str, ...]:
    """The attachment names; a file missing from the folder is a problem of the message
    only (the step stays scheduled), a name outside the folder one of the row."""
    names: list[str] = []
    for item in _text(values.get("attachments", "")).split(";"):
        name = item.strip()
        if not name:
            continue
        try:
            path = resolve_attachment(folder, name)
        except ValueError as exc:
            sheet.add(row, "attachments", Problem.ATTACHMENT_REFUSED, name=name,
                      reason=str(exc))
            continue
        names.append(name)
        if not path.is_file():
            sheet.add(row, "attachments", Problem.ATTACHMENT_MISSING, name=name,
                      folder=folder, message_level=True)
    return tuple(names)


# ---------------------------------------------------------------- Customers and Orders
# Thousands of rows: each rule is checked over whole columns.


def _ids(sheet: _Sheet, cells: pd.Series, column: str, empty: Problem,
         repeated: Problem, fold: Callable[[str], str] | None = None
         ) -> tuple[pd.Series, dict[str, int]]:
    """The ids as text, each reported when empty or already used above; and the first row
    of every id. With `fold`, ids are compared folded (order ids ignore case and spaces,
    like plan names) and `first_row` is keyed by the folded id."""
    ids = _texts(cells)
    keys = ids.map(fold) if fold is not None else ids
    is_empty = ids.eq("")
    first = ~keys.duplicated() & ~is_empty
    first_row = dict(zip(keys[first].tolist(), ids.index[first].tolist(), strict=True))
    again = ~first & ~is_empty
    sheet.flag(is_empty, column, empty)
    sheet.flag(again, column, repeated, id=ids, first_row=_rows_of(keys[again], first_row))
    return ids, first_row


def _rows_of(keys: pd.Series, rows: dict[str, int]) -> pd.Series:
    """The row of each key, as Python ints (for sentences)."""
    return keys.map(rows).astype(object)


def _field_date(value: object) -> object:
    """A cell of a date column that no step counts from, for templates: a date when it
    reads as one, else as it is (rendering says if that matters)."""
    if value == "" or isinstance(value, dt.date):
        return value
    try:
        return parse_date(value)
    except ValueError:
        return value


def _date_or_error(value: object) -> dt.date | None | CellError:
    try:
        return parse_date(value)
    except CellError as error:
        return error


def _yes_no_or_error(value: object) -> bool | CellError:
    try:
        return parse_yes_no(value, False)
    except CellError as error:
        return error


def _date_columns(columns: Iterable[str]) -> set[str]:
    """The columns whose header says they hold dates (`delivery_date`, `date_de_livraison`)."""
    return {c for c in columns if c.endswith("date") or c.startswith("date_")}


def _customers(tables: Mapping[str, Table], usable: set[str],
               problems: list[WorkbookProblem]) -> tuple[dict[str, Customer], dict[str, int]]:
    """The valid customers by id, and the row of every id seen (even if invalid)."""
    table = tables.get("customers")
    if table is None or "customers" not in usable:
        return {}, {}
    sheet = _Sheet(table, problems)
    cells = table.frame
    ids, first_row = _ids(sheet, cells["customer_id"], "customer_id",
                          Problem.CUSTOMER_ID_EMPTY, Problem.CUSTOMER_ID_REPEATED)
    emails = _per_value(cells["email"], lambda cell: tuple(split_emails(_text(cell))))
    sheet.flag(emails.map(len).eq(0), "email", Problem.EMAIL_EMPTY)
    addresses = emails.explode().dropna()  # one row per address
    valid_address = addresses.map(is_email)
    for row, address in addresses[~valid_address].items():
        sheet.add_later(row, "email", Problem.EMAIL_INVALID, address=address)
    for row, address in addresses[valid_address & addresses.map(is_example_address)].items():
        sheet.add_later(row, "email", Problem.EMAIL_EXAMPLE, address=address)
    opt_out = pd.Series(False, index=cells.index, dtype=object)
    if "opt_out" in cells:
        opt_out = _per_value(cells["opt_out"], _yes_no_or_error)
        sheet.flag_errors(opt_out, _is_error(opt_out), "opt_out")
    valid = ~cells.index.isin(list(sheet.done())) & ids.ne("")
    fields = {column: cells[column][valid].tolist() for column in cells.columns}
    for column in _date_columns(cells.columns):
        fields[column] = _per_value(cells[column][valid], _field_date).tolist()
    fields = table.by_any_name(fields)
    records = zip(
        ids[valid].tolist(), _texts(cells["name"])[valid].tolist(), emails[valid].tolist(),
        opt_out[valid].tolist(), [dict(zip(fields, row, strict=True))
                                  for row in zip(*fields.values(), strict=True)],
        cells.index[valid].tolist(), strict=True,
    )
    customers = {record[0]: Customer(*record) for record in records}
    return customers, first_row


@dataclass(frozen=True)
class _OrderContext:
    """What the Orders checks need to know of the other sheets."""

    plans: dict[str, Plan]
    plan_rows: dict[str, int]  # first Plans row of every plan named, even if invalid
    customers: dict[str, Customer]
    customer_rows: dict[str, int]  # first Customers row of every id, even if invalid
    plans_usable: bool
    customers_usable: bool


def _orders(
    tables: Mapping[str, Table], usable: set[str], plans: dict[str, Plan],
    plan_rows: dict[str, int], customers: dict[str, Customer], customer_rows: dict[str, int],
    problems: list[WorkbookProblem],
) -> tuple[Order, ...]:
    """The valid orders, in row order."""
    table = tables.get("orders")
    if table is None or "orders" not in usable:
        return ()
    known = _OrderContext(plans, plan_rows, customers, customer_rows,
                          "plans" in usable, "customers" in usable)
    sheet = _Sheet(table, problems)
    cells = table.frame
    ids, _first_row = _ids(sheet, cells["order_id"], "order_id", Problem.ORDER_ID_EMPTY,
                           Problem.ORDER_ID_REPEATED, fold=norm_key)
    customer_ids = _order_customers(sheet, cells["customer_id"], known)
    plan_keys = _order_plans(sheet, cells["plan"], known)
    dates = _order_dates(sheet, cells, plan_keys, plans)
    sheet.flag(cells["start_date"].eq(""), "start_date", Problem.START_DATE_EMPTY)
    statuses = _order_statuses(sheet, cells)
    holds = _order_holds(sheet, cells)
    valid = (~cells.index.isin(list(sheet.done())) & plan_keys.isin(list(plans))
             & customer_ids.isin(list(customers)))
    return _order_records(table, valid, ids, customer_ids, plan_keys, statuses, dates, holds)


def _order_customers(sheet: _Sheet, cells: pd.Series, known: _OrderContext) -> pd.Series:
    """The customer ids, each reported when empty, unknown or of a customer with a problem."""
    ids = _texts(cells)
    missing = ids.ne("") & ~ids.isin(list(known.customers))
    broken = missing & ids.isin(list(known.customer_rows))
    sheet.flag(ids.eq(""), "customer_id", Problem.ORDER_CUSTOMER_EMPTY)
    sheet.flag(broken, "customer_id", Problem.ORDER_CUSTOMER_HAS_PROBLEM, customer_id=ids,
               customer_row=_rows_of(ids[broken], known.customer_rows))
    if known.customers_usable:
        sheet.flag(missing & ~broken, "customer_id", Problem.ORDER_CUSTOMER_UNKNOWN,
                   customer_id=ids)
    return ids


def _order_plans(sheet: _Sheet, cells: pd.Series, known: _OrderContext) -> pd.Series:
    """The plan keys, each reported when empty, unknown or of a plan with problems."""
    names = _texts(cells)
    keys = _per_value(names, norm_key)
    missing = names.ne("") & ~keys.isin(list(known.plans))
    broken = missing & keys.isin(list(known.plan_rows))
    sheet.flag(names.eq(""), "plan", Problem.ORDER_PLAN_EMPTY)
    sheet.flag(broken, "plan", Problem.ORDER_PLAN_HAS_PROBLEMS, plan=names,
               plan_row=_rows_of(keys[broken], known.plan_rows))
    if known.plans_usable:
        known_names = tuple(p.name for p in known.plans.values())
        sheet.flag(missing & ~broken, "plan",
                   Problem.ORDER_PLAN_UNKNOWN if known_names
                   else Problem.ORDER_PLAN_UNKNOWN_NO_PLANS,
                   plan=names, known=known_names)
    return keys


def _order_dates(sheet: _Sheet, cells: pd.DataFrame, plan_keys: pd.Series,
                 plans: dict[str, Plan]) -> dict[str, pd.Series]:
    """Every date column a plan counts from, parsed (None when empty or not a date). A bad
    date is a problem where the row's plan counts from its column with an active step (and
    always in start_date)."""
    dates: dict[str, pd.Series] = {}
    counted = {s.from_column for p in plans.values() for s in p.steps} | {"start_date"}
    for column in sorted(counted & set(cells.columns)):
        read = _per_value(cells[column], _date_or_error)
        bad = _is_error(read)
        counting = [key for key, plan in plans.items()
                    if any(s.active and s.from_column == column for s in plan.steps)]
        needed = plan_keys.isin(counting) | (column == "start_date")
        sheet.flag_errors(read, bad & needed, column)
        dates[column] = read.mask(bad, None)
    return dates


def _order_statuses(sheet: _Sheet, cells: pd.DataFrame) -> pd.Series:
    """The canonical statuses (empty is active), each reported when not a status."""
    if "status" not in cells:
        return pd.Series("active", index=cells.index, dtype=object)
    texts = _per_value(cells["status"], _text)
    statuses = _per_value(texts, lambda text: STATUSES.get(_fold(text)) if text else "active")
    sheet.flag(statuses.isna(), "status", Problem.STATUS_UNKNOWN, text=texts)
    return statuses


def _held(text: str) -> frozenset[int] | CellError:
    try:
        return frozenset(_whole_step(p) for p in re.split(r"[;,\s]+", text) if p)
    except CellError:
        return CellError(Problem.HOLD_STEPS_INVALID, text=text)


def _order_holds(sheet: _Sheet, cells: pd.DataFrame) -> pd.Series:
    """The steps held back for each order, reported when not a list of steps."""
    if "hold_steps" not in cells:
        return pd.Series([frozenset()] * len(cells), index=cells.index, dtype=object)
    holds = _per_value(cells["hold_steps"], lambda cell: _held(_text(cell)))
    sheet.flag_errors(holds, _is_error(holds), "hold_steps")
    return holds


def _order_records(table: Table, valid: pd.Series, ids: pd.Series,
                   customer_ids: pd.Series, plan_keys: pd.Series, statuses: pd.Series,
                   dates: dict[str, pd.Series], holds: pd.Series) -> tuple[Order, ...]:
    """The Orders of the valid rows. Their fields are read from the sheet's columns (dates
    parsed) when a template asks, not copied into a dict per order."""
    columns: dict[str, list[object]] = dict(table.data)
    for column, read in dates.items():
        columns[column] = read.fillna("").tolist()
    for column in _date_columns(table.columns) - set(dates):
        columns[column] = _per_value(table.frame[column], _field_date).tolist()
    columns = table.by_any_name(columns)
    kept = valid.to_numpy().nonzero()[0].tolist()  # positions of the valid rows
    order_dates = [dict(zip(dates, values, strict=True))
                   for values in zip(*(read[valid].tolist() for read in dates.values()),
                                     strict=True)]
    return tuple(map(Order._make, zip(
        ids[valid].tolist(), customer_ids[valid].tolist(), plan_keys[valid].tolist(),
        statuses[valid].tolist(), order_dates, map(RowFields, repeat(columns), kept),
        holds[valid].tolist(), table.frame.index[valid].tolist(), strict=True,
    )))


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
    problems = _sheet_clashes(tables)
    problems += [p for key in REQUIRED_COLUMNS for p in structure[key]]
    problems += [p for key in ("settings", "variables", "plans", "customers", "orders")
                 for p in found[key]]
    model = Model(plans=plans, customers=customers, orders=orders, constants=constants)
    return model, settings, problems
