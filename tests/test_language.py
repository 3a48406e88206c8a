"""The workbook in the staff's language: French sheet and column names beside the English
ones, the tool's sheets in the workbook's locale, and the French starter workbook."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import openpyxl
import pytest

from commplan_xl.cli import main
from commplan_xl.excel.names import COLUMNS, SHEETS, column_key, sheet_key
from commplan_xl.excel.starter import HOW_TO, init_home
from commplan_xl.problems import Problem
from commplan_xl.run.batch import load_site
from tests.builders import (
    DEFAULT_CUSTOMERS,
    DEFAULT_ORDERS,
    DEFAULT_PLANS,
    DEFAULT_SETTINGS,
    DEFAULT_VARIABLES,
    PLAN,
    make_workbook,
    write_xlsx,
)

DAY1 = "2026-03-07"  # O1001 step 1 (+5 days from 2026-03-02) is due
DAY2 = "2026-03-14"  # O1002 step 1 is due


pytestmark = pytest.mark.usefixtures("clean_env")


def settings(server, locale: str = "fr_FR") -> list[dict]:
    rows = [dict(r) for r in DEFAULT_SETTINGS if r["key"] not in ("smtp_port", "locale")]
    return [*rows, {"key": "smtp_port", "value": server.port},
            {"key": "locale", "value": locale}]


def french_workbook(home: Path, server, *, customers: list[list] | None = None,
                    locale: str = "fr_FR") -> Path:
    """The builders' default workbook with French sheet names, headers and words only."""
    plans = [["plan", "étape", "délai", "unité", "objet", "message", "depuis",
              "pièces jointes", "actif", "obligatoire"]]
    for p in DEFAULT_PLANS:
        plans.append([p["plan"], p["step"], p["delay"], "jours" if p["unit"] == "days"
                      else "mois", "Commande {{ commande.n_commande }} du "
                      "{{ order.start_date|date }}",
                      "Bonjour {{ client.nom }}, votre {{ commande.produit }} commandé le "
                      "{{ commande.date_de_debut|date }}. {{ company_phone }}",
                      "date de début", "", "oui", "non"])
    return write_xlsx(home / "workbooks" / "commplan.xlsx", {
        "Paramètres": [["clé", "valeur"],
                       *([r["key"], r["value"]] for r in settings(server, locale))],
        "Plans": plans,
        "Clients": customers or [["Code client", "Nom", "Courriel", "Désabonné"],
                                 *([c["customer_id"], c["name"], c["email"], "non"]
                                   for c in DEFAULT_CUSTOMERS)],
        "Commandes": [["N° commande", "Code client", "Plan", "Date de début", "Statut",
                       "Étapes suspendues", "Produit"],
                      *([o["order_id"], o["customer_id"], o["plan"], o["start_date"], "actif",
                         "", o["product"]] for o in DEFAULT_ORDERS)],
        "Variables": [["variable", "valeur", "description"],
                      *([v["variable"], v["value"], v["description"]]
                        for v in DEFAULT_VARIABLES)],
    })


def sheet(path: Path, name: str) -> list[tuple]:
    return list(openpyxl.load_workbook(path)[name].iter_rows(values_only=True))


# ---------------------------------------------------------------- reading French names


def test_names_table_reads_every_french_name_as_its_english_one() -> None:
    """Each French sheet and column name of the table reads as the English one, ignoring case,
    accents, spaces, `-` and `_`."""
    assert sheet_key("PARAMETRES") == "settings" and sheet_key("clients") == "customers"
    assert sheet_key("Commandes") == "orders" and sheet_key("Notes") == "notes"
    for sheet_name, columns in COLUMNS.items():
        for column, name in columns.items():
            for spelling in name.spellings():
                assert column_key(sheet_name, spelling.upper()) == column, spelling
    assert column_key("orders", "date-de-début") == "start_date"
    assert column_key("customers", "E-Mail") == "email"
    assert set(SHEETS) == set(COLUMNS)


