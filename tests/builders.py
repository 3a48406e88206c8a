"""Build real .xlsx workbooks for tests, in code (no binary fixtures).

Usage::

    path = make_workbook(tmp_path)                      # a small valid workbook
    path = make_workbook(tmp_path, orders=[{...}, ...])  # replace one sheet's rows
    path = make_workbook(tmp_path, sheets={"Variables": None})  # drop a sheet
    path = make_workbook(tmp_path, sheets={"Notes": [["a", "b"], [1, 2]]})  # add a sheet

Each table is either a list of dicts (the header is every key, in order of first
appearance; a missing key is an empty cell) or a list of lists whose first list is the
header. `settings` may also be a plain dict ``{key: value}``. Values are written as given:
a ``datetime.date`` becomes a real Excel date, a number a number, a str text.

The workbook is written to ``tmp_path/workbooks/commplan.xlsx`` (the home layout),
and ``tmp_path/attachments`` and ``tmp_path/archive`` are created, so ``home=tmp_path``.
The DEFAULT_* lists below are the defaults; copy them to tweak one row::

    orders = [dict(row) for row in DEFAULT_ORDERS]
    orders[0]["start_date"] = "31/02/2026"
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from openpyxl import Workbook

Rows = Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]]

SENDER = "service@example.test"

DEFAULT_SETTINGS: list[dict[str, Any]] = [
    {"key": "sender_email", "value": SENDER},
    {"key": "sender_name", "value": "Service client"},
    {"key": "smtp_host", "value": "127.0.0.1"},
    {"key": "smtp_port", "value": 2525},
    {"key": "locale", "value": "fr_FR"},
    {"key": "timezone", "value": "Europe/Paris"},
    {"key": "holidays", "value": "FR"},
    {"key": "catch_up_days", "value": 7},
]

PLAN = "Baie vitrée"

DEFAULT_PLANS: list[dict[str, Any]] = [
    {
        "plan": PLAN, "step": 1, "delay": 5, "unit": "days",
        "subject": "Votre commande {{ order.order_id }} est en cours de traitement",
        "body": "Bonjour {{ customer.name }},\nvotre commande est en cours de traitement.",
    },
    {
        "plan": PLAN, "step": 2, "delay": 15, "unit": "days",
        "subject": "Votre commande {{ order.order_id }} entre en fabrication",
        "body": "Bonjour {{ customer.name }},\nvotre commande entre en planning de fabrication.",
    },
    {
        "plan": PLAN, "step": 3, "delay": 1, "unit": "months",
        "subject": "Votre commande {{ order.order_id }} est en cours de fabrication",
        "body": "Bonjour {{ customer.name }},\nvotre commande est en cours de fabrication.",
    },
]

DEFAULT_CUSTOMERS: list[dict[str, Any]] = [
    {"customer_id": "C001", "name": "Alice Martin", "email": "alice@example.test"},
    {"customer_id": "C002", "name": "Bruno Petit", "email": "bruno@example.test"},
]

DEFAULT_ORDERS: list[dict[str, Any]] = [
    {"order_id": "O1001", "customer_id": "C001", "plan": PLAN,
     "start_date": dt.date(2026, 3, 2), "status": "active", "product": "Baie coulissante"},
    {"order_id": "O1002", "customer_id": "C002", "plan": PLAN,
     "start_date": dt.date(2026, 3, 9), "status": "active", "product": "Baie fixe"},
]

DEFAULT_VARIABLES: list[dict[str, Any]] = [
    {"variable": "company_phone", "value": "01 23 45 67 89", "description": "Standard"},
]


class Text(str):
    """A string written as text even when it starts with `=` (not a formula)."""


def _as_grid(rows: Rows | Mapping[str, Any]) -> list[list[Any]]:
    """A table (dicts, lists with header, or a settings dict) as a grid of cells."""
    if isinstance(rows, Mapping):
        return [["key", "value"], *([k, v] for k, v in rows.items())]
    rows = list(rows)
    if not rows:
        return []
    if isinstance(rows[0], Mapping):
        header: list[str] = []
        for row in rows:
            header.extend(k for k in row if k not in header)  # type: ignore[union-attr]
        return [header, *([row.get(k) for k in header] for row in rows)]  # type: ignore[union-attr]
    return [list(r) for r in rows]


def write_xlsx(path: Path, sheets: Mapping[str, Rows | Mapping[str, Any]]) -> Path:
    """Write `sheets` (name -> table) to a real .xlsx at `path`, in the given order."""
    wb = Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for r, values in enumerate(_as_grid(rows), start=1):
            for c, value in enumerate(values, start=1):
                if value is None:
                    continue
                cell = ws.cell(row=r, column=c, value=value)
                if isinstance(value, Text):
                    cell.data_type = "s"
                if isinstance(value, dt.datetime):
                    cell.number_format = "yyyy-mm-dd hh:mm"
                elif isinstance(value, dt.date):
                    cell.number_format = "dd/mm/yyyy"
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


def make_workbook(
    tmp_path: Path,
    *,
    settings: Rows | Mapping[str, Any] | None = None,
    plans: Rows | None = None,
    customers: Rows | None = None,
    orders: Rows | None = None,
    variables: Rows | None = None,
    sheets: Mapping[str, Rows | None] | None = None,
) -> Path:
    """Write a workbook under `tmp_path` (the home folder) and return its path.

    None for a table means its default. `sheets` adds sheets, replaces one by name, or
    drops one when its value is None (e.g. ``sheets={"Orders": None}``).
    """
    tables: dict[str, Any] = {
        "Settings": DEFAULT_SETTINGS if settings is None else settings,
        "Plans": DEFAULT_PLANS if plans is None else plans,
        "Customers": DEFAULT_CUSTOMERS if customers is None else customers,
        "Orders": DEFAULT_ORDERS if orders is None else orders,
        "Variables": DEFAULT_VARIABLES if variables is None else variables,
    }
    for name, rows in (sheets or {}).items():
        if rows is None:
            tables.pop(name, None)
        else:
            tables[name] = rows
    for folder in ("attachments", "archive"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    return write_xlsx(tmp_path / "workbooks" / "commplan.xlsx", tables)
