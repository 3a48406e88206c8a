"""What managers see: the Dashboard and Forecast sheets and the summary mail (report.py)."""

from __future__ import annotations

import ast
import datetime as dt
import shutil
import subprocess
import zipfile
from pathlib import Path

import openpyxl
import pytest

from commplan_xl import i18n
from commplan_xl.cli import main
from commplan_xl.excel.graft import write_tool_sheets
from commplan_xl.excel.names import tool_sheet
from commplan_xl.mail.smtp import SmtpTransport
from commplan_xl.model import MessageRef
from commplan_xl.problems import SendKind
from commplan_xl.run import reports as reports_module
from commplan_xl.run.batch import load_site
from commplan_xl.run.outcomes import RunFailure, RunReport
from commplan_xl.run.reports import (
    FORECAST_HEADER,
    figures_sheet,
    forecast_rows,
    forecast_sheet,
    report_sheets,
    send_summary,
    summary_message,
    summary_subject,
    what_to_do,
)
from commplan_xl.settings import Settings
from commplan_xl.store.ledger import Ledger
from tests.builders import DEFAULT_ORDERS, DEFAULT_PLANS, DEFAULT_SETTINGS, make_workbook

# The test workbooks' locale is fr_FR: a run writes the Dashboard and the Forecast as
# these sheets (figures_sheet and forecast_sheet alone build them in English).
TABLEAU_DE_BORD = tool_sheet("dashboard", "fr")
PREVISIONS = tool_sheet("forecast", "fr")

D = dt.date
BAIE, BAIE_KEY = "Baie vitrée", "baie vitrée"
PORTE, PORTE_KEY = "Porte d'entrée", "porte d'entrée"
ALICE, BRUNO, DENISE = "alice@example.test", "bruno@example.test", "denise@example.test"
BOSS = "boss@example.test"


pytestmark = pytest.mark.usefixtures("clean_env")


def settings_for(server, **extra) -> list[dict]:
    rows = [dict(r) for r in DEFAULT_SETTINGS if r["key"] not in ("smtp_port", *extra)]
    rows.append({"key": "smtp_port", "value": server.port})
    rows.extend({"key": k, "value": v} for k, v in extra.items())
    return rows


def sheet_rows(path: Path, name: str) -> list[tuple]:
    """Every row of a sheet as openpyxl reads it back from the file."""
    ws = openpyxl.load_workbook(path)[name]
    return [tuple(r) for r in ws.iter_rows(values_only=True)]


def cell_row(rows: list[tuple], index: int, first: int, last: int) -> tuple:
    """Columns first..last (0-based, inclusive) of one read-back row, padded with None."""
    row = rows[index] if index < len(rows) else ()
    return tuple(row[i] if i < len(row) else None for i in range(first, last + 1))


# ---------------------------------------------------------------- a ledger over several days

PORTE_PLAN = {"plan": PORTE, "step": 1, "delay": 2, "unit": "days",
              "subject": "Porte {{ order.order_id }}", "body": "Bonjour"}
DASH_CUSTOMERS = [
    {"customer_id": "C001", "name": "Alice Martin", "email": ALICE},
    {"customer_id": "C002", "name": "Bruno Petit", "email": BRUNO},
    {"customer_id": "C003", "name": "Chloé Durand", "email": "chloe@"},  # Customers row 4
    {"customer_id": "C004", "name": "Denise Roy", "email": DENISE},
]
DASH_ORDERS = [
    {"order_id": "O1001", "customer_id": "C001", "plan": BAIE, "start_date": D(2026, 3, 2)},
    {"order_id": "O1002", "customer_id": "C002", "plan": BAIE, "start_date": D(2026, 3, 9)},
    {"order_id": "O1003", "customer_id": "C003", "plan": BAIE, "start_date": D(2026, 3, 9)},
    {"order_id": "O1004", "customer_id": "C004", "plan": BAIE, "start_date": D(2026, 3, 9)},
    {"order_id": "O1005", "customer_id": "C001", "plan": BAIE, "start_date": D(2026, 2, 1)},
    {"order_id": "O1006", "customer_id": "C002", "plan": PORTE, "start_date": D(2026, 3, 18)},
]
TODAY = D(2026, 3, 20)  # the window is 2026-02-19 .. 2026-03-20


def _at(day: D) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(8, 30))


def _common(order: str, customer: str, step: int, day: D, emails: str,
            plan: str = BAIE, key: str = BAIE_KEY) -> MessageRef:
    return MessageRef(order_id=order, customer_id=customer, plan=plan, plan_key=key,
                      step=step, due_date=day, emails=emails)


