"""`commplan init`: the home folders, demo attachments and the ready-to-edit workbook."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.sandbox
import openpyxl
import pytest
from openpyxl.worksheet.worksheet import Worksheet

from commplan_xl.excel.starter import (
    CGV_PDF,
    GUIDE_PDF,
    backup_path,
    create_workbook,
    init_home,
    minimal_pdf,
    statuses,
    units,
)
from commplan_xl.excel.validate import is_example_address
from commplan_xl.model import norm_key
from commplan_xl.problems import CommplanError, WorkbookLocked

TODAY = dt.date(2026, 11, 27)
# Most tests here read the English workbook (`init --lang en`), whose names the README fixes;
# tests/test_starter_fr.py reads the French one `init` writes by default.
STATUSES = statuses("en")
UNITS = units("en")

# Column names as the README fixes them (required and optional), in order, then our extras.
CONTRACT_HEADERS = {
    "Orders": ["order_id", "customer_id", "plan", "start_date", "status"],
    "Customers": ["customer_id", "name", "email", "opt_out"],
    "Plans": ["plan", "step", "delay", "unit", "subject", "body", "from", "attachments",
              "active", "required"],
    "Variables": ["variable", "value", "description"],
    "Settings": ["key", "value"],
}
EXPECTED_HEADERS = {
    "Orders": CONTRACT_HEADERS["Orders"] + ["product", "store", "date_de_livraison", "hold_steps"],
    "Customers": CONTRACT_HEADERS["Customers"] + ["telephone"],
    "Plans": CONTRACT_HEADERS["Plans"],
    "Variables": CONTRACT_HEADERS["Variables"],
    "Settings": CONTRACT_HEADERS["Settings"] + ["description"],
}
YES_NO_WORDS = {"oui", "non", "yes", "no", "true", "false", "1", "0", "x", ""}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One initialised home folder (English) shared by the read-only tests of this module."""
    folder = tmp_path_factory.mktemp("home")
    init_home(folder, today=TODAY, lang="en")
    return folder


@pytest.fixture(scope="module")
def wb(home: Path) -> openpyxl.Workbook:
    return openpyxl.load_workbook(home / "workbooks" / "commplan.xlsx")


def headers(ws: Worksheet) -> list[str]:
    return [c.value for c in ws[1] if c.value is not None]


def records(ws: Worksheet) -> list[dict[str, Any]]:
    """Data rows as dicts by header, dates as `date`, empty cells as ""."""
    names = headers(ws)
    out = []
    for row in ws.iter_rows(min_row=2, max_col=len(names), values_only=True):
        if all(v is None for v in row):
            continue
        out.append({
            n: (v.date() if isinstance(v, dt.datetime) else ("" if v is None else v))
            for n, v in zip(names, row, strict=True)
        })
    return out


def column_letter(ws: Worksheet, name: str) -> str:
    return openpyxl.utils.get_column_letter(headers(ws).index(name) + 1)


def validation_for(ws: Worksheet, cell: str) -> Any:
    found = [dv for dv in ws.data_validations.dataValidation if cell in dv.sqref]
    assert found, f"no data validation on {ws.title}!{cell}"
    return found[0]


# --- the home folder -------------------------------------------------------------------


def test_init_creates_folders_and_returns_workbook_path(tmp_path: Path) -> None:
    """init creates workbooks/, attachments/ and archive/ and returns the workbook it wrote."""
    path = init_home(tmp_path / "site", today=TODAY)
    assert path == tmp_path / "site" / "workbooks" / "commplan.xlsx"
    assert path.is_file()
    for folder in ("workbooks", "attachments", "archive"):
        assert (tmp_path / "site" / folder).is_dir()
    assert not list(path.parent.glob(".*tmp")), "no temporary file is left behind"


def test_demo_attachments_are_real_pdfs(home: Path) -> None:
    """Both demo attachments exist as complete PDF files."""
    for name in (CGV_PDF, GUIDE_PDF):
        data = (home / "attachments" / name).read_bytes()
        assert data.startswith(b"%PDF-1.")
        assert data.rstrip().endswith(b"%%EOF")
        assert b"/Type /Page " in data


