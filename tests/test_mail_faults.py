"""Nothing lost at the mail server: each fault the local SMTP server answers with (a refused
recipient, a dropped line, a slow reply, a throttling reply, an unwritable archive, a login
without "@" or without TLS) ends as the customer and staff need.

Every case runs the real command line against the local SMTP server and real files.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import openpyxl
import pytest

from commplan_xl.cli import main
from tests.builders import DEFAULT_PLANS, make_workbook
from tests.smtp_server import SMTPServer
from tests.test_run import settings_for

DAY1 = "2026-03-07"  # step 1 (+5 days from 2026-03-02) is due
DAY2 = "2026-03-17"  # step 2 (+15 days) is due
LEDGER = "commplan-ledger.sqlite3"
BOSS = "boss@example.test"

CUSTOMERS = [
    {"customer_id": "C1", "name": "Famille Roux", "email": "anne@example.test; paul@example.test"},
    {"customer_id": "C2", "name": "Bruno Petit", "email": "bruno@example.test"},
    {"customer_id": "C3", "name": "Chloé Blanc", "email": "chloe@example.test"},
]
ORDERS = [{"order_id": f"CMD-{n}", "customer_id": f"C{n}", "plan": "Baie",
           "start_date": dt.date(2026, 3, 2)} for n in (1, 2, 3)]


def _plans() -> list[dict]:
    return [dict(row, plan="Baie") for row in DEFAULT_PLANS]


@pytest.fixture
def clean_env(clean_env):
    """conftest's clean_env, with the run's throttle waits short."""
    clean_env.setenv("COMMPLAN_THROTTLE_WAITS", "0.2,0.2,0.2")
    return clean_env


def workbook(home: Path, server: SMTPServer, **settings) -> None:
    settings.setdefault("locale", "en_GB")
    make_workbook(home, settings=settings_for(server, **settings), plans=_plans(),
                  customers=CUSTOMERS, orders=ORDERS)


def cli(home: Path, *args: str) -> int:
    return main([*args, "--home", str(home)])


def states(home: Path) -> dict[str, tuple[str, str]]:
    """Order id -> (state, detail) of its step-1 message in the ledger."""
    with sqlite3.connect(home / LEDGER) as db:
        rows = db.execute("SELECT order_id, state, detail FROM messages WHERE step = 1")
        return {order: (state, detail) for order, state, detail in rows}


def dashboard_text(home: Path) -> str:
    wb = openpyxl.load_workbook(home / "workbooks" / "commplan.xlsx")
    ws = wb["Dashboard"]
    return "\n".join(" | ".join(str(c) for c in row if c is not None)
                     for row in ws.iter_rows(values_only=True))


def to_handle(home: Path) -> str:
    """The Dashboard's To handle table, as text."""
    text = dashboard_text(home)
    start = text.index("To handle:")
    return text[start:text.find("\n\n", start) if "\n\n" in text[start:] else None]


def customer_mails(server: SMTPServer) -> list:
    return [r for r in server.received if BOSS not in r.rcpt_tos]


def summaries(server: SMTPServer) -> list[str]:
    return [r.message.get_body(preferencelist=("plain",)).get_content()
            for r in server.received if BOSS in r.rcpt_tos]


# ---------------------------------------------------------------- refused recipients


def test_a_temporary_refusal_of_one_address_sends_to_no_one_and_retries(tmp_path, clean_env):
    """A 4xx at RCPT for one of a customer's addresses sends the mail to none of them now
    (a temporary failure), and a later run sends it to all at once."""
    with SMTPServer(rcpt_replies={"paul@example.test": "451 4.2.0 mailbox busy"}) as server:
        workbook(tmp_path, server)
        assert cli(tmp_path, "run", "--today", DAY1) == 1
        assert all("anne@example.test" not in r.rcpt_tos for r in server.received)
        assert states(tmp_path)["CMD-1"][0] == "failed"
        assert "451 4.2.0" in states(tmp_path)["CMD-1"][1]
        server.handler.rcpt_replies.clear()
        assert cli(tmp_path, "run", "--today", "2026-03-08") == 0
        family = [r for r in server.received if "anne@example.test" in r.rcpt_tos]
        assert [sorted(r.rcpt_tos) for r in family] == [["anne@example.test",
                                                         "paul@example.test"]]
        assert states(tmp_path)["CMD-1"][0] == "sent"