def _send(ledger: Ledger, day: D, order: str, customer: str, step: int, emails: str, *,
          status: str = "sent", detail: str = "", **plan) -> None:
    token = ledger.begin(_common(order, customer, step, day, emails, **plan),
                         subject=f"{order} step {step}", now=_at(day), day=day)
    ledger.finish(token, status=status, detail=detail, now=_at(day), day=day)  # type: ignore


def build_ledger(ledger: Ledger) -> None:
    """Seven simulated days of runs: sends, a permanent and a temporary failure, a retry that
    worked, a failure before sending, a skip, a crash mid-send, and one day out of window."""
    _send(ledger, D(2026, 2, 10), "O1005", "C001", 1, ALICE)  # before the window
    _send(ledger, D(2026, 3, 7), "O1001", "C001", 1, ALICE)
    _send(ledger, D(2026, 3, 14), "O1002", "C002", 1, BRUNO)
    _send(ledger, D(2026, 3, 14), "O1004", "C004", 1, DENISE, status="failed_permanent",
          detail="550 no such user")
    _send(ledger, D(2026, 3, 17), "O1001", "C001", 2, ALICE, status="failed",
          detail="the mail server is down")
    _send(ledger, D(2026, 3, 18), "O1001", "C001", 2, ALICE)  # the retry went out
    ledger.record_skip(_common("O1005", "C001", 2, D(2026, 3, 18), ALICE), reason="missed",
                       now=_at(D(2026, 3, 18)), day=D(2026, 3, 18))
    day = D(2026, 3, 19)
    ledger.record_failure_before_send(_common("O1002", "C002", 2, day, BRUNO),
                                      detail="the attachment is missing", now=_at(day), day=day)
    ledger.begin(_common("O1005", "C001", 3, day, ALICE), subject="s3", now=_at(day), day=day)
    ledger.recover(_at(day), day=day)  # the run died mid-send: uncertain
    _send(ledger, TODAY, "O1006", "C002", 1, BRUNO, plan=PORTE, key=PORTE_KEY)


@pytest.fixture
def dash_home(tmp_path):
    """A home whose workbook has a customer with a bad address and a ledger of several days."""
    make_workbook(tmp_path, plans=[*DEFAULT_PLANS, PORTE_PLAN], customers=DASH_CUSTOMERS,
                  orders=DASH_ORDERS)
    site = load_site(tmp_path)
    with Ledger(site.ledger_path) as ledger:
        build_ledger(ledger)
    return tmp_path


def _dashboard(site) -> list[tuple]:
    with Ledger(site.ledger_path) as ledger:
        sheets, _figures = report_sheets(site, ledger, today=TODAY)
    write_tool_sheets(site.workbook, sheets)
    return sheet_rows(site.workbook, TABLEAU_DE_BORD)


