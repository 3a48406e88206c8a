"""The ledger: an SQLite file that decides what was sent, written before and after each send.

Every public method is one transaction. WAL with `synchronous=NORMAL` keeps each commit
durable across a killed process (not across a power cut, which only loses the last commits),
at a fraction of a millisecond per commit. A row left in state `sending` means the process
died between the write before a send and the write after it: `recover()` turns it into
`uncertain`, which is never resent automatically.

The `sends` table journals each attempt (the token `begin` returns) so that `finish` and
`recover` know who, what and to whom without the caller repeating it.

`record_waiting` writes no SentLog event: SentLog statuses are only sent, failed, skipped and
uncertain, and a message held back by daily_limit on ten mornings would otherwise fill the
log with ten rows saying nothing happened. The `messages` row keeps the day it first waited.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal

from commplan_xl.excel.read import no_gc
from commplan_xl.model import LedgerEntry, Outcome
from commplan_xl.problems import CommplanError

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000

FinishStatus = Literal["sent", "failed", "failed_permanent"]

UNCERTAIN_DETAIL = (
    "the run stopped while sending; check with the customer, then use "
    "`commplan resend ORDER STEP` if it did not arrive"
)
RESENT_DETAIL = "resent on request"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    order_id      TEXT    NOT NULL,
    plan_key      TEXT    NOT NULL,
    step          INTEGER NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('sending', 'sent', 'failed',
                      'failed_permanent', 'skipped', 'uncertain', 'waiting')),
    due_date      TEXT,
    emails        TEXT    NOT NULL DEFAULT '',
    detail        TEXT    NOT NULL DEFAULT '',
    updated       TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    first_waiting TEXT,
    send_id       INTEGER,
    PRIMARY KEY (order_id, plan_key, step)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS sends (
    id          INTEGER PRIMARY KEY,
    order_id    TEXT    NOT NULL,
    customer_id TEXT    NOT NULL,
    plan        TEXT    NOT NULL,
    plan_key    TEXT    NOT NULL,
    step        INTEGER NOT NULL,
    due_date    TEXT,
    emails      TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    resend      INTEGER NOT NULL,
    prev_state  TEXT,
    started     TEXT    NOT NULL,
    day         TEXT    NOT NULL,
    finished    TEXT
);

CREATE TABLE IF NOT EXISTS events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           TEXT    NOT NULL,
    order_id     TEXT    NOT NULL,
    customer_id  TEXT    NOT NULL,
    email        TEXT    NOT NULL,
    plan         TEXT    NOT NULL,
    plan_key     TEXT    NOT NULL,
    step         INTEGER NOT NULL,
    due_date     TEXT,
    status       TEXT    NOT NULL CHECK (status IN ('sent', 'failed', 'skipped', 'uncertain')),
    subject      TEXT    NOT NULL DEFAULT '',
    detail       TEXT    NOT NULL DEFAULT '',
    archive_file TEXT    NOT NULL DEFAULT '',
    resend       INTEGER NOT NULL DEFAULT 0,
    day          TEXT    NOT NULL
);

-- recover() looks for `sending` rows at every run: keep that a lookup, not a scan.
CREATE INDEX IF NOT EXISTS messages_sending ON messages (state) WHERE state = 'sending';

CREATE INDEX IF NOT EXISTS events_sent_day ON events (day) WHERE status = 'sent';
"""

# States a normal (not resend) send may start from.
_SENDABLE = frozenset({None, "failed", "failed_permanent", "waiting"})
# States a skip, a wait or a failure before sending must never overwrite.
_FINAL = frozenset({"sent", "sending", "uncertain"})


class LedgerConflict(CommplanError):
    """The ledger refuses a change that could send a message twice or erase a record."""


