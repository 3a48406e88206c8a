"""Validation: every problem at its place (sheet, Excel row, column, cell); good rows stay."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest

from commplan_xl.excel.read import read_tables
from commplan_xl.excel.validate import validate
from commplan_xl.mail.attachments import resolve_attachment
from commplan_xl.model import Model
from commplan_xl.problems import SENTENCES, Problem, WorkbookProblem, sentence
from commplan_xl.settings import Settings
from tests.builders import (
    DEFAULT_CUSTOMERS,
    DEFAULT_ORDERS,
    DEFAULT_PLANS,
    DEFAULT_SETTINGS,
    PLAN,
    make_workbook,
)

# Default layouts (see tests/builders.py): Orders A order_id, B customer_id, C plan,
# D start_date, E status, F product; Customers A customer_id, B name, C email;
# Plans A plan, B step, C delay, D unit, E subject, F body; Settings A key, B value.


def check(
    tmp_path: Path, environ: dict[str, str] | None = None, **tables: Any
) -> tuple[Model, Settings, list[WorkbookProblem]]:
    path = make_workbook(tmp_path, **tables)
    return validate(read_tables(path), home=tmp_path, environ=environ or {})


def only(problems: list[WorkbookProblem]) -> WorkbookProblem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def rows(defaults: list[dict[str, Any]], *changes: dict[str, Any]) -> list[dict[str, Any]]:
    """Copies of the default rows, row i updated with changes[i] (extra dicts add rows)."""
    out = [dict(row) for row in defaults]
    for i, change in enumerate(changes):
        if i < len(out):
            out[i].update(change)
        else:
            out.append(dict(change))
    return out


def plan_rows(**change: Any) -> list[dict[str, Any]]:
    """The default plan with its second step (Excel row 3) changed."""
    return rows(DEFAULT_PLANS, {}, change)


# --- a valid workbook -------------------------------------------------------------------


def test_valid_workbook_has_no_problems_and_builds_the_model(tmp_path: Path) -> None:
    """The default workbook validates cleanly into plans, customers, orders and constants."""
    model, settings, problems = check(tmp_path)
    assert problems == []
    plan = model.plans["baie vitrée"]
    assert plan.name == PLAN
    assert [(s.number, s.delay, s.unit, s.row) for s in plan.steps] == [
        (1, 5, "days", 2), (2, 15, "days", 3), (3, 1, "months", 4)]
    assert plan.steps[0].from_column == "start_date"
    assert plan.steps[0].active and not plan.steps[0].required
    assert set(model.customers) == {"C001", "C002"}
    assert model.customers["C001"].emails == ("alice@example.test",)
    assert [o.order_id for o in model.orders] == ["O1001", "O1002"]
    order = model.orders[0]
    assert (order.plan, order.status, order.row) == ("baie vitrée", "active", 2)
    assert order.dates == {"start_date": dt.date(2026, 3, 2)}
    assert order.fields["product"] == "Baie coulissante"
    assert model.constants == {"company_phone": "01 23 45 67 89"}
    assert settings.sender_email == "service@example.test"
    assert settings.attachments_dir == tmp_path / "attachments"


def test_values_are_matched_as_staff_write_them(tmp_path: Path) -> None:
    """Plan names ignore case and spaces, emails are trimmed and lower-cased, ids keep zeros."""
    customers = rows(DEFAULT_CUSTOMERS, {"customer_id": "00123",
                                         "email": "  Alice@Example.TEST ; bob@Example.test "})
    orders = rows(DEFAULT_ORDERS, {"customer_id": "00123", "plan": "Baie vitrée "},
                  {"plan": "  BAIE VITRÉE"})
    model, _, problems = check(tmp_path, customers=customers, orders=orders)
    assert problems == []
    assert model.customers["00123"].emails == ("alice@example.test", "bob@example.test")
    assert [o.plan for o in model.orders] == ["baie vitrée", "baie vitrée"]
    assert model.orders[0].customer_id == "00123"


@pytest.mark.parametrize(
    "start",
    [dt.date(2026, 3, 5), "2026-03-05", "05/03/2026", "5/3/2026", 46086],
    ids=["real date", "ISO text", "day-first text", "short day-first", "Excel serial"],
)
def test_start_date_forms(tmp_path: Path, start: object) -> None:
    """Real dates, ISO text, day-first text and Excel serials are all 5 March 2026."""
    model, _, problems = check(tmp_path, orders=rows(DEFAULT_ORDERS, {"start_date": start}))
    assert problems == []
    assert model.orders[0].dates["start_date"] == dt.date(2026, 3, 5)
    assert model.orders[0].fields["start_date"] == dt.date(2026, 3, 5)


def test_plan_display_name_is_its_first_spelling(tmp_path: Path) -> None:
    """Rows of one plan spelled differently are one plan, named as first written."""
    plans = rows(DEFAULT_PLANS, {}, {"plan": "BAIE VITRÉE  "}, {"plan": " baie vitrée"})
    model, _, problems = check(tmp_path, plans=plans)
    assert problems == []
    assert list(model.plans) == ["baie vitrée"]
    assert model.plans["baie vitrée"].name == PLAN
    assert {s.plan for s in model.plans["baie vitrée"].steps} == {PLAN}


def test_problem_prints_its_place(tmp_path: Path) -> None:
    """A problem reads Sheet!Cell (column): sentence."""
    _, _, problems = check(tmp_path, orders=rows(DEFAULT_ORDERS, {},
                                                 {"start_date": "31/02/2026"}))
    problem = only(problems)
    assert (problem.sheet, problem.row, problem.column, problem.cell) == (
        "Orders", 3, "start_date", "D3")
    assert str(problem).startswith('Orders!D3 (start_date): "31/02/2026" is not a date')


# --- sheets and columns -----------------------------------------------------------------


@pytest.mark.parametrize("sheet", ["Plans", "Customers", "Orders"])
def test_missing_required_sheet(tmp_path: Path, sheet: str) -> None:
    """Plans, Customers and Orders are required sheets."""
    _, _, problems = check(tmp_path, sheets={sheet: None})
    problem = only(problems)
    assert (problem.sheet, problem.row, problem.column) == (sheet, None, None)
    assert f"no sheet {sheet}" in problem.message


def test_settings_and_variables_sheets_are_optional(tmp_path: Path) -> None:
    """Without Settings and Variables, defaults apply (the sender may come from the env)."""
    model, settings, problems = check(
        tmp_path, environ={"COMMPLAN_SENDER_EMAIL": "Shop@Example.test"},
        sheets={"Settings": None, "Variables": None})
    assert problems == []
    assert settings.sender_email == "shop@example.test"
    assert settings.locale == "fr_FR"
    assert model.constants == {}


def test_missing_required_column(tmp_path: Path) -> None:
    """A required column missing is named, at row 1 of its sheet."""
    orders = [{k: v for k, v in row.items() if k != "start_date"} for row in DEFAULT_ORDERS]
    model, _, problems = check(tmp_path, orders=orders)
    problem = only(problems)
    assert (problem.sheet, problem.row, problem.column) == ("Orders", 1, "start_date")
    assert "column start_date is missing" in problem.message
    assert model.orders == ()


def test_headers_match_loosely(tmp_path: Path) -> None:
    """Headers like "Customer ID" and "Start-Date" are the columns customer_id, start_date."""
    orders = [["Order ID", "CUSTOMER_ID", "Plan", "Start-Date"],
              ["O1", "C001", PLAN, "05/03/2026"]]
    model, _, problems = check(tmp_path, orders=orders)
    assert problems == []
    assert model.orders[0].dates["start_date"] == dt.date(2026, 3, 5)


def test_repeated_header_is_a_problem(tmp_path: Path) -> None:
    """Two headers naming the same column are reported at the second one."""
    customers = [["customer_id", "name", "email", "Notes", "EMAIL"],
                 ["C001", "A", "a@x.fr", "", "b@x.fr"], ["C002", "B", "b@x.fr", "", ""]]
    _, _, problems = check(tmp_path, customers=customers)
    problem = only(problems)
    assert (problem.sheet, problem.row, problem.column, problem.cell) == (
        "Customers", 1, "email", "E1")


# --- Plans -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "column", "cell", "fragment"),
    [
        ({"plan": ""}, "plan", "A3", "plan name is empty"),
        ({"step": 11}, "step", "B3", '"11" is not a step number'),
        ({"step": 0}, "step", "B3", "whole number from 1 to 10"),
        ({"step": 1.5}, "step", "B3", '"1.5" is not a step number'),
        ({"step": "deux"}, "step", "B3", '"deux" is not a step number'),
        ({"step": 1}, "step", "B3", "Step 1 of plan \"Baie vitrée\" is already in row 2"),
        ({"delay": "quinze"}, "delay", "C3", '"quinze" is not a number'),
        ({"delay": -1}, "delay", "C3", "negative"),
        ({"delay": 1.5}, "delay", "C3", "must be whole"),
        ({"delay": 2.5, "unit": "jours ouvrés"}, "delay", "C3", "must be whole"),
        ({"unit": "fortnight"}, "unit", "D3", '"fortnight" is not a unit'),
        ({"unit": ""}, "unit", "D3", "unit is empty"),
        ({"subject": ""}, "subject", "E3", "subject is empty"),
    ],
)
def test_plan_row_problems(
    tmp_path: Path, change: dict[str, Any], column: str, cell: str, fragment: str
) -> None:
    """Each Plans problem names its cell, and the bad step is left out of the plan."""
    model, _, problems = check(tmp_path, plans=plan_rows(**change))
    problem = only(problems)
    assert (problem.sheet, problem.row, problem.column, problem.cell) == (
        "Plans", 3, column, cell)
    assert fragment in problem.message
    steps = [s.row for p in model.plans.values() for s in p.steps]
    assert 3 not in steps and 2 in steps


@pytest.mark.parametrize(
    ("unit", "canonical"),
    [("days", "days"), ("Day", "days"), ("jour", "days"), ("Jours ", "days"),
     ("jour(s)", "days"), ("business days", "business_days"),
     ("Business Day", "business_days"), ("jours ouvrés", "business_days"),
     ("jour ouvré", "business_days"), ("jours ouvres", "business_days"),
     ("jour(s) ouvré(s)", "business_days"), ("weeks", "weeks"), ("semaine", "weeks"),
     ("Semaine(s)", "weeks"), ("month", "months"), ("MOIS", "months")],
)
def test_unit_spellings(tmp_path: Path, unit: str, canonical: str) -> None:
    """Every accepted spelling (English or French, any case) becomes the canonical unit."""
    model, _, problems = check(tmp_path, plans=plan_rows(unit=unit))
    assert problems == []
    assert model.plans["baie vitrée"].steps[1].unit == canonical


def test_fractional_weeks_and_months_are_allowed(tmp_path: Path) -> None:
    """Only days and business days need whole delays."""
    plans = rows(DEFAULT_PLANS, {"delay": 1.5, "unit": "weeks"}, {"delay": "1,5",
                                                                   "unit": "mois"})
    model, _, problems = check(tmp_path, plans=plans)
    assert problems == []
    assert [s.delay for s in model.plans["baie vitrée"].steps[:2]] == [1.5, 1.5]


def test_from_column_must_exist_in_orders(tmp_path: Path) -> None:
    """`from` names an Orders column (normalised like a header); an unknown one is a problem."""
    plans = rows(DEFAULT_PLANS, {"from": "Date de livraison"}, {"from": "livraison"})
    orders = rows(DEFAULT_ORDERS, {"date_de_livraison": "01/05/2026"})
    model, _, problems = check(tmp_path, plans=plans, orders=orders)
    problem = only(problems)
    assert (problem.sheet, problem.row, problem.column, problem.cell) == (
        "Plans", 3, "from", "G3")
    assert 'Orders has no column "livraison"' in problem.message
    assert model.plans["baie vitrée"].steps[0].from_column == "date_de_livraison"
    assert model.orders[0].dates["date_de_livraison"] == dt.date(2026, 5, 1)
    assert model.orders[1].dates["date_de_livraison"] is None


@pytest.mark.parametrize("column", ["active", "required"])
def test_yes_no_columns_of_plans(tmp_path: Path, column: str) -> None:
    """`active` and `required` accept yes/no words and report anything else."""
    plans = rows(DEFAULT_PLANS, {column: "non"}, {column: "peut-être"}, {column: "x"})
    model, _, problems = check(tmp_path, plans=plans)
    problem = only(problems)
    assert (problem.sheet, problem.row, problem.column, problem.cell) == (
        "Plans", 3, column, "G3")
    steps = model.plans["baie vitrée"].steps
    assert [getattr(s, column) for s in steps] == [False, True]


def test_active_and_required_defaults(tmp_path: Path) -> None:
    """Empty `active` means yes and empty `required` means no."""
    plans = rows(DEFAULT_PLANS, {"active": "", "required": ""})
    model, _, problems = check(tmp_path, plans=plans)
    assert problems == []
    step = model.plans["baie vitrée"].steps[0]
    assert step.active and not step.required


def test_attachments(tmp_path: Path) -> None:
    """Existing attachments are kept; a missing file is a message problem (step stays);
    a name pointing outside attachments/ is a row problem (step left out)."""
    (tmp_path / "attachments").mkdir()
    (tmp_path / "attachments" / "cgv.pdf").write_bytes(b"%PDF")
    (tmp_path / "attachments" / "plan.pdf").write_bytes(b"%PDF")
    plans = rows(DEFAULT_PLANS, {"attachments": "cgv.pdf ; plan.pdf;"},
                 {"attachments": "absent.pdf"}, {"attachments": "../secret.txt"})
    model, _, problems = check(tmp_path, plans=plans)
    missing, outside = problems
    assert (missing.sheet, missing.row, missing.column, missing.cell) == (
        "Plans", 3, "attachments", "G3")
    assert missing.message_level and '"absent.pdf"' in missing.message
    assert (outside.row, outside.cell, outside.message_level) == (4, "G4", False)
    assert "outside the attachments folder" in outside.message
    steps = model.plans["baie vitrée"].steps
    assert [s.number for s in steps] == [1, 2]
    assert steps[0].attachments == ("cgv.pdf", "plan.pdf")
    assert steps[1].attachments == ("absent.pdf",)


def test_orders_of_a_plan_with_only_bad_rows_say_so(tmp_path: Path) -> None:
    """An order on a plan whose rows all have problems points at the plan's rows."""
    plans = rows(DEFAULT_PLANS, {}, {}, {}, {"plan": "Porte", "step": 1, "delay": -5,
                                             "unit": "days", "subject": "S", "body": "B"})
    orders = rows(DEFAULT_ORDERS, {}, {"plan": "porte"})
    model, _, problems = check(tmp_path, plans=plans, orders=orders)
    plan_problem, order_problem = problems
    assert (plan_problem.sheet, plan_problem.cell) == ("Plans", "C5")
    assert (order_problem.sheet, order_problem.row, order_problem.cell) == ("Orders", 3, "C3")
    assert "has problems in Plans (row 5)" in order_problem.message
    assert [o.order_id for o in model.orders] == ["O1001"]


