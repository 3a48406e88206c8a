"""Returned mails end to end: real runs to the local SMTP server, the bounce samples
delivered into a real Dovecot mailbox (rewritten to name the mails actually sent), then
runs and `commplan bounces` reading them back."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import openpyxl
import pytest

from commplan_xl.cli import main
from commplan_xl.excel.names import outcome_words, tool_label, tool_sheet
from commplan_xl.mail.bounces import classify
from commplan_xl.run.returned import imap_config
from commplan_xl.settings import parse_settings
from tests import imap_server
from tests.builders import DEFAULT_PLANS, DEFAULT_SETTINGS, make_workbook
from tests.smtp_server import free_port

pytestmark = imap_server.needs_dovecot

SAMPLES = Path(__file__).parent / "bounces"
DAY1, DAY2, DAY3, DAY4 = "2026-03-07", "2026-03-08", "2026-03-09", "2026-03-10"
START = dt.date(2026, 3, 2)  # step 1 (+5 days) is due on DAY1

# sample -> (the recipient it reports, the original's Message-ID, our reference in it)
ORIGINALS = {
    "m365_recipient_not_found.eml": (
        "jean.dupont@client-inconnu.fr",
        "<176480521447.2811.9912844377665210321@menuiserie-durand.fr>", "cp1-7f3a9c2e41d0b6"),
    "gmail_address_not_found.eml": (
        "sophie.bernart@gmail.com",
        "<176480554102.2811.4410987123309871265@menuiserie-durand.fr>", "cp1-19be07d54c2a88"),
    "postfix_mailbox_full.eml": (
        "marie.leroy@fournisseur-mail.fr",
        "<176480592133.2811.1029384756473829101@menuiserie-durand.fr>", "cp1-a04c77e9d3f215"),
    "postfix_delayed.eml": (
        "luc.moreau@cabinet-moreau.fr",
        "<176480609588.2811.5566778899001122334@menuiserie-durand.fr>", "cp1-5e8d21b07f6c93"),
    "m365_send_as_denied.eml": (
        "nathalie.roux@orange.fr",
        "<176480892811.2811.1122334455667788990@menuiserie-durand.fr>", "cp1-08f1d6b3a29e5c"),
    "exchange_out_of_office.eml": (
        "pierre.martin@atelier-martin.fr",
        "<176480640012.2811.7788990011223344556@menuiserie-durand.fr>", ""),
    "reponse_automatique.eml": (
        "claire.petit@laposte.net",
        "<176480710533.2811.3344556677889900112@menuiserie-durand.fr>", ""),
}
# One customer (and order) per sample, whose address is the one the sample reports.
CUSTOMER_OF = {name: f"C{n:03d}" for n, name in enumerate(ORIGINALS, start=1)}
ORDER_OF = {name: f"O{n}" for n, name in enumerate(ORIGINALS, start=1001)}


def customers() -> list[dict]:
    return [{"customer_id": CUSTOMER_OF[name], "name": f"Client {n}", "email": address}
            for n, (name, (address, _mid, _ref)) in enumerate(ORIGINALS.items(), start=1)]


def orders() -> list[dict]:
    return [{"order_id": ORDER_OF[name], "customer_id": CUSTOMER_OF[name],
             "plan": DEFAULT_PLANS[0]["plan"], "start_date": START, "status": "active"}
            for name in ORIGINALS]


def settings_rows(smtp_port: int, imap_port: int, user: str, **extra) -> list[dict]:
    values = {"smtp_port": smtp_port, "bounces": "yes", "imap_host": "127.0.0.1",
              "imap_port": imap_port, "imap_security": "none", "imap_user": user, **extra}
    rows = [dict(r) for r in DEFAULT_SETTINGS if r["key"] not in values]
    rows += [{"key": k, "value": v} for k, v in values.items()]
    return rows


@pytest.fixture
def home(tmp_path, smtp_server, server, account, clean_env):
    """A home whose runs send to the local SMTP server and read `account`'s mailbox."""
    clean_env.setenv("COMMPLAN_IMAP_PASSWORD", server.passwords[account])
    make_workbook(tmp_path, settings=settings_rows(smtp_server.port, server.port, account),
                  customers=customers(), orders=orders())
    return tmp_path


