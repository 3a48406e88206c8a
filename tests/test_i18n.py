"""The tool speaks the workbook's language (French or English), on any Windows console."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from commplan_xl import i18n
from commplan_xl.cli import build_parser, main
from commplan_xl.commands import Progress, working
from commplan_xl.ops.daily_task import schtasks_line, windows_wrapper
from commplan_xl.run.batch import RunReport
from commplan_xl.run.reports import summary_message
from commplan_xl.settings import Settings
from tests.builders import DEFAULT_ORDERS, DEFAULT_PLANS, DEFAULT_SETTINGS, make_workbook

ROOT = Path(__file__).resolve().parent.parent
CATALOGS = ROOT / "commplan_xl" / "i18n"


def _settings(**values: object) -> list[dict]:
    rows = [dict(r) for r in DEFAULT_SETTINGS if r["key"] not in values]
    return rows + [{"key": k, "value": v} for k, v in values.items()]


def _catalog(lang: str):
    with open(CATALOGS / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f)


def _code_messages() -> set[str]:
    """Every msgid the code says through _(), ngettext() or N_() (singular form)."""
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    found = extract_from_dir(str(ROOT), method_map=[("commplan_xl/**.py", "python")],
                             keywords=keywords)
    return {msg if isinstance(msg, str) else msg[0] for _file, _line, msg, *_rest in found}


# ---------------------------------------------------------------- the catalogs


def test_every_sentence_of_the_code_has_its_french():
    """A sentence of the code missing from the French catalog, or without its French, fails
    here by name (fix: `python -m commplan_xl.i18n.update`, then write its msgstr)."""
    french = {}
    for m in _catalog("fr"):
        if m.id:
            key = m.id if isinstance(m.id, str) else m.id[0]
            strings = m.string if isinstance(m.string, tuple | list) else (m.string,)
            french[key] = "" if m.fuzzy or not all(strings) else strings[0]
    missing = sorted(msg for msg in _code_messages() if not french.get(msg))
    assert missing == [], "no French for: " + "; ".join(repr(m) for m in missing)


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_compiled_catalogs_match_their_po_files(lang):
    """The committed .mo files (what an installed commplan reads) are the .po files compiled."""
    buffer = io.BytesIO()
    write_mo(buffer, _catalog(lang))
    mo = CATALOGS / lang / "LC_MESSAGES" / "messages.mo"
    assert mo.read_bytes() == buffer.getvalue(), "run `python -m commplan_xl.i18n.update`"


def test_french_keeps_the_placeholders_of_each_sentence():
    """Each French sentence names the same {fields} as its English, so .format() fills it."""
    import re

    field = re.compile(r"\{(\w*)\}")
    for m in _catalog("fr"):
        if not m.id or not m.string:
            continue
        ids = m.id if isinstance(m.id, tuple | list) else (m.id,)
        strings = m.string if isinstance(m.string, tuple | list) else (m.string,)
        wanted = set(field.findall(ids[-1])) | set(field.findall(ids[0]))
        for text in strings:
            assert set(field.findall(text)) <= wanted, (m.id, text)


# ---------------------------------------------------------------- which language


@pytest.mark.parametrize(("environ", "lang"), [
    ({"COMMPLAN_LANG": "en", "LANG": "fr_FR.UTF-8"}, "en"),
    ({"COMMPLAN_LANG": "fr_FR", "LANG": "en_GB.UTF-8"}, "fr"),
    ({"LANG": "en_GB.UTF-8"}, "en"),
    ({"LC_ALL": "fr_CA.UTF-8", "LANG": "en_US.UTF-8"}, "fr"),
    ({"LANG": "de_DE.UTF-8"}, "fr"),
    ({"LANG": "C.UTF-8"}, "fr"),
])
def test_language_before_a_workbook_is_read(environ, lang):
    """Before a workbook is read: COMMPLAN_LANG, else the system's language, else French."""
    assert i18n.system_language(environ) == lang


@pytest.mark.parametrize(("locale", "lang"), [
    ("fr_FR", "fr"), ("fr_BE", "fr"), ("en_GB", "en"), ("en-US", "en"), ("de_DE", "fr"),
    ("", "fr"),
])
def test_workbook_locale_names_the_language(locale, lang):
    """fr_* speaks French, en_* English, anything else French."""
    assert i18n.language_of(locale) == lang


# ---------------------------------------------------------------- check problems


