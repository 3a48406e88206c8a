"""Never twice, nothing lost: ordinary edits and a lost ledger never resend a mail.

Every case runs the real command line against the local SMTP server, with real workbooks
edited between runs as staff (or a script with openpyxl) would.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from pathlib import Path

import openpyxl
import pytest

from commplan_xl.cli import main
from commplan_xl.problems import SendKind
from commplan_xl.store.ledger_backup import BACKUP_FOLDER
from tests.builders import DEFAULT_PLANS, make_workbook
from tests.test_run import settings_for

DAY1 = "2026-03-07"  # step 1 (+5 days from 2026-03-02) is due
DAY2 = "2026-03-17"  # step 2 (+15 days) is due
LEDGER = "commplan-ledger.sqlite3"

ORDERS = [
    {"order_id": f"CMD-{n}", "customer_id": "C001" if n % 2 else "C002", "plan": "Baie",
     "start_date": dt.date(2026, 3, 2)}
    for n in range(1, 6)
]


def _plans(name: str = "Baie") -> list[dict]:
    return [dict(row, plan=name) for row in DEFAULT_PLANS]


@pytest.fixture
def home(tmp_path, smtp_server, clean_env):
    """A home with five orders on plan "Baie", pointed at the local SMTP server."""
    make_workbook(tmp_path, settings=settings_for(smtp_server), plans=_plans(),
                  orders=ORDERS)
    return tmp_path


def cli(home: Path, *args: str) -> int:
    return main([*args, "--home", str(home)])


def edit(home: Path, sheet: str, column: str, change) -> None:
    """Change every cell of a column in place, as a script using openpyxl would."""
    path = home / "workbooks" / "commplan.xlsx"
    wb = openpyxl.load_workbook(path)
    ws = wb[sheet]
    header = [c.value for c in ws[1]]
    col = header.index(column) + 1
    for row in range(2, ws.max_row + 1):
        cell = ws.cell(row=row, column=col)
        if cell.value is not None:
            cell.value = change(row, cell.value)
    wb.save(path)


# ---------------------------------------------------------------- (order, step)


def test_renaming_a_plan_in_plans_and_orders_resends_nothing(home, smtp_server, capsys):
    """A plan renamed in Plans and Orders together ("Baie" -> "Baie vitrée") keeps every
    order's history: the next runs send nothing already sent, and `due` says the move."""
    assert cli(home, "run", "--today", DAY1) == 0
    assert len(smtp_server.received) == 5
    edit(home, "Plans", "plan", lambda _r, v: "Baie vitrée")
    edit(home, "Orders", "plan", lambda _r, v: "Baie vitrée")
    capsys.readouterr()
    assert cli(home, "due", "--today", DAY1) == 0
    out = capsys.readouterr().out
    assert "Rien n'est dû" in out  # a fr_FR workbook
    assert "la commande CMD-1 est passée du plan Baie au plan Baie vitrée" in out
    assert cli(home, "run", "--today", DAY1) == 0
    assert cli(home, "run", "--today", "2026-03-08") == 0
    assert len(smtp_server.received) == 5
    # Step 2 still goes out when due, once per order.
    assert cli(home, "run", "--today", DAY2) == 0
    assert len(smtp_server.received) == 10


def test_lower_casing_order_ids_resends_nothing(home, smtp_server):
    """Order ids pasted again in lower case (or with spaces around) are the same orders."""
    assert cli(home, "run", "--today", DAY1) == 0
    edit(home, "Orders", "order_id", lambda r, v: f"  {v.lower()} " if r % 2 else v.lower())
    assert cli(home, "run", "--today", DAY1) == 0
    assert cli(home, "run", "--today", "2026-03-09") == 0
    assert len(smtp_server.received) == 5


