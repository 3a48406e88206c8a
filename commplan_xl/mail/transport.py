"""The seam between the run and a mail provider: open, send one built message, close.

A transport never raises for one message: it answers with an `Outcome`. SMTP is the one
transport today (`mail/smtp.py`); another provider is one more class with these methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from commplan_xl.i18n import _
from commplan_xl.mail.message import BuiltMessage
from commplan_xl.problems import SendFailure, SendKind


class Delivery(Enum):
    """What became of one message."""

    DELIVERED = "delivered"  # the server took it (some recipients may have been refused)
    TEMPORARY = "temporary failure"  # not sent; a later run tries again
    PERMANENT = "permanent failure"  # not sent; not tried again until corrected
    UNCERTAIN = "uncertain"  # the line failed while the server took it: maybe sent


@dataclass(frozen=True)
class Refusal:
    """One recipient the server refused while it took the message for the others."""

    address: str
    code: int
    reply: str  # the server's words, e.g. "550 5.1.1 no such user"

    @property
    def temporary(self) -> bool:
        """Refused for now: 4xx, or 552 (RFC 5321 4.5.3.1.10: treat it as 452)."""
        return 400 <= self.code < 500 or self.code == 552

    def __str__(self) -> str:
        if self.temporary:
            return _("the mail server refused the address {address} for now ({reply})").format(
                address=self.address, reply=self.reply)
        return _("the mail server refused the address {address} ({reply}): correct the "
                 "customer's email").format(address=self.address, reply=self.reply)


@dataclass(frozen=True)
class Outcome:
    """The answer for one message: delivered, or the failure (its kind, the server's code
    and reply, the sentence)."""

    delivery: Delivery
    code: int | None = None
    reply: str = ""
    refused: tuple[Refusal, ...] = ()
    failure: SendFailure | None = None

    @classmethod
    def delivered(cls, code: int, reply: str, refused: Sequence[Refusal] = ()) -> Outcome:
        return cls(Delivery.DELIVERED, code, reply, tuple(refused))

    @classmethod
    def failed(cls, failure: SendFailure) -> Outcome:
        if failure.kind is SendKind.UNCERTAIN:
            delivery = Delivery.UNCERTAIN
        else:
            delivery = Delivery.TEMPORARY if failure.temporary else Delivery.PERMANENT
        return cls(delivery, failure.code, failure.reply, failure=failure)

    def checked(self) -> dict[str, str]:
        """The refused recipients (address -> sentence) when delivered; raises the failure
        otherwise."""
        if self.failure is not None:
            raise self.failure
        return {r.address: str(r) for r in self.refused}


class Transport(Protocol):
    """A way to hand mails to a provider, used as `with transport:` for a whole run."""

    def open(self) -> None:
        """Connect and authenticate (if not yet); raises SendFailure when it cannot."""

    def send(self, message: BuiltMessage | bytes, *, sender: str, recipients: Sequence[str],
             before: Callable[[], object] | None = None,
             meanwhile: Callable[[], object] | None = None) -> Outcome:
        """Hand over one message; reconnects as needed; never raises for the message.

        The caller's work, if given, runs while the provider works, before it can have
        taken the message: `before` exactly once (whether or not the message then goes
        out); `meanwhile` after it, only when the provider is reading the message. If
        either raises, the message is not sent: a SendFailure `before` raises is the
        Outcome, anything else they raise is raised. A provider with nothing to wait for
        calls them in that order before handing the message over.
        """

    def close(self) -> None:
        """Say goodbye and forget the connection."""

    def __enter__(self) -> Transport: ...

    def __exit__(self, *exc: object) -> None: ...