def test_french_workbook_runs_end_to_end(tmp_path, smtp_server) -> None:
    """A workbook with French sheet and column names only is checked clean, and a run sends
    its mails, rendered with the French and English names of the columns."""
    path = french_workbook(tmp_path, smtp_server)
    assert main(["check", "--home", str(tmp_path)]) == 0
    assert main(["run", "--today", DAY1, "--home", str(tmp_path)]) == 0
    assert len(smtp_server.received) == 1
    message = smtp_server.received[0].message
    assert smtp_server.received[0].rcpt_tos == ["alice@example.test"]
    assert message["Subject"] == "Commande O1001 du 2 mars 2026"
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "Bonjour Alice Martin, votre Baie coulissante commandé le 2 mars 2026." in text
    assert "01 23 45 67 89" in text
    assert main(["run", "--today", DAY2, "--home", str(tmp_path)]) == 0
    assert [r.rcpt_tos for r in smtp_server.received[1:]] == [["bruno@example.test"]]
    names = visible(openpyxl.load_workbook(path))
    assert names == ["Paramètres", "Plans", "Clients", "Commandes", "Variables", "Journal",
                     "Tableau de bord", "Prévisions"]


def test_french_statuses_are_read(tmp_path, smtp_server) -> None:
    """en pause, annulé and terminé stop an order's mails; actif lets them go."""
    french_workbook(tmp_path, smtp_server)
    site = load_site(tmp_path)
    assert [o.status for o in site.model.orders] == ["active", "active"]
    orders = [dict(o) for o in DEFAULT_ORDERS]
    rows = [["order_id", "customer_id", "plan", "start_date", "statut"]]
    rows += [[o["order_id"], o["customer_id"], PLAN, o["start_date"], word]
             for o, word in zip(orders * 2, ("En pause", "annulé", "TERMINÉ", "Actif"),
                                strict=True)]
    rows = [rows[0], *([f"O{n}", *row[1:]] for n, row in enumerate(rows[1:]))]
    make_workbook(tmp_path, settings=settings(smtp_server), orders=rows)
    site = load_site(tmp_path)
    assert site.problems == ()
    assert [o.status for o in site.model.orders] == ["paused", "cancelled", "done", "active"]


def test_mixed_french_and_english_names_work(tmp_path, smtp_server) -> None:
    """English sheets with some French headers, French sheets with some English headers:
    the workbook reads as one."""
    customers = [["customer_id", "Nom", "e-mail", "opt_out"],
                 *([c["customer_id"], c["name"], c["email"], "no"] for c in DEFAULT_CUSTOMERS)]
    orders = [["Code commande", "customer_id", "plan", "Date commande", "status"],
              *([o["order_id"], o["customer_id"], o["plan"], o["start_date"], "active"]
                for o in DEFAULT_ORDERS)]
    make_workbook(tmp_path, settings=settings(smtp_server), customers=customers,
                  orders=orders, sheets={"Settings": None, "Paramètres": {
                      r["key"]: r["value"] for r in settings(smtp_server)}})
    assert main(["check", "--home", str(tmp_path)]) == 0
    site = load_site(tmp_path)
    order = site.model.orders[0]
    assert order.dates["start_date"] == dt.date(2026, 3, 2)
    assert order.fields["date_commande"] == order.fields["start_date"]
    assert main(["run", "--today", DAY1, "--home", str(tmp_path)]) == 0
    assert len(smtp_server.received) == 1