def test_minimal_pdf_xref_offsets_point_at_objects() -> None:
    """Every xref offset of the hand-built PDF points at its `N 0 obj` line."""
    data = minimal_pdf(["Ligne avec (parenthèses) et \\ barre", "é à ç"])
    start = int(data.rsplit(b"startxref\n", 1)[1].split()[0])
    assert data[start:].startswith(b"xref")
    entries = data[start:].split(b"\n")[3:8]
    for number, entry in enumerate(entries, start=1):
        offset = int(entry.split()[0])
        assert data[offset:].startswith(b"%d 0 obj" % number)
    assert b"\\(parenth\xe8ses\\)" in data  # escaped, WinAnsi-encoded


def test_every_attachment_named_in_plans_exists(home: Path, wb: openpyxl.Workbook) -> None:
    """Each file a demo plan attaches is in attachments/."""
    names = {n.strip() for r in records(wb["Plans"]) for n in str(r["attachments"]).split(";")}
    names.discard("")
    assert names == {CGV_PDF, GUIDE_PDF}
    for name in names:
        assert (home / "attachments" / name).is_file()


# --- refusing and replacing ------------------------------------------------------------


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    """A second init without force fails with a sentence naming the path and --force."""
    path = init_home(tmp_path, today=TODAY)
    before = path.read_bytes()
    with pytest.raises(CommplanError) as info:
        init_home(tmp_path, today=TODAY + dt.timedelta(days=3))
    message = str(info.value)
    assert str(path) in message
    assert "use --force to replace it" in message
    assert path.read_bytes() == before


def test_init_force_keeps_dated_backup(tmp_path: Path) -> None:
    """init with force replaces the workbook and keeps the old one, byte for byte, beside it."""
    path = init_home(tmp_path, today=TODAY)
    before = path.read_bytes()
    init_home(tmp_path, force=True, today=TODAY + dt.timedelta(days=3))
    backups = sorted(path.parent.glob("commplan.backup-*.xlsx"))
    assert len(backups) == 1
    assert backups[0].read_bytes() == before
    assert path.read_bytes() != before
    assert openpyxl.load_workbook(path, read_only=True).sheetnames[0] == "Mode d'emploi"


def test_backup_names_never_collide(tmp_path: Path) -> None:
    """A second backup in the same second gets its own name instead of replacing the first."""
    workbook = tmp_path / "commplan.xlsx"
    now = dt.datetime(2026, 11, 27, 6, 30, 0)
    first = backup_path(workbook, now)
    assert first.name == "commplan.backup-2026-11-27-063000.xlsx"
    first.write_bytes(b"old")
    assert backup_path(workbook, now).name == "commplan.backup-2026-11-27-063000-2.xlsx"


def test_init_force_refuses_while_workbook_is_open(tmp_path: Path) -> None:
    """With Excel's lock file beside the workbook, init --force leaves everything as it is."""
    path = init_home(tmp_path, today=TODAY)
    before = path.read_bytes()
    (path.parent / "~$commplan.xlsx").write_bytes(b"lock")
    with pytest.raises(WorkbookLocked):
        init_home(tmp_path, force=True, today=TODAY)
    assert path.read_bytes() == before
    assert not list(path.parent.glob("commplan.backup-*"))


def test_init_keeps_attachments_staff_replaced(tmp_path: Path) -> None:
    """init never overwrites an attachment file already in attachments/."""
    real = tmp_path / "attachments" / CGV_PDF
    real.parent.mkdir()
    real.write_bytes(b"%PDF-1.7 the company's real terms")
    init_home(tmp_path, today=TODAY)
    assert (tmp_path / "attachments" / GUIDE_PDF).read_bytes().startswith(b"%PDF")
    assert real.read_bytes() == b"%PDF-1.7 the company's real terms"


# --- the workbook layout ---------------------------------------------------------------


def test_sheets_in_order(wb: openpyxl.Workbook) -> None:
    """The workbook holds exactly How to, Orders, Customers, Plans, Variables, Settings, in
    order, then the tool's hidden list of plans."""
    assert wb.sheetnames == ["How to", "Orders", "Customers", "Plans", "Variables", "Settings",
                             "PlanList"]
    assert [ws.sheet_state for ws in wb.worksheets] == ["visible"] * 6 + ["hidden"]