@pytest.mark.parametrize("locale, promise", [("en_GB", "will be retried by the next run"),
                                              ("fr_FR", "sera réessayé au prochain passage")])
def test_a_temporary_failure_promises_its_retry_once(tmp_path, clean_env, locale, promise):
    """The run, which knows catch-up, says once that a temporary failure is retried: the
    transport's sentence promises nothing of its own, in either language."""
    with SMTPServer(rcpt_replies={"paul@example.test": "451 4.2.0 mailbox busy"}) as server:
        workbook(tmp_path, server, locale=locale)
        assert cli(tmp_path, "run", "--today", DAY1) == 1
        detail = states(tmp_path)["CMD-1"][1]
        assert "paul@example.test" in detail and "451 4.2.0" in detail
        assert detail.endswith(promise)
        assert detail.count("réessay") + detail.count("tried again") + \
            detail.count("retried") == 1


def test_552_at_rcpt_is_temporary(tmp_path, clean_env):
    """A 552 at RCPT (too many recipients, RFC 5321 4.5.3.1.10) is temporary: retried."""
    with SMTPServer(rcpt_replies={"bruno@example.test": "552 5.5.3 too many recipients"}
                    ) as server:
        workbook(tmp_path, server)
        assert cli(tmp_path, "run", "--today", DAY1) == 1
        assert states(tmp_path)["CMD-2"][0] == "failed"
        server.handler.rcpt_replies.clear()
        assert cli(tmp_path, "run", "--today", "2026-03-08") == 0
        assert states(tmp_path)["CMD-2"][0] == "sent"


def test_a_permanent_refusal_of_some_addresses_sends_to_the_others_and_asks_a_person(
        tmp_path, clean_env):
    """A 5xx at RCPT for one of two addresses sends to the other, records `sent` naming
    the refused address, exits 1, and lists it to handle in the Dashboard and summary."""
    with SMTPServer(rcpt_replies={"paul@example.test": "550 5.1.1 no such user"}) as server:
        workbook(tmp_path, server, report_to=BOSS)
        assert cli(tmp_path, "run", "--today", DAY1) == 1
        family = [r for r in customer_mails(server) if "anne@example.test" in r.rcpt_tos]
        assert [r.rcpt_tos for r in family] == [["anne@example.test"]]
        state, detail = states(tmp_path)["CMD-1"]
        assert state == "sent" and "paul@example.test" in detail
        assert "paul@example.test" in to_handle(tmp_path)
        assert "paul@example.test" in summaries(server)[-1].split("Dashboard from")[0]
        # Still listed on the next day's run: it needs a person until corrected.
        cli(tmp_path, "run", "--today", "2026-03-08")
        assert "paul@example.test" in to_handle(tmp_path)
        assert len([r for r in customer_mails(server) if "anne@example.test" in r.rcpt_tos]) == 1


def test_every_address_refused_for_good_is_a_permanent_failure(tmp_path, clean_env):
    """A 5xx for every address of the customer is a permanent failure, as before."""
    with SMTPServer(rcpt_replies={"anne@example.test": "550 5.1.1 no such user",
                                  "paul@example.test": "550 5.1.1 no such user"}) as server:
        workbook(tmp_path, server)
        assert cli(tmp_path, "run", "--today", DAY1) == 1
        assert states(tmp_path)["CMD-1"][0] == "failed_permanent"


# ---------------------------------------------------------------- after the data


def test_554_after_the_data_is_a_refused_content_not_a_bad_address(tmp_path, clean_env,
                                                                   capsys):
    """A 554 once the whole message is in is a refusal of the mail (content or policy): the
    advice says so, not "correct the address", and the Dashboard does not call it one."""
    with SMTPServer(data_replies={"bruno@example.test": "554 5.7.1 message refused as spam"}
                    ) as server:
        workbook(tmp_path, server)
        assert cli(tmp_path, "run", "--today", DAY1) == 1
    out = capsys.readouterr().out
    state, detail = states(tmp_path)["CMD-2"]
    assert state == "failed_permanent"
    assert "correct the address" not in detail and "content" in detail
    assert "correct the address" not in out.lower()
    table = to_handle(tmp_path)
    assert "CMD-2" in table and "Refused for its content" in table
    assert "Permanent failure" not in table


