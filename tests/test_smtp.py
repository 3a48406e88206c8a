"""Building mails with the standard library and sending them to a real aiosmtpd server."""

from __future__ import annotations

import email
import email.policy
import time
from dataclasses import replace
from email.headerregistry import Address
from pathlib import Path

import pytest

from commplan_xl.mail.message import AttachmentCache, build_message, check_address, message_bytes
from commplan_xl.mail.render import Rendered, text_to_html
from commplan_xl.mail.smtp import SmtpTransport, check_connection
from commplan_xl.mail.transport import Delivery, Refusal
from commplan_xl.problems import SendFailure, SendKind, SendUncertain
from commplan_xl.settings import Settings
from tests.smtp_server import SilentServer, SMTPServer, free_port

SENDER = "contact@menuiserie.fr"
PASSWORD = "s3cret-Pa55word"
NO_ENV: dict[str, str] = {}


def rendered(subject: str = "Votre commande est en cours de traitement",
             text: str = "Bonjour Éloïse,\n\n<b>x</b> & co\n.ligne qui commence par un point\n"
             ) -> Rendered:
    return Rendered(subject=subject, text=text, html=text_to_html(text, title=subject))


def settings_for(port: int, tmp_path: Path, **kw: object) -> Settings:
    base = Settings(home=tmp_path, sender_email=SENDER, sender_name="Menuiserie Lefèvre",
                    smtp_host="127.0.0.1", smtp_port=port, smtp_security="none",
                    smtp_timeout=5.0)
    return replace(base, **kw)  # type: ignore[arg-type]


def make(to: list[str], attachments: list[Path] = (), **kw: object):  # type: ignore[assignment]
    return build_message(rendered=kw.pop("r", rendered()), sender_email=SENDER,  # type: ignore[arg-type]
                         sender_name="Menuiserie Lefèvre", reply_to="sav@menuiserie.fr",
                         to=to, attachments=attachments, **kw)  # type: ignore[arg-type]


