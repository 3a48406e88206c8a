"""The small exception hierarchy: every error carries a sentence for people."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class CommplanError(Exception):
    """An error that ends a command with a plain sentence (exit 1)."""


class WorkbookLocked(CommplanError):
    """The workbook is open in Excel or LibreOffice, so the tool must not write it."""


class RunLocked(CommplanError):
    """Another run holds the home folder."""


@dataclass(frozen=True)
class WorkbookProblem:
    """One problem in the workbook, at its place as Excel shows it.

    `row` is Excel's row number (header = 1) or None for a whole sheet; `column` is the
    normalised column name or None.
    """

    sheet: str
    row: int | None
    column: str | None
    message: str
    cell: str | None = None  # e.g. "D7" when the column letter is known
    # A problem of one message rather than of the row (a missing attachment file, a template
    # that cannot render for one order): reported, but the step stays scheduled and its
    # message is recorded `failed` (temporary) until fixed.
    message_level: bool = False

    def __str__(self) -> str:
        place = self.sheet
        if self.cell:
            place += f"!{self.cell}"
        elif self.row is not None:
            place += f"!{self.row}" if self.column is None else f" row {self.row}"
        if self.column:
            place += f" ({self.column})"
        return f"{place}: {self.message}"


class SendKind(Enum):
    """Why a mail was not sent, as the run and its advice tell them apart."""

    TEMPORARY = "temporary"  # the server refused it for now (4xx): a later run retries
    PERMANENT = "permanent"  # refused for good (5xx, an invalid address): not retried
    UNCERTAIN = "uncertain"  # the line failed while the server took it: maybe sent
    UNREACHABLE = "unreachable"  # no connection, or it dropped before the server took it
    LOGIN_REFUSED = "login refused"  # the server or the sign-in refused the credentials
    SETUP = "setup"  # the site's settings: no password, sender refused, TLS or AUTH missing
    NOT_BUILT = "not built"  # the mail could not be made (template, attachment, address)

    @property
    def temporary(self) -> bool:
        """Whether a later run tries the mail again by itself."""
        return self not in (SendKind.PERMANENT, SendKind.UNCERTAIN)

    @property
    def connection(self) -> bool:
        """Whether the connection itself failed: the run stops trying after a few in a row."""
        return self in (SendKind.UNCERTAIN, SendKind.UNREACHABLE, SendKind.LOGIN_REFUSED,
                        SendKind.SETUP)


def _kind_of(temporary: bool | None, connection: bool) -> SendKind:
    if connection:
        return SendKind.UNREACHABLE if temporary or temporary is None else SendKind.UNCERTAIN
    return SendKind.TEMPORARY if temporary else SendKind.PERMANENT


class SendFailure(CommplanError):
    """A message could not be sent: its kind, and what the server said when it answered
    (`code`, `reply`) about which `recipient`. `str()` is the sentence for people.

    `temporary`/`connection` may stand for the kind (older callers): temporary and
    connection make UNREACHABLE, temporary alone TEMPORARY, neither PERMANENT.
    """

    def __init__(self, message: str, *, kind: SendKind | None = None,
                 temporary: bool | None = None, connection: bool = False,
                 code: int | None = None, reply: str = "", recipient: str = "") -> None:
        super().__init__(message)
        self.kind = kind if kind is not None else _kind_of(temporary, connection)
        self.code = code
        self.reply = reply
        self.recipient = recipient

    @property
    def temporary(self) -> bool:
        """Retried by later runs."""
        return self.kind.temporary

    @property
    def connection(self) -> bool:
        """The connection itself failed (server down, dropped, login refused)."""
        return self.kind.connection


class SendUncertain(SendFailure):
    """The connection failed while the message was being handed over: the server may have
    it. The ledger records `uncertain` and never sends it again automatically."""

    def __init__(self, message: str, **kw: object) -> None:
        kw.pop("temporary", None)
        kw.pop("connection", None)
        kw["kind"] = SendKind.UNCERTAIN
        super().__init__(message, **kw)  # type: ignore[arg-type]
