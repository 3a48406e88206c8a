"""End to end: `commplan run` and friends against a real local SMTP server and real files."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import openpyxl
import pytest

from commplan_xl.cli import main
from commplan_xl.excel.names import outcome_words, tool_label, tool_sheet
from commplan_xl.store.sentlog import SENTLOG_HEADER
from tests.builders import (
    DEFAULT_CUSTOMERS,
    DEFAULT_ORDERS,
    DEFAULT_PLANS,
    DEFAULT_SETTINGS,
    Text,
    make_workbook,
)

DAY1 = "2026-03-07"  # O1001 step 1 (+5 days from 2026-03-02) is due


def settings_for(server, **extra) -> list[dict]:
    rows = [dict(r) for r in DEFAULT_SETTINGS if r["key"] not in ("smtp_port", *extra)]
    rows.append({"key": "smtp_port", "value": server.port})
    rows.extend({"key": k, "value": v} for k, v in extra.items())
    return rows


@pytest.fixture
def home(tmp_path, smtp_server, clean_env):
    """A home folder with the default workbook pointed at the test SMTP server."""
    make_workbook(tmp_path, settings=settings_for(smtp_server))
    return tmp_path


def cli(home: Path, *args: str) -> int:
    return main([*args, "--home", str(home)])


# The test workbooks' locale is fr_FR: the SentLog is the sheet Journal, in French.
SENTLOG = tool_sheet("sentlog", "fr")
ENGLISH_COLUMN = {tool_label(name, "fr"): name for name in SENTLOG_HEADER}
ENGLISH_STATUS = {word: status for status, word in outcome_words("fr").items()}


def sentlog(home: Path) -> list[dict]:
    """The Journal's rows keyed by the SentLog's English column names, statuses in English."""
    wb = openpyxl.load_workbook(home / "workbooks" / "commplan.xlsx")
    ws = wb[SENTLOG]
    rows = list(ws.iter_rows(values_only=True))
    header = [ENGLISH_COLUMN[h] for h in rows[0]]
    out = [dict(zip(header, r, strict=False)) for r in rows[1:]]
    for row in out:
        row["status"] = ENGLISH_STATUS[row["status"]]
    return out


def test_run_sends_due_message_with_parts_archive_and_sentlog(home, smtp_server):
    """A due message reaches the customer with subject, both parts, and is archived and logged."""
    assert cli(home, "run", "--today", DAY1) == 0
    assert len(smtp_server.received) == 1
    got = smtp_server.received[0]
    assert got.rcpt_tos == ["alice@example.test"]
    msg = got.message
    assert msg["Subject"] == "Votre commande O1001 est en cours de traitement"
    assert "Service client" in msg["From"] and "service@example.test" in msg["From"]
    text = msg.get_body(preferencelist=("plain",)).get_content()
    html = msg.get_body(preferencelist=("html",)).get_content()
    assert "Bonjour Alice Martin," in text and "<br" not in text
    assert "Alice Martin" in html
    # the archive holds exactly the bytes that were sent
    files = list((home / "archive").rglob("*.eml"))
    assert len(files) == 1
    assert "C001" in files[0].parent.name
    assert files[0].read_bytes().replace(b"\r\n", b"\n").strip() == \
        got.data.replace(b"\r\n", b"\n").strip()
    rows = sentlog(home)
    assert [(r["order_id"], r["step"], r["status"]) for r in rows] == [("O1001", 1, "sent")]
    assert rows[0]["email"] == "alice@example.test"
    # --today stands for the current date: the outcome is dated on it, a real Excel date.
    assert rows[0]["date"].date() == dt.date.fromisoformat(DAY1)
    assert rows[0]["archive_file"].startswith("archive/")
    assert (home / rows[0]["archive_file"]).exists()


def test_refused_mail_leaves_nothing_in_the_archive(home, smtp_server):
    """A mail the server refuses is not archived, and no staged temporary file is left."""
    smtp_server.handler.rcpt_replies["alice@example.test"] = "550 5.1.1 no such user"
    assert cli(home, "run", "--today", DAY1) != 0
    assert smtp_server.received == []
    leftovers = [p for p in (home / "archive").rglob("*") if p.is_file()]
    assert leftovers == []
    assert [(r["order_id"], r["status"]) for r in sentlog(home)] == [("O1001", "failed")]


def test_second_run_same_day_sends_nothing(home, smtp_server):
    """Running twice on the same day never sends a message twice."""
    assert cli(home, "run", "--today", DAY1) == 0
    assert cli(home, "run", "--today", DAY1) == 0
    assert len(smtp_server.received) == 1
    assert len(sentlog(home)) == 1


def test_deleted_sentlog_rows_do_not_cause_resends(home, smtp_server):
    """The ledger, not the SentLog sheet, decides what was sent."""
    assert cli(home, "run", "--today", DAY1) == 0
    path = home / "workbooks" / "commplan.xlsx"
    wb = openpyxl.load_workbook(path)
    wb.remove(wb[SENTLOG])
    wb.save(path)
    assert cli(home, "run", "--today", DAY1) == 0
    assert len(smtp_server.received) == 1
    assert [r["status"] for r in sentlog(home)] == ["sent"]  # rebuilt from the ledger


def test_dry_run_sends_and_records_nothing(home, smtp_server):
    """--dry-run renders everything but sends, archives and records nothing."""
    assert cli(home, "run", "--today", DAY1, "--dry-run") == 0
    assert smtp_server.received == []
    assert not list((home / "archive").rglob("*.eml"))
    assert cli(home, "run", "--today", DAY1) == 0
    assert len(smtp_server.received) == 1


def test_hostile_customer_values_stay_text(tmp_path, smtp_server, monkeypatch):
    """A name like =1+1, <b>x</b> or with a line break is text in SentLog, escaped in HTML,
    and never reaches a header as a new line."""
    monkeypatch.delenv("COMMPLAN_SMTP_PORT", raising=False)
    customers = [
        {"customer_id": "C001", "name": Text("=1+1"), "email": "alice@example.test"},
        {"customer_id": "C002", "name": "<b>x</b>\nBcc: evil@example.test",
         "email": "bruno@example.test"},
    ]
    plans = [dict(p) for p in DEFAULT_PLANS]
    plans[0]["subject"] = "Commande de {{ customer.name }}"
    orders = [dict(o) for o in DEFAULT_ORDERS]
    orders[1]["start_date"] = dt.date(2026, 3, 2)
    make_workbook(tmp_path, settings=settings_for(smtp_server), customers=customers,
                  plans=plans, orders=orders)
    assert cli(tmp_path, "run", "--today", DAY1) == 0
    assert len(smtp_server.received) == 2
    by_to = {r.rcpt_tos[0]: r for r in smtp_server.received}
    assert all("evil@example.test" not in r.rcpt_tos for r in smtp_server.received)
    bruno = by_to["bruno@example.test"].message
    assert "\n" not in bruno["Subject"] and bruno["Bcc"] is None
    html = bruno.get_body(preferencelist=("html",)).get_content()
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    text = bruno.get_body(preferencelist=("plain",)).get_content()
    assert "<b>x</b>" in text
    wb = openpyxl.load_workbook(tmp_path / "workbooks" / "commplan.xlsx")
    ws = wb[SENTLOG]
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            assert cell.data_type != "f"
    subjects = [c.value for c in ws["I"][1:]]
    assert "Commande de =1+1" in subjects


def test_sandbox_blocks_template_escape_and_other_orders_go_on(tmp_path, smtp_server):
    """A template reaching for ''.__class__ is reported by check and fails only its message."""
    plans = [dict(p) for p in DEFAULT_PLANS]
    plans.append({"plan": "Autre", "step": 1, "delay": 0, "unit": "days",
                  "subject": "Hack", "body": "{{ ''.__class__.__mro__[1].__subclasses__() }}"})
    orders = [dict(o) for o in DEFAULT_ORDERS]
    orders[1]["plan"] = "Autre"
    orders[1]["start_date"] = dt.date(2026, 3, 2)
    make_workbook(tmp_path, settings=settings_for(smtp_server), plans=plans, orders=orders)
    assert cli(tmp_path, "check") == 1
    assert cli(tmp_path, "run", "--today", DAY1) == 1
    assert [r.rcpt_tos for r in smtp_server.received] == [["alice@example.test"]]
    statuses = {(r["order_id"], r["status"]) for r in sentlog(tmp_path)}
    assert statuses == {("O1001", "sent"), ("O1002", "failed")}


def test_attachment_outside_attachments_is_refused(tmp_path, smtp_server, capsys):
    """An attachment ../secret.txt is reported and its content never sent."""
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    plans = [dict(p) for p in DEFAULT_PLANS]
    plans[0]["attachments"] = "../secret.txt"
    make_workbook(tmp_path, settings=settings_for(smtp_server), plans=plans)
    assert cli(tmp_path, "check") == 1
    out = capsys.readouterr().out
    assert "Plans" in out and "attachments" in out
    cli(tmp_path, "run", "--today", DAY1)
    for r in smtp_server.received:
        assert b"TOP SECRET" not in r.data
        assert b"VE9QIFNFQ1JFVA" not in r.data  # base64 of it


def test_attachments_arrive_with_bytes_and_names(tmp_path, smtp_server):
    """Attachments reach the customer with their exact bytes, names and types."""
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40
    plans = [dict(p) for p in DEFAULT_PLANS]
    plans[0]["attachments"] = "conditions générales.pdf; plan.txt"
    make_workbook(tmp_path, settings=settings_for(smtp_server), plans=plans)
    (tmp_path / "attachments" / "conditions générales.pdf").write_bytes(pdf)
    (tmp_path / "attachments" / "plan.txt").write_text("cotes: 240 x 215\n")
    assert cli(tmp_path, "run", "--today", DAY1) == 0
    msg = smtp_server.received[0].message
    parts = {p.get_filename(): p for p in msg.iter_attachments()}
    assert set(parts) == {"conditions générales.pdf", "plan.txt"}
    assert parts["conditions générales.pdf"].get_content_type() == "application/pdf"
    assert parts["conditions générales.pdf"].get_content() == pdf
    assert parts["plan.txt"].get_content_type() == "text/plain"


def test_missing_attachment_fails_the_message_until_fixed(tmp_path, smtp_server):
    """A missing attachment file is reported, recorded failed, and sent once the file is there."""
    plans = [dict(p) for p in DEFAULT_PLANS]
    plans[0]["attachments"] = "cgv.pdf"
    make_workbook(tmp_path, settings=settings_for(smtp_server), plans=plans)
    assert cli(tmp_path, "check") == 1
    assert cli(tmp_path, "run", "--today", DAY1) == 1
    assert smtp_server.received == []
    assert [r["status"] for r in sentlog(tmp_path)] == ["failed"]
    (tmp_path / "attachments" / "cgv.pdf").write_bytes(b"%PDF-1.4 cgv")
    assert cli(tmp_path, "run", "--today", "2026-03-08") == 0
    assert len(smtp_server.received) == 1
    assert [r["status"] for r in sentlog(tmp_path)] == ["failed", "sent"]


def test_customer_id_con_gets_a_safe_archive_folder(tmp_path, smtp_server):
    """A customer id like CON (reserved on Windows) still gets a usable archive folder."""
    customers = [dict(c) for c in DEFAULT_CUSTOMERS]
    customers[0]["customer_id"] = "CON"
    customers[0]["name"] = 'Ali: "A/B" <x>?'
    orders = [dict(o) for o in DEFAULT_ORDERS]
    orders[0]["customer_id"] = "CON"
    make_workbook(tmp_path, settings=settings_for(smtp_server), customers=customers,
                  orders=orders)
    assert cli(tmp_path, "run", "--today", DAY1) == 0
    files = list((tmp_path / "archive").rglob("*.eml"))
    assert len(files) == 1
    folder = files[0].parent
    assert folder.parent == tmp_path / "archive"
    assert folder.name.upper() != "CON"
    assert not any(ch in folder.name for ch in '<>:"/\\|?*')


def test_workbook_open_in_excel_still_sends_and_log_catches_up(home, smtp_server, capsys):
    """With ~$commplan.xlsx beside it, mails go out, exit 1, and the next run writes the log."""
    lock = home / "workbooks" / "~$commplan.xlsx"
    lock.write_bytes(b"owner")
    before = (home / "workbooks" / "commplan.xlsx").read_bytes()
    assert cli(home, "run", "--today", DAY1) == 1
    assert len(smtp_server.received) == 1
    assert (home / "workbooks" / "commplan.xlsx").read_bytes() == before
    assert "le Journal sera complété au prochain passage" in capsys.readouterr().out
    lock.unlink()
    assert cli(home, "run", "--today", DAY1) == 0
    assert len(smtp_server.received) == 1
    assert [r["status"] for r in sentlog(home)] == ["sent"]


def test_staff_parts_of_the_workbook_stay_byte_for_byte(home, smtp_server):
    """Writing the SentLog leaves every staff sheet's part of the file untouched, and the
    staff's style entries keep their bytes and numbers (the tool's are appended)."""
    from tests.test_graft import _style_lists

    path = home / "workbooks" / "commplan.xlsx"
    with zipfile.ZipFile(path) as z:
        before = {n: z.read(n) for n in z.namelist()}
    assert cli(home, "run", "--today", DAY1) == 0
    with zipfile.ZipFile(path) as z:
        after = {n: z.read(n) for n in z.namelist()}
    changed = {n for n in before if before[n] != after.get(n)}
    assert changed <= {"xl/workbook.xml", "xl/_rels/workbook.xml.rels", "[Content_Types].xml",
                       "docProps/app.xml", "xl/styles.xml"}
    old_styles, new_styles = _style_lists(before["xl/styles.xml"]), _style_lists(
        after["xl/styles.xml"])
    for name, entries in old_styles.items():
        assert new_styles[name][: len(entries)] == entries
    assert (home / "workbooks" / "backups").is_dir()


def test_uncertain_after_crash_is_reported_not_resent(home, smtp_server, capsys):
    """A message left `sending` by a crash becomes uncertain: reported, exit 1, never resent."""
    from commplan_xl.model import MessageRef
    from commplan_xl.store.ledger import Ledger

    with Ledger(home / "commplan-ledger.sqlite3") as ledger:
        ledger.begin(MessageRef(order_id="O1001", customer_id="C001", plan="Baie vitrée",
                                plan_key="baie vitrée", step=1, due_date=dt.date(2026, 3, 7),
                                emails="alice@example.test"),
                     subject="x", now=dt.datetime(2026, 3, 7, 6, 30))
    assert cli(home, "run", "--today", DAY1) == 1
    assert smtp_server.received == []
    assert "resend O1001 1" in capsys.readouterr().out
    assert [r["status"] for r in sentlog(home)] == ["uncertain"]
    assert cli(home, "run", "--today", "2026-03-08") == 0
    assert smtp_server.received == []


def test_resend_sends_again_and_is_recorded(home, smtp_server):
    """`commplan resend` sends one message again on purpose and records it as a resend."""
    assert cli(home, "run", "--today", DAY1) == 0
    assert cli(home, "resend", "O1001", "1", "--today", DAY1) == 0
    assert len(smtp_server.received) == 2
    rows = sentlog(home)
    assert [r["status"] for r in rows] == ["sent", "sent"]
    assert rows[1]["detail"] == "renvoyé à la demande"  # the workbook is French
    assert len(list((home / "archive").rglob("*.eml"))) == 2


def test_preview_writes_files_and_to_sends_a_test_only(home, smtp_server):
    """preview writes .eml and .html; --to sends to the test address and records nothing."""
    assert cli(home, "preview", "O1001", "2") == 0
    previews = sorted(p.suffix for p in (home / "previews").iterdir())
    assert previews == [".eml", ".html"]
    assert smtp_server.received == []
    assert cli(home, "preview", "O1001", "2", "--to", "test@example.org") == 0
    assert [r.rcpt_tos for r in smtp_server.received] == [["test@example.org"]]
    assert not (home / "commplan-ledger.sqlite3").exists() or not _ledger_events(home)


def _ledger_events(home: Path) -> list:
    con = sqlite3.connect(home / "commplan-ledger.sqlite3")
    try:
        return con.execute("select * from events").fetchall()
    finally:
        con.close()


def test_variables_prints_and_writes_variable_list(home, capsys):
    """`commplan variables` prints every variable with an example and writes VariableList."""
    assert cli(home, "variables") == 0
    out = capsys.readouterr().out
    for name in ("customer.name", "order.product", "step.due_date", "company_phone"):
        assert name in out
    wb = openpyxl.load_workbook(home / "workbooks" / "commplan.xlsx")
    assert "Liste des variables" in wb.sheetnames
    names = [c.value for c in wb["Liste des variables"]["A"]]
    assert "{{ customer.name }}" in names
    assert "Variables" in wb.sheetnames  # staff's sheet untouched, still there


def test_due_csv_lists_what_a_run_would_do(home, capsys, smtp_server):
    """due --csv prints the header and one row per decision, sending nothing."""
    assert cli(home, "due", "--today", "2026-04-10", "--csv") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "order_id,customer_id,plan,step,due_date,action,reason"
    rows = [line.split(",") for line in lines[1:]]
    assert all(r[5] in ("send", "skip") for r in rows)
    assert smtp_server.received == []
    assert not (home / "commplan-ledger.sqlite3").exists()


def test_password_is_never_written(tmp_path, monkeypatch):
    """The SMTP password from the environment appears in no file the tool writes."""
    from tests.smtp_server import SMTPServer

    secret = "S3cr3t-Pa55w0rd-xyz"
    monkeypatch.setenv("COMMPLAN_SMTP_PASSWORD", secret)
    with SMTPServer(credentials={"user@example.test": secret}) as server:
        make_workbook(tmp_path, settings=settings_for(server, smtp_user="user@example.test",
                                                      smtp_security="none"))
        assert cli(tmp_path, "run", "--today", DAY1) == 0
        assert len(server.received) == 1
        monkeypatch.setenv("COMMPLAN_SMTP_PASSWORD", "wrong-" + secret)
        assert cli(tmp_path, "run", "--today", "2026-03-20") == 1
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data, path
            if path.suffix == ".xlsx":
                with zipfile.ZipFile(path) as z:
                    for n in z.namelist():
                        assert secret.encode() not in z.read(n), (path, n)


def test_new_user_flow_init_check_due(tmp_path):
    """init in an empty folder, then check and due, work as a newcomer types them: the demo
    rows reach nobody (example addresses), and check says they are still there."""
    home = tmp_path / "site"
    env_cmd = [sys.executable, "-m", "commplan_xl"]
    r = subprocess.run([*env_cmd, "init", "--home", str(home)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*env_cmd, "check", "--home", str(home)], capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("Clients!C2 (email) : « eloise.lefevre@example.net » est une adresse d'exemple"
            in r.stdout)
    assert "Le classeur contient encore les commandes de démonstration (CMD-2026-0001…)" \
        in r.stdout
    r = subprocess.run([*env_cmd, "due", "--home", str(home)], capture_output=True, text=True)
    assert r.returncode == 0 and "Rien n'est dû" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([*env_cmd, "init", "--home", str(home)], capture_output=True, text=True)
    assert r.returncode == 1 and "--force" in r.stderr
    r = subprocess.run([*env_cmd, "due", "--today", "yesterday"], capture_output=True, text=True)
    assert r.returncode == 2


def test_due_csv_shows_messages_held_by_the_daily_limit(smtp_server, home, capsys):
    """due --csv writes a message held back by daily_limit as a wait, saying why."""
    make_workbook(home, settings=settings_for(smtp_server, daily_limit=1))
    assert cli(home, "due", "--today", "2026-03-14", "--csv") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(",") for line in lines[1:]] == [
        ["O1001", "C001", "Baie vitrée", "1", "2026-03-07", "send", "due"],
        ["O1002", "C002", "Baie vitrée", "1", "2026-03-14", "wait",
         "daily limit reached: waits for the next run"],
    ]


def test_due_leaves_the_garbage_collector_on(home, capsys):
    """due pauses the cycle collector only while it runs (callers in-process keep theirs)."""
    import gc

    assert gc.isenabled()
    assert cli(home, "due", "--today", DAY1) == 0
    assert gc.isenabled()


def test_each_mail_of_a_batch_gets_its_own_outcome(tmp_path, smtp_server):
    """A run builds each mail while the server takes the one before: a refusal, a mail that
    cannot be built and a line lost mid-mail each stay with their own order, in order, and
    every other mail is sent, archived once and logged."""
    customers = [{"customer_id": f"C{i}", "name": f"Client {i}", "email": f"c{i}@example.test"}
                 for i in range(1, 7)]
    orders = [{"order_id": f"O{i}", "customer_id": f"C{i}", "plan": "Baie vitrée",
               "start_date": dt.date(2026, 3, 2), "product": "Baie"} for i in range(1, 7)]
    plans = [dict(p) for p in DEFAULT_PLANS]
    plans.append({**plans[0], "plan": "Avec pièce jointe", "step": 1,
                  "attachments": "absente.pdf"})
    orders[2]["plan"] = "Avec pièce jointe"  # O3 cannot be built: its attachment is missing
    make_workbook(tmp_path, settings=settings_for(smtp_server), plans=plans,
                  customers=customers, orders=orders)
    smtp_server.handler.data_replies["c2@example.test"] = "554 5.7.1 refused as spam"
    smtp_server.handler.hang_up_after_data.add("c4@example.test")
    assert cli(tmp_path, "run", "--today", DAY1) == 1
    got = [(r["order_id"], r["status"]) for r in sentlog(tmp_path)]
    assert got == [("O1", "sent"), ("O2", "failed"), ("O3", "failed"), ("O4", "uncertain"),
                   ("O5", "sent"), ("O6", "sent")]
    rows = {r["order_id"]: r for r in sentlog(tmp_path)}
    assert "spam" in rows["O2"]["detail"] and "absente.pdf" in rows["O3"]["detail"]
    delivered = [rc for m in smtp_server.received for rc in m.rcpt_tos]
    assert delivered == ["c1@example.test", "c5@example.test", "c6@example.test"]
    files = sorted(p.relative_to(tmp_path).as_posix()
                   for p in (tmp_path / "archive").rglob("*") if p.is_file())
    assert files == sorted(rows[o]["archive_file"] for o in ("O1", "O5", "O6"))
    for order in ("O1", "O5", "O6"):
        archived = (tmp_path / rows[order]["archive_file"]).read_bytes()
        assert any(m.data.replace(b"\r\n", b"\n") == archived.replace(b"\r\n", b"\n")
                   for m in smtp_server.received)
    # The next morning retries only the temporary failure: O3 once its file is there.
    (tmp_path / "attachments" / "absente.pdf").write_bytes(b"%PDF-1.4")
    assert cli(tmp_path, "run", "--today", "2026-03-08") == 0  # O4 stays uncertain, unsent
    assert [rc for m in smtp_server.received for rc in m.rcpt_tos][3:] == ["c3@example.test"]


def test_invalid_reply_to_is_a_check_problem_not_every_customers_failure(
        tmp_path, smtp_server, clean_env, capsys):
    """A typo in reply_to is one `check` problem on its Settings cell; mails still go out,
    without a Reply-To, and no customer is blamed for it."""
    make_workbook(tmp_path, settings=settings_for(smtp_server, reply_to="service@@exemple"))
    assert cli(tmp_path, "check") == 1
    out = capsys.readouterr().out
    problem = next(line for line in out.splitlines() if "service@@exemple" in line)
    assert "Paramètres" in problem or "Settings" in problem
    assert "reply_to" in problem
    assert cli(tmp_path, "run", "--today", DAY1) == 1  # the workbook problem needs attention
    assert len(smtp_server.received) == 1
    assert smtp_server.received[0].message["Reply-To"] is None
    assert {row["status"] for row in sentlog(tmp_path)} == {"sent"}