# --- Customers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "column", "cell", "fragment"),
    [
        ({"customer_id": ""}, "customer_id", "A3", "customer id is empty"),
        ({"customer_id": "C001"}, "customer_id", "A3", '"C001" is already used in row 2'),
        ({"email": ""}, "email", "C3", "email is empty"),
        ({"email": "bruno@"}, "email", "C3", '"bruno@" is not an email address'),
        ({"email": "bruno@example.test; lui"}, "email", "C3", '"lui" is not an email'),
        ({"email": "bruno@exa mple.com"}, "email", "C3", "is not an email address"),
        ({"email": "bruno@example.test\nBcc: x@y.fr"}, "email", "C3", "not an email"),
        ({"opt_out": "bof"}, "opt_out", "D3", '"bof" is not yes or no'),
    ],
)
def test_customer_row_problems(
    tmp_path: Path, change: dict[str, Any], column: str, cell: str, fragment: str
) -> None:
    """Each Customers problem names its cell; the bad row is left out, the first stays."""
    customers = rows(DEFAULT_CUSTOMERS, {"opt_out": ""}, change)
    model, _, problems = check(tmp_path, customers=customers,
                               orders=rows(DEFAULT_ORDERS)[:1])
    problem = only(problems)
    assert (problem.sheet, problem.row, problem.column, problem.cell) == (
        "Customers", 3, column, cell)
    assert fragment in problem.message
    assert [c.row for c in model.customers.values()] == [2]