def test_dashboard_reads_top_to_bottom(dash_home):
    """The Dashboard (Tableau de bord of a French workbook) shows its title, the key figures,
    "To handle" (permanent failures, uncertain mails, orders without a valid address, each
    with what to do) and the totals per plan; the day counts sit only in the hidden columns
    the chart reads."""
    site = load_site(dash_home)
    rows = _dashboard(site)
    visible = [cell_row(rows, i, 0, 7) for i in range(len(rows))]
    assert visible[0][0] == "Tableau de bord"
    assert visible[1][0] == "Chiffres clés, passage du 20/03/2026"
    assert [r[:2] for r in visible[2:8]] == [
        ("Envoyés hier", 0), ("Envoyés, 7 derniers jours", 3),
        ("Envoyés, 30 derniers jours", 4), ("En attente d'un nouvel essai", 1),
        ("À traiter", 3), ("Prévus, 7 prochains jours", 2)]
    top = next(i for i, r in enumerate(visible) if str(r[0]).startswith("À traiter :"))
    assert visible[top][0] == "À traiter : les messages qui demandent une personne (3)"
    assert visible[top + 1] == ("à traiter", "commande", "client", "plan", "étape",
                                "échéance", "détail", "que faire")
    items = visible[top + 2: top + 5]
    assert [r[:6] for r in items] == [
        ("Échec définitif", "O1004", "C004", BAIE, 1, dt.datetime(2026, 3, 14)),
        ("Incertain : peut-être pas arrivé", "O1005", "C001", BAIE, 3,
         dt.datetime(2026, 3, 19)),
        ("Pas d'adresse valide", "O1003", "C003", None, None, None),
    ]
    assert "550 no such user" in items[0][6]
    assert items[0][7].startswith("Corrigez l'adresse dans Clients")  # the sheet's own name
    assert "`commplan resend O1005 3`" in items[1][7]
    assert "chloe@" in items[2][6]
    plans = next(i for i, r in enumerate(visible) if r[0] == "Totaux par plan, 30 derniers jours")
    assert visible[plans + 1: plans + 5] == [
        ("plan", "envoyés", "ignorés", "échecs", "incertains", "total", None, None),
        (BAIE, 3, 1, 3, 1, 8, None, None),
        (PORTE, 1, 0, 0, 0, 1, None, None),
        ("Tous les plans", 4, 1, 3, 1, 9, None, None),
    ]
    days = [cell_row(rows, i, 26, 30) for i in range(31)]
    assert days[0] == ("jour", "envoyés", "ignorés", "échecs", "incertains")
    assert days[17] == ("07/03", 1, 0, 0, 0) and days[30] == ("20/03", 1, 0, 0, 0)
    assert days[29] == ("19/03", 0, 0, 1, 1) and days[1] == ("19/02", 0, 0, 0, 0)
    ws = openpyxl.load_workbook(site.workbook)[TABLEAU_DE_BORD]
    assert all(ws.column_dimensions[c].hidden for c in ("AA", "AB", "AC", "AD", "AE"))
    assert ws["A1"].font.b and ws["B3"].font.b
    assert ws.auto_filter.ref == f"A{top + 2}:H{top + 5}"


def test_dashboard_in_english(dash_home):
    """In English the Dashboard's words are English: the same table of labels."""
    site = load_site(dash_home)
    with Ledger(site.ledger_path) as ledger:
        _sheets, figures = report_sheets(site, ledger, today=TODAY)
    sheet = figures_sheet(figures, "en")
    assert sheet.name == "Dashboard" and sheet.header[0] == "Dashboard"
    texts = [row[0] for row in sheet.rows if row]
    assert "Key figures, run of 20/03/2026" in texts and "Sent yesterday" in texts
    assert "Permanent failure" in texts and "Totals per plan, last 30 days" in texts
    table = next(row for row in sheet.rows if row and row[0] == "what")
    assert table[1:3] == ["order_id", "customer_id"] and table[7] == "what to do"


def test_dashboard_chart_is_a_native_chart_of_the_hidden_day_data(dash_home):
    """The Dashboard carries a native stacked bar chart of sent, skipped, failed and
    uncertain per day over the 30 days, beside the key figures."""
    site = load_site(dash_home)
    _dashboard(site)
    with zipfile.ZipFile(site.workbook) as z:
        charts = [n for n in z.namelist() if n.startswith("xl/charts/chart")]
        assert len(charts) == 1
        xml = z.read(charts[0]).decode()
        drawing = next(z.read(n).decode() for n in z.namelist()
                       if n.startswith("xl/drawings/drawing"))
    assert "<c:barChart>" in xml and '<c:grouping val="stacked"/>' in xml
    for column in ("AA", "AB", "AC", "AD", "AE"):
        assert f"'{TABLEAU_DE_BORD}'!${column}$2:${column}$31" in xml
    assert "Mails par jour" in xml
    assert "<xdr:col>2</xdr:col>" in drawing  # column C, beside the figures in A:B
    wb = openpyxl.load_workbook(site.workbook)
    assert len(wb[TABLEAU_DE_BORD]._charts) == 1
    assert len(wb[PREVISIONS]._charts) == 0


def test_unreachable_orders_are_named_by_id_when_the_workbook_is_read(dash_home):
    """report_sheets names an order validate left out for its customer's address by its id."""
    site = load_site(dash_home)
    with Ledger(site.ledger_path) as ledger:
        _sheets, figures = report_sheets(site, ledger, today=TODAY)
    assert [(u.order_id, u.customer_id) for u in figures.unreachable] == [("O1003", "C003")]