# ---------------------------------------------------------------- dropped, slow


def test_a_line_dropped_while_the_message_is_uploaded_is_retried(tmp_path, clean_env):
    """The server hanging up while the message is still being uploaded (before the final
    dot) is a temporary failure, sent by the next run, never uncertain."""
    plans = _plans()
    plans[0] = dict(plans[0], attachments="catalogue.bin")
    with SMTPServer() as server:
        server.handler.hang_up_in_data.add("bruno@example.test")
        make_workbook(tmp_path, settings=settings_for(server, locale="en_GB"), plans=plans,
                      customers=CUSTOMERS, orders=ORDERS)
        # Large enough that the line is dead long before its end is uploaded.
        (tmp_path / "attachments" / "catalogue.bin").write_bytes(bytes(range(256)) * 24_000)
        assert cli(tmp_path, "run", "--today", DAY1) == 1
        assert states(tmp_path)["CMD-2"][0] == "failed"
        assert {states(tmp_path)[o][0] for o in ("CMD-1", "CMD-3")} == {"sent"}
        server.handler.hang_up_in_data.clear()
        assert cli(tmp_path, "run", "--today", "2026-03-08") == 0
        assert states(tmp_path)["CMD-2"][0] == "sent"


def test_a_line_dropped_before_data_is_retried(tmp_path, clean_env):
    """The server hanging up at MAIL, twice, is a temporary failure, sent by the next run."""
    with SMTPServer(drop_at_mail={2, 3}) as server:
        workbook(tmp_path, server)
        assert cli(tmp_path, "run", "--today", DAY1) == 1
        assert "uncertain" not in {s for s, _d in states(tmp_path).values()}
        assert cli(tmp_path, "run", "--today", "2026-03-08") == 0
        assert {s for s, _d in states(tmp_path).values()} == {"sent"}


@pytest.mark.parametrize("slow", ["bruno@example.test", "every mail"])
def test_one_slow_final_reply_makes_one_uncertain_mail(tmp_path, clean_env, slow):
    """A final reply slower than smtp_timeout marks that one mail uncertain; the next mails
    go on a new connection and are sent, even when the server stays that slow."""
    with SMTPServer() as server:
        if slow == "every mail":
            server.handler.delay = 1.5
        else:
            server.handler.slow_final_reply[slow] = 1.5
        workbook(tmp_path, server, smtp_timeout=1)
        assert cli(tmp_path, "run", "--today", DAY1) == 1
        found = states(tmp_path)
        assert [order for order, (state, _d) in found.items() if state == "uncertain"] == [
            "CMD-2" if slow != "every mail" else "CMD-1"]
        assert sorted(state for state, _d in found.values()) == ["sent", "sent", "uncertain"]
        assert server.connections == 2


# ---------------------------------------------------------------- the archive


def test_an_archive_folder_that_cannot_be_written_sends_nothing(tmp_path, clean_env, capsys):
    """When the mail's copy cannot be written in the archive, nothing is sent, the failure
    says why, and the mail goes once the folder is fixed."""
    with SMTPServer() as server:
        workbook(tmp_path, server)
        shutil.rmtree(tmp_path / "archive")
        (tmp_path / "archive").write_text("a file where the folder should be")
        assert cli(tmp_path, "run", "--today", DAY1) == 1
        assert server.received == []
        assert {s for s, _d in states(tmp_path).values()} == {"failed"}
        assert "archive" in states(tmp_path)["CMD-1"][1]
        assert "archive" in capsys.readouterr().out
        (tmp_path / "archive").unlink()
        (tmp_path / "archive").mkdir()
        assert cli(tmp_path, "run", "--today", "2026-03-08") == 0
        assert len(server.received) == 3
        assert {s for s, _d in states(tmp_path).values()} == {"sent"}


