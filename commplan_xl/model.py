"""Plain frozen records handed from one stage to the next."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from operator import itemgetter
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from commplan_xl.core.units import Unit


class Status(StrEnum):
    """An order's status, whatever the spelling in the Orders sheet."""

    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"


class Action(StrEnum):
    """What a run does with one due message."""

    SEND = "send"
    SKIP = "skip"
    WAIT = "wait"  # held back by daily_limit, or its mail cannot be built yet


class OutcomeStatus(StrEnum):
    """How one message ended, as the SentLog shows it."""

    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNCERTAIN = "uncertain"


def norm_key(value: str) -> str:
    """How plan names, units and statuses compare: trimmed, case-insensitive."""
    return " ".join(str(value).split()).casefold()


@dataclass(frozen=True)
class Step:
    """One message of a plan (one row of the Plans sheet)."""

    plan: str  # the plan's display name, as first written in Plans
    number: int  # 1..10
    delay: float  # >= 0; whole for days / business days
    unit: Unit
    subject: str  # Jinja2 source
    body: str  # Jinja2 source
    from_column: str = "start_date"  # normalised Orders column the delay counts from
    attachments: tuple[str, ...] = ()  # file names inside attachments/
    active: bool = True
    required: bool = False
    row: int = 0  # Excel row in Plans


@dataclass(frozen=True)
class Plan:
    name: str  # display name
    steps: tuple[Step, ...]  # sorted by number

    @property
    def key(self) -> str:
        return norm_key(self.name)


@dataclass(frozen=True)
class Customer:
    customer_id: str
    name: str
    emails: tuple[str, ...]  # trimmed, lower-cased, validated
    opt_out: bool = False
    fields: dict[str, Any] = field(default_factory=dict)  # every column, normalised names
    row: int = 0


class Order(NamedTuple):
    """One order (one row of the Orders sheet).

    A NamedTuple, like Decision: validation makes 50,000 of these at once from whole
    columns, which a tuple allows without a Python call per order.
    """

    order_id: str
    customer_id: str
    plan: str  # plan key (norm_key of the plan name)
    status: Status = Status.ACTIVE
    # Every date column the plans count from, parsed; None when the cell is empty.
    dates: Mapping[str, dt.date | None] = MappingProxyType({})
    # Every column, normalised names (a dict, or a RowFields view of the sheet's columns).
    fields: Mapping[str, Any] = MappingProxyType({})
    hold_steps: frozenset[int] = frozenset()
    row: int = 0


class RowFields(Mapping[str, Any]):
    """One row's values by column, read from its sheet's columns when asked.

    `due` never reads an order's fields, and a dict each for 50,000 orders cost as much as
    all their checks; a template reads the few it names.
    """

    __slots__ = ("_columns", "_index")

    def __init__(self, columns: Mapping[str, Sequence[Any]], index: int) -> None:
        self._columns = columns  # column -> values by row, never changed afterwards
        self._index = index

    def __getitem__(self, key: str) -> Any:
        return self._columns[key][self._index]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def __repr__(self) -> str:
        return repr(dict(self))


@dataclass(frozen=True)
class Model:
    """The validated workbook: only rows without problems are here."""

    plans: dict[str, Plan]  # by plan key
    customers: dict[str, Customer]  # by customer_id
    orders: tuple[Order, ...]
    constants: dict[str, str]  # Variables sheet: name -> value

    @functools.cached_property
    def orders_by_id(self) -> tuple[Order, ...]:
        """The orders in order_id order (the schedule lists its decisions so)."""
        return tuple(sorted(self.orders, key=itemgetter(0)))  # Order.order_id


# Ledger states of one message (order, step).
MessageState = Literal[
    "sending",  # written just before the send; found at start of a run, it becomes uncertain
    "sent",
    "failed",  # temporary failure: retried while within catch-up
    "failed_permanent",  # not retried unless the customer's address changes
    "skipped",  # missed or superseded: never sent
    "uncertain",  # a crash between "sending" and the outcome: never resent automatically
    "waiting",  # held back by daily_limit: not counted as missed while it waits
]


@dataclass(frozen=True)
class LedgerEntry:
    """What the ledger knows of one message (order, step); `plan` is the plan key it was
    last recorded under."""

    order_id: str
    plan: str  # plan key
    step: int
    state: MessageState
    due_date: dt.date | None = None
    emails: str = ""  # the addresses of the last attempt, "a@x;b@y"
    detail: str = ""
    updated: dt.datetime | None = None
    attempts: int = 0  # send attempts so far (begin() calls)
    first_waiting: dt.date | None = None  # the day it first waited for daily_limit


@dataclass(frozen=True)
class MessageRef:
    """One message (order, step), the plan it goes out under and its recipient, as every
    ledger write names it."""

    order_id: str
    customer_id: str
    plan: str  # the plan's name as the SentLog shows it
    plan_key: str
    step: int
    due_date: dt.date | None
    emails: str  # the addresses, "a@x;b@y"


class Decision(NamedTuple):
    """What a run on one day does with one message.

    A NamedTuple rather than a dataclass: a first run over an old base builds hundreds of
    thousands of these, and a tuple is several times cheaper to create.
    """

    order_id: str
    customer_id: str
    plan: str  # plan key
    plan_name: str  # display name
    step: int
    due_date: dt.date
    action: Action
    reason: str = ""  # "due", "retry", "missed", "superseded by step 4", "daily limit"…


@dataclass(frozen=True)
class Outcome:
    """One attempt or decision, as a SentLog row shows it."""

    date: dt.datetime
    order_id: str
    customer_id: str
    email: str
    plan: str
    step: int
    due_date: dt.date | None
    status: OutcomeStatus
    subject: str = ""
    detail: str = ""
    archive_file: str = ""
    # The run's day (`--today`), which `date` (the clock) is not in backfills and tests;
    # None when the ledger did not say. Not compared: it only adds to what `date` says.
    day: dt.date | None = field(default=None, compare=False)