def test_dashboard_opens_in_libreoffice_with_its_chart(dash_home, tmp_path_factory):
    """LibreOffice opens the workbook with the Dashboard and keeps its chart (when installed)."""
    soffice = shutil.which("soffice")
    if not soffice:
        pytest.skip("LibreOffice is not installed (.ci/run installs it)")
    site = load_site(dash_home)
    with Ledger(site.ledger_path) as ledger:
        sheets, _figures = report_sheets(site, ledger, today=TODAY)
    write_tool_sheets(site.workbook, sheets)
    out = tmp_path_factory.mktemp("lo")
    subprocess.run([soffice, "--headless", f"-env:UserInstallation=file://{out}/profile",
                    "--convert-to", "ods", "--outdir", str(out), str(site.workbook)],
                   check=True, capture_output=True, timeout=120)
    with zipfile.ZipFile(out / "commplan.ods") as z:
        content = z.read("content.xml").decode()
        objects = [n for n in z.namelist() if n.startswith("Object") and n.endswith("content.xml")]
        chart = "".join(z.read(n).decode() for n in objects)
    assert f'table:name="{TABLEAU_DE_BORD}"' in content
    assert "chart:chart" in chart and "Mails par jour" in chart


def _pdf_pages(workbook: Path, out: Path) -> list[str]:
    """The text of each page LibreOffice prints of the workbook."""
    soffice = shutil.which("soffice")
    if not soffice or not shutil.which("pdftotext"):
        pytest.skip("LibreOffice or pdftotext is not installed (.ci/run installs them)")
    subprocess.run([soffice, "--headless", f"-env:UserInstallation=file://{out}/profile",
                    "--convert-to", "pdf", "--outdir", str(out), str(workbook)],
                   check=True, capture_output=True, timeout=120)
    text = subprocess.run(["pdftotext", "-layout", str(out / f"{workbook.stem}.pdf"), "-"],
                          check=True, capture_output=True, text=True).stdout
    return text.split("\f")


def test_printed_dashboard_and_sentlog_read_like_reports(dash_home, tmp_path_factory):
    """Printed through LibreOffice, the Dashboard's first page holds its key figures, the
    chart and the start of To handle; the SentLog prints one page wide, its header on every
    page."""
    from commplan_xl.run.batch import write_sentlog

    site = load_site(dash_home)
    with Ledger(site.ledger_path) as ledger:
        for i in range(80):  # a SentLog longer than a page
            _send(ledger, D(2026, 3, 1) + dt.timedelta(days=i % 19), f"O2{i:03d}", "C002",
                  1, BRUNO)
        sheets, _figures = report_sheets(site, ledger, today=TODAY)
        assert write_sentlog(site, ledger, RunReport(today=TODAY), extra_sheets=sheets)
    pages = _pdf_pages(site.workbook, tmp_path_factory.mktemp("pdf"))
    dashboard = [p for p in pages if "Chiffres clés, passage du 20/03/2026" in p]
    assert len(dashboard) == 1
    for text in ("Tableau de bord", "Envoyés hier", "Prévus, 7 prochains jours",
                 "Mails par jour, 30 derniers jours", "À traiter : les messages qui demandent",
                 "Totaux par plan"):
        assert text in dashboard[0], text
    sentlog = [p for p in pages if p.strip() and  # the footer names the sheet
               p.strip().splitlines()[-1].split()[:1] == ["Journal"]]
    assert len(sentlog) >= 2
    assert all("fichier archivé" in p and "commande" in p for p in sentlog)  # one page wide
    assert "19/03/2026" in "".join(sentlog)  # real dates, shown DD/MM/YYYY


# ---------------------------------------------------------------- Forecast


FORECAST_PLANS = [
    *DEFAULT_PLANS[:2],
    {**DEFAULT_PLANS[2], "subject": "Fabrication de {{ order.prodcut }}"},  # a typo
    {"plan": PORTE, "step": 1, "delay": 2, "unit": "business days", "subject": "Porte",
     "body": "Bonjour", "attachments": "cgv.pdf"},  # Plans row 5; the file is missing
]
FORECAST_ORDERS = [
    {"order_id": "O1001", "customer_id": "C001", "plan": BAIE, "start_date": D(2026, 3, 2)},
    {"order_id": "O1002", "customer_id": "C002", "plan": BAIE, "start_date": D(2026, 3, 9),
     "hold_steps": "2"},
    {"order_id": "O1003", "customer_id": "C002", "plan": PORTE, "start_date": D(2026, 3, 12)},
    {"order_id": "O1004", "customer_id": "C001", "plan": BAIE, "start_date": D(2026, 3, 2),
     "status": "paused"},
    {"order_id": "O1005", "customer_id": "C001", "plan": BAIE, "start_date": D(2026, 2, 27)},
]