def test_opt_out_and_several_addresses(tmp_path: Path) -> None:
    """opt_out reads yes/no words; several addresses split on ; or ,."""
    customers = rows(DEFAULT_CUSTOMERS, {"opt_out": "oui", "email": "a@x.fr, B@x.fr"},
                     {"opt_out": ""})
    model, _, problems = check(tmp_path, customers=customers)
    assert problems == []
    assert model.customers["C001"].opt_out is True
    assert model.customers["C001"].emails == ("a@x.fr", "b@x.fr")
    assert model.customers["C002"].opt_out is False
    assert model.customers["C002"].fields["name"] == "Bruno Petit"


def test_order_of_a_customer_with_a_problem_says_which_row(tmp_path: Path) -> None:
    """An order whose customer row has its own problem points at that row."""
    customers = rows(DEFAULT_CUSTOMERS, {}, {"email": "pas une adresse"})
    model, _, problems = check(tmp_path, customers=customers)
    customer_problem, order_problem = problems
    assert customer_problem.cell == "C3"
    assert (order_problem.sheet, order_problem.row, order_problem.column,
            order_problem.cell) == ("Orders", 3, "customer_id", "B3")
    assert "has a problem in Customers row 3" in order_problem.message
    assert [o.order_id for o in model.orders] == ["O1001"]