def cli(home: Path, *args: str) -> int:
    return main([*args, "--home", str(home)])


def sent_to(smtp_server, address: str) -> list:
    return [m for m in smtp_server.received if address in m.rcpt_tos]


def returned_for(name: str, sent) -> bytes:
    """The sample `name`, rewritten to report the mail `sent` (as the server received it)."""
    _address, mid, ref = ORIGINALS[name]
    msg = sent.message
    raw = (SAMPLES / name).read_bytes()
    raw = raw.replace(mid.strip("<>").encode(), msg["Message-ID"].strip("<>").encode())
    if ref:
        raw = raw.replace(ref.encode(), msg["X-Commplan-Ref"].encode())
    report = classify(raw)
    assert report.message_ids[0] == msg["Message-ID"]  # the rewrite reached every copy
    return raw


def deliver(server, account: str, smtp_server, name: str, nth: int = -1) -> None:
    """Put the sample `name` into the mailbox, about the nth mail sent to its customer."""
    address = ORIGINALS[name][0]
    server.deliver(account, returned_for(name, sent_to(smtp_server, address)[nth]))


def sentlog(home: Path) -> list[tuple]:
    """(order, status, detail) of each row of the Journal (the fr_FR SentLog), the status
    in English."""
    ws = openpyxl.load_workbook(home / "workbooks" / "commplan.xlsx")[tool_sheet("sentlog",
                                                                                   "fr")]
    rows = list(ws.iter_rows(values_only=True))
    header = rows[0]
    english = {word: status for status, word in outcome_words("fr").items()}

    def at(row: tuple, column: str) -> object:
        return row[header.index(tool_label(column, "fr"))]

    return [(at(r, "order_id"), english[at(r, "status")], at(r, "detail") or "")
            for r in rows[1:]]


def dashboard_text(home: Path) -> str:
    ws = openpyxl.load_workbook(home / "workbooks" / "commplan.xlsx")[tool_sheet("dashboard",
                                                                                   "fr")]
    return "\n".join(" | ".join(str(c) for c in row if c is not None)
                     for row in ws.iter_rows(values_only=True))


def states(home: Path) -> dict[str, str]:
    db = sqlite3.connect(home / "commplan-ledger.sqlite3")
    try:
        return dict(db.execute("SELECT order_id, state FROM messages WHERE step = 1"))
    finally:
        db.close()


def test_every_mail_carries_a_unique_message_id_and_our_reference(home, smtp_server):
    """Each mail sent has its own Message-ID and X-Commplan-Ref, both kept in the ledger."""
    assert cli(home, "run", "--today", DAY1) == 0
    got = smtp_server.received
    assert len(got) == len(ORIGINALS)
    ids = [m.message["Message-ID"] for m in got]
    refs = [m.message["X-Commplan-Ref"] for m in got]
    assert len(set(ids)) == len(ids) and len(set(refs)) == len(refs)
    assert all(ref.startswith("cp1-") for ref in refs)
    db = sqlite3.connect(home / "commplan-ledger.sqlite3")
    kept = set(db.execute("SELECT message_id, ref FROM mail_ids"))
    db.close()
    assert kept == set(zip(ids, refs, strict=True))