def test_forecast_cells(tmp_path):
    """The Forecast lists, from tomorrow on, each mail the coming runs send with its rendered
    subject; a retry is noted, held steps, paused orders and sent mails are absent, and a
    mail that cannot be built shows why behind ⚠."""
    make_workbook(tmp_path, plans=FORECAST_PLANS, orders=FORECAST_ORDERS)
    site = load_site(tmp_path)
    today = D(2026, 3, 7)
    with Ledger(site.ledger_path) as ledger:
        _send(ledger, today, "O1001", "C001", 1, ALICE)
        _send(ledger, D(2026, 3, 6), "O1005", "C001", 1, ALICE, status="failed",
              detail="the mail server is down")
        rows = forecast_rows(site, ledger.state(), today=today)
    write_tool_sheets(site.workbook, [forecast_sheet(rows)])
    got = [_iso(r) for r in sheet_rows(site.workbook, "Forecast")]  # as built, in English
    assert got[0] == FORECAST_HEADER
    alice = ("C001", "Alice Martin", ALICE, BAIE)
    bruno = ("C002", "Bruno Petit", BRUNO)
    warn = "⚠ "
    expected = [
        ("2026-03-08", "O1005", *alice, 1, "Votre commande O1005 est en cours de traitement",
         "2026-03-04", "retry"),
        ("2026-03-14", "O1002", *bruno, BAIE, 1,
         "Votre commande O1002 est en cours de traitement", "2026-03-14", None),
        ("2026-03-14", "O1005", *alice, 2, "Votre commande O1005 entre en fabrication",
         "2026-03-14", None),
        ("2026-03-16", "O1003", *bruno, PORTE, 1, warn, "2026-03-16", None),
        ("2026-03-17", "O1001", *alice, 2, "Votre commande O1001 entre en fabrication",
         "2026-03-17", None),
        ("2026-03-27", "O1005", *alice, 3, warn, "2026-03-27", None),
        ("2026-04-02", "O1001", *alice, 3, warn, "2026-04-02", None),
    ]
    assert len(got) == len(expected) + 1
    for row, want in zip(got[1:], expected, strict=True):
        subject = row[7]
        if want[7] == warn:
            assert subject.startswith(warn)
            row = (*row[:7], warn, *row[8:])
        assert row == want
    assert 'the attachment "cgv.pdf" (Plans row 5)' in got[4][7]
    assert "order.prodcut" in got[6][7] and "order.prodcut" in got[7][7]


def _iso(row: tuple) -> tuple:
    """A read-back row with its dates as ISO text (the sheet holds real dates)."""
    return tuple(v.date().isoformat() if isinstance(v, dt.datetime) else v for v in row)


def test_forecast_can_start_today_before_the_run(tmp_path):
    """Built before today's run (start=today), the Forecast lists today's due mails too."""
    make_workbook(tmp_path)
    site = load_site(tmp_path)
    rows = forecast_rows(site, {}, today=D(2026, 3, 7), start=D(2026, 3, 7), days=1)
    assert [(r.date, r.order_id, r.step) for r in rows] == [(D(2026, 3, 7), "O1001", 1)]
    # by default the runs start tomorrow: today's run, not in the ledger, never happened
    rows = forecast_rows(site, {}, today=D(2026, 3, 7), days=1)
    assert [(r.date, r.order_id, r.step, r.due_date) for r in rows] == [
        (D(2026, 3, 8), "O1001", 1, D(2026, 3, 7))]


RUN_ORDERS = [
    {"order_id": "O1001", "customer_id": "C001", "plan": BAIE, "start_date": D(2026, 3, 2)},
    {"order_id": "O1002", "customer_id": "C002", "plan": BAIE, "start_date": D(2026, 3, 9)},
    {"order_id": "O1003", "customer_id": "C001", "plan": BAIE, "start_date": D(2026, 3, 9)},
    {"order_id": "O1004", "customer_id": "C002", "plan": BAIE, "start_date": D(2026, 3, 9)},
    {"order_id": "O1005", "customer_id": "C001", "plan": BAIE, "start_date": D(2026, 3, 10),
     "hold_steps": "2"},
    {"order_id": "O1006", "customer_id": "C002", "plan": PORTE, "start_date": D(2026, 3, 12)},
    {"order_id": "O1007", "customer_id": "C001", "plan": BAIE, "start_date": D(2026, 3, 12),
     "status": "paused"},
]