def send(transport: SmtpTransport, msg, to: list[str]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return transport.send(message_bytes(msg), sender=SENDER, recipients=to).checked()


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "attachments"
    folder.mkdir()
    pdf = folder / "conditions.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 4)
    accented = folder / "Notice de pose fenêtre été.txt"
    accented.write_bytes("Étape 1 : déballer\n".encode())
    return [pdf, accented]


# ---------------------------------------------------------------- building


def test_message_to_two_addresses_arrives_complete(smtp_server, tmp_path, files) -> None:
    """A mail reaches both addresses with From name, Reply-To, a plain text part, an HTML
    alternative and each attachment with its bytes, type and (accented) name."""
    to = ["eloise@example.com", "francois@example.org"]
    with SmtpTransport(settings_for(smtp_server.port, tmp_path), environ=NO_ENV) as transport:
        assert send(transport, make(to, files), to) == {}
    smtp_server.wait_for(1)
    got = smtp_server.received[0]
    assert got.rcpt_tos == to and got.mail_from == SENDER
    msg = got.message
    assert msg["From"].addresses[0].display_name == "Menuiserie Lefèvre"
    assert msg["From"].addresses[0].addr_spec == SENDER
    assert [a.addr_spec for a in msg["To"].addresses] == to
    assert msg["Reply-To"].addresses[0].addr_spec == "sav@menuiserie.fr"
    assert msg["Subject"] == "Votre commande est en cours de traitement"
    assert msg["Date"] and msg["Message-ID"].endswith("@menuiserie.fr>")
    plain = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    text = plain.get_content().replace("\r\n", "\n")  # as carried on the wire: CRLF
    assert text == rendered().text
    assert "<br>" not in text and "<p>" not in text
    assert "&lt;b&gt;x&lt;/b&gt; &amp; co" in html.get_content()
    parts = list(msg.iter_attachments())
    assert [p.get_filename() for p in parts] == [f.name for f in files]
    assert [p.get_content_type() for p in parts] == ["application/pdf", "text/plain"]
    assert all(p.get_content_disposition() == "attachment" for p in parts)
    assert [p.get_payload(decode=True) for p in parts] == [f.read_bytes() for f in files]


def test_identical_mails_have_unique_message_ids() -> None:
    """Two mails with the same sender, recipient and subject still get distinct Message-IDs."""
    first, second = make(["a@example.com"]), make(["a@example.com"])
    assert first["Message-ID"] != second["Message-ID"]


def test_message_bytes_are_stable_and_crlf() -> None:
    """The bytes archived are the bytes sent: serialising twice gives the same CRLF bytes."""
    msg = make(["a@example.com"])
    data = message_bytes(msg)
    assert data == message_bytes(msg)
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")


def test_no_header_injection_from_data() -> None:
    """Line breaks in a subject or sender name never create a header."""
    msg = build_message(rendered=rendered(subject="Bonjour\r\nBcc: evil@example.com"),
                        sender_email=SENDER, sender_name="Dupont\nBcc: evil@example.com",
                        reply_to="", to=["a@example.com"], attachments=[])
    headers = message_bytes(msg).split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in headers
    assert msg["Subject"] == "Bonjour Bcc: evil@example.com"
    assert msg["Reply-To"] is None


@pytest.mark.parametrize(
    "address",
    ["not-an-address", "a@", "@example.com", "a b@example.com",
     "a@example.com\r\nBcc: evil@example.com", "éloïse@example.com", "a@b@c.fr"],
)
def test_malformed_address_is_a_permanent_failure(address: str) -> None:
    """A malformed address is refused before sending, permanently, with a sentence."""
    with pytest.raises(SendFailure) as caught:
        make([address])
    assert caught.value.temporary is False
    assert "correct the customer's email" in str(caught.value)


def test_accented_domain_is_sent_in_ascii_form() -> None:
    """An accented domain is written in its ASCII (IDNA) form, which every server accepts."""
    address = check_address(" Jean@Menuiserie-Été.fr ")
    assert address == "Jean@" + "menuiserie-été.fr".encode("idna").decode()
    assert address.isascii() and address.startswith("Jean@xn--")


def test_attachment_bytes_are_read_once_per_cache(files) -> None:
    """With a shared cache a file is read once: later mails still carry it after it is gone."""
    cache = AttachmentCache()
    make(["a@example.com"], files, cache=cache)
    for f in files:
        f.unlink()
    again = make(["a@example.com"], files, cache=cache)
    assert len(list(again.iter_attachments())) == 2


def test_missing_attachment_is_a_temporary_failure_naming_it(tmp_path) -> None:
    """A missing attachment file fails the message temporarily and names the file."""
    with pytest.raises(SendFailure, match='"tarifs.pdf" is missing') as caught:
        make(["a@example.com"], [tmp_path / "tarifs.pdf"])
    assert caught.value.temporary is True


def _parse(data: bytes):  # type: ignore[no-untyped-def]
    return email.message_from_bytes(data, policy=email.policy.default)


def test_message_is_standard_mime_without_defects(files) -> None:
    """The bytes form multipart/mixed > (alternative: plain + html, quoted-printable) +
    base64 attachments, with no parsing defect and no line over 78 characters."""
    data = message_bytes(make(["a@example.com"], files))
    msg = _parse(data)
    tree = [(p.get_content_type(), p["Content-Transfer-Encoding"]) for p in msg.walk()]
    assert tree == [("multipart/mixed", None), ("multipart/alternative", None),
                    ("text/plain", "quoted-printable"), ("text/html", "quoted-printable"),
                    ("application/pdf", "base64"), ("text/plain", "base64")]
    assert msg["MIME-Version"] == "1.0"
    assert all(not part.defects for part in msg.walk())
    assert max(len(line) for line in data.split(b"\r\n")) <= 78


def test_message_without_attachment_is_the_alternative_itself() -> None:
    """A mail without attachments is one multipart/alternative of plain text and HTML."""
    msg = _parse(message_bytes(make(["a@example.com"])))
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/alternative", "text/plain", "text/html"]


def test_long_accented_headers_and_names_survive(tmp_path) -> None:
    """A long accented subject, a sender name with quotes and commas, and a long accented
    file name (RFC 2231) read back exactly, folded into short lines."""
    subject = "Éloïse, votre commande « fenêtre » — étape 3 : " + "très " * 30 + "fin"
    name = 'Menuiserie "Lefèvre & Fils", Nîmes'
    doc = tmp_path / ("Notice de pose de la fenêtre coulissante été " + "é" * 40 + ".pdf")
    doc.write_bytes(b"%PDF")
    plain_name = 'Dupont, "SARL"'
    data = message_bytes(build_message(
        rendered=rendered(subject=subject), sender_email=SENDER, sender_name=name,
        reply_to="", to=["a@example.com"], attachments=[doc]))
    msg = _parse(data)
    assert msg["Subject"] == subject
    assert msg["From"].addresses[0].display_name == name
    assert [p.get_filename() for p in msg.iter_attachments()] == [doc.name]
    assert max(len(line) for line in data.split(b"\r\n")) <= 78
    other = _parse(message_bytes(build_message(
        rendered=rendered(), sender_email=SENDER, sender_name=plain_name, reply_to="",
        to=["a@example.com"], attachments=[])))
    assert other["From"].addresses[0].display_name == plain_name


def test_body_text_cannot_break_the_structure() -> None:
    """Text that looks like a MIME boundary or header stays text: the parts are unchanged."""
    text = "--=_0\n--=_\n\nContent-Type: text/html\n--\n" + "=" * 100 + "\n"
    msg = make(["a@example.com"], r=rendered(text=text))
    parsed = _parse(message_bytes(msg))
    assert [p.get_content_type() for p in parsed.walk()] == [
        "multipart/alternative", "text/plain", "text/html"]
    plain = parsed.get_body(preferencelist=("plain",)).get_content()
    assert plain.replace("\r\n", "\n") == text


def test_attachment_is_encoded_once_per_cache(files) -> None:
    """A shared cache encodes each file once: every mail carries the very same base64."""
    cache = AttachmentCache()
    assert cache.load(files[0]) is cache.load(files[0])
    first = message_bytes(make(["a@example.com"], files[:1], cache=cache))
    second = message_bytes(make(["b@example.com"], files[:1], cache=cache))
    body = cache.load(files[0]).body
    assert body in first and body in second


@pytest.mark.parametrize(
    "address",
    ["a@example.com", "Jean.Dupont+devis@menuiserie-lyon.co.uk", "o'brien@example.ie",
     "x_y@sub.example.fr", "a@[127.0.0.1]"],
)
def test_check_address_agrees_with_the_email_package(address: str) -> None:
    """The fast check of common addresses gives what the email package's parser gives."""
    assert check_address(address) == Address(addr_spec=address).addr_spec


def test_lines_starting_with_a_dot_arrive_intact(smtp_server, tmp_path) -> None:
    """Lines that start with "." (also after a quoted-printable soft break) are not lost."""
    text = "".join(f"{'x' * n}.{'y' * 80}\n.{n}\n" for n in range(70, 80))
    with SmtpTransport(settings_for(smtp_server.port, tmp_path), environ=NO_ENV) as transport:
        send(transport, make(["a@example.com"], r=rendered(text=text)), ["a@example.com"])
    smtp_server.wait_for(1)
    plain = smtp_server.received[0].message.get_body(preferencelist=("plain",))
    assert plain.get_content().replace("\r\n", "\n") == text


# ---------------------------------------------------------------- sending


def test_many_messages_use_one_connection(smtp_server, tmp_path) -> None:
    """A run sends every message over one SMTP connection (no login per mail)."""
    with SmtpTransport(settings_for(smtp_server.port, tmp_path), environ=NO_ENV) as transport:
        for i in range(25):
            msg = make([f"client{i}@example.com"], r=rendered(subject=f"mail {i}"))
            send(transport, msg, [f"client{i}@example.com"])
        assert transport.connections == 1
    smtp_server.wait_for(25)
    assert len(smtp_server.received) == 25
    assert smtp_server.connections == 1


def test_550_for_one_of_two_addresses_is_sent_and_reported(tmp_path) -> None:
    """When one address is refused and the other accepted, the mail is sent and the refused
    address is returned with a sentence."""
    with SMTPServer(rcpt_replies={"bad@example.com": "550 5.1.1 no such user"}) as srv:
        with SmtpTransport(settings_for(srv.port, tmp_path), environ=NO_ENV) as transport:
            to = ["good@example.com", "bad@example.com"]
            refused = send(transport, make(to), to)
        srv.wait_for(1)
        assert srv.received[0].rcpt_tos == ["good@example.com"]
    assert refused == {"bad@example.com": "the mail server refused the address bad@example.com"
                       " (550 5.1.1 no such user): correct the customer's email"}


def test_550_for_the_only_address_is_permanent(tmp_path) -> None:
    """A 5xx refusal of every address is a permanent failure naming the address."""
    with SMTPServer(rcpt_replies={"bad@example.com": "550 5.1.1 no such user"}) as srv:
        with SmtpTransport(settings_for(srv.port, tmp_path), environ=NO_ENV) as transport:
            with pytest.raises(SendFailure) as caught:
                send(transport, make(["bad@example.com"]), ["bad@example.com"])
            # the connection is still good for the next customer
            send(transport, make(["ok@example.com"]), ["ok@example.com"])
        srv.wait_for(1)
        assert len(srv.received) == 1
    assert caught.value.temporary is False and caught.value.connection is False
    assert "refused the address bad@example.com (550 5.1.1 no such user)" in str(caught.value)


def test_451_is_temporary(tmp_path) -> None:
    """A 4xx refusal is a temporary failure, retried by a later run."""
    with (
        SMTPServer(rcpt_replies={"later@example.com": "451 4.7.1 greylisted"}) as srv,
        SmtpTransport(settings_for(srv.port, tmp_path), environ=NO_ENV) as transport,
        pytest.raises(SendFailure, match="451 4.7.1 greylisted") as caught,
    ):
        send(transport, make(["later@example.com"]), ["later@example.com"])
    assert caught.value.temporary is True


def test_server_down_is_temporary_connection_failure(tmp_path) -> None:
    """No server listening: a temporary connection failure with a sentence for people."""
    port = free_port()
    with (
        SmtpTransport(settings_for(port, tmp_path), environ=NO_ENV) as transport,
        pytest.raises(SendFailure) as caught,
    ):
        send(transport, make(["a@example.com"]), ["a@example.com"])
    assert caught.value.temporary is True and caught.value.connection is True
    assert str(caught.value) == (
        f"could not reach the mail server 127.0.0.1:{port} (connection refused): is it running?"
    )


def test_dropped_connection_mid_batch_reconnects_and_sends_each_once(tmp_path) -> None:
    """A server hanging up before a message is taken makes the transport reconnect once; every
    message of the batch arrives exactly once."""
    with SMTPServer(drop_at_mail={4, 8}) as srv:
        with SmtpTransport(settings_for(srv.port, tmp_path), environ=NO_ENV) as transport:
            for i in range(10):
                send(transport, make([f"c{i}@example.com"], r=rendered(subject=f"mail {i}")),
                     [f"c{i}@example.com"])
            assert transport.connections == 3
        srv.wait_for(10)
        subjects = [r.message["Subject"] for r in srv.received]
    assert sorted(subjects) == sorted(f"mail {i}" for i in range(10))


def test_silent_server_times_out_instead_of_hanging(tmp_path) -> None:
    """A server that accepts the connection but never answers gives a timeout failure."""
    with SilentServer() as srv:
        settings = settings_for(srv.port, tmp_path, smtp_timeout=0.5)
        with (
            SmtpTransport(settings, environ=NO_ENV) as transport,
            pytest.raises(SendFailure, match="did not answer within 0.5 s") as caught,
        ):
            send(transport, make(["a@example.com"]), ["a@example.com"])
    assert caught.value.temporary is True and caught.value.connection is True


def test_no_answer_after_the_message_is_uncertain_not_resent(tmp_path) -> None:
    """When the server goes silent after receiving the message, the send is uncertain and
    the transport does not send it a second time."""
    with (
        SMTPServer(delay=2.0) as srv,
        SmtpTransport(settings_for(srv.port, tmp_path, smtp_timeout=0.5), environ=NO_ENV) as m,
    ):
        with pytest.raises(SendUncertain, match="may or may not have been sent"):
            send(m, make(["a@example.com"]), ["a@example.com"])
        assert m.connections == 1


# ---------------------------------------------------------------- login


def test_user_without_password_fails_with_a_sentence_not_a_prompt(
    tmp_path, memory_keyring
) -> None:
    """With an SMTP user but no password anywhere, the transport fails with a sentence (a
    scheduled task must never wait at a password prompt)."""
    with SMTPServer(credentials={"shop@menuiserie.fr": PASSWORD}) as srv:
        settings = settings_for(srv.port, tmp_path, smtp_user="shop@menuiserie.fr")
        with (
            SmtpTransport(settings, environ=NO_ENV) as transport,
            pytest.raises(SendFailure, match="COMMPLAN_SMTP_PASSWORD") as caught,
        ):
            send(transport, make(["a@example.com"]), ["a@example.com"])
        assert srv.connections == 0
    assert caught.value.temporary is True and caught.value.connection is True


def test_login_with_password_from_environment(tmp_path) -> None:
    """The password from COMMPLAN_SMTP_PASSWORD logs in and the mail is accepted."""
    with SMTPServer(credentials={"shop@menuiserie.fr": PASSWORD}) as srv:
        settings = settings_for(srv.port, tmp_path, smtp_user="shop@menuiserie.fr")
        with SmtpTransport(settings, environ={"COMMPLAN_SMTP_PASSWORD": PASSWORD}) as transport:
            send(transport, make(["a@example.com"]), ["a@example.com"])
        srv.wait_for(1)
        assert len(srv.received) == 1
        assert srv.handler.logins == ["shop@menuiserie.fr"]


def test_login_with_password_from_keyring(tmp_path, memory_keyring) -> None:
    """Without the environment variable, the password comes from the keyring."""
    memory_keyring.set_password("commplan", "shop@menuiserie.fr", PASSWORD)
    with SMTPServer(credentials={"shop@menuiserie.fr": PASSWORD}) as srv:
        settings = settings_for(srv.port, tmp_path, smtp_user="shop@menuiserie.fr")
        with SmtpTransport(settings, environ=NO_ENV) as transport:
            send(transport, make(["a@example.com"]), ["a@example.com"])
        srv.wait_for(1)
        assert len(srv.received) == 1
        assert srv.handler.logins == ["shop@menuiserie.fr"]


def test_wrong_password_is_refused_without_revealing_it(tmp_path) -> None:
    """A refused login is a temporary connection failure whose sentence names the user but
    never contains the password."""
    wrong = "Wr0ng-Secret-42"
    with SMTPServer(credentials={"shop@menuiserie.fr": PASSWORD}) as srv:
        settings = settings_for(srv.port, tmp_path, smtp_user="shop@menuiserie.fr")
        with (
            SmtpTransport(settings, environ={"COMMPLAN_SMTP_PASSWORD": wrong}) as transport,
            pytest.raises(SendFailure) as caught,
        ):
            send(transport, make(["a@example.com"]), ["a@example.com"])
        assert srv.received == [] and srv.handler.logins == []
    text = str(caught.value)
    assert caught.value.temporary is True and caught.value.connection is True
    assert 'refused the login of "shop@menuiserie.fr" (535' in text
    assert wrong not in text and wrong not in repr(caught.value.args)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_check_connection_logs_in_and_sends_nothing(tmp_path) -> None:
    """`check --smtp` connects and logs in, sends nothing, and says so in a sentence."""
    with SMTPServer(credentials={"shop@menuiserie.fr": PASSWORD}) as srv:
        settings = settings_for(srv.port, tmp_path, smtp_user="shop@menuiserie.fr")
        sentence = check_connection(settings, environ={"COMMPLAN_SMTP_PASSWORD": PASSWORD})
        assert srv.received == [] and srv.connections == 1
        assert srv.handler.logins == ["shop@menuiserie.fr"]
    assert sentence == (
        f'the mail server 127.0.0.1:{srv.port} answered (no encryption, logged in as'
        ' "shop@menuiserie.fr"); nothing was sent'
    )


def test_check_connection_reports_a_server_that_is_down(tmp_path) -> None:
    """`check --smtp` against no server raises a connection failure with a sentence."""
    with pytest.raises(SendFailure, match="connection refused"):
        check_connection(settings_for(free_port(), tmp_path), environ=NO_ENV)


# ---------------------------------------------------------------- outcomes as data


def test_outcome_carries_the_code_reply_and_refused_recipients(tmp_path) -> None:
    """A send answers with a record: delivered with each refused address, its code and the
    server's reply; a refusal of every address is a failure of its kind with the code."""
    replies = {"bad@example.com": "550 5.1.1 no such user", "later@example.com":
               "451 4.7.1 greylisted"}
    with SMTPServer(rcpt_replies=replies) as srv, \
            SmtpTransport(settings_for(srv.port, tmp_path), environ=NO_ENV) as transport:
        to = ["good@example.com", "bad@example.com"]
        delivered = transport.send(make(to), sender=SENDER, recipients=to)
        later = transport.send(make(["later@example.com"]), sender=SENDER,
                               recipients=["later@example.com"])
        bad = transport.send(make(["bad@example.com"]), sender=SENDER,
                             recipients=["bad@example.com"])
    assert delivered.delivery is Delivery.DELIVERED and delivered.code == 250
    assert delivered.refused == (Refusal("bad@example.com", 550, "550 5.1.1 no such user"),)
    assert later.delivery is Delivery.TEMPORARY and later.failure is not None
    assert (later.code, later.reply) == (451, "451 4.7.1 greylisted")
    assert later.failure.kind is SendKind.TEMPORARY
    assert later.failure.recipient == "later@example.com"
    assert bad.delivery is Delivery.PERMANENT and bad.failure is not None
    assert bad.failure.kind is SendKind.PERMANENT and bad.code == 550


def test_failures_name_their_kind(tmp_path) -> None:
    """Server down, a refused login and a lost answer are told apart by kind, not by words."""
    down = SmtpTransport(settings_for(free_port(), tmp_path), environ=NO_ENV)
    with down:
        outcome = down.send(make(["a@example.com"]), sender=SENDER, recipients=["a@example.com"])
    assert outcome.failure is not None and outcome.failure.kind is SendKind.UNREACHABLE
    with SMTPServer(credentials={"shop@menuiserie.fr": PASSWORD}) as srv:
        settings = settings_for(srv.port, tmp_path, smtp_user="shop@menuiserie.fr")
        with SmtpTransport(settings, environ={"COMMPLAN_SMTP_PASSWORD": "wrong"}) as t:
            refused = t.send(make(["a@example.com"]), sender=SENDER,
                             recipients=["a@example.com"])
    assert refused.failure is not None and refused.failure.kind is SendKind.LOGIN_REFUSED
    assert refused.failure.code == 535
    with SMTPServer(delay=2.0) as srv, SmtpTransport(
            settings_for(srv.port, tmp_path, smtp_timeout=0.5), environ=NO_ENV) as t:
        lost = t.send(make(["a@example.com"]), sender=SENDER, recipients=["a@example.com"])
    assert lost.delivery is Delivery.UNCERTAIN and lost.failure is not None
    assert lost.failure.kind is SendKind.UNCERTAIN


def test_callers_work_is_done_before_a_throttle_wait(smtp_server, tmp_path) -> None:
    """A server asking to slow down makes the transport wait; the caller's `before` work
    (which records the mail before this one as sent) is done before the wait, not after."""
    smtp_server.handler.mail_replies.append("452 4.5.3 too many messages, try again later")
    calls: list[float] = []
    with SmtpTransport(settings_for(smtp_server.port, tmp_path), environ=NO_ENV,
                       throttle_waits=[0.5]) as transport:
        start = time.monotonic()
        sent = transport.send(make(["a@example.com"]), sender=SENDER,
                              recipients=["a@example.com"],
                              before=lambda: calls.append(time.monotonic() - start))
        took = time.monotonic() - start
    assert sent.delivery is Delivery.DELIVERED and took >= 0.5
    assert len(calls) == 1 and calls[0] < 0.5


def test_callers_work_runs_while_the_server_works(smtp_server, tmp_path) -> None:
    """`before` runs once per message before the server can have taken it, even when the
    server is down; `meanwhile` after it, only while the server reads the message; if
    either raises, that is raised, the message does not go out, and the next one goes out
    on a new connection."""
    calls: list[str] = []
    with SmtpTransport(settings_for(smtp_server.port, tmp_path), environ=NO_ENV) as transport:
        sent = transport.send(make(["a@example.com"]), sender=SENDER,
                              recipients=["a@example.com"],
                              before=lambda: calls.append("before a"),
                              meanwhile=lambda: calls.append("meanwhile a"))
        assert sent.delivery is Delivery.DELIVERED
        assert calls == ["before a", "meanwhile a"]

        def broken() -> None:
            raise OSError("disk full while recording")

        for hook in ("before", "meanwhile"):
            with pytest.raises(OSError, match="disk full"):
                transport.send(make(["b@example.com"]), sender=SENDER,
                               recipients=["b@example.com"], **{hook: broken})
        transport.send(make(["c@example.com"]), sender=SENDER, recipients=["c@example.com"],
                       meanwhile=lambda: calls.append("meanwhile c")).checked()
        assert calls[-1] == "meanwhile c" and transport.connections == 3
    smtp_server.wait_for(2)
    assert [r.rcpt_tos for r in smtp_server.received] == [["a@example.com"],
                                                        ["c@example.com"]]
    down = SmtpTransport(settings_for(free_port(), tmp_path), environ=NO_ENV)
    with down:
        down.send(make(["d@example.com"]), sender=SENDER, recipients=["d@example.com"],
                  before=lambda: calls.append("before d"),
                  meanwhile=lambda: calls.append("meanwhile d"))
    assert calls[-2:] == ["meanwhile c", "before d"]