def test_each_sample_acts_on_the_mail_it_reports(home, smtp_server, server, account, capsys):
    """After a run, each bounce sample in the mailbox gives the right SentLog rows, flags
    and to-handle lines on the next run; auto-replies and the delayed report change
    nothing, and the soft bounce is sent again."""
    assert cli(home, "run", "--today", DAY1) == 0
    for name in ORIGINALS:
        deliver(server, account, smtp_server, name)
    capsys.readouterr()
    assert cli(home, "run", "--today", DAY2) == 1
    out = capsys.readouterr().out

    hard = ORDER_OF["m365_recipient_not_found.eml"]
    gmail = ORDER_OF["gmail_address_not_found.eml"]
    full = ORDER_OF["postfix_mailbox_full.eml"]
    sender = ORDER_OF["m365_send_as_denied.eml"]
    failed = [(order, detail) for order, status, detail in sentlog(home)
              if status == "failed"]
    assert [order for order, _ in failed] == [hard, gmail, full, sender]
    # A fr_FR workbook: the details are French.
    assert failed[0][1].startswith(
        "revenu : l'adresse jean.dupont@client-inconnu.fr n'existe pas (550 5.1.10"
        " RESOLVER.ADR.RecipientNotFound")
    assert failed[0][1].endswith("pas réessayé : corrigez l'adresse dans la feuille Clients")
    assert failed[1][1].startswith("revenu : l'adresse sophie.bernart@gmail.com n'existe pas")
    assert failed[2][1].startswith("revenu : la boîte de marie.leroy@fournisseur-mail.fr est"
                                   " pleine")
    assert failed[2][1].endswith("sera réessayé au prochain passage")
    assert "refusé à cause du compte d'envoi, pas de l'adresse" in failed[3][1]

    # Hard bounces are flagged; the soft one and the sender-side one went out again.
    st = states(home)
    assert st[hard] == st[gmail] == "failed_permanent"
    assert st[full] == st[sender] == "sent"
    assert len(sent_to(smtp_server, "marie.leroy@fournisseur-mail.fr")) == 2
    assert len(sent_to(smtp_server, "nathalie.roux@orange.fr")) == 2
    assert len(sent_to(smtp_server, "jean.dupont@client-inconnu.fr")) == 1
    # Out of office, réponse automatique and the delayed report: nothing new for them.
    for name in ("exchange_out_of_office.eml", "reponse_automatique.eml",
                 "postfix_delayed.eml"):
        assert st[ORDER_OF[name]] == "sent"
        assert [s for o, s, _d in sentlog(home) if o == ORDER_OF[name]] == ["sent"]

    # What people see: the run's lines (hard first), the Dashboard's list.
    lines = [line for line in out.splitlines() if line.startswith("  échec : ")]
    assert [line.split()[3] for line in lines[:2]] == [hard, gmail]
    assert "revenus : 4" in out
    board = dashboard_text(home)
    # The Dashboard's To handle list: each returned mail, with the address and why.
    assert f"Mail revenu | {hard} | C001 |" in board
    assert "jean.dupont@client-inconnu.fr: " in board
    assert f"Mail revenu | {gmail} | C002 |" in board
    assert "sophie.bernart@gmail.com: " in board

    # The next run reads nothing new and sends nothing to the flagged addresses.
    assert cli(home, "run", "--today", DAY3) == 0
    assert len(sent_to(smtp_server, "jean.dupont@client-inconnu.fr")) == 1


def test_a_corrected_address_gets_the_returned_mail(home, smtp_server, server, account):
    """Once the customer's address is changed, the mail that came back goes to the new one."""
    assert cli(home, "run", "--today", DAY1) == 0
    deliver(server, account, smtp_server, "gmail_address_not_found.eml")
    assert cli(home, "run", "--today", DAY2) == 1
    rows = customers()
    rows[1]["email"] = "sophie.bernard@gmail.com"
    make_workbook(home, settings=settings_rows(smtp_server.port, server.port, account),
                  customers=rows, orders=orders())
    assert cli(home, "run", "--today", DAY3) == 0
    assert len(sent_to(smtp_server, "sophie.bernard@gmail.com")) == 1
    assert "Mail revenu" not in dashboard_text(home)