def test_forecast_of_day_d_is_what_the_next_runs_send(tmp_path, smtp_server):
    """After the run of day D, the Forecast lists exactly what the runs of D+1..D+n then send,
    day by day, with the same subjects and addresses (daily_limit, holds and business days
    included), when nothing changes in between."""
    plans = [*DEFAULT_PLANS, {**FORECAST_PLANS[3], "subject": "Porte {{ order.order_id }}"}]
    make_workbook(tmp_path, settings=settings_for(smtp_server, daily_limit=2), plans=plans,
                  orders=RUN_ORDERS)
    (tmp_path / "attachments" / "cgv.pdf").write_bytes(b"%PDF-1.4 cgv")
    day_d, runs = D(2026, 3, 7), 12
    assert main(["run", "--today", day_d.isoformat(), "--home", str(tmp_path)]) == 0
    site = load_site(tmp_path)
    with Ledger(site.ledger_path) as ledger:
        planned = forecast_rows(site, ledger.state(), today=day_d, days=runs)
        last = ledger.last_event_id()
    received_before = len(smtp_server.received)

    sent: list[tuple] = []
    for n in range(1, runs + 1):
        day = day_d + dt.timedelta(days=n)
        assert main(["run", "--today", day.isoformat(), "--home", str(tmp_path)]) == 0
        with Ledger(site.ledger_path) as ledger:
            sent += [(day, o.order_id, o.step, o.subject, o.email)
                     for o in ledger.events(last) if o.status == "sent"]
            last = ledger.last_event_id()

    customer_mails = [r for r in smtp_server.received[received_before:]
                      if BOSS not in r.rcpt_tos]
    assert len(customer_mails) == len(sent)
    assert sent == [(r.date, r.order_id, r.step, r.subject, r.email) for r in planned]
    # the plan really exercised the limit (O1004 waited a day) and the business days
    assert (D(2026, 3, 15), "O1004", 1) in [(r.date, r.order_id, r.step) for r in planned]
    assert (D(2026, 3, 16), "O1006", 1) in [(r.date, r.order_id, r.step) for r in planned]


# ---------------------------------------------------------------- summary mail


def _report(**kw) -> RunReport:
    return RunReport(today=D(2026, 11, 27), **kw)


def test_summary_subject_counts_in_french():
    """The subject gives the day and the counts, French singular for 0 and 1."""
    i18n.set_language("fr")
    assert summary_subject(_report(sent=12, failed=1)) == \
        "commplan — 27/11/2026 : 12 envoyés, 1 échec"
    assert summary_subject(_report(sent=1, failed=0)) == \
        "commplan — 27/11/2026 : 1 envoyé, 0 échec"
    assert summary_subject(_report(sent=0, failed=2, uncertain=3)) == \
        "commplan — 27/11/2026 : 0 envoyé, 2 échecs, 3 incertains"


@pytest.mark.parametrize(("kind", "words"), [
    (SendKind.UNCERTAIN, "`commplan resend O7 3`"),
    (SendKind.PERMANENT, "Customers sheet"),
    (SendKind.NOT_BUILT, "`commplan check`"),
    (SendKind.TEMPORARY, "nothing to do"),
    (SendKind.UNREACHABLE, "nothing to do"),
    (SendKind.SENDER_SIDE, "sending account"),
    (SendKind.TO_REVIEW, "returned mail"),
])
def test_advice_follows_the_kind_of_failure_not_its_words(kind, words):
    """The summary's advice depends on the failure's kind: any wording of the detail gets
    the same advice."""
    for detail in ("uncertain; not retried; once fixed", "quelque chose d'autre"):
        assert words in what_to_do(RunFailure("O7", 3, kind, detail), catch_up_days=7)


def test_reports_do_not_import_the_send_loop():
    """The reports are built from the ledger and the run's records, never from the loop."""
    source = Path(reports_module.__file__).read_text(encoding="utf-8")
    imported = {node.module for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.ImportFrom)}
    assert "commplan_xl.run.batch" not in imported