BAD_DATE = [{**DEFAULT_ORDERS[0], "start_date": "31/02/2026"}, DEFAULT_ORDERS[1]]


def test_check_problems_in_french_for_fr_fr(tmp_path, capsys):
    """A fr_FR workbook: check's problems and closing line are French sentences."""
    make_workbook(tmp_path, orders=BAD_DATE, settings=_settings(locale="fr_FR"))
    assert main(["check", "--home", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "Orders!D2 (start_date) : « 31/02/2026 » n'est pas une date (ce jour n'existe pas)." \
        in lines
    assert lines[-1] == ("1 problème à corriger dans commplan.xlsx. Les lignes qui ont un "
                         "problème sont laissées de côté ; toutes les autres sont traitées.")


def test_check_problems_in_english_for_en_gb(tmp_path, capsys):
    """An en_GB workbook: the same problems in English."""
    make_workbook(tmp_path, orders=BAD_DATE, settings=_settings(locale="en_GB"))
    assert main(["check", "--home", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert 'Orders!D2 (start_date): "31/02/2026" is not a date (there is no such day).' in lines
    assert lines[-1] == ("1 problem to fix in commplan.xlsx. Rows with a problem are left "
                         "out of the run; every other row goes on.")


def test_settings_problems_speak_the_workbook_language_whatever_the_system(
        tmp_path, capsys, monkeypatch):
    """A Settings problem is said in the workbook's language even when the system speaks
    another one."""
    monkeypatch.setenv("COMMPLAN_LANG", "en")
    make_workbook(tmp_path, settings=_settings(locale="fr_FR", smtp_port="abc"))
    assert main(["check", "--home", str(tmp_path)]) == 1
    assert "« abc » n'est pas un numéro de port (par ex. 587)" in capsys.readouterr().out


def test_unknown_locale_speaks_french_and_check_says_so(tmp_path, capsys):
    """A locale of another language: French, and check says why."""
    make_workbook(tmp_path, settings=_settings(locale="de_DE"))
    main(["check", "--home", str(tmp_path)])
    out = capsys.readouterr().out
    assert "commplan parle français (fr_…) et anglais (en_…), pas « de_DE »" in out
    assert out.splitlines()[-1].startswith("1 problème à corriger")


def test_summary_mail_speaks_the_workbook_language():
    """The summary mail follows the locale: English for en_GB, French for fr_FR."""
    report = RunReport(today=dt.date(2026, 11, 27), sent=12, failed=1)
    english = summary_message(Settings(home=Path("."), sender_email="s@example.test",
                                       report_to=("boss@example.test",), locale="en_GB"), report)
    assert english["Subject"] == "commplan — 27/11/2026: 12 sent, 1 failure"
    assert "Sent: 12" in english.get_body(preferencelist=("plain",)).get_content()
    french = summary_message(Settings(home=Path("."), sender_email="s@example.test",
                                      report_to=("boss@example.test",)), report)
    assert french["Subject"] == "commplan — 27/11/2026 : 12 envoyés, 1 échec"


# ---------------------------------------------------------------- the command line


def test_help_is_french(monkeypatch, capsys):
    """--help, argparse's own words included, is French for a French user."""
    monkeypatch.setenv("COMMPLAN_LANG", "fr")
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("utilisation : commplan run")
    assert "afficher cette aide et quitter" in out
    assert "tout préparer, sans rien envoyer ni enregistrer" in out
    assert main(["run", "--today", "demain"]) == 2
    assert "commplan run : erreur : argument --today : « demain » n'est pas une date" in \
        capsys.readouterr().err


def test_help_is_english_for_an_english_user(monkeypatch, capsys):
    """COMMPLAN_LANG=en: the help is English."""
    monkeypatch.setenv("COMMPLAN_LANG", "en")
    assert main(["run", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: commplan run")


def test_commplan_alone_lists_the_commands_one_line_each(monkeypatch, capsys):
    """`commplan` with nothing else lists every command on its own line, exit 0."""
    monkeypatch.setenv("COMMPLAN_LANG", "fr")
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("init", "check", "due", "run", "preview", "resend", "variables",
                    "schedule", "plan", "demo", "auth"):
        assert sum(line.startswith(f"  commplan {command} ") for line in out.splitlines()) == 1
    (run,) = [line for line in out.splitlines() if line.startswith("  commplan run ")]
    assert run.endswith("  envoyer ce qui est dû, archiver, remplir le Journal")


def test_every_argument_has_a_help_line():
    """Each option and argument of each command says what it is for."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("", parser), *subparsers.choices.items()]:
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


@pytest.mark.parametrize("command", [
    ["due", "--today"], ["run", "--today"], ["preview", "O1", "1", "--today"],
    ["resend", "O1", "1", "--today"], ["plan", "P", "--from"],
])
def test_every_date_option_takes_day_first_and_iso(command):
    """05/03/2026 (day first, as the workbook takes it) and 2026-03-05 are the same day."""
    parser = build_parser()
    dest = "start" if command[-1] == "--from" else "today"
    for text in ("05/03/2026", "2026-03-05", "5/3/2026", "05.03.2026"):
        assert getattr(parser.parse_args([*command, text]), dest) == dt.date(2026, 3, 5)


# ---------------------------------------------------------------- no accidental future


def test_run_refuses_a_day_after_today_unless_dry_run(tmp_path, capsys):
    """run --today tomorrow refuses with a sentence (nothing sent); --dry-run may look ahead."""
    make_workbook(tmp_path)
    tomorrow = (dt.date.today() + dt.timedelta(days=2)).strftime("%d/%m/%Y")
    assert main(["run", "--today", tomorrow, "--home", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"--today {tomorrow} est après aujourd'hui" in err
    assert not (tmp_path / "commplan-ledger.sqlite3").exists()
    assert main(["run", "--today", tomorrow, "--dry-run", "--home", str(tmp_path)]) == 0


# ---------------------------------------------------------------- consoles and logs


EMOJI_PLANS = [{**row, "plan": "Baie 🎉", "subject": "🎉 " + row["subject"]}
               for row in DEFAULT_PLANS]
EMOJI_ORDERS = [{**row, "plan": "Baie 🎉"} for row in DEFAULT_ORDERS]


def _cli(home: Path, *args: str, encoding: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": encoding, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "commplan_xl", *args, "--home", str(home)],
                          capture_output=True, env=env, timeout=120)


@pytest.mark.parametrize("encoding", ["cp1252", "cp850"])
def test_emoji_in_subjects_never_stop_output_to_a_windows_code_page(
        tmp_path, smtp_server, encoding):
    """plan, due and run write to a cp1252/cp850 pipe (Task Scheduler's log): characters it
    cannot show become "?", accents stay, and the files the tool writes stay UTF-8."""
    make_workbook(tmp_path, plans=EMOJI_PLANS, orders=EMOJI_ORDERS,
                  customers=[{"customer_id": "C001", "name": "Zoé 🌸 Martin",
                              "email": "alice@example.test"},
                             {"customer_id": "C002", "name": "Bruno", "email": "b@example.test"}],
                  settings=_settings(smtp_port=smtp_server.port))
    planned = _cli(tmp_path, "plan", "Baie 🎉", "--from", "02/03/2026", encoding=encoding)
    assert planned.returncode == 0, planned.stderr
    text = planned.stdout.decode(encoding)
    assert "? Votre commande O1001 est en cours de traitement" in text
    assert "étape" in text
    due = _cli(tmp_path, "due", "--today", "2026-03-20", encoding=encoding)
    assert due.returncode == 0, due.stderr
    assert "Baie ? étape 1" in due.stdout.decode(encoding)
    run = _cli(tmp_path, "run", "--today", "2026-03-20", encoding=encoding)
    assert run.returncode == 0, run.stdout + run.stderr
    assert smtp_server.received
    log = (tmp_path / "commplan.log").read_text(encoding="utf-8")
    assert "Zoé 🌸 Martin" in log


def test_log_has_one_line_per_mail(tmp_path, smtp_server):
    """commplan.log answers "did she get her mail?": order, step, customer and outcome."""
    make_workbook(tmp_path, settings=_settings(smtp_port=smtp_server.port))
    assert main(["run", "--today", "2026-03-10", "--home", str(tmp_path)]) == 0
    log = (tmp_path / "commplan.log").read_text(encoding="utf-8").splitlines()
    mails = [line for line in log if "commande O1001" in line]
    assert len(mails) == 1
    assert mails[0].endswith(
        "INFO commande O1001 étape 1 client C001 Alice Martin <alice@example.test> : envoyé")


def test_no_progress_when_output_is_redirected(tmp_path, smtp_server):
    """Redirected (Task Scheduler), run writes no progress bar and no "working" line."""
    make_workbook(tmp_path, settings=_settings(smtp_port=smtp_server.port))
    done = _cli(tmp_path, "run", "--today", "2026-03-20", encoding="utf-8")
    assert done.returncode == 0
    assert b"\r" not in done.stderr and b"\r" not in done.stdout
    assert b"Envoi [" not in done.stderr


class Terminal(io.StringIO):
    """A stream that says it is an interactive terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_shows_done_of_due_pace_and_time_left():
    """On a terminal the bar shows mails done of due, the pace and the time left."""
    i18n.set_language("fr")
    bar = Progress(stream=Terminal())
    assert bar.line(30, 120, 60.0) == ("Envoi [#######.......................] 30/120  "
                                       "30 mails/min, reste 3 min")
    bar(1, 2)
    bar(2, 2)
    written = bar.stream.getvalue()
    assert written.startswith("\rEnvoi [") and "2/2" in written and written.endswith("\n")
    quiet = Progress(stream=io.StringIO())
    quiet(1, 2)
    assert quiet.stream.getvalue() == ""


def test_long_work_says_it_is_working_on_a_terminal_only():
    """A long read shows "… N s" on a terminal, then clears it; redirected, it shows nothing."""
    shown, hidden = Terminal(), io.StringIO()
    for stream in (shown, hidden):
        busy = working("Lecture du classeur", stream=stream)
        busy.DELAY = 0.05
        with busy:
            time.sleep(0.3)
    assert "\rLecture du classeur… 0 s" in shown.getvalue()
    assert shown.getvalue().endswith("\r")
    assert hidden.getvalue() == ""


# ---------------------------------------------------------------- the daily task


def test_daily_cmd_switches_to_utf8_and_quotes_accented_paths():
    """The .cmd sets the console to UTF-8 before any accented path, and quotes every path."""
    home = Path(r"C:\Données clients\commplan")
    text = windows_wrapper(home, home / "workbooks" / "commplan 100%.xlsx")
    lines = text.split("\r\n")
    chcp = lines.index("chcp 65001 >nul")
    assert all(line.isascii() for line in lines[:chcp])
    assert r'cd /d "C:\Données clients\commplan"' in lines
    assert r'--home "C:\Données clients\commplan"' in text
    assert 'commplan 100%%.xlsx"' in text  # cmd.exe would read %…% as a variable


def test_schtasks_line_runs_whether_or_not_the_user_is_logged_on():
    """The task runs as the user, logged on or not: /RU names them, /RP makes Windows ask
    for the password once."""
    line = schtasks_line(Path(r"C:\Données clients\commplan\commplan-daily.cmd"), "06:30",
                         r"BUREAU\marie")
    assert '/RU "BUREAU\\marie" /RP' in line
    assert r'/TR "\"C:\Données clients\commplan\commplan-daily.cmd\""' in line


def test_a_french_workbook_names_its_own_sheet_and_column(tmp_path, capsys):
    """In a workbook with French names the place names the sheet staff see:
    Commandes!D2 (…) : « 31/02/2026 » n'est pas une date…"""
    orders = [["n° commande", "code client", "plan", "date de début", "statut"],
              ["O1", "C001", DEFAULT_PLANS[0]["plan"], "31/02/2026", "actif"]]
    make_workbook(tmp_path, sheets={"Orders": None, "Commandes": orders})
    assert main(["check", "--home", str(tmp_path)]) == 1
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if "31/02/2026" in ln]
    assert line.startswith("Commandes!D2 (date")
    assert line.endswith(" : « 31/02/2026 » n'est pas une date (ce jour n'existe pas).")


def test_the_journal_says_its_reasons_in_french(tmp_path, smtp_server):
    """A fr_FR workbook's Journal gives the reason of a skipped mail in French."""
    import openpyxl

    make_workbook(tmp_path, settings=_settings(smtp_port=smtp_server.port))
    assert main(["run", "--today", "2026-04-20", "--home", str(tmp_path)]) == 0
    sheet = openpyxl.load_workbook(tmp_path / "workbooks" / "commplan.xlsx")["Journal"]
    rows = list(sheet.iter_rows(values_only=True))
    detail = rows[0].index("détail")
    details = {row[detail] for row in rows[1:]}
    assert details & {"manqué", "remplacé par l'étape 3"}
    assert not details & {"missed", "superseded by step 3"}
