"""Classify one message read back from the sending mailbox, and find which mail it reports.

Order matters, because bounces themselves carry `Auto-Submitted: auto-replied`:

1. a delivery report (`multipart/report; report-type=delivery-status`), read with the
   standard `email` package: Action, Status, Diagnostic-Code, Final-Recipient per recipient;
2. a read receipt (`report-type=disposition-notification`): never a bounce;
3. other bounce formats (plain-text Exim, qmail, Exchange 2003, ...) through flufl.bounce;
4. automatic replies (out of office): never a bounce.

`classify(raw)` gives a `BounceReport`; `match(report, known)` names the mail it reports.
Nothing here raises on a bad message: it becomes `Kind.UNREADABLE` with the reason.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import logging
import re
import secrets
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from commplan_xl.i18n import N_, _

__all__ = [
    "Kind", "RecipientStatus", "BounceReport", "classify", "match", "status_kind",
    "normalize_message_id", "new_ref", "REF_HEADER", "TO_REVIEW", "FAILURES",
]

REF_HEADER = "X-Commplan-Ref"  # our own opaque reference, set on every mail we send
TO_REVIEW = "to review"  # match(): our recipient is named, but no mail of ours


class Kind(StrEnum):
    """What a message read back from the mailbox means for the mail it reports."""

    HARD = "hard"  # the address or domain does not exist: flag the address
    SOFT = "soft"  # mailbox full, delivery expired, other temporary failure: due again
    SENDER_SIDE = "sender_side"  # our account or policy was refused: tell the IT person
    DELAYED = "delayed"  # still being retried by a server on the way: a note only
    AUTO_REPLY = "auto_reply"  # out of office and other automatic answers: nothing to do
    NOT_A_BOUNCE = "not_a_bounce"  # a person's reply, a read receipt, a success report
    UNREADABLE = "unreadable"  # a malformed report: logged and skipped


FAILURES = (Kind.HARD, Kind.SOFT, Kind.SENDER_SIDE)  # the kinds that turn a mail `failed`
# Most important first: the kind of a report naming several recipients.
_SEVERITY = (Kind.SENDER_SIDE, Kind.HARD, Kind.SOFT, Kind.DELAYED)


@dataclass(frozen=True)
class RecipientStatus:
    """One recipient of a delivery report."""

    address: str  # as we sent it (Original-Recipient, else Final-Recipient), lower-cased
    action: str  # failed | delayed | delivered | relayed | expanded | "" when not said
    status: str  # enhanced status code, e.g. "5.1.10"; "" when none was found
    diagnostic: str  # the remote server's words (Diagnostic-Code without its "smtp;")
    kind: Kind


@dataclass(frozen=True)
class BounceReport:
    """What one message read back says."""

    kind: Kind
    reason: str  # plain English, for the Journal's detail column and the to-handle list
    recipients: tuple[RecipientStatus, ...] = ()
    message_ids: tuple[str, ...] = ()  # Message-IDs of the original ("<…>"), best first
    refs: tuple[str, ...] = ()  # values of our X-Commplan-Ref header found in the report
    subject: str = ""
    sender: str = ""  # the report's From address
    report_id: str = ""  # the report's own Message-ID
    source: str = ""  # how it was recognised: dsn | flufl | headers | subject | ""

    @property
    def is_failure(self) -> bool:
        return self.kind in FAILURES

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(r.address for r in self.recipients)


# -------------------------------------------------------------------- status codes

_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_HARD_WORDS = (
    "user unknown", "unknown user", "no such user", "nosuchuser", "does not exist",
    "doesn't exist", "recipientnotfound", "recipient not found", "address not found",
    "couldn't be found", "could not be found", "unknown recipient", "invalid recipient",
    "no mailbox here", "no such recipient", "host or domain name not found",
    "domain not found", "mailbox not found", "unrouteable address",
)
_SENDER_WORDS = (
    "send as", "sendas", "not allowed to send", "not authorized to send",
    "not permitted to send", "relay access denied", "relaying denied", "spf", "dmarc", "dkim",
    "sender address rejected", "authentication required", "client does not have permission",
)
_FULL_WORDS = ("mailbox full", "mailbox is full", "quota", "insufficient storage",
               "out of storage", "overquota")
_EXPIRED_WORDS = ("expired", "timed out", "timeout", "too long", "retry time")


def _has(text: str, words: Iterable[str]) -> bool:
    low = text.lower()
    return any(w in low for w in words)


def _best_code(status: str, diagnostic: str) -> str:
    """The status field, or the more precise code the diagnostic gives (5.0.0 → 5.1.1)."""
    found = _CODE.search(status or "")
    code = ".".join(found.groups()) if found else ""
    in_diag = _CODE.search(diagnostic or "")
    if in_diag and (not code or code.endswith(".0.0")):
        better = ".".join(in_diag.groups())
        if not code or better[0] == code[0]:
            return better
    return code


def status_kind(status: str, diagnostic: str = "", action: str = "failed") -> Kind:
    """The kind of one recipient's failure from its action, status code and diagnostic.

    Hard: 5.1.x (bad address; 5.1.7/5.1.8 are our sender address), 5.2.1 (disabled),
    5.4.1 and 5.4.4, or words like "user unknown". Sender side: 5.7.x, 5.2.3 (our mail is
    too big), or words like "not allowed to send as". Soft: mailbox full, expired, every
    4.x.x, and any other 5.x.x (three soft bounces in a row count as hard).
    """
    action = action.strip().lower()
    if action == "delayed":
        return Kind.DELAYED
    if action in ("delivered", "relayed", "expanded"):
        return Kind.NOT_A_BOUNCE
    code = _best_code(status, diagnostic)
    klass, subject, detail = (code.split(".") + ["", "", ""])[:3] if code else ("", "", "")
    if klass == "2":
        return Kind.NOT_A_BOUNCE
    if klass == "4" or _has(diagnostic, _FULL_WORDS + _EXPIRED_WORDS):
        return Kind.SOFT
    if code in ("5.1.7", "5.1.8", "5.2.3"):  # our sender address, our message's size
        return Kind.SENDER_SIDE
    if subject == "7":
        hard = _has(diagnostic, _HARD_WORDS) and not _has(diagnostic, _SENDER_WORDS)
        return Kind.HARD if hard else Kind.SENDER_SIDE
    if subject == "1" or code in ("5.2.1", "5.4.1", "5.4.4") or _has(diagnostic, _HARD_WORDS):
        return Kind.HARD
    if _has(diagnostic, _SENDER_WORDS):
        return Kind.SENDER_SIDE
    return Kind.SOFT


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# The reason of a refusal because of our sending account (the summary mail's advice knows it).
SENDER_SIDE_REASON = N_("refused because of the sending account, not the address {who}{detail}: "
                        "the IT person should check that the account may send as the sender "
                        "address and the domain's SPF/DKIM records")


def _reason(kind: Kind, recipients: tuple[RecipientStatus, ...]) -> str:
    """One plain sentence for the most important recipient of the report."""
    worst = next((r for r in recipients if r.kind == kind), None)
    if worst is None:
        return _("a delivery report that names no failed recipient")
    said = _short(worst.diagnostic)
    detail = said if worst.status and worst.status in said else f"{worst.status} {said}".strip()
    detail = f" ({detail})" if detail else ""
    who = worst.address or _("the recipient")
    if kind == Kind.HARD:
        text = _("returned: the address {who} does not exist{detail}")
    elif kind == Kind.SENDER_SIDE:
        text = _(SENDER_SIDE_REASON)
    elif kind == Kind.DELAYED:
        text = _("delayed: delivery to {who} is still being retried{detail}")
    elif "2.2" in worst.status or _has(f"{worst.status} {worst.diagnostic}".lower(),
                                        _FULL_WORDS):
        text = _("returned: the mailbox of {who} is full{detail}")
    elif worst.status.endswith("4.7") or _has(f"{worst.status} {worst.diagnostic}".lower(),
                                               _EXPIRED_WORDS):
        text = _("returned: the server of {who} could not be reached in time{detail}")
    else:
        text = _("returned for now: the mail could not be delivered to {who}{detail}")
    return text.format(who=who, detail=detail)


def _overall(recipients: Iterable[RecipientStatus]) -> Kind:
    kinds = {r.kind for r in recipients}
    return next((k for k in _SEVERITY if k in kinds), Kind.NOT_A_BOUNCE)


# -------------------------------------------------------------------- headers

def _header(msg: email.message.Message, name: str) -> str:
    """A header decoded to text (RFC 2047 words, raw 8-bit as UTF-8), "" when absent."""
    value = msg.get(name)
    if value is None:
        return ""
    try:
        parts = email.header.decode_header(value)
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return str(value).strip()
    text = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            text.append(chunk)
            continue
        try:
            text.append(chunk.decode(_charset(charset), "replace"))
        except LookupError:
            text.append(chunk.decode("utf-8", "replace"))
    return "".join(text).strip()


def _charset(charset: str | None) -> str:
    return "utf-8" if not charset or charset == "unknown-8bit" else charset


_ID = re.compile(r"<[^<>\s]+>")


def new_ref() -> str:
    """A fresh value for our X-Commplan-Ref header: opaque, unique, safe in any header."""
    return "cp1-" + secrets.token_hex(8)


def normalize_message_id(value: str) -> str:
    """A Message-ID as "<local@domain>" (brackets added, spaces dropped), or ""."""
    value = "".join(str(value).split())
    if not value:
        return ""
    found = _ID.search(value)
    if found:
        return found.group(0)
    return f"<{value.strip('<>')}>" if "@" in value else ""


def _ids(value: str) -> list[str]:
    return _ID.findall(value or "")


class _Refs:
    """Message-IDs and our references, collected in order of trust, without repeats."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.refs: list[str] = []

    def add_id(self, value: str) -> None:
        mid = normalize_message_id(value)
        if mid and mid not in self.ids:
            self.ids.append(mid)

    def add_ref(self, value: str) -> None:
        value = value.strip()
        if value and value not in self.refs:
            self.refs.append(value)

    def from_original(self, headers: email.message.Message) -> None:
        self.add_id(_header(headers, "Message-ID"))
        for ref in headers.get_all(REF_HEADER) or []:
            self.add_ref(str(ref))