def test_three_soft_bounces_in_a_row_count_as_hard(home, smtp_server, server, account):
    """A mailbox full three times in a row is treated as an address that does not exist."""
    name = "postfix_mailbox_full.eml"
    address = ORIGINALS[name][0]
    assert cli(home, "run", "--today", DAY1) == 0
    for day in (DAY2, DAY3):
        deliver(server, account, smtp_server, name)
        assert cli(home, "run", "--today", day) == 1
    assert len(sent_to(smtp_server, address)) == 3
    deliver(server, account, smtp_server, name)
    assert cli(home, "run", "--today", DAY4) == 1
    assert len(sent_to(smtp_server, address)) == 3
    assert states(home)[ORDER_OF[name]] == "failed_permanent"
    last = [d for o, s, d in sentlog(home) if o == ORDER_OF[name] and s == "failed"][-1]
    assert last.startswith("revenu 3 fois de suite : revenu : la boîte de")


def test_a_soft_bounce_past_catch_up_does_not_promise_a_retry(home, smtp_server, server,
                                                               account):
    """With catch_up_days 0, a mailbox found full the next day is not retried: the Journal
    says so, and how to send it once the customer has room, instead of promising a retry."""
    name = "postfix_mailbox_full.eml"
    make_workbook(home, settings=settings_rows(smtp_server.port, server.port, account,
                                               catch_up_days=0),
                  customers=customers(), orders=orders())
    assert cli(home, "run", "--today", DAY1) == 0
    deliver(server, account, smtp_server, name)
    assert cli(home, "run", "--today", DAY2) == 1
    assert len(sent_to(smtp_server, ORIGINALS[name][0])) == 1
    order = ORDER_OF[name]
    last = [d for o, s, d in sentlog(home) if o == order and s == "failed"][-1]
    assert "ne sera plus réessayé après aujourd'hui (catch_up_days vaut 0)" in last
    assert f"`commplan resend {order} 1`" in last and "prochain passage" not in last


def test_bounces_command_reads_without_sending(home, smtp_server, server, account, capsys):
    """`commplan bounces` records a returned mail, sends nothing, and reads it only once."""
    assert cli(home, "run", "--today", DAY1) == 0
    sent = len(smtp_server.received)
    deliver(server, account, smtp_server, "m365_recipient_not_found.eml")
    capsys.readouterr()
    assert cli(home, "bounces", "--today", DAY2) == 1
    out = capsys.readouterr().out
    assert (f"  définitif : Commande {ORDER_OF['m365_recipient_not_found.eml']} étape 1 : "
            "revenu :") in out
    assert "1 nouveau(x) message(s) lu(s) dans la boîte : 1 mail(s) revenu(s) à traiter." in out
    assert len(smtp_server.received) == sent
    assert [s for _o, s, _d in sentlog(home)].count("failed") == 1
    assert cli(home, "bounces", "--today", DAY2) == 0
    assert "0 nouveau(x) message(s) lu(s)" in capsys.readouterr().out
    assert [s for _o, s, _d in sentlog(home)].count("failed") == 1


def test_handled_reports_move_to_the_done_folder(tmp_path, smtp_server, server, account,
                                                 home):
    """With bounce_folder_done, a handled report leaves the inbox for that folder; an
    out-of-office stays where it is."""
    server.create_folder(account, "Retours traités")
    make_workbook(home, settings=settings_rows(
        smtp_server.port, server.port, account, bounce_folder_done="Retours traités"),
        customers=customers(), orders=orders())
    assert cli(home, "run", "--today", DAY1) == 0
    deliver(server, account, smtp_server, "gmail_address_not_found.eml")
    deliver(server, account, smtp_server, "exchange_out_of_office.eml")
    assert cli(home, "bounces", "--today", DAY2) == 1
    assert len(server.flags(account)) == 1
    assert len(server.flags(account, "Retours traités")) == 1