@pytest.mark.parametrize("sheet", list(EXPECTED_HEADERS))
def test_headers_are_spec_names(wb: openpyxl.Workbook, sheet: str) -> None:
    """Row 1 holds the contract's column names first, exactly, then the demo's extra columns."""
    names = headers(wb[sheet])
    assert names == EXPECTED_HEADERS[sheet]
    assert names[: len(CONTRACT_HEADERS[sheet])] == CONTRACT_HEADERS[sheet]


@pytest.mark.parametrize("sheet", list(EXPECTED_HEADERS))
def test_header_row_frozen_bold_and_commented(wb: openpyxl.Workbook, sheet: str) -> None:
    """Every sheet freezes its bold header row and every header cell carries a help comment."""
    ws = wb[sheet]
    assert ws.freeze_panes == "A2"
    for cell in ws[1]:
        assert cell.font.bold
        assert cell.comment is not None and len(cell.comment.text) > 20, cell.coordinate


@pytest.mark.parametrize(("sheet", "column"), [
    ("Orders", "start_date"), ("Orders", "date_de_livraison"),
])
def test_date_columns_formatted_day_first(wb: openpyxl.Workbook, sheet: str,
                                          column: str) -> None:
    """Date columns show DD/MM/YYYY on demo rows and on empty rows ready for new data."""
    ws = wb[sheet]
    letter = column_letter(ws, column)
    for row in (2, 3, 12, 500, 1001):
        assert ws[f"{letter}{row}"].number_format == "DD/MM/YYYY", f"{letter}{row}"
    assert isinstance(ws[f"{letter}2"].value, dt.datetime) or column != "start_date"


@pytest.mark.parametrize(("sheet", "column"), [
    ("Orders", "order_id"), ("Orders", "customer_id"), ("Orders", "hold_steps"),
    ("Customers", "customer_id"), ("Settings", "key"), ("Settings", "value"),
    ("Variables", "value"),
])
def test_id_and_key_columns_are_text(wb: openpyxl.Workbook, sheet: str, column: str) -> None:
    """Id, key and free-value columns are formatted as text, so "0012" stays "0012"."""
    ws = wb[sheet]
    letter = column_letter(ws, column)
    for row in (2, 100 if sheet in ("Settings", "Variables") else 1001):
        assert ws[f"{letter}{row}"].number_format == "@", f"{letter}{row}"


def test_customer_ids_keep_leading_zeros(wb: openpyxl.Workbook) -> None:
    """Customer ids read back as text with their leading zeros."""
    ids = [r["customer_id"] for r in records(wb["Customers"])]
    assert ids[0] == "C0001"
    assert all(isinstance(i, str) and i.startswith("C0") for i in ids)
    assert all(isinstance(r["customer_id"], str) for r in records(wb["Orders"]))


def test_pandas_reads_only_the_demo_rows(home: Path) -> None:
    """Formatted empty rows do not come back as data when read with pandas and calamine."""
    import pandas as pd

    frame = pd.read_excel(home / "workbooks" / "commplan.xlsx", sheet_name="Orders",
                          engine="calamine", dtype=str, keep_default_na=False)
    assert len(frame) == 11
    assert frame["customer_id"].iloc[0] == "C0001"


def test_drop_down_lists(wb: openpyxl.Workbook) -> None:
    """Status, plan, unit and yes/no columns offer drop-down lists of the right values."""
    orders, plans, customers = wb["Orders"], wb["Plans"], wb["Customers"]
    status = validation_for(orders, f"{column_letter(orders, 'status')}500000")
    assert status.type == "list"
    assert status.formula1 == '"' + ",".join(STATUSES) + '"'
    plan = validation_for(orders, f"{column_letter(orders, 'plan')}1048576")
    assert plan.type == "list" and plan.formula1.startswith("OFFSET(PlanList!$A$2,")
    assert [r[0].value for r in wb["PlanList"].iter_rows()] == ["plan", "Baie vitrée",
                                                                 "Pose fenêtres"]
    unit = validation_for(plans, f"{column_letter(plans, 'unit')}20")
    assert unit.formula1.strip('"').split(",") == list(UNITS)
    for ws, column in ((plans, "active"), (plans, "required"), (customers, "opt_out")):
        dv = validation_for(ws, f"{column_letter(ws, column)}2")
        assert dv.type == "list" and dv.formula1 == '"yes,no"'
    assert validation_for(plans, f"{column_letter(plans, 'step')}2").type == "whole"