def _iso_date(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _at(now: dt.datetime) -> str:
    return now.isoformat(timespec="seconds")


def _day(now: dt.datetime, day: dt.date | None) -> str:
    return (day or now.date()).isoformat()


def failure_detail(detail: str, *, permanent: bool) -> str:
    """The SentLog detail of a failure, saying whether a later run retries it."""
    text = " ".join(detail.split())
    if "retried" in text.casefold():  # the caller already said it
        return text
    if permanent:
        return f"not retried: {text}" if text else "not retried"
    return f"{text}; will be retried" if text else "will be retried"


def _conflict(order_id: str, plan_key: str, step: int, state: str, what: str) -> LedgerConflict:
    where = f"Order {order_id} step {step} (plan {plan_key})"
    if state == "sent":
        why = "was already sent"
        hint = "use `commplan resend ORDER STEP` to send it again on purpose"
    elif state == "uncertain":
        why = "may have been sent by a run that stopped"
        hint = "check with the customer, then use `commplan resend ORDER STEP`"
    elif state == "sending":
        why = "is being sent by another run"
        hint = "wait for that run to finish"
    else:
        why = f"is {state}"
        hint = "use `commplan resend ORDER STEP` to send it on purpose"
    return LedgerConflict(f"{where} {why}, so the ledger does not {what}; {hint}.")


class Ledger:
    """The SQLite ledger of one home folder; use as `with Ledger(path) as ledger:`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Ledger:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Open (creating if needed) the file and bring its schema up to date."""
        if not self.path.parent.is_dir():
            raise CommplanError(
                f"Cannot open the ledger {self.path}: the folder {self.path.parent} does not "
                "exist."
            )
        db = None
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
            db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            # Some network shares refuse WAL; SQLite then keeps its rollback journal, which
            # needs FULL to stay as safe.
            sync = "NORMAL" if str(mode).lower() == "wal" else "FULL"
            db.execute(f"PRAGMA synchronous = {sync}")
            self._db = db
            self._migrate()
        except (sqlite3.Error, CommplanError) as exc:
            self._db = None
            if db is not None:
                db.close()
            if isinstance(exc, CommplanError):
                raise
            raise CommplanError(f"Cannot open the ledger {self.path}: {exc}.") from exc

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("The ledger is not open; use `with Ledger(path) as ledger:`.")
        return self._db

    def _migrate(self) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CommplanError(
                    f"The ledger {self.path} was written by a newer commplan (schema "
                    f"{version}); update commplan before running it on this home folder."
                )
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _write(self) -> _Transaction:
        return _Transaction(self.db)

    # ------------------------------------------------------------------ reading

    def state(self) -> LedgerState:
        """Every message the ledger knows, by (order_id, plan_key, step).

        Messages that are done (sent, skipped, uncertain, sending) are the bulk of a
        long-lived ledger and the schedule only asks whether they are done: SQLite sums them
        into one row per (order, plan), a bit per done step and two bits for its state, so a
        ledger of 200,000 messages reads as 40,000 rows (measured: 0.14 s instead of 0.34 s,
        and a fifth of the Python objects).
        """
        rows = self.db.execute(
            "SELECT order_id, plan_key, sum(1 << step), sum((CASE state WHEN 'sent' THEN 0 "
            "WHEN 'skipped' THEN 1 WHEN 'uncertain' THEN 2 ELSE 3 END) << (2 * step)) "
            "FROM messages WHERE state IN ('sent', 'skipped', 'uncertain', 'sending') "
            f"AND step BETWEEN 0 AND {_MAX_PACKED_STEP} GROUP BY order_id, plan_key"
        )
        steps: dict[tuple[str, str], int] = {}
        codes: dict[tuple[str, str], int] = {}
        with no_gc():  # many small acyclic objects: see workbook.no_gc
            for order_id, plan_key, mask, code in rows:
                steps[order_id, plan_key] = mask
                codes[order_id, plan_key] = code
        # The rest (and a done step beyond what the bits hold, which validation never lets
        # a plan have) as full entries.
        rows = self.db.execute(
            "SELECT order_id, plan_key, step, state, due_date, emails, detail, updated, "
            "attempts, first_waiting FROM messages "
            "WHERE state NOT IN ('sent', 'skipped', 'uncertain', 'sending') "
            f"OR step NOT BETWEEN 0 AND {_MAX_PACKED_STEP}"
        )
        open_entries = {(row[0], row[1], row[2]): _entry(row) for row in rows}
        return LedgerState(steps, codes, open_entries)

    def entry(self, order_id: str, plan_key: str, step: int) -> LedgerEntry | None:
        """What the ledger knows of one message, or None if nothing yet."""
        row = self.db.execute(
            "SELECT order_id, plan_key, step, state, due_date, emails, detail, updated, "
            "attempts, first_waiting FROM messages WHERE order_id = ? AND plan_key = ? "
            "AND step = ?",
            (order_id, plan_key, step),
        ).fetchone()
        return _entry(row) if row else None

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
        with no_gc():  # many small acyclic objects: see workbook.no_gc
            return [_outcome(row) for row in rows]

    def sentlog_rows(self) -> list[tuple]:
        """Every outcome, oldest first, as the SentLog shows it: date (to the second),
        order, customer, email, plan, step, due date ("" when none), status, subject,
        detail, archive file. Formatted by SQLite, straight from the stored ISO text (a
        year's 200,000 events: a fifth of the time of making Outcome objects first)."""
        return self.db.execute(
            "SELECT substr(replace(at, 'T', ' '), 1, 19), order_id, customer_id, email, "
            "plan, step, coalesce(due_date, ''), status, subject, detail, archive_file "
            "FROM events ORDER BY id"
        ).fetchall()

    def last_event_id(self) -> int:
        """The id of the newest event (0 when none): pass it to `events` next time."""
        return self.db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]

    # ------------------------------------------------------------------ writing

    def recover(self, now: dt.datetime, *, day: dt.date | None = None) -> list[LedgerEntry]:
        """Turn every `sending` row (a run died mid-send) into `uncertain`; return them."""
        at = _at(now)
        with self._write() as db:
            rows = db.execute(
                "SELECT m.order_id, m.plan_key, m.step, s.id, s.customer_id, s.plan, "
                "s.emails, s.subject, s.resend, m.due_date FROM messages m "
                "LEFT JOIN sends s ON s.id = m.send_id WHERE m.state = 'sending'"
            ).fetchall()
            for order_id, plan_key, step, send_id, customer_id, plan, emails, subject, resend, \
                    due in rows:
                db.execute(
                    "UPDATE messages SET state = 'uncertain', detail = ?, updated = ? "
                    "WHERE order_id = ? AND plan_key = ? AND step = ?",
                    (UNCERTAIN_DETAIL, at, order_id, plan_key, step),
                )
                _add_event(
                    db, at=at, day=_day(now, day), order_id=order_id,
                    customer_id=customer_id or "", email=emails or "", plan=plan or plan_key,
                    plan_key=plan_key, step=step, due_date=due, status="uncertain",
                    subject=subject or "", detail=UNCERTAIN_DETAIL, resend=bool(resend),
                )
                if send_id is not None:
                    db.execute("UPDATE sends SET finished = ? WHERE id = ?", (at, send_id))
            keys = [(r[0], r[1], r[2]) for r in rows]
        return [e for e in (self.entry(*k) for k in keys) if e is not None]

    def begin(
        self,
        *,
        order_id: str,
        customer_id: str,
        plan: str,
        plan_key: str,
        step: int,
        due_date: dt.date | None,
        emails: str,
        subject: str,
        now: dt.datetime,
        resend: bool = False,
        day: dt.date | None = None,
    ) -> int:
        """Durably record `sending` before a send; return the token for `finish`.

        Refuses (LedgerConflict) a message already sent, skipped or uncertain unless
        `resend`, and any message another run is sending.
        """
        at = _at(now)
        with self._write() as db:
            prev = _current(db, order_id, plan_key, step)
            allowed = prev != "sending" if resend else prev in _SENDABLE
            if not allowed:
                raise _conflict(order_id, plan_key, step, str(prev), "send it")
            token = db.execute(
                "INSERT INTO sends (order_id, customer_id, plan, plan_key, step, due_date, "
                "emails, subject, resend, prev_state, started, day) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (order_id, customer_id, plan, plan_key, step, _iso_date(due_date), emails,
                 subject, int(resend), prev, at, _day(now, day)),
            ).lastrowid
            db.execute(
                "INSERT INTO messages (order_id, plan_key, step, state, due_date, emails, "
                "detail, updated, attempts, send_id) VALUES (?, ?, ?, 'sending', ?, ?, '', ?, "
                "1, ?) ON CONFLICT DO UPDATE SET state = 'sending', due_date = "
                "excluded.due_date, emails = excluded.emails, detail = '', updated = "
                "excluded.updated, attempts = attempts + 1, send_id = excluded.send_id",
                (order_id, plan_key, step, _iso_date(due_date), emails, at, token),
            )
        assert token is not None
        return token

    def finish(
        self,
        token: int,
        *,
        status: FinishStatus,
        detail: str = "",
        archive_file: str = "",
        now: dt.datetime,
        day: dt.date | None = None,
    ) -> LedgerEntry:
        """Record the outcome of the send `begin` started: the message state and its event.

        A failed resend leaves the message in the state it had before, so that it is never
        retried automatically.
        """
        if status not in ("sent", "failed", "failed_permanent"):
            raise ValueError(f"unknown send status {status!r}")
        at = _at(now)
        # RETURNING saves a SELECT before and after (finish runs once per mail sent).
        with self._write() as db:
            row = db.execute(
                "UPDATE sends SET finished = ? WHERE id = ? AND finished IS NULL RETURNING "
                "order_id, customer_id, plan, plan_key, step, due_date, emails, subject, "
                "resend, prev_state",
                (at, token),
            ).fetchone()
            if row is None:
                exists = db.execute("SELECT 1 FROM sends WHERE id = ?", (token,)).fetchone()
                raise ValueError(f"send attempt {token} was already finished" if exists
                                 else f"no send attempt {token} in the ledger")
            (order_id, customer_id, plan, plan_key, step, due, emails, subject, resend,
             prev) = row
            if status == "sent":
                state, event = "sent", "sent"
                text = " ".join(detail.split())
                if resend and RESENT_DETAIL not in text:
                    text = f"{RESENT_DETAIL}; {text}" if text else RESENT_DETAIL
            else:
                event = "failed"
                if resend:
                    state = prev or status
                    text = " ".join(detail.split()) or "resend failed"
                    if not text.startswith("resend"):
                        text = f"resend failed: {text}"
                else:
                    state = status
                    text = failure_detail(detail, permanent=status == "failed_permanent")
            entry_row = db.execute(
                "UPDATE messages SET state = ?, detail = ?, updated = ? "
                "WHERE order_id = ? AND plan_key = ? AND step = ? RETURNING order_id, "
                "plan_key, step, state, due_date, emails, detail, updated, attempts, "
                "first_waiting",
                (state, text, at, order_id, plan_key, step),
            ).fetchone()
            _add_event(
                db, at=at, day=_day(now, day), order_id=order_id, customer_id=customer_id,
                email=emails, plan=plan, plan_key=plan_key, step=step, due_date=due,
                status=event, subject=subject, detail=text, archive_file=archive_file,
                resend=bool(resend),
            )
        assert entry_row is not None
        return _entry(entry_row)

    def record_skip(
        self,
        *,
        order_id: str,
        customer_id: str,
        plan: str,
        plan_key: str,
        step: int,
        due_date: dt.date | None,
        emails: str,
        reason: str,
        now: dt.datetime,
        day: dt.date | None = None,
    ) -> LedgerEntry:
        """Record a message that will never be sent ("missed", "superseded by step 4").

        Recording the same skip twice adds no second event.
        """
        return self._settle(
            order_id=order_id, customer_id=customer_id, plan=plan, plan_key=plan_key,
            step=step, due_date=due_date, emails=emails, state="skipped", detail=reason,
            now=now, day=day, refuse=_FINAL, what="skip it", event=True)

    def record_waiting(
        self,
        *,
        order_id: str,
        plan_key: str,
        step: int,
        due_date: dt.date | None,
        emails: str,
        now: dt.datetime,
        customer_id: str = "",
        plan: str = "",
        reason: str = "daily limit",
        day: dt.date | None = None,
    ) -> LedgerEntry:
        """Record a message held back by daily_limit; keeps the day it first waited.

        Writes no event (see the module docstring). `customer_id` and `plan` are accepted
        so callers can pass the same arguments as to the other methods.
        """
        return self._settle(
            order_id=order_id, customer_id=customer_id, plan=plan, plan_key=plan_key,
            step=step, due_date=due_date, emails=emails, state="waiting", detail=reason,
            now=now, day=day, refuse=_FINAL | {"skipped"}, what="hold it back", event=False)

    def record_failure_before_send(
        self,
        *,
        order_id: str,
        customer_id: str,
        plan: str,
        plan_key: str,
        step: int,
        due_date: dt.date | None,
        emails: str,
        detail: str,
        now: dt.datetime,
        subject: str = "",
        day: dt.date | None = None,
    ) -> LedgerEntry:
        """Record a message that failed before any send (missing attachment, template error).

        It stays `failed` (temporary), so later runs retry it once fixed.
        """
        return self._settle(
            order_id=order_id, customer_id=customer_id, plan=plan, plan_key=plan_key,
            step=step, due_date=due_date, emails=emails, state="failed",
            detail=failure_detail(detail, permanent=False), now=now, day=day,
            refuse=_FINAL | {"skipped"}, what="mark it failed", event=True, subject=subject)

    def _settle(
        self,
        *,
        order_id: str,
        customer_id: str,
        plan: str,
        plan_key: str,
        step: int,
        due_date: dt.date | None,
        emails: str,
        state: str,
        detail: str,
        now: dt.datetime,
        day: dt.date | None,
        refuse: Collection[str],
        what: str,
        event: bool,
        subject: str = "",
    ) -> LedgerEntry:
        """Put one message in `state` without a send, in one transaction: refused (a
        LedgerConflict saying it cannot `what`) when its state is in `refuse`; with its
        SentLog event when `event`; a skip already recorded is left as it is."""
        at = _at(now)
        with self._write() as db:
            prev = _current(db, order_id, plan_key, step)
            if prev in refuse:
                raise _conflict(order_id, plan_key, step, str(prev), what)
            if not prev == state == "skipped":
                _upsert(db, order_id=order_id, plan_key=plan_key, step=step, state=state,
                        due_date=due_date, emails=emails, detail=detail, at=at)
                if state == "waiting":
                    db.execute(
                        "UPDATE messages SET first_waiting = coalesce(first_waiting, ?) "
                        "WHERE order_id = ? AND plan_key = ? AND step = ?",
                        (_day(now, day), order_id, plan_key, step),
                    )
                if event:
                    _add_event(
                        db, at=at, day=_day(now, day), order_id=order_id,
                        customer_id=customer_id, email=emails, plan=plan, plan_key=plan_key,
                        step=step, due_date=_iso_date(due_date), status=state,
                        subject=subject, detail=detail,
                    )
        entry = self.entry(order_id, plan_key, step)
        assert entry is not None
        return entry