def test_an_order_moved_to_another_plan_keeps_its_history(home, smtp_server, capsys):
    """Steps sent or skipped under the old plan are not sent again under the new one;
    `check` and `due` say the order moved; later steps of the new plan still go out."""
    path = home / "workbooks" / "commplan.xlsx"
    assert cli(home, "run", "--today", DAY1) == 0
    wb = openpyxl.load_workbook(path)
    plans = wb["Plans"]
    for row in _plans("Autre"):
        plans.append([row.get(c.value) for c in plans[1]])
    wb.save(path)
    edit(home, "Orders", "plan", lambda r, v: "Autre" if r == 2 else v)  # CMD-1
    capsys.readouterr()
    assert cli(home, "check") == 0
    assert "la commande CMD-1 est passée du plan Baie au plan Autre" in capsys.readouterr().out
    assert cli(home, "due", "--today", DAY1) == 0
    assert "la commande CMD-1 est passée du plan Baie au plan Autre" in capsys.readouterr().out
    assert cli(home, "run", "--today", DAY1) == 0
    assert len(smtp_server.received) == 5
    assert cli(home, "run", "--today", DAY2) == 0
    subjects = [m.message["Subject"] for m in smtp_server.received[5:]]
    assert len(subjects) == 5 and sum("CMD-1 " in s for s in subjects) == 1