def test_problems_are_data_with_their_kind_and_values(tmp_path: Path) -> None:
    """A problem carries its kind and the values its sentence names, so a report can find
    the customer behind an order without reading the sentence."""
    customers = rows(DEFAULT_CUSTOMERS, {}, {"email": "pas une adresse"})
    _, _, (customer_problem, order_problem) = check(tmp_path, customers=customers)
    assert (customer_problem.kind, customer_problem.values) == (
        Problem.EMAIL_INVALID, {"address": "pas une adresse"})
    assert (order_problem.kind, order_problem.values) == (
        Problem.ORDER_CUSTOMER_HAS_PROBLEM, {"customer_id": "C002", "customer_row": 3})
    assert order_problem.message == sentence(order_problem.kind, order_problem.values)


def test_every_kind_of_problem_has_its_sentence() -> None:
    """The table of sentences says every kind of problem, and a sentence made elsewhere
    is kept as it is."""
    assert set(SENTENCES) == set(Problem)
    made = WorkbookProblem("Settings", 4, "value", "timezone: unknown.", cell="B4")
    assert (made.kind, str(made)) == (Problem.TEXT, "Settings!B4 (value): timezone: unknown.")


# --- Orders ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "column", "cell", "fragment"),
    [
        ({"order_id": ""}, "order_id", "A3", "order id is empty"),
        ({"order_id": "O1001"}, "order_id", "A3", '"O1001" is already used in row 2'),
        ({"order_id": " o1001"}, "order_id", "A3", '"o1001" is already used in row 2'),
        ({"customer_id": "C999"}, "customer_id", "B3", 'no customer "C999" in Customers'),
        ({"customer_id": ""}, "customer_id", "B3", "customer id is empty"),
        ({"plan": "Porte"}, "plan", "C3", 'no plan "Porte" in Plans'),
        ({"plan": ""}, "plan", "C3", "plan is empty"),
        ({"start_date": ""}, "start_date", "D3", "start date is empty"),
        ({"start_date": "31/02/2026"}, "start_date", "D3", '"31/02/2026" is not a date'),
        ({"start_date": "bientôt"}, "start_date", "D3", '"bientôt" is not a date'),
        ({"status": "en attente"}, "status", "E3", '"en attente" is not a status'),
    ],
)
def test_order_row_problems(
    tmp_path: Path, change: dict[str, Any], column: str, cell: str, fragment: str
) -> None:
    """Each Orders problem names its cell; one bad order does not remove the others."""
    orders = rows(DEFAULT_ORDERS, {}, change, {"order_id": "O1003", "customer_id": "C002",
                                               "plan": PLAN, "start_date": "2026-03-10"})
    model, _, problems = check(tmp_path, orders=orders)
    problem = only(problems)
    assert (problem.sheet, problem.row, problem.column, problem.cell) == (
        "Orders", 3, column, cell)
    assert fragment in problem.message
    assert [o.row for o in model.orders] == [2, 4]


