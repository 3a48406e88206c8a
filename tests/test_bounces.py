"""Classifying messages read back from the mailbox, and matching them to the mail reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from commplan_xl.mail.bounces import (
    TO_REVIEW,
    BounceReport,
    Kind,
    classify,
    match,
    new_ref,
    normalize_message_id,
    status_kind,
)

SAMPLES = Path(__file__).parent / "bounces"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


# file -> (kind, recipient, status, Message-ID of the original, our reference)
EXPECTED = {
    "m365_recipient_not_found.eml": (
        Kind.HARD, "jean.dupont@client-inconnu.fr", "5.1.10",
        "<176480521447.2811.9912844377665210321@menuiserie-durand.fr>", "cp1-7f3a9c2e41d0b6"),
    "gmail_address_not_found.eml": (
        Kind.HARD, "sophie.bernart@gmail.com", "5.1.1",
        "<176480554102.2811.4410987123309871265@menuiserie-durand.fr>", "cp1-19be07d54c2a88"),
    "postfix_mailbox_full.eml": (
        Kind.SOFT, "marie.leroy@fournisseur-mail.fr", "5.2.2",
        "<176480592133.2811.1029384756473829101@menuiserie-durand.fr>", "cp1-a04c77e9d3f215"),
    "postfix_delayed.eml": (
        Kind.DELAYED, "luc.moreau@cabinet-moreau.fr", "4.4.1",
        "<176480609588.2811.5566778899001122334@menuiserie-durand.fr>", "cp1-5e8d21b07f6c93"),
    "m365_send_as_denied.eml": (
        Kind.SENDER_SIDE, "nathalie.roux@orange.fr", "5.7.60",
        "<176480892811.2811.1122334455667788990@menuiserie-durand.fr>", "cp1-08f1d6b3a29e5c"),
    "exim_no_such_user.eml": (
        Kind.HARD, "paul.girard@artisan-web.fr", "5.1.1",
        "<176480791145.2811.6677889900112233445@menuiserie-durand.fr>", "cp1-c93e5a10b8d447"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bounce_sample_is_classified(name):
    """Each returned-mail sample gives its kind, recipient, status and original's ids."""
    kind, address, status, message_id, ref = EXPECTED[name]
    report = classify(sample(name))
    assert report.kind == kind
    assert [(r.address, r.status) for r in report.recipients] == [(address, status)]
    assert report.message_ids[0] == message_id
    assert report.refs == (ref,)


@pytest.mark.parametrize(("name", "kind", "reason"), [
    ("exchange_out_of_office.eml", Kind.AUTO_REPLY,
     "an automatic reply (such as out of office), not a returned mail"),
    ("reponse_automatique.eml", Kind.AUTO_REPLY,
     "an automatic reply (such as out of office), not a returned mail"),
    ("read_receipt.eml", Kind.NOT_A_BOUNCE, "a read receipt: the mail was opened"),
    ("malformed.eml", Kind.UNREADABLE, "a multipart message without its parts (no boundary)"),
])
def test_replies_receipts_and_broken_reports_are_never_bounces(name, kind, reason):
    """Out of office, read receipts and malformed reports name no failed recipient."""
    report = classify(sample(name))
    assert (report.kind, report.reason) == (kind, reason)
    assert report.recipients == ()
    assert not report.is_failure


def test_an_auto_reply_still_points_at_our_mail():
    """An out-of-office names the mail it answers (In-Reply-To), for the record only."""
    report = classify(sample("reponse_automatique.eml"))
    assert report.message_ids == (
        "<176480710533.2811.3344556677889900112@menuiserie-durand.fr>",)
    assert report.subject == ("Réponse automatique : Votre commande CMD-2026-0420 est"
                              " disponible")
    assert report.sender == "claire.petit@laposte.net"


@pytest.mark.parametrize(("name", "reason"), [
    ("m365_recipient_not_found.eml",
     "returned: the address jean.dupont@client-inconnu.fr does not exist (550 5.1.10"
     " RESOLVER.ADR.RecipientNotFound; Recipient jean.dupont@client-inconnu.fr not found by"
     " SMTP address lookup)"),
    ("postfix_mailbox_full.eml",
     "returned: the mailbox of marie.leroy@fournisseur-mail.fr is full (552 5.2.2"
     " <marie.leroy@fournisseur-mail.fr>: Recipient address rejected: Mailbox full)"),
    ("postfix_delayed.eml",
     "delayed: delivery to luc.moreau@cabinet-moreau.fr is still being retried (4.4.1"
     " connect to mx.cabinet-moreau.fr[91.121.44.12]:25: Connection timed out)"),
    ("m365_send_as_denied.eml",
     "refused because of the sending account, not the address nathalie.roux@orange.fr"
     " (550 5.7.60 SMTP; Client does not have permissions to send as this sender.): the IT"
     " person should check that the account may send as the sender address and the"
     " domain's SPF/DKIM records"),
])
def test_the_reason_says_it_in_plain_words(name, reason):
    """The reason names the address, what happened and the provider's own words."""
    assert classify(sample(name)).reason == reason


