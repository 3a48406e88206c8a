"""What a run did, as records the send loop fills and the reports and commands read."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol

from commplan_xl.i18n import N_, _
from commplan_xl.problems import SendKind, WorkbookProblem

# How the detail of a mail refused for its content or a policy ends.
CONTENT_NOT_RETRIED = N_("not retried: change the mail, or ask the mail provider why")


def last_try(catch_up_days: int, due_date: dt.date | None, day: dt.date) -> bool:
    """Whether no later day's run tries a message due on `due_date` again (past
    catch_up_days); False when the due date is not known."""
    return due_date is not None and due_date + dt.timedelta(days=catch_up_days) <= day


class DueMessage(Protocol):
    """A message by its order, step and due date (a Decision, a mail sent)."""

    @property
    def order_id(self) -> str: ...
    @property
    def step(self) -> int: ...
    @property
    def due_date(self) -> dt.date | None: ...


def retry_promise(catch_up_days: int, message: DueMessage, day: dt.date, promise: str) -> str:
    """`promise` (a later run retries the message) when a later day's run still may:
    with catch_up_days 0 (or a due date at the end of the window) it says the truth."""
    if not last_try(catch_up_days, message.due_date, day):
        return promise
    return _("will not be retried after today (catch_up_days is {days}); once fixed, "
             "`commplan resend {order} {step}` sends it").format(
                 days=catch_up_days, order=message.order_id, step=message.step)


@dataclass(frozen=True)
class RunFailure:
    """One mail of the run that did not go out: which, why, and the sentence saying so."""

    order_id: str
    step: int
    kind: SendKind
    detail: str  # the sentence, as the ledger records it
    # False when the detail names the mail itself (a returned mail), or the person named
    # the order and step themselves (`commplan resend`).
    named: bool = True
    # True when no later day's run tries the mail again (past catch_up_days).
    last_try: bool = False

    def __str__(self) -> str:
        if not self.named:
            return self.detail
        if self.kind is SendKind.UNCERTAIN:
            return _("Order {order} step {step} is uncertain: {detail}").format(
                order=self.order_id, step=self.step, detail=self.detail)
        return _("Order {order} step {step}: {detail}").format(
            order=self.order_id, step=self.step, detail=self.detail)


@dataclass
class RunReport:
    """What a run did, for the closing summary and the exit status."""

    today: dt.date
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    uncertain: int = 0
    waiting: int = 0
    not_tried: int = 0
    refused: int = 0  # mails sent with some recipients refused for good
    # Mails waiting for an empty cell to be filled: "Order O1 step 3 waits for X" each.
    held: list[str] = field(default_factory=list)
    dry_run: bool = False
    problems: tuple[WorkbookProblem, ...] = ()
    notes: list[str] = field(default_factory=list)  # sentences for people
    log_written: bool = True
    failures: list[RunFailure] = field(default_factory=list)
    returned: int = 0  # mails found returned (bounced) in the mailbox, or to review
    mailbox_error: str = ""  # why returned mails could not be read ("" when they were)

    @property
    def needs_attention(self) -> bool:
        return bool(
            self.failed or self.uncertain or self.refused or self.problems
            or not self.log_written
            or self.not_tried or self.returned or self.mailbox_error
        )