def test_a_copy_lost_after_the_server_took_the_mail_keeps_it_sent(tmp_path, clean_env):
    """Once the server has the mail, a copy that cannot be named in the archive leaves the
    mail `sent`, with a note, never uncertain."""
    with SMTPServer() as server:
        server.handler.slow_rcpt["bruno@example.test"] = 1.0
        workbook(tmp_path, server)
        stop = threading.Event()

        def remove_bruno_folder() -> None:  # while the server reads Bruno's address
            while not stop.is_set():
                for folder in (tmp_path / "archive").glob("C2*"):
                    if any(folder.glob(".tmp-*.part")):
                        shutil.rmtree(folder, ignore_errors=True)
                        return
                time.sleep(0.01)

        thread = threading.Thread(target=remove_bruno_folder)
        thread.start()
        try:
            cli(tmp_path, "run", "--today", DAY1)
        finally:
            stop.set()
            thread.join()
        state, detail = states(tmp_path)["CMD-2"]
        assert state == "sent" and "archive" in detail
        assert len(server.received) == 3


# ---------------------------------------------------------------- logging in


def test_a_login_without_at_sign_reaches_the_server_as_written(tmp_path, clean_env,
                                                               monkeypatch, capsys):
    """The login `apikey` (SendGrid) reaches the server as written: check --smtp and a run
    succeed against a server that requires it."""
    monkeypatch.setenv("COMMPLAN_SMTP_PASSWORD", "SG.secret")
    with SMTPServer(credentials={"apikey": "SG.secret"}, require_auth=True) as server:
        workbook(tmp_path, server, smtp_user="apikey", smtp_security="none")
        assert cli(tmp_path, "check", "--smtp") == 0
        assert 'logged in as "apikey"' in capsys.readouterr().out
        assert cli(tmp_path, "run", "--today", DAY1) == 0
        assert server.handler.logins[-1] == "apikey"
        assert len(server.received) == 3


def test_a_refusal_that_is_not_about_the_password_does_not_blame_it(tmp_path, clean_env,
                                                                    monkeypatch, capsys):
    """A login refused for now (454) is not blamed on the password by check --smtp."""
    monkeypatch.setenv("COMMPLAN_SMTP_PASSWORD", "right")
    with SMTPServer(credentials={"apikey": "right"}) as server:
        workbook(tmp_path, server, smtp_user="apikey", smtp_security="none")
        server.handler.auth_reply = "454 4.7.0 temporary authentication failure"
        assert cli(tmp_path, "check", "--smtp") == 1
    out = capsys.readouterr().out
    assert "454 4.7.0" in out and "check the password" not in out


def test_a_login_is_never_sent_in_clear_unless_chosen(tmp_path, clean_env, monkeypatch,
                                                      capsys):
    """With a user, a port other than 465/587 and smtp_security empty, nothing logs in in
    clear: check says so on the Settings sheet, and a run fails for now, saying what to set."""
    monkeypatch.setenv("COMMPLAN_SMTP_PASSWORD", "secret")
    with SMTPServer(credentials={"user@example.test": "secret"}) as server:
        workbook(tmp_path, server, smtp_user="user@example.test")
        assert cli(tmp_path, "check") == 1
        out = capsys.readouterr().out
        assert "smtp_security" in out and "unencrypted" in out
        assert cli(tmp_path, "run", "--today", DAY1) == 1
        assert server.handler.logins == [] and server.received == []
        assert {s for s, _d in states(tmp_path).values()} == {"failed"}
        assert "starttls or ssl" in capsys.readouterr().out
        workbook(tmp_path, server, smtp_user="user@example.test", smtp_security="none")
        assert cli(tmp_path, "run", "--today", "2026-03-08") == 0
        assert server.handler.logins[-1] == "user@example.test"


def test_a_login_goes_over_starttls_when_chosen(tmp_path, clean_env, monkeypatch):
    """With smtp_security starttls on another port, the login goes after STARTTLS to a
    server that takes none in clear, and the run sends."""
    from tests.smtp_server import self_signed_certificate

    cert = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", cert[0])  # the client trusts the test certificate
    monkeypatch.setenv("COMMPLAN_SMTP_PASSWORD", "secret")
    with SMTPServer(credentials={"apikey": "secret"}, starttls_cert=cert) as server:
        workbook(tmp_path, server, smtp_user="apikey", smtp_security="starttls")
        assert cli(tmp_path, "run", "--today", DAY1) == 0
        assert server.handler.logins == ["apikey"] and len(server.received) == 3