class _Transaction:
    """`with` block around BEGIN IMMEDIATE … COMMIT, rolled back on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        # IMMEDIATE takes the write lock up front, so a read-then-write never deadlocks.
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _current(db: sqlite3.Connection, order_id: str, plan_key: str, step: int) -> str | None:
    row = db.execute(
        "SELECT state FROM messages WHERE order_id = ? AND plan_key = ? AND step = ?",
        (order_id, plan_key, step),
    ).fetchone()
    return row[0] if row else None


def _upsert(
    db: sqlite3.Connection,
    *,
    order_id: str,
    plan_key: str,
    step: int,
    state: str,
    due_date: dt.date | None,
    emails: str,
    detail: str,
    at: str,
) -> None:
    db.execute(
        "INSERT INTO messages (order_id, plan_key, step, state, due_date, emails, detail, "
        "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET state = "
        "excluded.state, due_date = excluded.due_date, emails = excluded.emails, detail = "
        "excluded.detail, updated = excluded.updated",
        (order_id, plan_key, step, state, _iso_date(due_date), emails, detail, at),
    )


# Done states as two bits per step in LedgerState (the order of the CASE in Ledger.state).
_PACKED_STATES = ("sent", "skipped", "uncertain", "sending")
_MAX_PACKED_STEP = 30  # 2 bits x 31 steps fit a 64-bit SQLite integer


class LedgerState(Mapping):
    """A read-only view of the ledger's messages, by (order_id, plan_key, step).

    Done messages are kept packed per (order_id, plan_key): `done_steps` has bit n set when
    step n is done (their history is in the events table). `done_steps` and `open` (the
    other messages, as LedgerEntry) are public, read-only by convention: the schedule reads
    them directly.
    """

    def __init__(self, done_steps: dict[tuple[str, str], int],
                 done_codes: dict[tuple[str, str], int],
                 open_entries: dict[tuple[str, str, int], LedgerEntry]) -> None:
        self.done_steps = done_steps
        self.open = open_entries
        self._codes = done_codes

    @classmethod
    def of(cls, entries: Mapping[tuple[str, str, int], LedgerEntry]) -> LedgerState:
        """The state holding `entries`, packed as `Ledger.state` packs the file's rows."""
        steps: dict[tuple[str, str], int] = {}
        codes: dict[tuple[str, str], int] = {}
        open_entries: dict[tuple[str, str, int], LedgerEntry] = {}
        for (order_id, plan_key, step), entry in entries.items():
            if entry.state in _PACKED_STATES and 0 <= step <= _MAX_PACKED_STEP:
                pair = (order_id, plan_key)
                steps[pair] = steps.get(pair, 0) | 1 << step
                code = _PACKED_STATES.index(entry.state) << (2 * step)
                codes[pair] = codes.get(pair, 0) | code
            else:
                open_entries[order_id, plan_key, step] = entry
        return cls(steps, codes, open_entries)

    def _done_state(self, key: object) -> str | None:
        try:
            order_id, plan_key, step = key  # type: ignore[misc]
            mask = self.done_steps.get((order_id, plan_key), 0)
        except (TypeError, ValueError):
            return None
        if type(step) is not int or not 0 <= step <= _MAX_PACKED_STEP or not mask >> step & 1:
            return None
        return _PACKED_STATES[self._codes[order_id, plan_key] >> (2 * step) & 3]

    def __getitem__(self, key: tuple[str, str, int]) -> LedgerEntry:
        entry = self.open.get(key)
        if entry is not None:
            return entry
        state = self._done_state(key)
        if state is None:
            raise KeyError(key)
        return LedgerEntry(order_id=key[0], plan=key[1], step=key[2],
                           state=state)  # type: ignore[arg-type]

    def values(self):  # type: ignore[override]
        """Every entry; done messages as bare (key, state) entries, built cheaply."""
        yield from self.open.values()
        for key in self._done_keys():
            yield _DoneEntry(key, self._done_state(key))  # type: ignore[arg-type]

    def get(self, key, default=None):
        entry = self.open.get(key)
        if entry is not None:
            return entry
        state = self._done_state(key)
        if state is None:
            return default
        # Only `.state` of a done message is ever read: a bare entry is enough.
        return _DoneEntry(key, state)

    def __contains__(self, key: object) -> bool:
        return key in self.open or self._done_state(key) is not None

    def _done_keys(self) -> Iterator[tuple[str, str, int]]:
        for (order_id, plan_key), mask in self.done_steps.items():
            for step in range(mask.bit_length()):
                if mask >> step & 1:
                    yield order_id, plan_key, step

    def __iter__(self):
        yield from self.open
        yield from self._done_keys()

    def __len__(self) -> int:
        return len(self.open) + sum(mask.bit_count() for mask in self.done_steps.values())