_TEXT_ID = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]+>)", re.I | re.M)
_TEXT_REF = re.compile(rf"^\s*{re.escape(REF_HEADER)}:\s*(\S+)", re.I | re.M)


def _collect_refs(msg: email.message.Message) -> _Refs:
    """Every reference to the original found in the report (see BounceReport)."""
    found = _Refs()
    found.add_id(_header(msg, "X-Original-Message-ID"))
    for part in msg.walk():
        _refs_in_part(part, found)
    for ref in msg.get_all(REF_HEADER) or []:
        found.add_ref(str(ref))
    for name in ("In-Reply-To", "References"):
        for mid in _ids(_header(msg, name)):
            found.add_id(mid)
    # A plain-text bounce quoting the original's headers in its body.
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            body = _text_of(part)
            for mid in _TEXT_ID.findall(body):
                found.add_id(mid)
            for ref in _TEXT_REF.findall(body):
                found.add_ref(ref)
    return found


def _refs_in_part(part: email.message.Message, found: _Refs) -> None:
    """The original's ids in a returned message, its returned headers or a report part."""
    ctype = part.get_content_type()
    if ctype in ("message/rfc822", "message/global"):
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
            found.from_original(inner[0])
    elif ctype in ("text/rfc822-headers", "message/rfc822-headers"):
        found.from_original(email.parser.HeaderParser().parsestr(_text_of(part)))
    elif ctype in _REPORT_PARTS:
        for block in _blocks(part)[:1]:
            found.add_id(_header(block, "X-Original-Message-ID"))
            found.add_id(_header(block, "Original-Message-ID"))