def test_summary_body_lists_each_failure_with_what_to_do(dash_home):
    """Each failure and uncertain mail of the run comes with what to do, and the Dashboard
    figures follow."""
    site = load_site(dash_home)
    with Ledger(site.ledger_path) as ledger:
        _sheets, figures = report_sheets(site, ledger, today=TODAY)
    settings = Settings(home=dash_home, sender_email="service@example.test",
                        report_to=(BOSS, "chef@example.test"))
    report = _report(sent=3, failed=3, uncertain=1, failures=[
        RunFailure("O1", 2, SendKind.TEMPORARY,
                   "450 mailbox busy; will be retried by the next run"),
        RunFailure("O2", 1, SendKind.PERMANENT,
                   "550 no such user; not retried: correct the address"),
        RunFailure("O3", 3, SendKind.NOT_BUILT,
                   'the subject uses "x"; will be retried once fixed'),
        RunFailure("O4", 2, SendKind.UNCERTAIN, "the connection dropped"),
    ])
    msg = summary_message(settings, report, dashboard_figures=figures)
    assert msg["To"] == f"{BOSS}, chef@example.test"
    assert msg["Subject"] == "commplan — 27/11/2026 : 3 envoyés, 3 échecs, 1 incertain"
    text = msg.get_body(preferencelist=("plain",)).get_content()
    lines = text.splitlines()
    assert "Envoyés : 3" in lines and "Échecs : 3" in lines and "Incertains : 1" in lines
    advice = [ln for ln in lines if ln.startswith("  Que faire : ")]
    assert len(advice) == 4 + 3  # the run's failures, then the items to handle
    assert "réessaient pendant 7 jours" in advice[0]
    assert "Clients" in advice[1]
    assert "commplan check" in advice[2]
    assert "`commplan resend O4 2`" in advice[3]
    assert "À traiter (jusqu'à résolution) : 3" in lines
    assert any(ln.startswith("- Échec définitif : commande O1004 étape 1") for ln in lines)
    assert any(ln.startswith("- Pas d'adresse valide : commande O1003") for ln in lines)
    assert "`commplan resend O1005 3`" in advice[5]
    assert "Envoyés hier : 0, sur les 7 derniers jours : 3 ; prévus les 7 prochains jours : 2" \
        in lines
    assert msg.get_body(preferencelist=("html",)) is not None


def test_send_summary_goes_to_report_to_only(tmp_path, smtp_server):
    """The summary goes to every report_to address over the run's connection; without
    report_to nothing is sent."""
    base = dict(home=tmp_path, sender_email="service@example.test", smtp_host="127.0.0.1",
                smtp_port=smtp_server.port, smtp_timeout=5.0)
    with SmtpTransport(Settings(**base)) as transport:
        assert send_summary(transport, Settings(**base), _report(sent=1), None) is False
    assert smtp_server.received == []
    settings = Settings(**base, report_to=(BOSS,))
    with SmtpTransport(settings) as transport:
        assert send_summary(transport, settings, _report(sent=1), None) is True
    assert [r.rcpt_tos for r in smtp_server.received] == [[BOSS]]
    assert smtp_server.received[0].message["Subject"] == \
        "commplan — 27/11/2026 : 1 envoyé, 0 échec"


# ---------------------------------------------------------------- wired into `commplan run`
# These need batch.run to call report (see the report to the lead); they pin the wiring.


def test_run_writes_dashboard_and_forecast_sheets(tmp_path, smtp_server):
    """Each run rebuilds the Dashboard (counted by the run's day) and the Forecast."""
    make_workbook(tmp_path, settings=settings_for(smtp_server))
    day = "2026-03-07"
    assert main(["run", "--today", day, "--home", str(tmp_path)]) == 0
    path = tmp_path / "workbooks" / "commplan.xlsx"
    dash = sheet_rows(path, TABLEAU_DE_BORD)
    assert cell_row(dash, 30, 26, 30) == ("07/03", 1, 0, 0, 0)  # the last day is the run's
    assert cell_row(dash, 2, 0, 1) == ("Envoyés hier", 0)
    assert cell_row(dash, 4, 0, 1) == ("Envoyés, 30 derniers jours", 1)
    plan_list = openpyxl.load_workbook(path)["PlanList"]  # the plan drop-down's list
    assert plan_list.sheet_state == "hidden"
    assert [r[0].value for r in plan_list.iter_rows()] == ["plan", BAIE]
    forecast = [_iso(r) for r in sheet_rows(path, PREVISIONS)]
    assert [(r[0], r[1], r[6]) for r in forecast[1:]] == [
        ("2026-03-14", "O1002", 1), ("2026-03-17", "O1001", 2), ("2026-03-24", "O1002", 2),
        ("2026-04-02", "O1001", 3)]


def test_run_mails_the_summary_to_report_to(tmp_path, smtp_server):
    """With report_to, a run ends with one summary mail to it; the customers' mails are
    unchanged."""
    make_workbook(tmp_path, settings=settings_for(smtp_server, report_to=BOSS))
    assert main(["run", "--today", "2026-03-07", "--home", str(tmp_path)]) == 0
    to = [r.rcpt_tos for r in smtp_server.received]
    assert sorted(to) == [[ALICE], [BOSS]]
    summary = next(r.message for r in smtp_server.received if r.rcpt_tos == [BOSS])
    assert summary["Subject"] == "commplan — 07/03/2026 : 1 envoyé, 0 échec"