# ---------------------------------------------------------------- throttling


@pytest.mark.parametrize("reply", [
    "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
    "452 4.5.3 Too many recipients, try later",
    "421 4.7.0 Try again later, closing connection.",
    "450 4.7.28 rate limited, slow down",
])
def test_a_throttling_reply_is_waited_for_then_retried(tmp_path, clean_env, reply):
    """A reply asking to slow down, whatever its code, makes the run wait and try again:
    every mail is sent, none is recorded failed or permanent."""
    with SMTPServer() as server:
        server.handler.mail_replies.extend([reply, reply])
        workbook(tmp_path, server)
        assert cli(tmp_path, "run", "--today", DAY1) == 0
        assert {s for s, _d in states(tmp_path).values()} == {"sent"}
        assert len(server.received) == 3


def test_a_server_that_keeps_throttling_leaves_the_rest_for_the_next_run(tmp_path,
                                                                         clean_env):
    """When the server still throttles after the run's waits, the mail is a temporary
    failure, the rest stay due (none permanent), and the next run sends them."""
    reply = "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"
    with SMTPServer() as server:
        server.handler.mail_replies.extend([reply] * 10)
        workbook(tmp_path, server)
        started = time.monotonic()
        assert cli(tmp_path, "run", "--today", DAY1) == 1
        assert time.monotonic() - started < 10
        assert server.received == []
        assert "failed_permanent" not in {s for s, _d in states(tmp_path).values()}
        server.handler.mail_replies.clear()
        assert cli(tmp_path, "run", "--today", "2026-03-08") == 0
        assert {s for s, _d in states(tmp_path).values()} == {"sent"}


def test_max_per_minute_paces_the_run(tmp_path, clean_env):
    """max_per_minute spaces the mails: 3 mails at 120 a minute take at least a second."""
    with SMTPServer() as server:
        workbook(tmp_path, server, max_per_minute=120)
        started = time.monotonic()
        assert cli(tmp_path, "run", "--today", DAY1) == 0
        assert time.monotonic() - started >= 1.0
        assert len(server.received) == 3


def test_microsoft_365_is_paced_at_30_a_minute_by_default(tmp_path):
    """With smtp.office365.com or oauth2-microsoft and no max_per_minute, the pace is 30."""
    from commplan_xl.settings import parse_settings

    for raw in ({"smtp_host": ("smtp.office365.com", 2)},
                {"smtp_auth": ("oauth2-microsoft", 2), "oauth_tenant_id": ("t", 3),
                 "oauth_client_id": ("c", 4)}):
        settings, _problems = parse_settings(raw, home=tmp_path, environ={})
        assert settings.max_per_minute == 30
    settings, _problems = parse_settings({"smtp_host": ("smtp.gmail.com", 2)}, home=tmp_path,
                                         environ={})
    assert settings.max_per_minute is None
    settings, problems = parse_settings({"max_per_minute": ("0", 2)}, home=tmp_path,
                                        environ={})
    assert problems and "max_per_minute" in str(problems[0])


# ---------------------------------------------------------------- the summary mail


def test_the_summary_goes_once_a_day(tmp_path, clean_env):
    """A same-day rerun with nothing new sends no second summary (the same failure tried
    again is not new); the next day's run sends its own."""
    with SMTPServer() as server:
        workbook(tmp_path, server, report_to=BOSS)
        server.handler.rcpt_replies["chloe@example.test"] = "451 4.2.0 busy"
        assert cli(tmp_path, "run", "--today", DAY1) == 1
        assert len(summaries(server)) == 1
        assert cli(tmp_path, "run", "--today", DAY1) == 1
        assert len(summaries(server)) == 1
        server.handler.rcpt_replies.clear()
        assert cli(tmp_path, "run", "--today", "2026-03-08") == 0
        assert len(summaries(server)) == 2
