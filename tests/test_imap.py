"""Reading the sending mailbox through a real IMAP server (Dovecot, see tests/imap_server)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from commplan_xl.mail import imap
from commplan_xl.mail.bounces import Kind, classify
from commplan_xl.mail.imap import ImapConfig, ImapError, Mailbox, Position, read_new
from tests import imap_server
from tests.smtp_server import SilentServer

pytestmark = imap_server.needs_dovecot

SAMPLES = Path(__file__).parent / "bounces"


def config(server, user: str, **overrides) -> ImapConfig:
    """Implicit TLS to the test server, trusting its self-signed certificate."""
    fields = dict(host="127.0.0.1", port=server.tls_port, security="ssl", user=user,
                  password=server.passwords[user], ssl_context=server.client_context(),
                  timeout=10.0)
    fields.update(overrides)
    return ImapConfig(**fields)


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_every_sample_is_read_back_exactly_and_classified(server, account):
    """Each hand-written bounce delivered to the mailbox comes back byte for byte, in order."""
    samples = sorted(SAMPLES.glob("*.eml"))
    uids = [server.deliver(account, p.read_bytes()) for p in samples]
    got = read_new(config(server, account))
    assert [m.uid for m in got] == uids
    assert [m.raw for m in got] == [crlf(p.read_bytes()) for p in samples]
    kinds = {p.name: classify(m.raw).kind for p, m in zip(samples, got, strict=True)}
    assert kinds["m365_recipient_not_found.eml"] == Kind.HARD
    assert kinds["postfix_mailbox_full.eml"] == Kind.SOFT
    assert kinds["exchange_out_of_office.eml"] == Kind.AUTO_REPLY
    assert kinds["malformed.eml"] == Kind.UNREADABLE


def test_reading_marks_nothing_seen_and_deletes_nothing(server, account):
    """After a read the mailbox holds the same messages, none of them marked \\Seen."""
    for name in ("gmail_address_not_found.eml", "reponse_automatique.eml"):
        server.deliver(account, (SAMPLES / name).read_bytes())
    before = server.flags(account)
    assert len(read_new(config(server, account))) == 2
    after = server.flags(account)
    assert sorted(after) == sorted(before)
    assert not any("\\Seen" in flags or "\\Deleted" in flags for flags in after.values())


def test_the_position_read_is_remembered(server, account):
    """A second read from the last position returns nothing; a new mail alone comes next."""
    server.deliver(account, (SAMPLES / "postfix_delayed.eml").read_bytes())
    first = read_new(config(server, account))
    assert len(first) == 1
    position = first[-1].position
    assert read_new(config(server, account), position) == []
    new_uid = server.deliver(account, (SAMPLES / "postfix_mailbox_full.eml").read_bytes())
    again = read_new(config(server, account), position)
    assert [m.uid for m in again] == [new_uid]
    assert again[0].uidvalidity == position.uidvalidity


def test_a_new_uidvalidity_starts_again_from_the_first_message(server, account):
    """When the folder was rebuilt (another UIDVALIDITY), every message is read again."""
    folder = "Retours"
    server.deliver(account, (SAMPLES / "postfix_delayed.eml").read_bytes(), folder)
    cfg = config(server, account, folder=folder)
    position = read_new(cfg)[-1].position
    server.recreate_folder(account, folder)
    server.deliver(account, (SAMPLES / "m365_recipient_not_found.eml").read_bytes(), folder)
    server.deliver(account, (SAMPLES / "exim_no_such_user.eml").read_bytes(), folder)
    again = read_new(cfg, position)
    assert len(again) == 2
    assert again[0].uidvalidity != position.uidvalidity
    assert [m.uid for m in again] == [1, 2]


def test_a_first_read_can_be_limited_to_recent_mail(server, account):
    """`since_date` skips what arrived before that day when reading from the beginning."""
    old = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)
    server.deliver(account, (SAMPLES / "postfix_delayed.eml").read_bytes(), received=old)
    recent = server.deliver(account, (SAMPLES / "postfix_mailbox_full.eml").read_bytes())
    got = read_new(config(server, account), since_date=dt.date(2026, 11, 1))
    assert [m.uid for m in got] == [recent]


def test_starttls_and_explicit_none_both_log_in(server, account):
    """The plain port works with STARTTLS, and without encryption when `none` is explicit."""
    server.deliver(account, (SAMPLES / "read_receipt.eml").read_bytes())
    for security in ("starttls", "none"):
        got = read_new(config(server, account, port=server.port, security=security))
        assert len(got) == 1


def test_no_login_goes_unencrypted_unless_none_is_explicit(server, account):
    """A port that implies no TLS and no imap_security set: refused before any login."""
    with pytest.raises(ImapError) as caught:
        read_new(config(server, account, port=server.port, security=""))
    assert caught.value.kind == imap.INSECURE
    assert str(caught.value) == (
        f"the mailbox server 127.0.0.1:{server.port} would get the login without"
        " encryption: set imap_security to ssl (port 993) or starttls (port 143), or to"
        " none to allow it on purpose")
    assert f"user=<{account}>" not in server.log()


@pytest.mark.parametrize(("port", "security", "expected"), [
    (993, "", ("ssl", False)),
    (143, "", ("starttls", False)),
    (1143, "", ("none", False)),
    (1143, "STARTTLS", ("starttls", True)),
    (993, "none", ("none", True)),
])
def test_security_defaults_from_the_port(port, security, expected):
    """993 means SSL, 143 STARTTLS; an explicit imap_security always wins."""
    assert imap.security_for(ImapConfig(host="h", port=port, security=security)) == expected


def test_xoauth2_logs_in_with_the_token(server, account):
    """A token provider makes the client AUTHENTICATE XOAUTH2 with the bearer token."""

    class Token:
        def token(self) -> str:
            return server.passwords[account]  # Dovecot checks the token as the password

    server.deliver(account, (SAMPLES / "read_receipt.eml").read_bytes())
    got = read_new(config(server, account, password=None, token_provider=Token()))
    assert len(got) == 1
    assert f"user=<{account}>, method=XOAUTH2" in server.log()


def test_a_refused_token_is_a_login_sentence(server, account):
    """A token the server refuses gives the login sentence, without the token in it."""

    class Token:
        def token(self) -> str:
            return "expired-token-123"

    with pytest.raises(ImapError) as caught:
        read_new(config(server, account, password=None, token_provider=Token()))
    assert caught.value.kind == imap.LOGIN
    assert "expired-token-123" not in str(caught.value)
    assert str(caught.value).startswith(
        f'the mailbox server 127.0.0.1:{server.tls_port} refused the login of "{account}"')


def test_a_refused_password_is_one_sentence(server, account):
    """A wrong password: kind login, one sentence naming the server and the user."""
    with pytest.raises(ImapError) as caught:
        read_new(config(server, account, password="wrong-password"))
    assert caught.value.kind == imap.LOGIN
    assert str(caught.value) == (
        f'the mailbox server 127.0.0.1:{server.tls_port} refused the login of "{account}"'
        " ([AUTHENTICATIONFAILED] Authentication failed.): check imap_user and the password")


def test_an_unreachable_server_is_one_sentence():
    """Nothing listening on the port: kind unreachable, saying which settings to check."""
    port = imap_server.free_port()
    cfg = ImapConfig(host="127.0.0.1", port=port, security="ssl", user="u", password="p",
                     timeout=5)
    with pytest.raises(ImapError) as caught:
        read_new(cfg)
    assert caught.value.kind == imap.UNREACHABLE
    assert str(caught.value) == (
        f"could not reach the mailbox server 127.0.0.1:{port} (connection refused): check"
        " imap_host and imap_port")


def test_a_silent_server_times_out():
    """A server that never greets: kind unreachable after the timeout, no hang."""
    with SilentServer() as silent:
        cfg = ImapConfig(host="127.0.0.1", port=silent.port, security="ssl", user="u",
                         password="p", timeout=0.5)
        with pytest.raises(ImapError) as caught:
            read_new(cfg)
    assert caught.value.kind == imap.UNREACHABLE
    assert str(caught.value) == (
        f"the mailbox server 127.0.0.1:{silent.port} did not answer within 0.5 s: check"
        " imap_host and imap_port")


def test_an_untrusted_certificate_is_refused(server, account):
    """SSL is verified: the self-signed test certificate fails with the system's CAs."""
    with pytest.raises(ImapError) as caught:
        read_new(config(server, account, ssl_context=None))
    assert caught.value.kind == imap.TLS
    assert str(caught.value) == (
        f"the certificate of the mailbox server 127.0.0.1:{server.tls_port} could not be"
        " verified (self-signed certificate): check that imap_host is the server's own name")