def test_email_and_courriel_is_a_problem_naming_both(tmp_path, smtp_server, capsys) -> None:
    """Two columns that mean the same (email and courriel) are a check problem naming both;
    the first one is read."""
    customers = [["customer_id", "name", "email", "courriel"],
                 ["C001", "Alice", "alice@example.test", "autre@example.test"],
                 ["C002", "Bruno", "bruno@example.test", ""]]
    make_workbook(tmp_path, settings=settings(smtp_server), customers=customers)
    assert main(["check", "--home", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if "courriel" in line]
    assert line.startswith("Customers!D1 (courriel) :")  # a fr_FR workbook: French sentences
    assert "« email »" in line and "« courriel »" in line
    site = load_site(tmp_path)
    assert site.model.customers["C001"].emails == ("alice@example.test",)
    (problem,) = [p for p in site.problems if p.kind is Problem.SAME_MEANING_COLUMNS]
    assert (problem.values["first"], problem.values["other"]) == ("email", "courriel")


def test_two_sheets_meaning_the_same_are_a_problem(tmp_path, smtp_server) -> None:
    """A workbook with both Customers and Clients reads the first and says so."""
    make_workbook(tmp_path, settings=settings(smtp_server),
                  sheets={"Clients": [["code client", "nom", "email"], ["X", "Y", "y@x.fr"]]})
    site = load_site(tmp_path)
    (problem,) = site.problems
    assert problem.kind is Problem.SAME_MEANING_SHEETS
    assert "Customers" in str(problem) and "Clients" in str(problem)
    assert set(site.model.customers) == {"C001", "C002"}


def test_missing_french_column_is_named_in_french(tmp_path, smtp_server) -> None:
    """A French sheet missing a column names it as the French header to write."""
    french_workbook(tmp_path, smtp_server, customers=[
        ["Nom", "Courriel"], ["Alice", "alice@example.test"]])
    site = load_site(tmp_path)
    (missing,) = [p for p in site.problems if p.kind is Problem.MISSING_COLUMN]
    assert (missing.sheet, missing.column, missing.values["name"]) == (
        "Clients", "customer_id", "code client")
    assert str(missing).startswith("Clients row 1 (code client): ")


def test_problem_names_the_column_as_the_sheet_does(tmp_path, smtp_server) -> None:
    """A bad cell of a French column is placed under its own header name."""
    french_workbook(tmp_path, smtp_server)
    wb_path = tmp_path / "workbooks" / "commplan.xlsx"
    wb = openpyxl.load_workbook(wb_path)
    wb["Commandes"]["D2"] = "31/02/2026"
    wb.save(wb_path)
    (problem,) = load_site(tmp_path).problems
    assert problem.column == "start_date"
    assert problem.place == "Commandes!D2 (Date de début)"


def test_check_names_template_and_waiting_cells_as_the_sheets_do(tmp_path, smtp_server,
                                                                   capsys) -> None:
    """A template error sits under the Plans header as written, a mail waiting for an
    empty cell under the Commandes sheet and header as written (not Orders, start_date)."""
    french_workbook(tmp_path, smtp_server)
    wb_path = tmp_path / "workbooks" / "commplan.xlsx"
    wb = openpyxl.load_workbook(wb_path)
    wb["Commandes"]["H1"] = "Date de livraison"
    wb["Plans"]["E2"] = "Commande {{ commande.inconnue }}"
    wb["Plans"]["F3"] = "Livraison le {{ commande.date_de_livraison|date }}"
    wb.save(wb_path)
    assert main(["check", "--home", str(tmp_path), "--today", "2026-03-17"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("Plans!E2 (objet) : l'objet utilise « commande.inconnue »")
               for line in lines)
    assert any(line.startswith("Commandes!H2 (Date de livraison) : la commande O1001, étape 2")
               for line in lines), lines


def test_templates_names_stand_when_no_order_is_valid(tmp_path, smtp_server, capsys) -> None:
    """With every order in error, `check` names those errors only: the columns the templates
    print by their French names still exist (they are the sheet's headers)."""
    french_workbook(tmp_path, smtp_server)
    wb_path = tmp_path / "workbooks" / "commplan.xlsx"
    wb = openpyxl.load_workbook(wb_path)
    wb["Commandes"]["D2"] = "31/02/2026"
    wb["Commandes"]["C3"] = ""
    wb.save(wb_path)
    assert main(["check", "--home", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "Commandes!D2" in out and "Commandes!C3" in out
    assert "qui n'existe pas" not in out and "Plans!" not in out


def test_unknown_plan_lists_the_plans_in_french_quotes(tmp_path, smtp_server, capsys) -> None:
    """The plans to choose from are quoted as French quotes them, in `check` and `plan`."""
    french_workbook(tmp_path, smtp_server)
    wb_path = tmp_path / "workbooks" / "commplan.xlsx"
    wb = openpyxl.load_workbook(wb_path)
    wb["Commandes"]["C3"] = "Baie"
    wb.save(wb_path)
    assert main(["check", "--home", str(tmp_path)]) == 1
    assert ("Commandes!C3 (Plan) : Il n'y a pas de plan « Baie » dans Plans ; écrivez l'un de "
            "ceux-ci : « Baie vitrée ».") in capsys.readouterr().out.splitlines()
    assert main(["plan", "Porte", "--from", "2026-03-02", "--home", str(tmp_path)]) != 0
    assert "(il y a « Baie vitrée »)" in capsys.readouterr().err


def test_unknown_locale_falls_back_to_french_and_check_says_so(tmp_path, smtp_server,
                                                              capsys) -> None:
    """A locale the tool does not speak is a check problem, and the tool speaks French."""
    make_workbook(tmp_path, settings=settings(smtp_server, "de_DE"))
    site = load_site(tmp_path)
    assert site.settings.locale == "fr_FR"
    assert main(["check", "--home", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "de_DE" in out and "Settings!B" in out
    main(["run", "--today", DAY1, "--home", str(tmp_path)])
    assert "Journal" in openpyxl.load_workbook(site.workbook).sheetnames


# ---------------------------------------------------------------- the tool's own sheets


def test_tool_sheets_are_french_for_fr_fr(tmp_path, smtp_server) -> None:
    """With fr_FR the tool writes Journal, Tableau de bord, Prévisions and Liste des variables,
    with French headers and statuses."""
    make_workbook(tmp_path, settings=settings(smtp_server, "fr_FR"))
    path = tmp_path / "workbooks" / "commplan.xlsx"
    assert main(["run", "--today", DAY1, "--home", str(tmp_path)]) == 0
    assert main(["variables", "--home", str(tmp_path)]) == 0
    assert visible(openpyxl.load_workbook(path))[5:] == [
        "Journal", "Tableau de bord", "Prévisions", "Liste des variables"]
    journal = sheet(path, "Journal")
    assert journal[0] == ("date", "commande", "client", "email", "plan", "étape", "échéance",
                          "statut", "objet", "détail", "fichier archivé")
    assert [(r[1], r[7]) for r in journal[1:]] == [("O1001", "envoyé")]
    assert sheet(path, "Prévisions")[0][:3] == ("date", "commande", "client")
    assert sheet(path, "Liste des variables")[0] == ("variable", "exemple", "description")


def test_a_resend_is_told_in_french_in_the_journal(tmp_path, smtp_server) -> None:
    """A resend on request, and one the server refuses, read wholly in French in the
    Journal of a French workbook."""
    make_workbook(tmp_path, settings=settings(smtp_server, "fr_FR"))
    path = tmp_path / "workbooks" / "commplan.xlsx"
    assert main(["run", "--today", DAY1, "--home", str(tmp_path)]) == 0
    assert main(["resend", "O1001", "1", "--today", DAY1, "--home", str(tmp_path)]) == 0
    smtp_server.handler.rcpt_replies["alice@example.test"] = "550 5.1.1 no such user"
    assert main(["resend", "O1001", "1", "--today", DAY1, "--home", str(tmp_path)]) == 1
    journal = sheet(path, "Journal")
    details = [r[9] for r in journal[1:]]
    assert details[1] == "renvoyé à la demande"
    assert details[2].startswith("échec du renvoi : le serveur de mail a refusé")
    assert not any("resen" in (d or "") for d in details)


def test_tool_sheets_are_english_for_en_gb(tmp_path, smtp_server) -> None:
    """With en_GB the tool writes SentLog, Dashboard, Forecast and VariableList, in English."""
    make_workbook(tmp_path, settings=settings(smtp_server, "en_GB"))
    path = tmp_path / "workbooks" / "commplan.xlsx"
    assert main(["run", "--today", DAY1, "--home", str(tmp_path)]) == 0
    assert main(["variables", "--home", str(tmp_path)]) == 0
    assert visible(openpyxl.load_workbook(path))[5:] == [
        "SentLog", "Dashboard", "Forecast", "VariableList"]
    log = sheet(path, "SentLog")
    assert log[0] == ("date", "order_id", "customer_id", "email", "plan", "step", "due_date",
                      "status", "subject", "detail", "archive_file")
    assert [(r[1], r[7]) for r in log[1:]] == [("O1001", "sent")]
    assert sheet(path, "VariableList")[0] == ("variable", "example", "description")


def set_locale(path: Path, locale: str) -> None:
    wb = openpyxl.load_workbook(path)
    ws = wb["Settings"]
    for row in ws.iter_rows(min_row=2):
        if row[0].value == "locale":
            row[1].value = locale
    wb.save(path)


def test_locale_change_renames_the_tool_sheets_and_leaves_staff_sheets(tmp_path,
                                                                      smtp_server) -> None:
    """Going from en_GB to fr_FR turns SentLog into Journal (and so on) in place, with every
    row; the staff's sheets, one named Dashboard-like in the other language included, stay."""
    notes = [["note"], ["rappeler M. Martin"]]
    make_workbook(tmp_path, settings=settings(smtp_server, "en_GB"),
                  sheets={"Notes": notes})
    path = tmp_path / "workbooks" / "commplan.xlsx"
    assert main(["run", "--today", DAY1, "--home", str(tmp_path)]) == 0
    before = visible(openpyxl.load_workbook(path))
    assert before[6:] == ["SentLog", "Dashboard", "Forecast"]
    set_locale(path, "fr_FR")
    assert main(["run", "--today", DAY2, "--home", str(tmp_path)]) == 0
    after = visible(openpyxl.load_workbook(path))
    assert after == [*before[:6], "Journal", "Tableau de bord", "Prévisions"]
    assert [(r[1], r[7]) for r in sheet(path, "Journal")[1:]] == [
        ("O1001", "envoyé"), ("O1002", "envoyé")]
    assert sheet(path, "Notes") == [("note",), ("rappeler M. Martin",)]
    set_locale(path, "en_GB")
    assert main(["run", "--today", DAY2, "--home", str(tmp_path)]) == 0
    assert visible(openpyxl.load_workbook(path)) == before


def test_staff_sheet_with_an_other_language_tool_name_is_left_alone(tmp_path,
                                                                     smtp_server) -> None:
    """In a French workbook, the staff's own sheet named Dashboard is never renamed nor
    written: the tool writes Tableau de bord beside it."""
    own = [["mois", "ventes"], ["mars", 12]]
    make_workbook(tmp_path, settings=settings(smtp_server, "fr_FR"),
                  sheets={"Dashboard": own})
    path = tmp_path / "workbooks" / "commplan.xlsx"
    for day in (DAY1, DAY2):
        assert main(["run", "--today", day, "--home", str(tmp_path)]) == 0
    assert sheet(path, "Dashboard") == [("mois", "ventes"), ("mars", 12)]
    assert {"Journal", "Tableau de bord", "Prévisions"} <= set(
        openpyxl.load_workbook(path).sheetnames)


# ---------------------------------------------------------------- templates


def test_variables_lists_the_french_names(tmp_path, smtp_server, capsys) -> None:
    """`commplan variables` shows each column under its own header and its English name, and
    the client/commande/etape/expediteur aliases."""
    french_workbook(tmp_path, smtp_server)
    assert main(["variables", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("customer.name", "customer.nom", "order.start_date", "order.date_de_debut",
                 "order.n_commande", "order.order_id", "client.", "commande.", "etape.",
                 "expediteur."):
        assert "{{ " + name in out, name


# ---------------------------------------------------------------- the starter workbook


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_init_workbook_passes_check_and_runs(tmp_path, smtp_server, monkeypatch, lang) -> None:
    """`init` (French by default, English with --lang en) writes a workbook whose only
    problems are its demo rows' example addresses (never sent to), and that a run reads
    without mailing anyone, its tool sheets in the workbook's language."""
    args = ["init", "--home", str(tmp_path)] + (["--lang", lang] if lang == "en" else [])
    assert main(args) == 0
    path = tmp_path / "workbooks" / "commplan.xlsx"
    wb = openpyxl.load_workbook(path)
    expected = {"fr": ["Mode d'emploi", "Commandes", "Clients", "Plans", "Variables",
                       "Paramètres"],
                "en": ["How to", "Orders", "Customers", "Plans", "Variables", "Settings"]}
    assert visible(wb) == expected[lang]
    site = load_site(tmp_path)
    assert {p.kind for p in site.problems} == {Problem.EMAIL_EXAMPLE,
                                               Problem.ORDER_CUSTOMER_HAS_PROBLEM}
    for var, value in (("COMMPLAN_SMTP_HOST", "127.0.0.1"),
                       ("COMMPLAN_SMTP_PORT", str(smtp_server.port))):
        monkeypatch.setenv(var, value)
    today = dt.date.today().isoformat()
    assert main(["run", "--today", today, "--home", str(tmp_path)]) == 1
    assert smtp_server.received == []
    log = {"fr": "Journal", "en": "SentLog"}[lang]
    assert sheet(path, log)[1:] == []


def visible(wb: openpyxl.Workbook) -> list[str]:
    """The names of the sheets staff see (the tool keeps its list of plans hidden)."""
    return [ws.title for ws in wb.worksheets if ws.sheet_state == "visible"]


def test_french_starter_uses_french_names_and_words(tmp_path) -> None:
    """The French starter's headers, statuses, yes/no words and drop-downs are French, and
    its templates use the French variables."""
    path = init_home(tmp_path, today=dt.date(2026, 11, 27))
    wb = openpyxl.load_workbook(path)
    assert [c.value for c in wb["Commandes"][1]][:6] == [
        "n° commande", "code client", "plan", "date de début", "statut", "produit"]
    assert [c.value for c in wb["Clients"][1]][:4] == ["code client", "nom", "email",
                                                       "désabonné"]
    assert [c.value for c in wb["Paramètres"][1]] == ["clé", "valeur", "description"]
    statuses = {row[4] for row in wb["Commandes"].iter_rows(min_row=2, values_only=True)
                if row[0]}
    assert statuses == {"actif", "en pause", "terminé"}
    drop_downs = {dv.formula1 for dv in wb["Commandes"].data_validations.dataValidation}
    assert '"actif,en pause,annulé,terminé"' in drop_downs
    yes_no = {dv.formula1 for dv in wb["Plans"].data_validations.dataValidation}
    assert '"oui,non"' in yes_no
    bodies = [row[5] for row in wb["Plans"].iter_rows(min_row=2, values_only=True) if row[0]]
    assert all("{{ client.nom }}" in body for body in bodies)
    settings = {row[0]: row[1] for row in wb["Paramètres"].iter_rows(min_row=2,
                                                                      values_only=True)}
    assert settings["locale"] == "fr_FR"


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_how_to_sheet_is_first_readable_and_printable(tmp_path, lang) -> None:
    """The "Mode d'emploi" (How to) sheet comes first, names every sheet of its workbook and
    the statuses, and wraps in a wide column that prints one page wide."""
    path = init_home(tmp_path, today=dt.date(2026, 11, 27), lang=lang)
    wb = openpyxl.load_workbook(path)
    ws = wb.worksheets[0]
    assert ws.title == {"fr": "Mode d'emploi", "en": "How to"}[lang]
    text = "\n".join(str(c.value) for c in ws["A"] if c.value)
    for name in visible(wb)[1:]:
        assert name in text, name
    words = {"fr": ("actif", "en pause", "annulé", "terminé", "envoyé", "échec", "ignoré",
                    "incertain", "Tableau de bord", "Journal", "commplan check"),
             "en": ("active", "paused", "cancelled", "done", "sent", "failed", "skipped",
                    "uncertain", "Dashboard", "SentLog", "commplan check")}[lang]
    for word in words:
        assert word in text, word
    assert len(HOW_TO[lang]) < 60  # short
    assert ws.column_dimensions["A"].width >= 80
    assert all(c.alignment.wrap_text for c in ws["A"] if c.value)
    assert ws.page_setup.fitToWidth == 1 and ws.sheet_properties.pageSetUpPr.fitToPage


def test_init_lang_en_speaks_english_too(tmp_path, capsys, monkeypatch):
    """`init --lang en` writes an English workbook and says what it did in English, whatever
    the system's language; without --lang the workbook is French."""
    from commplan_xl.cli import main as cli_main

    monkeypatch.setenv("COMMPLAN_LANG", "fr")
    assert cli_main(["init", "--home", str(tmp_path / "en"), "--lang", "en"]) == 0
    assert "Created " in capsys.readouterr().out
    assert cli_main(["init", "--home", str(tmp_path / "fr")]) == 0
    out = capsys.readouterr().out
    assert "Ensuite" in out
    import openpyxl

    names = openpyxl.load_workbook(tmp_path / "fr" / "workbooks" / "commplan.xlsx").sheetnames
    assert "Commandes" in names