class _DoneEntry:
    """The state of a done message, as `LedgerState.get` returns it (read-only)."""

    __slots__ = ("order_id", "plan", "step", "state")

    def __init__(self, key: tuple[str, str, int], state: str) -> None:
        self.order_id, self.plan, self.step = key
        self.state = state

    emails = ""
    detail = ""
    due_date = None
    updated = None
    attempts = 0
    first_waiting = None


def _add_event(
    db: sqlite3.Connection,
    *,
    at: str,
    day: str,
    order_id: str,
    customer_id: str,
    email: str,
    plan: str,
    plan_key: str,
    step: int,
    due_date: str | None,
    status: str,
    subject: str = "",
    detail: str = "",
    archive_file: str = "",
    resend: bool = False,
) -> None:
    db.execute(
        "INSERT INTO events (at, order_id, customer_id, email, plan, plan_key, step, due_date, "
        "status, subject, detail, archive_file, resend, day) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (at, order_id, customer_id, email, plan, plan_key, step, due_date, status, subject,
         detail, archive_file, int(resend), day),
    )


def _entry(row: tuple) -> LedgerEntry:
    (order_id, plan_key, step, state, due, emails, detail, updated, attempts,
     first_waiting) = row
    # Filling __dict__ of a bare instance skips the frozen dataclass __init__ (one
    # object.__setattr__ per field), a third of the time of state() on 500,000 rows.
    entry = _new(LedgerEntry)
    entry.__dict__.update(
        order_id=order_id, plan=plan_key, step=step, state=state,
        due_date=_date(due) if due else None, emails=emails, detail=detail,
        updated=_datetime(updated) if updated else None, attempts=attempts,
        first_waiting=_date(first_waiting) if first_waiting else None,
    )
    return entry


def _outcome(row: tuple) -> Outcome:
    (at, order_id, customer_id, email, plan, step, due, status, subject, detail, archive,
     day) = row
    outcome = _new(Outcome)  # see _entry
    outcome.__dict__.update(
        date=_datetime(at), order_id=order_id, customer_id=customer_id, email=email,
        plan=plan, step=step, due_date=_date(due) if due else None, status=status,
        subject=subject, detail=detail, archive_file=archive, day=_date(day) if day else None,
    )
    return outcome


_new = object.__new__
_date = dt.date.fromisoformat
_datetime = dt.datetime.fromisoformat