def test_a_bounce_is_recognised_before_its_auto_submitted_header():
    """Bounces carry Auto-Submitted: auto-replied too; the delivery report wins."""
    raw = sample("m365_recipient_not_found.eml")
    assert b"Auto-Submitted: auto-replied" in raw
    assert classify(raw).kind == Kind.HARD


def test_the_report_type_parameter_is_not_required():
    """A multipart/report with a delivery-status part but no report-type is still read."""
    raw = sample("postfix_mailbox_full.eml").replace(b" report-type=delivery-status;", b"")
    assert classify(raw).kind == Kind.SOFT


def test_a_report_naming_no_recipient_is_unreadable():
    """A delivery-status part without any recipient block cannot be acted on."""
    raw = sample("postfix_delayed.eml")
    start = raw.index(b"Final-Recipient")
    end = raw.index(b"Will-Retry-Until")
    report = classify(raw[:start] + raw[end:].split(b"\n", 1)[1])
    assert report.kind == Kind.UNREADABLE
    assert report.reason == "a delivery report that names no recipient"


@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"\x00\xff\xfe not a mail at all"])
def test_garbage_is_unreadable_not_a_crash(raw):
    """Empty or binary junk becomes an unreadable report; classify never raises."""
    assert classify(raw).kind in (Kind.UNREADABLE, Kind.NOT_A_BOUNCE)
    assert classify(raw).recipients == ()


def test_a_success_report_is_not_a_bounce():
    """A delivery report with Action: delivered is not a failure."""
    raw = sample("postfix_mailbox_full.eml").replace(b"Action: failed", b"Action: delivered")
    raw = raw.replace(b"Status: 5.2.2", b"Status: 2.0.0")
    report = classify(raw)
    assert report.kind == Kind.NOT_A_BOUNCE
    assert report.reason == "a delivery report saying the mail was delivered"


@pytest.mark.parametrize(("status", "diagnostic", "action", "kind"), [
    ("5.1.1", "", "failed", Kind.HARD),
    ("5.1.10", "RecipientNotFound", "failed", Kind.HARD),
    ("5.1.2", "Host or domain name not found", "failed", Kind.HARD),
    ("5.4.1", "Recipient address rejected: Access denied", "failed", Kind.HARD),
    ("5.0.0", "550 5.1.1 <x@y.fr>: Recipient address rejected: User unknown", "failed",
     Kind.HARD),
    ("5.0.0", "The email account that you tried to reach does not exist. NoSuchUser",
     "failed", Kind.HARD),
    ("5.2.2", "Mailbox full", "failed", Kind.SOFT),
    ("4.2.2", "over quota", "failed", Kind.SOFT),
    ("4.4.7", "delivery time expired", "failed", Kind.SOFT),
    ("5.4.7", "Message expired", "failed", Kind.SOFT),
    ("4.7.0", "try again later", "failed", Kind.SOFT),
    ("5.7.60", "Client does not have permissions to send as this sender", "failed",
     Kind.SENDER_SIDE),
    ("5.7.1", "Service unavailable; client host blocked using Spamhaus", "failed",
     Kind.SENDER_SIDE),
    ("5.7.26", "unauthenticated email from menuiserie-durand.fr is not accepted due to DMARC",
     "failed", Kind.SENDER_SIDE),
    ("5.1.8", "Sender address rejected: Domain not found", "failed", Kind.SENDER_SIDE),
    ("4.4.1", "Connection timed out", "delayed", Kind.DELAYED),
    ("2.0.0", "", "delivered", Kind.NOT_A_BOUNCE),
    ("5.3.0", "Other mail system problem", "failed", Kind.SOFT),
])
def test_status_codes_map_to_kinds(status, diagnostic, action, kind):
    """Hard for bad addresses, soft for full/expired/temporary, sender side for 5.7.x."""
    assert status_kind(status, diagnostic, action) == kind


@pytest.mark.parametrize("subject", [
    "Réponse automatique : Votre commande", "Absence du bureau", "Out of Office: back Monday",
    "Automatic reply: Votre commande", "RE: Votre commande [Auto-Reply]",
])
def test_auto_reply_subjects(subject):
    """A plain mail whose subject says it is an automatic reply is an auto-reply."""
    raw = (f"From: a@client.fr\r\nTo: commandes@menuiserie-durand.fr\r\nSubject: {subject}"
           "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nJe suis absent.\r\n")
    assert classify(raw.encode()).kind == Kind.AUTO_REPLY