def test_a_report_naming_our_customer_but_no_mail_is_to_review(home, smtp_server, server,
                                                               account, capsys):
    """A bounce for a customer's address that names none of our mails is listed to review
    and changes nothing; one about nobody of ours is left alone."""
    assert cli(home, "run", "--today", DAY1) == 0
    server.deliver(account, (SAMPLES / "gmail_address_not_found.eml").read_bytes())
    server.deliver(account, (SAMPLES / "exim_no_such_user.eml").read_bytes())
    capsys.readouterr()
    assert cli(home, "bounces", "--today", DAY2) == 1
    out = capsys.readouterr().out
    assert "  À vérifier : un mail revenu" in out
    assert "nomme sophie.bernart@gmail.com, une adresse de client" in out
    assert "paul.girard" not in out
    assert [s for _o, s, _d in sentlog(home)].count("failed") == 0
    assert set(states(home).values()) == {"sent"}


def test_a_malformed_report_is_skipped(home, smtp_server, server, account, capsys):
    """A broken message in the mailbox is logged and skipped; the run sends as usual."""
    server.deliver(account, (SAMPLES / "malformed.eml").read_bytes())
    capsys.readouterr()
    assert cli(home, "run", "--today", DAY1) == 0
    assert "1 message(s) of the mailbox could not be read" in capsys.readouterr().out
    assert len(smtp_server.received) == len(ORIGINALS)
    assert "skipped, a multipart message without its parts" in (
        home / "commplan.log").read_text(encoding="utf-8")


@pytest.mark.parametrize("fault", ["down", "refused"])
def test_mailbox_fault_still_sends_and_needs_attention(home, smtp_server, server, account,
                                                       monkeypatch, capsys, fault):
    """When the mailbox is unreachable or refuses the login, the run sends anyway, says
    why in one sentence and exits 1."""
    if fault == "down":
        make_workbook(home, settings=settings_rows(smtp_server.port, free_port(), account),
                      customers=customers(), orders=orders())
    else:
        monkeypatch.setenv("COMMPLAN_IMAP_PASSWORD", "wrong")
    capsys.readouterr()
    assert cli(home, "run", "--today", DAY1) == 1
    out = capsys.readouterr().out
    assert len(smtp_server.received) == len(ORIGINALS)
    (line,) = [x for x in out.splitlines()
               if x.startswith("Les mails revenus n'ont pas pu être lus")]
    assert ("connexion refusée" if fault == "down" else "a refusé la connexion") in line
    assert "wrong" not in line


def test_check_smtp_also_tests_the_mailbox(home, server, account, monkeypatch, capsys):
    """`check --smtp` logs in to the mailbox too when bounces is yes, and says why not."""
    capsys.readouterr()
    assert cli(home, "check", "--smtp") == 0
    assert f"« {account} » s'est connecté ; le dossier « INBOX » contient 0 message(s)" in \
        capsys.readouterr().out
    monkeypatch.setenv("COMMPLAN_IMAP_PASSWORD", "wrong")
    assert cli(home, "check", "--smtp") == 1
    assert "Les mails revenus ne peuvent pas être lus : le serveur de la boîte" in \
        capsys.readouterr().out


def test_mailbox_settings_follow_the_sending_ones(tmp_path):
    """Empty IMAP keys take the provider's server, the SMTP login and the SMTP password."""
    raw = {"smtp_auth": ("oauth2-microsoft", 2), "oauth_tenant_id": ("t", 3),
           "oauth_client_id": ("c", 4), "sender_email": ("shop@contoso.fr", 5)}
    settings, problems = parse_settings(raw, home=tmp_path, environ={})
    assert problems == []
    config = imap_config(settings, {"COMMPLAN_OAUTH_CLIENT_SECRET": "s"})
    assert (config.host, config.port, config.user, config.folder) == (
        "outlook.office365.com", 993, "shop@contoso.fr", "INBOX")
    assert config.token_provider is not None and config.password is None
    raw = {"smtp_host": ("smtp.ovh.net", 2), "smtp_user": ("shop@x.fr", 3),
           "imap_security": ("STARTTLS", 4), "imap_port": ("143", 5)}
    settings, _ = parse_settings(raw, home=tmp_path, environ={})
    config = imap_config(settings, {"COMMPLAN_SMTP_PASSWORD": "pw"})
    assert (config.host, config.port, config.security, config.user, config.password) == (
        "imap.ovh.net", 143, "starttls", "shop@x.fr", "pw")
    config = imap_config(settings, {"COMMPLAN_SMTP_PASSWORD": "pw",
                                    "COMMPLAN_IMAP_PASSWORD": "other"})
    assert config.password == "other"


