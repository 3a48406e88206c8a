"""What the ledger is asked: the state the schedule decides from, and the history the
reports (SentLog, Dashboard, Forecast) are built from. Nothing here writes."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import PurePosixPath

from commplan_xl.gc_pause import no_gc
from commplan_xl.model import LedgerEntry, Outcome, norm_key
from commplan_xl.store.ledger_snapshot import MAX_PACKED_STEP, LedgerSnapshot
from commplan_xl.store.sentlog import SENTLOG_QUERY

# The columns of a `messages` row as `_entry` reads them.
ENTRY_COLUMNS = ("order_id, plan_key, step, state, due_date, emails, detail, updated, "
                 "attempts, first_waiting")


@dataclass(frozen=True)
class SentMail:
    """One mail handed to the server (a send attempt), as a returned mail names it."""

    send_id: int
    order_id: str
    customer_id: str
    plan: str  # display name
    plan_key: str
    step: int
    emails: str
    subject: str
    due_date: dt.date | None = None  # the message's due date, when recorded


@dataclass(frozen=True)
class ReturnedMail:
    """One returned mail to record (see Ledger.record_returned)."""

    folder: str
    uidvalidity: int
    uid: int
    kind: str  # hard | soft | sender_side | delayed | to_review
    send_id: int | None = None  # the mail it reports; None when to review
    address: str = ""
    status: str = ""
    reason: str = ""
    subject: str = ""
    report_id: str = ""
    state: str = ""  # the reported mail's new state: failed | failed_permanent | "" (none)
    detail: str = ""  # the SentLog detail of its failed row


class SentMails:
    """Our mails by Message-ID or reference value (what `bounces.match` asks)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def get(self, key: str) -> SentMail | None:
        row = self.db.execute(
            "SELECT s.id, s.order_id, s.customer_id, s.plan, s.plan_key, s.step, s.emails, "
            "s.subject, s.due_date FROM mail_ids i JOIN sends s ON s.id = i.send_id "
            "WHERE i.ref = ?1 OR i.message_id = ?1 ORDER BY s.id DESC LIMIT 1", (key,),
        ).fetchone()
        if row is None:
            return None
        *fields, due = row
        return SentMail(*fields, due_date=_date(due) if due else None)