def _text_of(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


# -------------------------------------------------------------------- delivery reports

def _field(block: email.message.Message, name: str) -> str:
    """A DSN field without its type prefix ("rfc822;" / "smtp;")."""
    value = " ".join(_header(block, name).split())
    if ";" in value and name.lower() != "action":
        value = value.split(";", 1)[1].strip()
    return value


_REPORT_PARTS = ("message/delivery-status", "message/global-delivery-status",
                 "message/disposition-notification")


def _blocks(part: email.message.Message) -> list[email.message.Message]:
    """The field blocks of a report part (per-message first, then one per recipient)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [b for b in payload if isinstance(b, email.message.Message)]
    if not isinstance(payload, str):
        return []
    text = _text_of(part)  # left as text by the parser: read the blocks ourselves
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    return [email.parser.HeaderParser().parsestr(c) for c in chunks if c.strip()]


def _dsn_recipients(part: email.message.Message) -> tuple[RecipientStatus, ...]:
    result = []
    for block in _blocks(part)[1:]:
        address = _field(block, "Original-Recipient") or _field(block, "Final-Recipient")
        if not address:
            continue
        action = _field(block, "Action").lower()
        status = _field(block, "Status")
        diagnostic = _field(block, "Diagnostic-Code")
        result.append(RecipientStatus(
            address=address.strip("<> ").lower(), action=action,
            status=_best_code(status, diagnostic), diagnostic=diagnostic,
            kind=status_kind(status, diagnostic, action or "failed"),
        ))
    return tuple(result)


def _delivery_status_part(msg: email.message.Message) -> email.message.Message | None:
    for part in msg.walk():
        if part.get_content_type() in ("message/delivery-status",
                                       "message/global-delivery-status"):
            return part
    return None


def _report_type(msg: email.message.Message) -> str:
    if msg.get_content_type() != "multipart/report":
        return ""
    return str(msg.get_param("report-type", "") or "").lower()


def _from_dsn(msg: email.message.Message) -> tuple[Kind, str, tuple[RecipientStatus, ...]]:
    part = _delivery_status_part(msg)
    if part is None:
        return Kind.UNREADABLE, "a delivery report without its delivery-status part", ()
    recipients = _dsn_recipients(part)
    if not recipients:
        return Kind.UNREADABLE, "a delivery report that names no recipient", ()
    kind = _overall(recipients)
    if kind == Kind.NOT_A_BOUNCE:
        return kind, "a delivery report saying the mail was delivered", recipients
    return kind, _reason(kind, recipients), recipients


# -------------------------------------------------------------------- other bounce formats

def _from_flufl(msg: email.message.Message) -> tuple[RecipientStatus, ...]:
    """Recipients a non-standard bounce names, through flufl.bounce's detectors."""
    try:
        from flufl.bounce import all_failures
    except ImportError:  # optional at run time: then only delivery reports are understood
        return ()
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector choking on odd input must not stop the run
        return ()
    body = " ".join(_text_of(p) for p in msg.walk() if p.get_content_maintype() == "text")
    code = _best_code("", body)
    diagnostic = _diagnostic_line(body, code)
    result = []
    for address, temp in [(a, False) for a in sorted(permanent)] + [
            (a, True) for a in sorted(temporary - permanent)]:
        text = address.decode("utf-8", "replace") if isinstance(address, bytes) else address
        kind = status_kind(code or ("4.0.0" if temp else "5.0.0"), diagnostic)
        if temp and kind != Kind.SOFT:
            kind = Kind.SOFT
        result.append(RecipientStatus(
            address=text.strip("<> ").lower(), action="failed", status=code,
            diagnostic=diagnostic, kind=kind))
    return tuple(result)


def _diagnostic_line(body: str, code: str) -> str:
    """The line of a plain bounce that carries the status code or the server's refusal."""
    for line in body.splitlines():
        if (code and code in line) or re.search(r"\b[45]\d\d[ -]", line):
            return line.strip()
    return ""


# -------------------------------------------------------------------- automatic replies

_AUTO_HEADERS = (
    "X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Response-Suppress",
    "X-MS-Exchange-Inbox-Rules-Loop", "X-Vacation", "X-Apple-Mail-Autoreply",
)
_AUTO_SUBJECTS = (
    "réponse automatique", "reponse automatique", "absence du bureau", "absent du bureau",
    "message d'absence", "out of office", "out of the office", "automatic reply",
    "auto reply", "auto-reply", "autoreply", "auto response", "vacation reply",
    "abwesenheitsnotiz", "automatische antwort", "respuesta automática", "risposta automatica",
)


def _auto_reply(msg: email.message.Message) -> str:
    """How the message shows it is an automatic reply ("" when it does not)."""
    submitted = _header(msg, "Auto-Submitted").lower()
    if submitted and submitted != "no":
        return "headers"
    if any(msg.get(name) is not None for name in _AUTO_HEADERS):
        return "headers"
    if _header(msg, "Precedence").lower() == "auto_reply":
        return "headers"
    if _has(_header(msg, "Subject"), _AUTO_SUBJECTS):
        return "subject"
    return ""


# -------------------------------------------------------------------- the entry points

def _parse(raw: bytes) -> email.message.Message | None:
    if not raw or not raw.strip():
        return None
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    if not msg.keys():
        return None
    return msg


def classify(raw: bytes) -> BounceReport:
    """What this message read back from the mailbox means (never raises)."""
    try:
        msg = _parse(raw)
    except Exception as exc:  # the email package is lenient; this is a last resort
        return BounceReport(Kind.UNREADABLE, _("a message that could not be read ({error})")
                            .format(error=exc))
    if msg is None:
        return BounceReport(Kind.UNREADABLE, "an empty message, or one without headers")
    try:
        return _classify(msg)
    except Exception as exc:  # a malformed report is skipped, never crashes the run
        return BounceReport(Kind.UNREADABLE, _("a message that could not be read ({error})")
                            .format(error=exc),
                            **_about(msg))


def _about(msg: email.message.Message) -> dict[str, Any]:
    return {
        "subject": _header(msg, "Subject"),
        "sender": email.utils.parseaddr(_header(msg, "From"))[1].lower(),
        "report_id": normalize_message_id(_header(msg, "Message-ID")),
    }


def _classify(msg: email.message.Message) -> BounceReport:
    about = _about(msg)
    refs = _collect_refs(msg)
    with_refs = {"message_ids": tuple(refs.ids), "refs": tuple(refs.refs), **about}
    report_type = _report_type(msg)
    if msg.is_multipart() is False and msg.get_content_maintype() == "multipart":
        return BounceReport(Kind.UNREADABLE,
                            "a multipart message without its parts (no boundary)", **about)
    if report_type == "delivery-status" or _delivery_status_part(msg) is not None:
        kind, reason, recipients = _from_dsn(msg)
        return BounceReport(kind, reason, recipients, source="dsn", **with_refs)
    if report_type == "disposition-notification":
        return BounceReport(Kind.NOT_A_BOUNCE, "a read receipt: the mail was opened",
                            source="headers", **with_refs)
    recipients = _from_flufl(msg)
    if recipients:
        kind = _overall(recipients)
        return BounceReport(kind, _reason(kind, recipients), recipients, source="flufl",
                            **with_refs)
    how = _auto_reply(msg)
    if how:
        return BounceReport(Kind.AUTO_REPLY,
                            "an automatic reply (such as out of office), not a returned mail",
                            source=how, **with_refs)
    return BounceReport(Kind.NOT_A_BOUNCE, "not a returned mail", **with_refs)


def match(report: BounceReport, known: Mapping[str, Any],
          addresses: Container[str] = ()) -> Any:
    """The key of our mail this report is about, `TO_REVIEW`, or None.

    `known` maps our Message-IDs ("<…>") and our reference values to our message keys;
    anything with `.get(key)` will do (a ledger look-up, for instance). Our reference is
    tried first, then the Message-IDs. When nothing matches but the report names one of
    `addresses` (our recipients, lower-cased), it is `TO_REVIEW`: never guessed silently.
    """
    for ref in report.refs:
        key = known.get(ref)
        if key is not None:
            return key
    for mid in report.message_ids:
        key = known.get(mid)
        if key is not None:
            return key
    if any(address in addresses for address in report.addresses):
        return TO_REVIEW
    return None