@pytest.mark.parametrize(
    ("status", "expected"),
    [("", "active"), ("Active", "active"), (" PAUSED ", "paused"), ("cancelled", "cancelled"),
     ("done", "done"), ("actif", "active"), ("en pause", "paused"), ("Annulée", "cancelled"),
     ("annule", "cancelled"), ("terminé", "done")],
)
def test_statuses(tmp_path: Path, status: str, expected: str) -> None:
    """Statuses compare ignoring case and spaces; empty is active; French words work."""
    model, _, problems = check(tmp_path, orders=rows(DEFAULT_ORDERS, {"status": status}))
    assert problems == []
    assert model.orders[0].status == expected


def test_from_date_column_bad_is_a_problem_empty_is_not_due(tmp_path: Path) -> None:
    """A date column a plan counts from: a bad date is a problem, an empty one is None."""
    plans = rows(DEFAULT_PLANS, {}, {}, {"from": "delivery_date"})
    orders = rows(DEFAULT_ORDERS, {"delivery_date": ""}, {"delivery_date": "2026-13-01"})
    model, _, problems = check(tmp_path, plans=plans, orders=orders)
    problem = only(problems)
    assert (problem.sheet, problem.row, problem.column, problem.cell) == (
        "Orders", 3, "delivery_date", "G3")
    (order,) = model.orders
    assert order.dates == {"start_date": dt.date(2026, 3, 2), "delivery_date": None}


def test_other_date_columns_are_parsed_into_fields(tmp_path: Path) -> None:
    """Columns ending in `date` become dates in fields; bad text there stays text."""
    orders = rows(DEFAULT_ORDERS, {"pose_date": "12/06/2026"}, {"pose_date": "à confirmer"})
    model, _, problems = check(tmp_path, orders=orders)
    assert problems == []
    assert model.orders[0].fields["pose_date"] == dt.date(2026, 6, 12)
    assert model.orders[1].fields["pose_date"] == "à confirmer"
    assert model.orders[0].fields["product"] == "Baie coulissante"