class Recipients:
    """Whether an address (lower-case) is one we sent to (what `bounces.match` asks)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str) or not address:
            return False
        return self.db.execute(
            "SELECT 1 FROM sends WHERE instr(';' || lower(emails) || ';', ?) LIMIT 1",
            (f";{address.lower()};",),
        ).fetchone() is not None


class LedgerReads:
    """The read queries of `Ledger` (which provides the open connection as `db`)."""

    @property
    def db(self) -> sqlite3.Connection:
        raise NotImplementedError

    def state(self) -> LedgerSnapshot:
        """Every message the ledger knows, by (order key, step) (see `message_key`).

        Messages that are done (sent, skipped, uncertain, sending) are the bulk of a
        long-lived ledger and the schedule only asks whether they are done: SQLite sums them
        into one integer per order, a bit per done step (and another with two bits for its
        state), so a ledger of 200,000 messages reads as 40,000 numbers.
        """
        # Speed (measured on bench/): one row of two JSON objects, not a row per order: the
        # thread reading the ledger beside the workbook's checks then takes the interpreter
        # once, not once per row.
        masks, states = self.db.execute(
            "SELECT json_group_object(order_key, mask), json_group_object(order_key, code) "
            "FROM (SELECT order_key, sum(1 << step) AS mask, sum((CASE state WHEN 'sent' "
            "THEN 0 WHEN 'skipped' THEN 1 WHEN 'uncertain' THEN 2 ELSE 3 END) << (2 * step)) "
            "AS code FROM messages WHERE state IN ('sent', 'skipped', 'uncertain', 'sending') "
            f"AND step BETWEEN 0 AND {MAX_PACKED_STEP} GROUP BY order_key)"
        ).fetchone()
        with no_gc():  # many small acyclic objects
            steps: dict[str, int] = json.loads(masks)
            codes: dict[str, int] = json.loads(states)
        # The rest (and a done step beyond what the bits hold, which validation never lets
        # a plan have) as full entries.
        rows = self.db.execute(
            f"SELECT order_key, {ENTRY_COLUMNS} FROM messages "
            "WHERE state NOT IN ('sent', 'skipped', 'uncertain', 'sending') "
            f"OR step NOT BETWEEN 0 AND {MAX_PACKED_STEP}"
        )
        open_entries = {(row[0], row[3]): entry_of(row[1:]) for row in rows}
        return LedgerSnapshot(steps, codes, open_entries)

    def entry(self, order_id: str, step: int) -> LedgerEntry | None:
        """What the ledger knows of one message (the order id folded), or None if nothing."""
        row = self.db.execute(
            f"SELECT {ENTRY_COLUMNS} FROM messages WHERE order_key = ? AND step = ?",
            (norm_key(order_id), step),
        ).fetchone()
        return entry_of(row) if row else None

    def entries_in(self, *states: str) -> list[LedgerEntry]:
        """Every message in one of `states` (e.g. failed_permanent, uncertain)."""
        marks = ", ".join("?" * len(states))
        rows = self.db.execute(
            f"SELECT {ENTRY_COLUMNS} FROM messages WHERE state IN ({marks})", states)
        return [entry_of(row) for row in rows]

    def returned_messages(self) -> set[tuple[str, int]]:
        """(order key, step) of the messages whose last mail came back as a hard bounce."""
        rows = self.db.execute(
            "SELECT m.order_key, m.step FROM messages m JOIN returned r ON r.send_id = "
            "m.send_id WHERE m.state = 'failed_permanent' AND r.kind = 'hard'")
        return {(key, step) for key, step in rows}

    def recorded_plans(self) -> dict[str, tuple[str, str]]:
        """Per order key, the plan (key, name) of its latest recorded message."""
        (found,) = self.db.execute(
            "SELECT json_group_object(order_key, json_array(plan_key, plan)) FROM (SELECT "
            "order_key, plan_key, plan, max(coalesce(updated, '')) FROM messages "
            "GROUP BY order_key)"
        ).fetchone()  # one row: see `state`
        return {key: (plan_key, plan or plan_key)
                for key, (plan_key, plan) in json.loads(found).items()}

    def archive_owners(self, customer_ids: Collection[str]) -> dict[str, set[str]]:
        """Archive folder name -> the customers (of those given) whose mails are in it."""
        owners: dict[str, set[str]] = {}
        wanted = set(customer_ids)
        if not wanted:
            return owners
        rows = self.db.execute(
            "SELECT DISTINCT customer_id, archive_file FROM events WHERE archive_file <> ''")
        for customer_id, archive_file in rows:
            if customer_id in wanted:
                folder = PurePosixPath(archive_file).parent.name
                owners.setdefault(folder, set()).add(customer_id)
        return owners

    def is_empty(self) -> bool:
        """True when the ledger has recorded nothing at all (a new or emptied file)."""
        return self.db.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM events) AND NOT EXISTS (SELECT 1 FROM messages)"
        ).fetchone()[0] == 1

    def sent_on(self, day: dt.date) -> int:
        """How many mails were sent (resends included) on that calendar day."""
        return self.db.execute(
            "SELECT count(*) FROM events WHERE status = 'sent' AND day = ?", (day.isoformat(),)
        ).fetchone()[0]

    def sent_per_day(self) -> dict[str, int]:
        """Mails sent (resends included) per calendar day, ISO day -> count."""
        return dict(self.db.execute(
            "SELECT day, count(*) FROM events WHERE status = 'sent' GROUP BY day"
        ).fetchall())

    def events(self, since_id: int = 0) -> list[Outcome]:
        """Every outcome after event id `since_id`, oldest first (the SentLog rows)."""
        rows = self.db.execute(
            "SELECT at, order_id, customer_id, email, plan, step, due_date, status, subject, "
            "detail, archive_file, day FROM events WHERE id > ? ORDER BY id",
            (since_id,),
        )
        with no_gc():  # many small acyclic objects
            return [_outcome(row) for row in rows]

    def sentlog_rows(self, first_day: dt.date | None = None) -> list[tuple]:
        """The outcomes of the run days from `first_day` on (all when None), oldest first,
        as the SentLog shows them (see `SENTLOG_COLUMNS`). Formatted by SQLite, straight
        from the stored ISO text (a year's 200,000 events: a fifth of the time of making
        Outcome objects first)."""
        since = first_day.isoformat() if first_day is not None else ""
        return self.db.execute(SENTLOG_QUERY, (since,)).fetchall()

    def log_events(self, *, first: dt.date | None = None, last: dt.date | None = None,
                   order_id: str | None = None, customer_id: str | None = None
                   ) -> list[Outcome]:
        """The outcomes of the run days `first` to `last` (both included; open when None),
        of one order or customer when given (ids compared ignoring case and spaces)."""
        where, args = ["1"], []
        if first is not None:
            where.append("day >= ?")
            args.append(first.isoformat())
        if last is not None:
            where.append("day <= ?")
            args.append(last.isoformat())
        for column, value in (("order_id", order_id), ("customer_id", customer_id)):
            if value is not None:
                where.append(f"lower(trim({column})) = lower(trim(?))")
                args.append(value)
        rows = self.db.execute(
            "SELECT at, order_id, customer_id, email, plan, step, due_date, status, subject, "
            f"detail, archive_file, day FROM events WHERE {' AND '.join(where)} ORDER BY id",
            args,
        )
        with no_gc():
            return [_outcome(row) for row in rows]

    def knows(self, column: str, value: str) -> bool:
        """Whether any outcome is of this order_id or customer_id (compared as `log_events`)."""
        if column not in ("order_id", "customer_id"):
            raise ValueError(column)
        return self.db.execute(
            f"SELECT 1 FROM events WHERE lower(trim({column})) = lower(trim(?)) LIMIT 1",
            (value,)).fetchone() is not None

    def sent_mails(self) -> SentMails:
        """Our mails by Message-ID or reference, looked up one at a time."""
        return SentMails(self.db)

    def recipients(self) -> Recipients:
        """The addresses we sent to, looked up one at a time."""
        return Recipients(self.db)

    def mailbox_position(self, folder: str) -> tuple[int, int] | None:
        """(UIDVALIDITY, last UID handled) of a mailbox folder, None before its first read."""
        row = self.db.execute(
            "SELECT uidvalidity, uid FROM mailbox_position WHERE folder = ?", (folder,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def first_mail_time(self) -> dt.datetime | None:
        """When the first mail whose Message-ID is kept was handed over (None: none yet)."""
        row = self.db.execute(
            "SELECT min(s.started) FROM mail_ids i JOIN sends s ON s.id = i.send_id"
        ).fetchone()
        return _datetime(row[0]) if row and row[0] else None

    def flagged_addresses(self) -> dict[str, str]:
        """Addresses a returned mail showed not to exist, while that mail is still failed
        for it: address -> "order O1 step 1" (the mail that came back)."""
        rows = self.db.execute(
            "SELECT r.address, s.order_id, s.step FROM returned r "
            "JOIN sends s ON s.id = r.send_id JOIN messages m ON m.order_key = "
            "commplan_fold(s.order_id) AND m.step = s.step AND m.send_id = s.id "
            "WHERE m.state = 'failed_permanent' AND r.kind IN ('hard', 'soft') "
            "AND r.address != '' ORDER BY r.id"
        )
        return {address: f"order {order_id} step {step}" for address, order_id, step in rows}

    def soft_in_a_row(self, address: str) -> int:
        """How many of the latest returned mails for `address` in a row are soft ones."""
        count = 0
        for (kind,) in self.db.execute(
                "SELECT kind FROM returned WHERE address = ? AND kind != 'delayed' "
                "ORDER BY id DESC", (address,)):
            if kind != "soft":
                break
            count += 1
        return count

    def refused_recipients(self) -> list[tuple[LedgerEntry, str, str]]:
        """Each message still `sent` whose last send had recipients refused for good:
        (entry, address, the server's reply)."""
        columns = ", ".join(f"m.{c.strip()}" for c in ENTRY_COLUMNS.split(","))
        rows = self.db.execute(
            f"SELECT {columns}, r.address, r.reply FROM refused_recipients r "
            "JOIN messages m ON m.send_id = r.send_id WHERE m.state = 'sent'")
        return [(entry_of(row[:-2]), row[-2], row[-1]) for row in rows]

    def content_refused_messages(self) -> set[tuple[str, int]]:
        """(order key, step) of the messages whose last mail the server refused for its
        content or a policy (still failed_permanent)."""
        rows = self.db.execute(
            "SELECT m.order_key, m.step FROM messages m JOIN content_refusals c ON c.send_id "
            "= m.send_id WHERE m.state = 'failed_permanent'")
        return {(key, step) for key, step in rows}

    def mark(self, name: str) -> str | None:
        """A fact a run kept (`set_mark`), or None."""
        row = self.db.execute("SELECT value FROM marks WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def last_event_id(self) -> int:
        """The id of the newest event (0 when none): pass it to `events` next time."""
        return self.db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]


def entry_of(row: tuple) -> LedgerEntry:
    """The LedgerEntry of a `messages` row selected as `ENTRY_COLUMNS`."""
    (order_id, plan_key, step, state, due, emails, detail, updated, attempts,
     first_waiting) = row
    return LedgerEntry(
        order_id=order_id, plan=plan_key, step=step, state=state,
        due_date=_date(due) if due else None, emails=emails, detail=detail,
        updated=_datetime(updated) if updated else None, attempts=attempts,
        first_waiting=_date(first_waiting) if first_waiting else None,
    )


def _outcome(row: tuple) -> Outcome:
    (at, order_id, customer_id, email, plan, step, due, status, subject, detail, archive,
     day) = row
    return Outcome(
        date=_datetime(at), order_id=order_id, customer_id=customer_id, email=email,
        plan=plan, step=step, due_date=_date(due) if due else None, status=status,
        subject=subject, detail=detail, archive_file=archive, day=_date(day) if day else None,
    )


_date = dt.date.fromisoformat
_datetime = dt.datetime.fromisoformat