def test_demo_units_and_statuses_are_in_their_lists(wb: openpyxl.Workbook) -> None:
    """Every demo unit, status and yes/no value is one the drop-downs offer."""
    assert {r["unit"] for r in records(wb["Plans"])} <= set(UNITS)
    assert {r["status"] for r in records(wb["Orders"])} <= set(STATUSES)
    for r in records(wb["Plans"]):
        assert r["active"] in YES_NO_WORDS and r["required"] in YES_NO_WORDS
    for r in records(wb["Customers"]):
        assert r["opt_out"] in YES_NO_WORDS


# --- the demo data ---------------------------------------------------------------------


def test_settings_rows(wb: openpyxl.Workbook) -> None:
    """Settings holds the demo sender, local SMTP on port 25, fr_FR, Paris, FR and 7 days."""
    values = {r["key"]: r["value"] for r in records(wb["Settings"])}
    assert values["sender_email"] == "service.client@example.com"
    assert values["sender_name"]
    assert (values["smtp_host"], values["smtp_port"]) == ("localhost", "25")
    assert values["smtp_security"] == "" and values["smtp_user"] == ""
    assert (values["locale"], values["timezone"], values["holidays"]) == (
        "en_GB", "Europe/Paris", "FR")
    assert values["catch_up_days"] == "7"
    assert values["daily_limit"] == "" and values["report_to"] == ""
    assert all(r["description"] for r in records(wb["Settings"]))


def test_baie_vitree_plan(wb: openpyxl.Workbook) -> None:
    """Baie vitrée has 5 steps at +5 d, +15 d, +1 m, +1.5 m, +2 m; step 1 is required with CGV."""
    steps = [r for r in records(wb["Plans"]) if r["plan"] == "Baie vitrée"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5]
    assert [r["delay"] for r in steps] == [5, 15, 1, 1.5, 2]
    assert [r["unit"] for r in steps] == ["days", "days", "months", "months", "months"]
    assert steps[0]["required"] == "yes" and steps[0]["attachments"] == CGV_PDF
    assert all(r["required"] == "no" for r in steps[1:])
    assert steps[-1]["attachments"] == GUIDE_PDF
    assert all("\n" in r["body"] for r in steps), "bodies are several lines"


def test_second_plan_counts_business_days_from_an_orders_column(wb: openpyxl.Workbook) -> None:
    """The second plan uses business days, its first step counts from start_date and later
    steps from a date column that exists in Orders."""
    steps = [r for r in records(wb["Plans"]) if r["plan"] != "Baie vitrée"]
    assert 3 <= len(steps) <= 4 and len({r["plan"] for r in steps}) == 1
    assert all(r["unit"] == "business days" for r in steps)
    assert steps[0]["from"] in ("", "start_date")
    later = {r["from"] for r in steps if r["from"] not in ("", "start_date")}
    assert later == {"date_de_livraison"}
    assert later <= set(headers(wb["Orders"]))


def test_customers(wb: openpyxl.Workbook) -> None:
    """About ten customers with accented names, addresses at documentation domains (never
    sent to), one with two addresses separated by ";" and one opted out."""
    rows = records(wb["Customers"])
    assert 8 <= len(rows) <= 12
    assert len({r["customer_id"] for r in rows}) == len(rows)
    assert any(ch in "".join(r["name"] for r in rows) for ch in "éèëïç")
    addresses = [a.strip() for r in rows for a in r["email"].split(";")]
    assert all(is_example_address(a) for a in addresses)
    assert sum(";" in r["email"] for r in rows) == 1
    assert [r["opt_out"] for r in rows].count("yes") == 1