def test_hold_steps(tmp_path: Path) -> None:
    """hold_steps lists step numbers separated by ; and reports anything else."""
    orders = rows(DEFAULT_ORDERS, {"hold_steps": "3;4"}, {"hold_steps": "trois"})
    model, _, problems = check(tmp_path, orders=orders)
    problem = only(problems)
    assert (problem.sheet, problem.row, problem.column, problem.cell) == (
        "Orders", 3, "hold_steps", "G3")
    assert model.orders[0].hold_steps == frozenset({3, 4})


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Problems of several sheets and rows come back together, in sheet and row order."""
    customers = rows(DEFAULT_CUSTOMERS, {}, {"email": "x"})
    orders = rows(DEFAULT_ORDERS, {"start_date": "hier"}, {}, {
        "order_id": "O3", "customer_id": "C001", "plan": "Nope", "start_date": "01/01/2026"})
    _, _, problems = check(tmp_path, customers=customers, orders=orders,
                           plans=plan_rows(unit="siècles"))
    assert [str(p).split(":")[0] for p in problems] == [
        "Plans!D3 (unit)", "Customers!C3 (email)", "Orders!D2 (start_date)",
        "Orders!B3 (customer_id)", "Orders!C4 (plan)"]


# --- Variables ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("1st line", "cannot be a variable name"), ("customer", "is a built-in name"),
     ("Today", "is a built-in name"), ("Company phone", "already in row 2"),
     ("", "has no name")],
)
def test_variable_problems(tmp_path: Path, name: str, fragment: str) -> None:
    """Variable names are normalised, must be identifiers, unique and not built-in."""
    variables = [{"variable": "company_phone", "value": "01"}, {"variable": name, "value": "x"}]
    model, _, problems = check(tmp_path, variables=variables)
    problem = only(problems)
    assert (problem.sheet, problem.row, problem.column, problem.cell) == (
        "Variables", 3, "variable", "A3")
    assert fragment in problem.message
    assert model.constants == {"company_phone": "01"}


def test_variable_names_are_normalised(tmp_path: Path) -> None:
    """"Horaires Magasin" is the variable horaires_magasin; numbers stay as typed."""
    variables = [{"variable": "Horaires Magasin", "value": "9h-18h"},
                 {"variable": "siret", "value": 12345678900012}]
    model, _, problems = check(tmp_path, variables=variables)
    assert problems == []
    assert model.constants == {"horaires_magasin": "9h-18h", "siret": "12345678900012"}


# --- Settings ----------------------------------------------------------------------------


def settings_with(**values: Any) -> list[dict[str, Any]]:
    rows_ = [dict(r) for r in DEFAULT_SETTINGS]
    for row in rows_:
        if row["key"] in values:
            row["value"] = values.pop(row["key"])
    return rows_ + [{"key": k, "value": v} for k, v in values.items()]


def test_missing_sender_is_a_problem(tmp_path: Path) -> None:
    """Neither sender_email nor COMMPLAN_SENDER_EMAIL: check reports it."""
    _, _, problems = check(tmp_path, settings=settings_with(sender_email=""))
    problem = only(problems)
    assert (problem.sheet, problem.column) == ("Settings", "sender_email")
    assert "COMMPLAN_SENDER_EMAIL" in problem.message


def test_sender_from_environment_overrides_the_sheet(tmp_path: Path) -> None:
    """COMMPLAN_SENDER_EMAIL fills in (and overrides) the sender address."""
    _, settings, problems = check(tmp_path, settings=settings_with(sender_email=""),
                                  environ={"COMMPLAN_SENDER_EMAIL": "ops@example.test"})
    assert problems == []
    assert settings.sender_email == "ops@example.test"


@pytest.mark.parametrize("value", ["XX", "FR-ZZ"])
def test_unknown_holidays_country_is_a_problem(tmp_path: Path, value: str) -> None:
    """A holidays country or subdivision unknown to the holidays library is reported."""
    _, settings, problems = check(tmp_path, settings=settings_with(holidays=value))
    problem = only(problems)
    assert (problem.sheet, problem.row, problem.column, problem.cell) == (
        "Settings", 8, "value", "B8")
    assert f'"{value}"' in problem.message
    assert settings.holidays == ""


@pytest.mark.parametrize(
    "value", ["FR", "fr", "FR-57", "FR-Alsace-Moselle", "fr-moselle", "DE-BY", ""])
def test_known_holidays_are_accepted(tmp_path: Path, value: str) -> None:
    """Countries and subdivisions the holidays library knows are accepted."""
    _, _, problems = check(tmp_path, settings=settings_with(holidays=value))
    assert problems == []


def test_settings_problems_carry_their_cell(tmp_path: Path) -> None:
    """Bad setting values and unknown keys are reported at their Settings row."""
    _, _, problems = check(tmp_path, settings=settings_with(smtp_port="vingt",
                                                            sender_mail="x@y.fr"))
    port, unknown = problems
    assert (port.sheet, port.row, port.column, port.cell) == ("Settings", 5, "value", "B5")
    assert (unknown.row, unknown.column, unknown.cell) == (10, "key", "A10")
    assert '"sender_mail" is not a known setting' in unknown.message


# --- paths -------------------------------------------------------------------------------


def test_resolve_attachment_inside_folder(tmp_path: Path) -> None:
    """A plain name, or a name in a subfolder, resolves inside attachments/."""
    base = tmp_path / "attachments"
    base.mkdir()
    assert resolve_attachment(base, " cgv.pdf ") == base.resolve() / "cgv.pdf"
    assert resolve_attachment(base, "docs/cgv.pdf") == base.resolve() / "docs" / "cgv.pdf"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("", "empty"), ("  ", "empty"), ("/etc/passwd", "full path"),
     ("C:\\Users\\x.pdf", "full path"), ("../x.pdf", "outside"),
     ("docs/../../x.pdf", "outside"), ("..\\x.pdf", "outside")],
)
def test_resolve_attachment_refuses_escapes(tmp_path: Path, name: str, fragment: str) -> None:
    """Empty, absolute and climbing names are refused with a sentence."""
    with pytest.raises(ValueError, match=fragment):
        resolve_attachment(tmp_path, name)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_resolve_attachment_follows_symlinks(tmp_path: Path) -> None:
    """A symlink inside attachments/ that points outside it is refused."""
    base = tmp_path / "attachments"
    base.mkdir()
    (tmp_path / "secret.txt").write_text("x")
    (base / "link.pdf").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ValueError, match="outside"):
        resolve_attachment(base, "link.pdf")


def test_usual_and_unusual_rows_mixed_give_the_same_model(tmp_path: Path) -> None:
    """Rows needing a full check (repeats, text dates, statuses, holds) sit among usual rows
    without changing what either kind gives."""
    base = DEFAULT_ORDERS[0]
    orders = [
        dict(base, order_id="O1"),
        dict(base, order_id="O1"),  # repeated id: reported, the first stays
        dict(base, order_id="O2", start_date="31/02/2026"),  # no such day
        dict(base, order_id="O3", start_date="05/03/2026", status="En pause"),
        dict(base, order_id="O4", hold_steps="2"),
        dict(base, order_id="O5", customer_id="C404"),
        dict(base, order_id="O6", customer_id="C002", plan="  baie VITRÉE "),
    ]
    customers = [*DEFAULT_CUSTOMERS,
                 {"customer_id": "C003", "name": "Zoé", "email": "A@X.fr; b@y.fr"},
                 {"customer_id": "C001", "name": "Twice", "email": "t@x.fr"}]
    model, _, problems = check(tmp_path, orders=orders, customers=customers)
    assert [(p.sheet, p.row, p.column) for p in problems] == [
        ("Customers", 5, "customer_id"), ("Orders", 3, "order_id"),
        ("Orders", 4, "start_date"), ("Orders", 7, "customer_id"),
    ]
    assert [o.order_id for o in model.orders] == ["O1", "O3", "O4", "O6"]
    o3, o4, o6 = model.orders[1:]
    assert (o3.status, o3.dates["start_date"], o3.fields["start_date"]) == (
        "paused", dt.date(2026, 3, 5), dt.date(2026, 3, 5))
    assert (o4.hold_steps, o6.plan, o6.row) == (frozenset({2}), "baie vitrée", 8)
    assert model.orders[0] == type(o3)(
        order_id="O1", customer_id="C001", plan="baie vitrée", status="active",
        dates={"start_date": dt.date(2026, 3, 2)}, fields=model.orders[0].fields, row=2)
    assert model.customers["C003"].emails == ("a@x.fr", "b@y.fr")
    assert model.customers["C001"].name == "Alice Martin"


# --- the rules of Orders, one row each


def test_orders_rules_one_row_each(tmp_path: Path) -> None:
    """Each rule of an Orders row reports its own sentence at its cell and leaves that row
    out; the rows breaking no rule are kept with their values."""
    from commplan_xl.excel.read import _table

    march_2 = dt.date(2026, 3, 2)
    plans = [["plan", "step", "delay", "unit", "subject", "body", "from"],
             ["Baie vitrée", 1, 0, "days", "S", "B", ""],
             ["Baie vitrée", 2, 3, "days", "S", "B", "livraison"],
             ["Porte", 1, 5, "days", "S", "B", ""],
             ["Cassée", 1, -1, "days", "S", "B", ""]]
    customers = [["customer_id", "name", "email"], ["C1", "A", "a@x.fr"],
                 ["C2", "B", "b@x.fr"], ["C3", "C", "pas une adresse"]]
    orders = [
        ["order_id", "customer_id", "plan", "start_date", "livraison", "status", "hold_steps"],
        ["O1", "C1", "Baie vitrée", march_2, "01/04/2026", "", ""],  # kept
        ["O1", "C2", "Porte", march_2, "", "", ""],
        ["", "C1", "Porte", march_2, "", "", ""],
        ["O4", "", "Porte", march_2, "", "", ""],
        ["O5", "C404", "Porte", march_2, "", "", ""],
        ["O6", "C3", "Porte", march_2, "", "", ""],
        ["O7", "C1", "", march_2, "", "", ""],
        ["O8", "C1", "Inconnu", march_2, "", "", ""],
        ["O9", "C1", "Cassée", march_2, "", "", ""],
        ["O10", "C1", "Porte", "31/02/2026", "", "", ""],
        ["O11", "C1", "Porte", "", "", "", ""],
        ["O12", "C1", "baie  VITRÉE", march_2, "bientôt", "", ""],
        ["O13", "C1", "Porte", march_2, "bientôt", "", ""],  # kept: Porte counts from start
        ["O14", "C2", "Porte", "05/03/2026", "", "En pause", ""],  # kept
        ["O15", "C1", "Porte", march_2, "", "perdu", ""],
        ["O16", "C1", "Porte", march_2, "", "", "1;2"],  # kept
        ["O17", "C1", "Porte", march_2, "", "", "x"],
        ["O18", "C1", "Porte", "demain", "", "", ""],
    ]
    tables = {
        "settings": _table("Settings", [["key", "value"], ["sender_email", "s@x.fr"]]),
        "plans": _table("Plans", plans),
        "customers": _table("Customers", customers),
        "orders": _table("Orders", orders),
    }
    model, _, problems = validate(tables, home=tmp_path, environ={})
    assert [str(p) for p in problems if p.sheet == "Orders"] == [
        'Orders!A3 (order_id): The order id "O1" is already used in row 2 (order ids ignore '
        "case and spaces); give each order its own id.",
        "Orders!A4 (order_id): The order id is empty; write one.",
        "Orders!B5 (customer_id): The customer id is empty; write the customer's id from "
        "Customers.",
        'Orders!B6 (customer_id): There is no customer "C404" in Customers; add the customer '
        "or fix the id.",
        'Orders!B7 (customer_id): The customer "C3" has a problem in Customers row 4; fix '
        "that row first.",
        "Orders!C8 (plan): The plan is empty; write the name of a plan from Plans.",
        'Orders!C9 (plan): There is no plan "Inconnu" in Plans; write one of "Baie vitrée", '
        '"Porte".',
        'Orders!C10 (plan): The plan "Cassée" has problems in Plans (row 5); fix them first.',
        'Orders!D11 (start_date): "31/02/2026" is not a date (there is no such day).',
        "Orders!D12 (start_date): The start date is empty; write the date the order starts "
        "(e.g. 05/03/2026).",
        'Orders!E13 (livraison): "bientôt" is not a date; write it day first, e.g. '
        "05/03/2026.",
        'Orders!F16 (status): "perdu" is not a status; write active, paused, cancelled or '
        "done (empty means active).",
        'Orders!G18 (hold_steps): "x" is not a list of steps; write step numbers from 1 to 10 '
        "separated by ; (e.g. 3;4).",
        'Orders!D19 (start_date): "demain" is not a date; write it day first, e.g. '
        "05/03/2026.",
    ]
    kept = {o.order_id: o for o in model.orders}
    assert list(kept) == ["O1", "O13", "O14", "O16"]
    assert kept["O1"].dates == {"livraison": dt.date(2026, 4, 1), "start_date": march_2}
    assert (kept["O13"].dates["livraison"], kept["O13"].fields["livraison"]) == (None, "")
    assert (kept["O14"].status, kept["O14"].customer_id, kept["O14"].row) == ("paused", "C2", 15)
    assert kept["O14"].fields["start_date"] == dt.date(2026, 3, 5)
    assert kept["O16"].hold_steps == frozenset({1, 2})
    assert dict(kept["O1"].fields) == {
        "order_id": "O1", "customer_id": "C1", "plan": "Baie vitrée", "start_date": march_2,
        "livraison": dt.date(2026, 4, 1), "status": "", "hold_steps": ""}