@pytest.mark.parametrize("header", [
    "X-Autoreply: yes", "X-Autorespond: vacation", "X-MS-Exchange-Inbox-Rules-Loop: a@client.fr",
    "X-Auto-Response-Suppress: All", "Precedence: auto_reply", "Auto-Submitted: auto-generated",
])
def test_auto_reply_headers(header):
    """The usual automatic-reply headers make a mail an auto-reply, whatever its subject."""
    raw = (f"From: a@client.fr\r\nSubject: Re: votre commande\r\n{header}\r\n\r\nMerci\r\n")
    assert classify(raw.encode()).kind == Kind.AUTO_REPLY


def test_a_person_s_reply_is_not_a_bounce():
    """A customer answering our mail is neither a bounce nor an auto-reply."""
    raw = (b"From: Jean <jean@client.fr>\r\nSubject: Re: Votre commande\r\n"
           b"In-Reply-To: <1@menuiserie-durand.fr>\r\n\r\nMerci, a bientot.\r\n")
    report = classify(raw)
    assert report.kind == Kind.NOT_A_BOUNCE
    assert report.message_ids == ("<1@menuiserie-durand.fr>",)


# ------------------------------------------------------------------------ matching

KNOWN = {
    "<176480521447.2811.9912844377665210321@menuiserie-durand.fr>": ("CMD-2026-0412", 1),
    "cp1-a04c77e9d3f215": ("CMD-2026-0388", 4),
}


def test_a_report_is_matched_by_the_original_message_id():
    """The returned original's Message-ID names our mail."""
    assert match(classify(sample("m365_recipient_not_found.eml")), KNOWN) == (
        "CMD-2026-0412", 1)


def test_a_report_is_matched_by_our_reference_header():
    """Our X-Commplan-Ref in the returned headers names our mail, tried first."""
    known = {"cp1-a04c77e9d3f215": ("CMD-2026-0388", 4),
             "<176480592133.2811.1029384756473829101@menuiserie-durand.fr>": ("other", 9)}
    assert match(classify(sample("postfix_mailbox_full.eml")), known) == ("CMD-2026-0388", 4)


def test_only_our_recipient_named_is_to_review():
    """A bounce naming our customer's address but no mail of ours is listed "to review"."""
    raw = sample("exim_no_such_user.eml").split(b"------ This is a copy")[0]
    report = classify(raw)
    assert report.kind == Kind.HARD
    assert report.message_ids == ()
    assert match(report, KNOWN, addresses={"paul.girard@artisan-web.fr"}) == TO_REVIEW


def test_a_report_about_someone_else_matches_nothing():
    """A bounce of a mail that is not ours is left alone."""
    report = classify(sample("gmail_address_not_found.eml"))
    assert match(report, KNOWN, addresses={"someone@else.fr"}) is None


def test_match_uses_only_get_so_a_ledger_can_answer():
    """Any object with .get() works as `known` (a ledger look-up, for instance)."""

    class Ledger:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def get(self, key: str):
            self.asked.append(key)
            return 42 if key == "cp1-19be07d54c2a88" else None

    ledger = Ledger()
    assert match(classify(sample("gmail_address_not_found.eml")), ledger) == 42
    assert ledger.asked == ["cp1-19be07d54c2a88"]


def test_match_of_an_empty_report_is_none():
    """A report with no references and no recipients matches nothing."""
    assert match(BounceReport(Kind.UNREADABLE, "x"), KNOWN, addresses={"a@b.fr"}) is None


@pytest.mark.parametrize(("value", "expected"), [
    ("<abc@x.fr>", "<abc@x.fr>"), (" <abc@x.fr> ", "<abc@x.fr>"), ("abc@x.fr", "<abc@x.fr>"),
    ("<abc\r\n @x.fr>", "<abc@x.fr>"), ("", ""), ("no id here", ""),
])
def test_message_ids_are_normalised(value, expected):
    """Message-IDs compare in one form: angle brackets, no folding spaces."""
    assert normalize_message_id(value) == expected


def test_our_reference_is_found_wherever_the_report_returns_it():
    """A fresh reference set on a mail is found again in a report returning its headers."""
    ref = new_ref()
    assert ref != new_ref()
    raw = sample("postfix_mailbox_full.eml").replace(b"cp1-a04c77e9d3f215", ref.encode())
    assert match(classify(raw), {ref: "ours"}) == "ours"