def test_two_order_ids_differing_by_case_are_a_check_problem(tmp_path, capsys):
    """`CMD-1` and `cmd-1 ` are one id: the second row is a problem naming its cell."""
    orders = [dict(ORDERS[0]), dict(ORDERS[1], order_id="cmd-1 ")]
    make_workbook(tmp_path, plans=_plans(), orders=orders)
    assert main(["check", "--home", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "Orders!A3" in out and "ligne 2" in out and "order_id" in out


# ---------------------------------------------------------------- a lost ledger


def _remove_ledger(home: Path, how: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        (home / (LEDGER + suffix)).unlink(missing_ok=True)
    if how == "empty":
        (home / LEDGER).write_bytes(b"")
    elif how == "blank":  # a valid ledger that recorded nothing
        sqlite3.connect(home / LEDGER).close()
        assert main(["due", "--home", str(home), "--today", DAY1]) in (0, 1)


@pytest.mark.parametrize("how", ["deleted", "empty", "blank"])
def test_a_lost_ledger_stops_the_run_before_any_send(home, smtp_server, capsys, how):
    """A ledger deleted, emptied to 0 bytes or replaced by a blank one, while the archive
    and the SentLog show earlier sends: the run sends nothing, exits 1 and says how to
    restore the ledger or confirm a fresh start."""
    assert cli(home, "run", "--today", DAY1) == 0
    _remove_ledger(home, how)
    capsys.readouterr()
    assert cli(home, "run", "--today", DAY1) == 1
    err = capsys.readouterr().err
    assert len(smtp_server.received) == 5
    assert "commplan restore-ledger" in err and "--new-ledger" in err
    assert "rien n'a donc été envoyé" in err


@pytest.mark.parametrize("evidence", ["sentlog", "archive"])
def test_either_trace_of_earlier_sends_is_enough(home, smtp_server, capsys, evidence):
    """The SentLog sheet alone, or the archive alone, shows earlier sends."""
    assert cli(home, "run", "--today", DAY1) == 0
    _remove_ledger(home, "deleted")
    if evidence == "sentlog":
        for eml in (home / "archive").rglob("*.eml"):
            eml.unlink()
    else:
        make_workbook(home, settings=settings_for(smtp_server), plans=_plans(), orders=ORDERS)
    assert cli(home, "run", "--today", DAY1) == 1
    assert len(smtp_server.received) == 5


def test_due_and_check_mention_the_missing_ledger(home, capsys):
    """`due`, `check` and a dry run say a run would stop, and how to restore the ledger."""
    assert cli(home, "run", "--today", DAY1) == 0
    _remove_ledger(home, "deleted")
    capsys.readouterr()
    assert cli(home, "due", "--today", DAY1) == 1
    assert "restore-ledger" in capsys.readouterr().out
    assert cli(home, "check") == 1
    assert "restore-ledger" in capsys.readouterr().out
    assert cli(home, "run", "--today", DAY1, "--dry-run") == 0
    assert "un vrai passage s'arrêterait" in capsys.readouterr().out
    assert not (home / LEDGER).exists()  # looking never starts a ledger


def test_restore_ledger_puts_back_the_newest_copy(home, smtp_server, capsys):
    """Each run keeps a dated copy (holding that day's sends); `restore-ledger` lists them
    and puts the newest back, keeping the ledger it replaces; the next run sends nothing
    again."""
    assert cli(home, "run", "--today", DAY1) == 0
    copies = sorted(p.name for p in (home / BACKUP_FOLDER).iterdir())
    assert copies == ["commplan-ledger-2026-03-07.sqlite3"]
    _remove_ledger(home, "blank")
    capsys.readouterr()
    assert cli(home, "restore-ledger", "--list") == 0
    assert "commplan-ledger-2026-03-07.sqlite3  (5 résultat(s)" in capsys.readouterr().out
    assert cli(home, "restore-ledger") == 0
    out = capsys.readouterr().out
    assert "est remis depuis" in out and "est gardé sous" in out
    kept = [p for p in (home / BACKUP_FOLDER).iterdir() if "replaced" in p.name]
    assert len(kept) == 1
    assert cli(home, "run", "--today", "2026-03-08") == 0
    assert len(smtp_server.received) == 5


def test_restore_ledger_from_a_named_file(home, smtp_server, tmp_path_factory):
    """`--from FILE` restores that copy (one saved elsewhere by the site)."""
    assert cli(home, "run", "--today", DAY1) == 0
    saved = tmp_path_factory.mktemp("usb") / "ledger-copy.sqlite3"
    src = sqlite3.connect(home / LEDGER)
    dst = sqlite3.connect(saved)
    src.backup(dst)
    src.close()
    dst.close()
    _remove_ledger(home, "deleted")
    assert cli(home, "restore-ledger", "--from", str(saved)) == 0
    assert cli(home, "run", "--today", DAY1) == 0
    assert len(smtp_server.received) == 5


def test_new_ledger_confirms_a_fresh_start(home, smtp_server):
    """`run --new-ledger` is the explicit way to start afresh: it sends what is due."""
    assert cli(home, "run", "--today", DAY1) == 0
    _remove_ledger(home, "deleted")
    assert cli(home, "run", "--today", DAY1, "--new-ledger") == 0
    assert len(smtp_server.received) == 10


def test_dated_copies_are_few(home):
    """One copy per day of run, the newest ten kept."""
    for day in range(7, 20):
        assert cli(home, "run", "--today", f"2026-03-{day:02d}") == 0
    copies = sorted(p.name for p in (home / BACKUP_FOLDER).iterdir())
    assert len(copies) == 10
    assert copies[-1] == "commplan-ledger-2026-03-19.sqlite3"


def test_a_workbook_under_workbooks_names_its_home(home, smtp_server, tmp_path_factory,
                                                   monkeypatch):
    """Started elsewhere (Task Scheduler starts in System32) with only --workbook, the run
    uses the folder above workbooks/ as its home: its ledger, archive and lock."""
    elsewhere = tmp_path_factory.mktemp("System32")
    monkeypatch.chdir(elsewhere)
    workbook = str(home / "workbooks" / "commplan.xlsx")
    assert main(["run", "--workbook", workbook, "--today", DAY1]) == 0
    assert main(["run", "--workbook", workbook, "--today", DAY1]) == 0
    assert len(smtp_server.received) == 5
    assert (home / LEDGER).exists()
    assert os.listdir(elsewhere) == []


def test_a_home_given_still_wins(home, tmp_path_factory, monkeypatch):
    """COMMPLAN_HOME (or --home) names the home even for a workbook under workbooks/."""
    from commplan_xl.run.batch import resolve_paths

    other = tmp_path_factory.mktemp("site")
    workbook = home / "workbooks" / "commplan.xlsx"
    assert resolve_paths(None, workbook) == (home, workbook)
    assert resolve_paths(other, workbook) == (other, workbook)
    monkeypatch.setenv("COMMPLAN_HOME", str(other))
    assert resolve_paths(None, workbook) == (other, workbook)


# ---------------------------------------------------------------- a killed run


def test_a_killed_runs_leftovers_are_removed_by_the_next_run(home):
    """The temporary files a killed run leaves (beside the workbook and in the archive's
    customer folders) are gone after the next run."""
    assert cli(home, "run", "--today", DAY1) == 0
    folder = next(p for p in (home / "archive").iterdir() if p.is_dir())
    left = [home / "workbooks" / ".commplan.k1l2m3.tmp", folder / ".tmp-a1b2c3.part"]
    for path in left:
        path.write_bytes(b"half")
    assert cli(home, "run", "--today", "2026-03-08") == 0
    assert not any(path.exists() for path in left)


# ---------------------------------------------------------------- catch_up_days 0


def test_no_retry_is_promised_past_catch_up(tmp_path, smtp_server, capsys, monkeypatch):
    """With catch_up_days 0, a temporary failure says it is not retried after today and
    how to send it, in the SentLog detail and in what the run prints."""
    monkeypatch.delenv("COMMPLAN_HOME", raising=False)
    smtp_server.handler.rcpt_replies["alice@example.test"] = "451 4.3.0 try later"
    make_workbook(tmp_path, settings=settings_for(smtp_server, catch_up_days=0,
                                                  locale="en_GB"),
                  plans=_plans(), orders=ORDERS[:1])
    assert main(["run", "--home", str(tmp_path), "--today", DAY1]) == 1
    out = capsys.readouterr().out
    assert "next run" not in out and "will be retried" not in out
    assert "not be retried after today" in out and "commplan resend CMD-1 1" in out
    wb = openpyxl.load_workbook(tmp_path / "workbooks" / "commplan.xlsx")
    detail = [r[9] for r in wb["SentLog"].iter_rows(min_row=2, values_only=True)]
    assert len(detail) == 1 and "next run" not in detail[0]
    assert "not be retried after today" in detail[0]


def alike_ids_workbook(home: Path, smtp_server) -> None:
    """Customers `12/34` and `12_34`, both named Dupont, one order each."""
    customers = [{"customer_id": "12/34", "name": "Dupont", "email": "a@example.test"},
                 {"customer_id": "12_34", "name": "Dupont", "email": "b@example.test"}]
    orders = [dict(ORDERS[0], customer_id="12/34"), dict(ORDERS[1], customer_id="12_34")]
    make_workbook(home, settings=settings_for(smtp_server), plans=_plans(),
                  customers=customers, orders=orders)


def test_customers_with_alike_ids_keep_separate_archive_folders(tmp_path, smtp_server,
                                                                monkeypatch):
    """Customers `12/34` and `12_34` each get their own archive folder, found again by
    later runs: each folder holds only its customer's mails."""
    monkeypatch.delenv("COMMPLAN_HOME", raising=False)
    alike_ids_workbook(tmp_path, smtp_server)
    for day in (DAY1, DAY2):
        assert main(["run", "--home", str(tmp_path), "--today", day]) == 0
    folders = sorted(p for p in (tmp_path / "archive").iterdir())
    assert len(folders) == 2
    for folder in folders:
        mails = list(folder.glob("*.eml"))
        assert len(mails) == 2
        assert len({m.name.split("_")[1] for m in mails}) == 1  # one order: one customer


def test_a_french_journal_shows_earlier_sends_but_a_staff_journal_does_not(
        tmp_path, smtp_server, monkeypatch):
    """A Journal sheet under the SentLog's French header, with rows, shows earlier sends;
    a staff sheet that happens to be called Journal does not stop a first run."""
    monkeypatch.delenv("COMMPLAN_HOME", raising=False)
    journal = [["Date", "Commande", "Client", "E-mail", "Plan", "Étape", "Échéance",
                "Statut", "Objet", "Détail", "Fichier archivé"],
               ["2026-03-01 07:00:00", "CMD-1", "C001", "alice@example.test", "Baie", 1,
                "2026-03-01", "envoyé", "Votre commande", "", ""]]
    home = tmp_path / "a"
    make_workbook(home, settings=settings_for(smtp_server), plans=_plans(), orders=ORDERS,
                  sheets={"Journal": journal})
    assert main(["run", "--home", str(home), "--today", DAY1]) == 1
    assert smtp_server.received == []
    other = tmp_path / "b"
    notes = [["quand", "quoi"], ["lundi", "inventaire"]]
    make_workbook(other, settings=settings_for(smtp_server), plans=_plans(), orders=ORDERS,
                  sheets={"Journal": notes})
    assert main(["run", "--home", str(other), "--today", DAY1]) == 0
    assert len(smtp_server.received) == 5


def test_an_earlier_runs_folder_keeps_serving_its_customer(tmp_path, smtp_server,
                                                          monkeypatch):
    """A folder an earlier version made for customer `12/34` (named `12_34 - Dupont`, as the
    ledger records) keeps receiving that customer's mails; customer `12_34` gets its own."""
    from commplan_xl.model import MessageRef
    from commplan_xl.store.ledger import Ledger

    monkeypatch.delenv("COMMPLAN_HOME", raising=False)
    alike_ids_workbook(tmp_path, smtp_server)
    old = tmp_path / "archive" / "12_34 - Dupont"
    old.mkdir()
    (old / "2026-03-01_CMD-9_step-1.eml").write_bytes(b"Subject: old\r\n\r\nx\r\n")
    with Ledger(tmp_path / LEDGER) as ledger:
        now = dt.datetime(2026, 3, 1, 7, 0)
        ref = MessageRef("CMD-9", "12/34", "Baie", "baie", 1, dt.date(2026, 3, 1),
                         "a@example.test")
        ledger.finish(ledger.begin(ref, subject="old", now=now), status="sent", now=now,
                      archive_file="archive/12_34 - Dupont/2026-03-01_CMD-9_step-1.eml")
    assert main(["run", "--home", str(tmp_path), "--today", DAY1]) == 0
    assert sorted(p.name for p in old.iterdir()) == [
        "2026-03-01_CMD-9_step-1.eml", "2026-03-07_CMD-1_step-1.eml"]
    others = [p for p in (tmp_path / "archive").iterdir() if p != old]
    assert len(others) == 1 and [p.name for p in others[0].iterdir()] == [
        "2026-03-07_CMD-2_step-1.eml"]


@pytest.mark.parametrize(("kind", "detail"), [
    (SendKind.TEMPORARY, "the mail server refused the address a@x.fr for now (451 later); "
     "will not be retried after today (catch_up_days is 0); once fixed, `commplan resend "
     "CMD-1 1` sends it"),
    (SendKind.NOT_BUILT, "the template cannot render; will not be retried after today "
     "(catch_up_days is 0); once fixed, `commplan resend CMD-1 1` sends it"),
    (SendKind.SENDER_SIDE, "the mail server refused the sending account (550 5.7.60)"),
    (SendKind.PERMANENT, "the mail server did not take the message (550 no such user); not "
     "retried: correct the address"),
])
def test_the_summary_promises_no_retry_with_catch_up_0(kind, detail):
    """With catch_up_days 0 the summary mail's advice never says a later run retries: it
    says to use `commplan resend`."""
    from commplan_xl.run.outcomes import RunFailure
    from commplan_xl.run.reports import what_to_do

    advice = what_to_do(RunFailure("CMD-1", 1, kind, detail, last_try=True), 0)
    assert not any(promise in advice for promise in (
        "suivant le réessaie", "suivants le réessaient", "repartira"))
    assert "commplan resend CMD-1 1" in advice