def test_summary_mail_lists_returned_mails_hard_first(home, smtp_server, server, account):
    """The summary mail counts returned mails and lists them, the unknown address first,
    with what to do for each."""
    make_workbook(home, settings=settings_rows(smtp_server.port, server.port, account,
                                               report_to="chef@example.com"),
                  customers=customers(), orders=orders())
    assert cli(home, "run", "--today", DAY1) == 0
    deliver(server, account, smtp_server, "m365_send_as_denied.eml")
    deliver(server, account, smtp_server, "m365_recipient_not_found.eml")
    assert cli(home, "run", "--today", DAY2) == 1
    (summary,) = sent_to(smtp_server, "chef@example.com")[-1:]
    text = summary.message.get_body(preferencelist=("plain",)).get_content()
    assert "Mails revenus (non distribués) : 2" in text
    todo = text[text.index("À traiter :"):]
    hard = todo.index(f"- Commande {ORDER_OF['m365_recipient_not_found.eml']} étape 1 : revenu")
    sender = todo.index(f"- Commande {ORDER_OF['m365_send_as_denied.eml']} étape 1 : refusé")
    assert hard < sender
    assert "corrigez-la dans la feuille Clients" in todo[hard:sender]
    assert "l'informaticien doit vérifier" in todo[sender:]


def test_message_ids_and_references_are_unique_per_mail():
    """Two thousand mails built in a row never share a Message-ID or a reference."""
    from commplan_xl.mail.message import build_message
    from commplan_xl.mail.render import Rendered

    rendered = Rendered(subject="Commande", text="Bonjour", html="<p>Bonjour</p>")
    built = [build_message(rendered=rendered, sender_email="shop@x.fr", sender_name="Shop",
                           reply_to="", to=["a@y.fr"], attachments=[]) for _ in range(2000)]
    assert len({m.message_id for m in built}) == 2000
    assert len({m.ref for m in built}) == 2000
    assert all(m["Message-ID"] == m.message_id and m["X-Commplan-Ref"] == m.ref
               for m in built[:5])


def test_nothing_more_goes_to_an_address_that_does_not_exist(home, smtp_server, server,
                                                             account):
    """After a hard bounce, the customer's next mails are recorded failed, not sent, until
    the address is corrected; then they go to the new address."""
    name = "m365_recipient_not_found.eml"
    address, order = ORIGINALS[name][0], ORDER_OF[name]
    assert cli(home, "run", "--today", DAY1) == 0
    deliver(server, account, smtp_server, name)
    assert cli(home, "run", "--today", DAY2) == 1
    step2 = (START + dt.timedelta(days=15)).isoformat()  # step 2 of every order is due
    assert cli(home, "run", "--today", step2) == 1
    assert len(sent_to(smtp_server, address)) == 1
    (row,) = [d for o, s, d in sentlog(home) if o == order and d.startswith("non envoyé")]
    assert row == (f"non envoyé : un mail à {address} est revenu, l'adresse n'existe pas"
                   f" (order {order} step 1) ; not retried: correct the address in the"
                   " Customers sheet")
    assert cli(home, "run", "--today", step2) == 0  # recorded once, not every run
    rows = customers()
    rows[0]["email"] = "jean.dupont@client-connu.fr"
    make_workbook(home, settings=settings_rows(smtp_server.port, server.port, account),
                  customers=rows, orders=orders())
    assert cli(home, "run", "--today", step2) == 0
    assert len(sent_to(smtp_server, "jean.dupont@client-connu.fr")) == 1  # step 2 only