def test_orders_spread_over_the_past_75_days(wb: openpyxl.Workbook) -> None:
    """Demo orders start between today-75 and today-1, refer to known customers and plans,
    include a paused and a done order, and the second plan has past, future and empty
    delivery dates."""
    orders = records(wb["Orders"])
    customers = {r["customer_id"] for r in records(wb["Customers"])}
    plans = {norm_key(r["plan"]) for r in records(wb["Plans"])}
    assert 8 <= len(orders) <= 12
    assert len({o["order_id"] for o in orders}) == len(orders)
    for o in orders:
        assert TODAY - dt.timedelta(days=75) <= o["start_date"] <= TODAY - dt.timedelta(days=1)
        assert o["customer_id"] in customers and norm_key(o["plan"]) in plans
        assert o["hold_steps"] == ""
    statuses = [o["status"] for o in orders]
    assert statuses.count("paused") == 1 and statuses.count("done") == 1
    second = [o for o in orders if o["plan"] != "Baie vitrée"]
    deliveries = [o["date_de_livraison"] for o in second]
    assert any(d and d < TODAY for d in deliveries)
    assert any(d and d > TODAY for d in deliveries)
    assert "" in deliveries
    assert all(o["date_de_livraison"] == "" for o in orders if o["plan"] == "Baie vitrée")


def test_demo_dates_follow_today(tmp_path: Path) -> None:
    """The demo's dates move with `today`, so `due` always finds work."""
    create_workbook(tmp_path / "a.xlsx", today=dt.date(2030, 1, 10), lang="en")
    first = openpyxl.load_workbook(tmp_path / "a.xlsx", read_only=True)["Orders"]["D2"].value
    assert first.date() == dt.date(2030, 1, 10) - dt.timedelta(days=6)


def test_workbook_without_demo(tmp_path: Path) -> None:
    """Without demo data the sheets keep headers, formats and Settings keys but no rows."""
    create_workbook(tmp_path / "blank.xlsx", demo=False, today=TODAY, lang="en")
    blank = openpyxl.load_workbook(tmp_path / "blank.xlsx")
    for sheet in ("Orders", "Customers", "Plans", "Variables"):
        assert records(blank[sheet]) == [], sheet
        assert headers(blank[sheet]) == EXPECTED_HEADERS[sheet]
    settings = {r["key"]: r["value"] for r in records(blank["Settings"])}
    assert settings["sender_email"] == "" and settings["locale"] == "en_GB"


# --- templates render against the demo data --------------------------------------------


def _contexts(wb: openpyxl.Workbook) -> list[tuple[str, dict[str, Any]]]:
    """One context per (demo order, step of its plan), built as a run builds it."""
    customers = {r["customer_id"]: r for r in records(wb["Customers"])}
    settings = {r["key"]: r["value"] for r in records(wb["Settings"])}
    constants = {r["variable"]: r["value"] for r in records(wb["Variables"])}
    steps = records(wb["Plans"])
    out = []
    for order in records(wb["Orders"]):
        for step in (s for s in steps if norm_key(s["plan"]) == norm_key(order["plan"])):
            context = {
                **constants,
                "customer": customers[order["customer_id"]],
                "order": order,
                "plan": {"name": step["plan"]},
                "step": {"number": step["step"], "due_date": TODAY},
                "today": TODAY,
                "sender": {"name": settings["sender_name"], "email": settings["sender_email"]},
            }
            out.append((f"{order['order_id']} step {step['step']}", {"_step": step, **context}))
    return out


def test_every_demo_template_renders_for_every_demo_order(wb: openpyxl.Workbook) -> None:
    """Each demo subject and body renders in a strict sandbox for each demo order, so no
    template names a variable that does not exist."""
    env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined)
    env.filters["date"] = lambda value: value.strftime("%d/%m/%Y") if value else ""
    env.filters["money"] = lambda value: f"{value} €"
    contexts = _contexts(wb)
    assert len(contexts) >= 40
    for label, context in contexts:
        step = context.pop("_step")
        for field in ("subject", "body"):
            text = env.from_string(step[field]).render(context)
            assert "{{" not in text and text.strip(), f"{label} {field}"
        assert context["customer"]["name"] in env.from_string(step["body"]).render(context)


def test_demo_templates_use_only_spec_variables(wb: openpyxl.Workbook) -> None:
    """Demo templates only use the documented top-level names and Variables constants."""
    env = jinja2.sandbox.SandboxedEnvironment()
    env.filters.update(date=str, money=str)
    constants = {r["variable"] for r in records(wb["Variables"])}
    allowed = {"customer", "order", "plan", "step", "today", "sender"} | constants
    for step in records(wb["Plans"]):
        for field in ("subject", "body"):
            used = jinja2.meta.find_undeclared_variables(env.parse(step[field]))
            assert used <= allowed, (step["plan"], step["step"], used - allowed)
