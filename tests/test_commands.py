"""The smaller commands: plan simulator, demo, usage errors, exit statuses."""

from __future__ import annotations

import datetime as dt
import os

import openpyxl

from commplan_xl.cli import main
from tests.builders import make_workbook


def test_plan_simulator_prints_each_step_date(tmp_path, capsys):
    """`commplan plan NAME --from D` shows each step's date after months and business days."""
    plans = [
        {"plan": "Baie vitrée", "step": 1, "delay": 1, "unit": "mois", "subject": "a",
         "body": "b"},
        {"plan": "Baie vitrée", "step": 2, "delay": 1.5, "unit": "months", "subject": "c",
         "body": "d"},
        {"plan": "Baie vitrée", "step": 3, "delay": 3, "unit": "jours ouvrés", "subject": "e",
         "body": "f"},
    ]
    make_workbook(tmp_path, plans=plans)
    assert main(["plan", "baie vitrée ", "--from", "2026-01-31", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "28/02/2026" in out  # 31 January + 1 month
    assert "15/03/2026" in out  # + 1.5 months
    assert "04/02/2026" in out  # 3 working days after Saturday 31/01: Mon 2, Tue 3, Wed 4
    assert main(["plan", "Inconnu", "--from", "2026-01-31", "--home", str(tmp_path)]) == 1


def test_plan_simulator_skips_french_holidays(tmp_path, capsys):
    """Business days skip 1 May and the weekend with holidays = FR."""
    plans = [{"plan": "P", "step": 1, "delay": 1, "unit": "business days", "subject": "a",
              "body": "b"}]
    make_workbook(tmp_path, plans=plans, orders=[], customers=[])
    assert main(["plan", "P", "--from", "2026-04-30", "--home", str(tmp_path)]) == 0
    assert "04/05/2026" in capsys.readouterr().out  # Fri 1 May is a holiday, then weekend


def test_demo_runs_from_an_empty_folder(tmp_path, capsys):
    """`commplan demo` creates a home, sends through its own local server, and shows arrivals."""
    home = tmp_path / "demo"
    assert main(["demo", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "127.0.0.1" in out and "mails reçus" in out  # the starter workbook is French
    assert "@clients.test" in out  # its customers' addresses are for test servers
    assert "pièces jointes : conditions-generales-de-vente.pdf" in out
    assert list((home / "archive").rglob("*.eml"))
    wb = openpyxl.load_workbook(home / "workbooks" / "commplan.xlsx", read_only=True)
    assert {"Journal", "Tableau de bord", "Prévisions"} <= set(wb.sheetnames)
    statuses = {row[7] for row in wb["Journal"].iter_rows(min_row=2, values_only=True)}
    assert statuses == {"envoyé"}
    # a second demo in the same folder starts afresh instead of refusing
    assert main(["demo", "--home", str(home), "--days", "3"]) == 0


def test_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    """The demo never wipes a folder that holds something else."""
    (tmp_path / "precious.txt").write_text("x")
    assert main(["demo", "--home", str(tmp_path)]) == 1
    assert (tmp_path / "precious.txt").exists()
    assert "n'est pas vide" in capsys.readouterr().err


def test_bad_command_line_exits_2(tmp_path):
    """A bad command line exits 2, as Task Scheduler's Last Run Result shows it."""
    assert main(["run", "--today", "31/02/2026", "--home", str(tmp_path)]) == 2
    assert main(["run", "--today", "11/27/2026", "--home", str(tmp_path)]) == 2  # day first
    assert main(["run", "--today", "tomorrow", "--home", str(tmp_path)]) == 2
    assert main(["nosuchcommand"]) == 2
    assert main(["run", "--limit", "-3", "--home", str(tmp_path)]) == 2


def test_missing_workbook_is_one_sentence(tmp_path, capsys):
    """Without a workbook every command says how to make one, exit 1, no traceback."""
    assert main(["check", "--home", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "commplan init" in err and "Traceback" not in err


def test_program_says_it_once_and_exits_with_the_status(tmp_path):
    """The `commplan` program (as the daily task runs it): the sentence once, on stderr,
    the exit status of the command, and every line of a listing written out."""
    import subprocess
    import sys

    missing = subprocess.run([sys.executable, "-m", "commplan_xl", "due", "--home",
                              str(tmp_path / "nowhere")], capture_output=True, text=True,
                             env={**os.environ, "COMMPLAN_LANG": "en"})
    assert missing.returncode == 1
    assert missing.stderr.count("does not exist") == 1 and missing.stdout == ""
    make_workbook(tmp_path)
    listed = subprocess.run([sys.executable, "-m", "commplan_xl", "due", "--csv", "--home",
                             str(tmp_path), "--today", "2026-06-01"],
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("order_id,") and len(lines) > 1 and lines[-1].count(",") == 6


def test_check_exit_status_and_problem_places(tmp_path, capsys):
    """check exits 1 with one line per problem naming sheet, cell and column; 0 when fine."""
    make_workbook(tmp_path)
    assert main(["check", "--home", str(tmp_path)]) == 0
    orders = [{"order_id": "O1", "customer_id": "C001", "plan": "Baie vitrée",
               "start_date": "31/02/2026"},
              {"order_id": "O2", "customer_id": "C404", "plan": "Baie vitrée",
               "start_date": dt.date(2026, 3, 1)}]
    make_workbook(tmp_path, orders=orders)
    assert main(["check", "--home", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "Orders!D2 (start_date) : « 31/02/2026 » n'est pas une date" in out
    assert "Orders!B3 (customer_id)" in out and "C404" in out


def test_run_with_no_sender_says_what_to_fill(tmp_path, capsys, monkeypatch):
    """A workbook without a sender address: check reports it and run refuses with a sentence."""
    monkeypatch.delenv("COMMPLAN_SENDER_EMAIL", raising=False)
    make_workbook(tmp_path, settings={"smtp_host": "127.0.0.1"})
    assert main(["check", "--home", str(tmp_path)]) == 1
    assert "sender" in capsys.readouterr().out
    assert main(["run", "--home", str(tmp_path), "--today", "2026-03-07"]) == 1
    assert "sender_email" in capsys.readouterr().err


def test_due_csv_reads_back_as_the_decisions_whatever_the_values():
    """`due --csv` quotes what needs quoting (commas, quotes, line breaks in ids or plan
    names) exactly as the csv module does, so a spreadsheet reads every field back."""
    import csv
    import io

    from commplan_xl.commands import due_csv
    from commplan_xl.model import Decision

    day = dt.date(2026, 3, 7)
    decisions = [
        Decision("O1", "C1", "baie", "Baie vitrée", 1, day, "send", "due"),
        Decision('O,2 "x"', "C\n2", "p", 'Plan "A", B', 2, day, "skip", "superseded by step 3"),
        Decision("O3", "C3;4", "baie", "Baie vitrée", 1, day, "wait", "daily limit reached"),
        Decision("O4", "C4", "baie", "Baie vitrée", 1, day, "send", "due"),
        Decision("O5\r", " C5 ", "baie", "Baie vitrée", 4, day, "skip", "missed"),
    ]
    text = due_csv(decisions)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["order_id", "customer_id", "plan", "step", "due_date", "action",
                       "reason"]
    assert rows[1:] == [
        ["O1", "C1", "Baie vitrée", "1", "2026-03-07", "send", "due"],
        ['O,2 "x"', "C\n2", 'Plan "A", B', "2", "2026-03-07", "skip", "superseded by step 3"],
        ["O3", "C3;4", "Baie vitrée", "1", "2026-03-07", "wait",
         "daily limit reached: waits for the next run"],
        ["O4", "C4", "Baie vitrée", "1", "2026-03-07", "send", "due"],
        ["O5\r", " C5 ", "Baie vitrée", "4", "2026-03-07", "skip", "missed"],
    ]
    expected = io.StringIO()
    csv.writer(expected, lineterminator="\n").writerows(rows[:5])
    assert text.startswith(expected.getvalue())  # byte for byte as the csv module writes


def test_plan_lists_steps_in_date_order_with_subjects_and_problems(tmp_path, capsys):
    """`commplan plan` lists the steps by date, each subject rendered on example values,
    and marks a step with a problem instead of leaving it out."""
    plans = [
        {"plan": "Baie vitrée", "step": 1, "delay": 2, "unit": "weeks",
         "subject": "Votre {{ order.product }} ({{ order.order_id }})", "body": "b"},
        {"plan": "Baie vitrée", "step": 2, "delay": 3, "unit": "days",
         "subject": "Bonjour {{ customer.name }}", "body": "{{ order.prodcut }}"},
    ]
    make_workbook(tmp_path, plans=plans)
    assert main(["plan", "Baie vitrée", "--from", "2026-03-02", "--home", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("  étape  2 : jeu. 05/03/2026  (+3 jours)  Bonjour Alice Martin")
    assert lines[2].strip().startswith("⚠ le message utilise « order.prodcut », qui n'existe pas")
    assert lines[3] == ("  étape  1 : lun. 16/03/2026  (+2 semaines)  Votre Baie coulissante "
                        "(O1001)")