def test_run_without_report_to_sends_no_summary(tmp_path, smtp_server):
    """Without report_to, a run sends the customers' mails and nothing else."""
    make_workbook(tmp_path, settings=settings_for(smtp_server))
    assert main(["run", "--today", "2026-03-07", "--home", str(tmp_path)]) == 0
    assert [r.rcpt_tos for r in smtp_server.received] == [[ALICE]]


def _to_handle(path: Path) -> list[tuple]:
    """The (what, order, step) of each item of the Dashboard's To handle list."""
    rows = sheet_rows(path, TABLEAU_DE_BORD)
    top = next(i for i, r in enumerate(rows) if str(r[0]).startswith("À traiter :"))
    out = []
    for row in rows[top + 2:]:
        if row[0] is None or row[0] == "Rien à traiter.":
            break
        out.append((row[0], row[1], row[4]))
    return out


def test_permanent_failure_of_a_required_step_stays_to_handle_until_resent(
        tmp_path, smtp_server):
    """A required step the server refused for good is on the Dashboard's To handle list and
    in the summary mail on every run, until it is resent."""
    plans = [{**DEFAULT_PLANS[0], "required": "yes"}, *DEFAULT_PLANS[1:]]
    make_workbook(tmp_path, plans=plans, settings=settings_for(smtp_server, report_to=BOSS))
    smtp_server.handler.rcpt_replies[ALICE] = "550 5.1.1 no such user"
    path = tmp_path / "workbooks" / "commplan.xlsx"
    item = ("Échec définitif, étape obligatoire", "O1001", 1)
    for day in ("2026-03-07", "2026-03-08", "2026-03-12"):
        main(["run", "--today", day, "--home", str(tmp_path)])
        assert _to_handle(path) == [item], day
        summary = [r.message for r in smtp_server.received if r.rcpt_tos == [BOSS]][-1]
        text = summary.get_body(preferencelist=("plain",)).get_content()
        assert "- Échec définitif, étape obligatoire : commande O1001 étape 1" in text, day
    smtp_server.handler.rcpt_replies.clear()  # the customer's mailbox works again
    assert main(["resend", "O1001", "1", "--today", "2026-03-12", "--home",
                 str(tmp_path)]) == 0
    assert main(["run", "--today", "2026-03-13", "--home", str(tmp_path)]) == 0
    assert _to_handle(path) == []


def test_held_step_now_due_is_to_handle(tmp_path):
    """A step an order holds (hold_steps) is to handle once it falls due, while a run could
    still send it (within catch_up_days); not before, not long after."""
    from commplan_xl.run.dashboard import to_handle_items

    orders = [{**DEFAULT_ORDERS[0], "hold_steps": "2"}]
    make_workbook(tmp_path, orders=orders)
    site = load_site(tmp_path)
    due = D(2026, 3, 17)  # step 2: 15 days after 2026-03-02

    def held(today: D) -> list[tuple]:
        items = to_handle_items([], site.model, today=today,
                                held_since=today - dt.timedelta(days=7), settings=site.settings)
        return [(i.kind, i.order_id, i.step, i.due_date) for i in items]

    assert held(due - dt.timedelta(days=1)) == []
    assert held(due) == [("held_due", "O1001", 2, due)]
    assert held(due + dt.timedelta(days=7)) == [("held_due", "O1001", 2, due)]
    assert held(due + dt.timedelta(days=8)) == []


def test_mail_waiting_for_a_value_is_to_handle(tmp_path, smtp_server):
    """A due mail that waits for an empty cell it uses is on the To handle list, with why."""
    plans = [{**DEFAULT_PLANS[0], "subject": "Votre {{ order.product }}"}, *DEFAULT_PLANS[1:]]
    orders = [{**DEFAULT_ORDERS[0], "product": ""}, DEFAULT_ORDERS[1]]
    make_workbook(tmp_path, plans=plans, orders=orders, settings=settings_for(smtp_server))
    main(["run", "--today", "2026-03-07", "--home", str(tmp_path)])
    assert smtp_server.received == []
    path = tmp_path / "workbooks" / "commplan.xlsx"
    assert _to_handle(path) == [("En attente : ne peut pas être préparé", "O1001", 1)]