def test_a_missing_folder_is_one_sentence(server, account):
    """imap_folder naming no folder: kind folder, naming it."""
    with pytest.raises(ImapError) as caught:
        read_new(config(server, account, folder="Rebonds"))
    assert caught.value.kind == imap.FOLDER
    assert str(caught.value).startswith(
        f'the folder "Rebonds" does not exist in the mailbox "{account}"')
    assert str(caught.value).endswith("check imap_folder")


def test_handled_reports_move_to_the_done_folder(server, account):
    """With bounce_folder_done set, UID MOVE takes handled reports out of the inbox."""
    server.create_folder(account, "Retours traités")
    kept = server.deliver(account, (SAMPLES / "reponse_automatique.eml").read_bytes())
    moved = server.deliver(account, (SAMPLES / "gmail_address_not_found.eml").read_bytes())
    with Mailbox(config(server, account, done_folder="Retours traités")) as box:
        assert [m.uid for m in box.fetch_new()] == [kept, moved]
        assert box.move_done([moved]) == "moved"
    assert list(server.flags(account)) == [kept]
    done = server.flags(account, "Retours traités")
    assert len(done) == 1
    assert not any("\\Seen" in flags for flags in done.values())


def test_a_missing_done_folder_is_one_sentence(server, account):
    """bounce_folder_done naming no folder: kind folder, and nothing moves."""
    uid = server.deliver(account, (SAMPLES / "postfix_delayed.eml").read_bytes())
    cfg = config(server, account, done_folder="Archives/Retours")
    with Mailbox(cfg) as box, pytest.raises(ImapError) as caught:
        box.move_done([uid])
    assert caught.value.kind == imap.FOLDER
    assert list(server.flags(account)) == [uid]


def test_no_done_folder_moves_nothing(server, account):
    """Without bounce_folder_done, move_done does nothing and says so with ""."""
    uid = server.deliver(account, (SAMPLES / "postfix_delayed.eml").read_bytes())
    with Mailbox(config(server, account)) as box:
        assert box.move_done([uid]) == ""
    assert list(server.flags(account)) == [uid]


def test_check_mailbox_says_what_it_found(server, account):
    """The login check (for `check --smtp`) names the server, the user and the count."""
    server.deliver(account, (SAMPLES / "postfix_delayed.eml").read_bytes())
    assert imap.check_mailbox(config(server, account)) == (
        f'the mailbox server 127.0.0.1:{server.tls_port} answered (SSL) and "{account}"'
        ' logged in; the folder "INBOX" holds 1 message(s)')


def test_a_position_of_another_folder_state_is_plain_data():
    """Positions are plain values the ledger can store and compare."""
    assert Position(7, 12) == Position(7, 12)
    assert imap.Fetched(7, 12, b"x").position == Position(7, 12)


def test_a_big_report_is_read_in_part_and_still_understood(server, account):
    """Only the first max_bytes are read; the report and the original's headers come first."""
    raw = (SAMPLES / "m365_recipient_not_found.eml").read_bytes()
    padding = "Votre devis en pièce jointe.\n".encode() * 8000  # a big returned original
    raw = raw.replace(b"est en cours de traitement.\n", b"est en cours de traitement.\n" + padding)
    server.deliver(account, raw)
    (got,) = read_new(config(server, account, max_bytes=20_000))
    assert len(got.raw) == 20_000
    assert got.truncated and got.size == len(crlf(raw))
    report = classify(got.raw)
    assert report.kind == Kind.HARD
    assert report.message_ids[0] == (
        "<176480521447.2811.9912844377665210321@menuiserie-durand.fr>")


def test_starttls_never_falls_back_to_a_plain_login():
    """A server without STARTTLS: kind tls, and no login reaches it."""
    with imap_server.IMAPServer(tls=False) as plain:
        user = "shop@menuiserie-durand.test"
        cfg = ImapConfig(host="127.0.0.1", port=plain.port, security="starttls", user=user,
                         password=plain.add_user(user), timeout=10)
        with pytest.raises(ImapError) as caught:
            read_new(cfg)
        assert caught.value.kind == imap.TLS
        assert str(caught.value) == (
            f"the mailbox server 127.0.0.1:{plain.port} does not offer STARTTLS: check"
            " imap_security (ssl for port 993, starttls for 143)")
        assert f"user=<{user}>" not in plain.log()
