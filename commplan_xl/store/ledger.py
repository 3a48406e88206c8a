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

The schema is in `ledger_schema` (numbered migrations), the read queries in `ledger_reads`.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from commplan_xl.i18n import _
from commplan_xl.model import LedgerEntry, MessageRef, norm_key
from commplan_xl.problems import CommplanError
from commplan_xl.store.ledger_reads import (
    ENTRY_COLUMNS,
    LedgerReads,
    ReturnedMail,
    SentMail,
    entry_of,
)
from commplan_xl.store.ledger_schema import latest_version, migrate
from commplan_xl.store.ledger_snapshot import LedgerSnapshot

__all__ = [
    "BUSY_TIMEOUT_MS", "RESENT_DETAIL", "SCHEMA_VERSION", "UNCERTAIN_DETAIL", "FinishStatus",
    "Ledger", "LedgerConflict", "LedgerSnapshot", "MessageRef", "ReturnedMail", "SentMail",
    "failure_detail",
]

SCHEMA_VERSION = latest_version()
BUSY_TIMEOUT_MS = 10_000

FinishStatus = Literal["sent", "failed", "failed_permanent"]

UNCERTAIN_DETAIL = (
    "the run stopped while sending; check with the customer, then use "
    "`commplan resend ORDER STEP` if it did not arrive"
)
RESENT_DETAIL = "resent on request"

# States a normal (not resend) send may start from.
_SENDABLE = frozenset({None, "failed", "failed_permanent", "waiting"})
# States a skip, a wait or a failure before sending must never overwrite.
_FINAL = frozenset({"sent", "sending", "uncertain"})


class LedgerConflict(CommplanError):
    """The ledger refuses a change that could send a message twice or erase a record."""


def failure_detail(detail: str, *, permanent: bool) -> str:
    """The SentLog detail of a failure, saying whether a later run retries it."""
    text = " ".join(detail.split())
    if "retried" in text.casefold():  # the caller already said it
        return text
    if permanent:
        return f"not retried: {text}" if text else "not retried"
    return f"{text}; will be retried" if text else "will be retried"


class Ledger(LedgerReads):
    """The SQLite ledger of one home folder; use as `with Ledger(path) as ledger:`.

    Writes are here; the read queries come from `LedgerReads`.
    """

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
            raise CommplanError(_(
                "Cannot open the ledger {path}: the folder {folder} does not exist.").format(
                    path=self.path, folder=self.path.parent))
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
            # How a message's order key is made from its id (see ledger_schema).
            db.create_function("commplan_fold", 1, norm_key, deterministic=True)
            migrate(db, self.path)
            self._db = db
        except (sqlite3.Error, CommplanError) as exc:
            self._db = None
            if db is not None:
                db.close()
            if isinstance(exc, CommplanError):
                raise
            raise CommplanError(_("Cannot open the ledger {path}: {error}.").format(
                path=self.path, error=exc)) from exc

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("The ledger is not open; use `with Ledger(path) as ledger:`.")
        return self._db

    def _write(self) -> _Transaction:
        return _Transaction(self.db)

    # ------------------------------------------------------------------ around a send

    def begin(self, message: MessageRef, *, subject: str, now: dt.datetime,
              resend: bool = False, day: dt.date | None = None, message_id: str = "",
              ref: str = "") -> int:
        """Durably record `sending` before a send; return the token for `finish`.

        Refuses (LedgerConflict) a message already sent, skipped or uncertain unless
        `resend`, and any message another run is sending. The mail's Message-ID and
        reference header, when given, are kept to recognise it when it comes back.
        """
        m = message
        at = _at(now, day)
        with self._write() as db:
            prev = _current(db, m)
            allowed = prev != "sending" if resend else prev in _SENDABLE
            if not allowed:
                raise _conflict(m, str(prev), "send it")
            token = db.execute(
                "INSERT INTO sends (order_id, customer_id, plan, plan_key, step, due_date, "
                "emails, subject, resend, prev_state, started, day) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (m.order_id, m.customer_id, m.plan, m.plan_key, m.step, _iso_date(m.due_date),
                 m.emails, subject, int(resend), prev, at, _day(now, day)),
            ).lastrowid
            db.execute(
                "INSERT INTO messages (order_key, order_id, plan_key, plan, step, state, "
                "due_date, emails, detail, updated, attempts, send_id) VALUES (?, ?, ?, ?, ?, "
                "'sending', ?, ?, '', ?, 1, ?) ON CONFLICT DO UPDATE SET order_id = "
                "excluded.order_id, plan_key = excluded.plan_key, plan = excluded.plan, "
                "state = 'sending', due_date = excluded.due_date, emails = excluded.emails, "
                "detail = '', updated = excluded.updated, attempts = attempts + 1, send_id = "
                "excluded.send_id",
                (norm_key(m.order_id), m.order_id, m.plan_key, m.plan, m.step,
                 _iso_date(m.due_date), m.emails, at, token),
            )
            if message_id or ref:
                db.execute("INSERT INTO mail_ids (send_id, message_id, ref) VALUES (?, ?, ?)",
                           (token, message_id, ref))
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
        worded: bool = False,
    ) -> LedgerEntry:
        """Record the outcome of the send `begin` started: the message state and its event.

        A failed resend leaves the message in the state it had before, so that it is never
        retried automatically. `worded`: the detail is whole, in the site's language (a
        failure says what happens next, a resend says it is one); it is kept as it is
        (otherwise the ledger adds those words, in English).
        """
        if status not in ("sent", "failed", "failed_permanent"):
            raise ValueError(f"unknown send status {status!r}")
        at = _at(now, day)
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
            m = MessageRef(order_id, customer_id, plan, plan_key, step,
                           _date(due) if due else None, emails)
            state, event, text = _outcome_of(status, detail, resend=bool(resend), prev=prev,
                                             worded=worded)
            entry_row = db.execute(
                "UPDATE messages SET state = ?, detail = ?, updated = ? "
                f"WHERE order_key = ? AND step = ? RETURNING {ENTRY_COLUMNS}",
                (state, text, at, norm_key(m.order_id), m.step),
            ).fetchone()
            _add_event(db, m, status=event, at=at, day=_day(now, day), subject=subject,
                       detail=text, archive_file=archive_file, resend=bool(resend))
        assert entry_row is not None
        return entry_of(entry_row)

    def record_refused(self, token: int, refused: Sequence[tuple[str, str]]) -> None:
        """Keep the recipients (address, server reply) refused for good by the send
        `token` while the others got the mail: listed for a person until corrected."""
        with self._write() as db:
            db.executemany("INSERT OR REPLACE INTO refused_recipients (send_id, address, "
                           "reply) VALUES (?, ?, ?)",
                           [(token, address, reply) for address, reply in refused])

    def record_content_refused(self, token: int, reply: str) -> None:
        """Keep that the send `token` was refused for the mail itself (its content or a
        policy), not for an address."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO content_refusals (send_id, reply) VALUES (?, ?)",
                       (token, reply))

    def set_mark(self, name: str, value: str) -> None:
        """Remember a small fact for later runs (see `mark`)."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO marks (name, value) VALUES (?, ?)",
                       (name, value))

    def recover(self, now: dt.datetime, *, day: dt.date | None = None) -> list[LedgerEntry]:
        """Turn every `sending` row (a run died mid-send) into `uncertain`; return them."""
        at = _at(now, day)
        with self._write() as db:
            rows = db.execute(
                "SELECT m.order_id, m.plan_key, m.step, s.id, s.customer_id, m.plan, "
                "s.emails, s.subject, s.resend, m.due_date FROM messages m "
                "LEFT JOIN sends s ON s.id = m.send_id WHERE m.state = 'sending'"
            ).fetchall()
            for order_id, plan_key, step, send_id, customer_id, plan, emails, subject, resend, \
                    due in rows:
                m = MessageRef(order_id, customer_id or "", plan or plan_key, plan_key, step,
                               _date(due) if due else None, emails or "")
                db.execute(
                    "UPDATE messages SET state = 'uncertain', detail = ?, updated = ? "
                    "WHERE order_key = ? AND step = ?",
                    (UNCERTAIN_DETAIL, at, norm_key(order_id), step),
                )
                _add_event(db, m, status="uncertain", at=at, day=_day(now, day),
                           subject=subject or "", detail=UNCERTAIN_DETAIL, resend=bool(resend))
                if send_id is not None:
                    db.execute("UPDATE sends SET finished = ? WHERE id = ?", (at, send_id))
            keys = [(r[0], r[2]) for r in rows]
        return [e for e in (self.entry(*k) for k in keys) if e is not None]

    # ------------------------------------------------------------------ without a send

    def record_skip(self, message: MessageRef, *, reason: str, now: dt.datetime,
                    day: dt.date | None = None) -> LedgerEntry:
        """Record a message that will never be sent ("missed", "superseded by step 4").

        Recording the same skip twice adds no second event.
        """
        return self._settle(message, state="skipped", detail=reason, now=now, day=day,
                            refuse=_FINAL, what="skip it", event=True)

    def record_waiting(self, message: MessageRef, *, now: dt.datetime,
                       reason: str = "daily limit", day: dt.date | None = None) -> LedgerEntry:
        """Record a message held back by daily_limit; keeps the day it first waited.

        Writes no event (see the module docstring).
        """
        return self._settle(message, state="waiting", detail=reason, now=now, day=day,
                            refuse=_FINAL | {"skipped"}, what="hold it back", event=False)

    def record_failure_before_send(self, message: MessageRef, *, detail: str,
                                   now: dt.datetime, subject: str = "",
                                   day: dt.date | None = None,
                                   worded: bool = False) -> LedgerEntry:
        """Record a message that failed before any send (missing attachment, template error).

        It stays `failed` (temporary), so later runs retry it once fixed. `worded` as for
        `finish`.
        """
        text = " ".join(detail.split()) if worded else failure_detail(detail, permanent=False)
        return self._settle(message, state="failed", detail=text, now=now, day=day,
                            refuse=_FINAL | {"skipped"}, what="mark it failed", event=True,
                            subject=subject)

    def record_blocked(self, message: MessageRef, *, detail: str, now: dt.datetime,
                       subject: str = "", day: dt.date | None = None) -> LedgerEntry:
        """Record a message not sent because its address is known not to exist (a mail
        to it came back): `failed_permanent`, so it waits for the address to change."""
        return self._settle(message, state="failed_permanent", detail=detail, now=now,
                            day=day, refuse=_FINAL | {"skipped"}, what="mark it failed",
                            event=True, subject=subject)

    def _settle(self, m: MessageRef, *, state: str, detail: str, now: dt.datetime,
                day: dt.date | None, refuse: Collection[str], what: str, event: bool,
                subject: str = "") -> LedgerEntry:
        """Put one message in `state` without a send, in one transaction: refused (a
        LedgerConflict saying it cannot `what`) when its state is in `refuse`; with its
        SentLog event when `event`; a skip already recorded is left as it is."""
        at = _at(now, day)
        with self._write() as db:
            prev = _current(db, m)
            if prev in refuse:
                raise _conflict(m, str(prev), what)
            if not prev == state == "skipped":
                _upsert(db, m, state=state, detail=detail, at=at)
                if state == "waiting":
                    db.execute(
                        "UPDATE messages SET first_waiting = coalesce(first_waiting, ?) "
                        "WHERE order_key = ? AND step = ?",
                        (_day(now, day), norm_key(m.order_id), m.step),
                    )
                if event:
                    _add_event(db, m, status="failed" if state.startswith("failed") else state,
                               at=at, day=_day(now, day), subject=subject, detail=detail)
        entry = self.entry(m.order_id, m.step)
        assert entry is not None
        return entry


    # ------------------------------------------------------------------ returned mails

    def set_mailbox_position(self, folder: str, uidvalidity: int, uid: int, *,
                             now: dt.datetime) -> None:
        """Remember that `folder` was read up to `uid` (in its `uidvalidity`)."""
        with self._write() as db:
            _set_position(db, folder, uidvalidity, uid, _at(now))

    def record_returned(self, item: ReturnedMail, *, now: dt.datetime,
                        day: dt.date | None = None) -> str:
        """Record one returned mail read back, and the mailbox position after it.

        With `item.state` ("failed" or "failed_permanent") the mail it reports becomes
        that, with a `failed` SentLog event saying `item.detail`, when it is still `sent`
        by that very attempt. Returns "recorded" (the mail changed), "noted" (kept for the
        record only: a note, a mail to review, or one since resent or already failed) or
        "known" (this message of the mailbox was recorded before).
        """
        at = _at(now)
        with self._write() as db:
            if item.report_id and db.execute(
                    "SELECT 1 FROM returned WHERE report_id = ? AND send_id IS ? LIMIT 1",
                    (item.report_id, item.send_id)).fetchone():
                # The same report read again (the folder was rebuilt, or copied back).
                _set_position(db, item.folder, item.uidvalidity, item.uid, at)
                return "known"
            added = db.execute(
                "INSERT INTO returned (at, day, folder, uidvalidity, uid, kind, send_id, "
                "address, status, reason, subject, report_id) VALUES (?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (at, _day(now, day), item.folder, item.uidvalidity, item.uid, item.kind,
                 item.send_id, item.address, item.status, item.reason, item.subject,
                 item.report_id),
            ).rowcount
            _set_position(db, item.folder, item.uidvalidity, item.uid, at)
            if not added:
                return "known"
            if not item.state or item.send_id is None:
                return "noted"
            row = db.execute(
                "SELECT s.order_id, s.customer_id, s.plan, s.plan_key, s.step, s.due_date, "
                "s.emails, s.subject FROM sends s JOIN messages m ON m.order_key = "
                "commplan_fold(s.order_id) AND m.step = s.step AND m.send_id = s.id "
                "WHERE s.id = ? AND m.state = 'sent'", (item.send_id,),
            ).fetchone()
            if row is None:
                return "noted"
            order_id, customer_id, plan, plan_key, step, due, emails, subject = row
            m = MessageRef(order_id, customer_id, plan, plan_key, step,
                           _date(due) if due else None, emails)
            db.execute(
                "UPDATE messages SET state = ?, detail = ?, updated = ? "
                "WHERE order_key = ? AND step = ?",
                (item.state, item.detail, at, norm_key(order_id), step),
            )
            _add_event(db, m, status="failed", at=at, day=_day(now, day), subject=subject,
                       detail=item.detail)
        return "recorded"


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


def _outcome_of(status: str, detail: str, *, resend: bool, prev: str | None,
                worded: bool = False) -> tuple[str, str, str]:
    """(message state, event status, detail) of a finished send."""
    text = " ".join(detail.split())
    if status == "sent":
        if resend and not worded and RESENT_DETAIL not in text:
            text = f"{RESENT_DETAIL}; {text}" if text else RESENT_DETAIL
        return "sent", "sent", text
    if resend:
        if not worded and not text.startswith("resend"):
            text = f"resend failed: {text}" if text else "resend failed"
        return prev or status, "failed", text
    if worded:
        return status, "failed", text
    return status, "failed", failure_detail(detail, permanent=status == "failed_permanent")


def _conflict(m: MessageRef, state: str, what: str) -> LedgerConflict:
    where = f"Order {m.order_id} step {m.step}"
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


def _current(db: sqlite3.Connection, m: MessageRef) -> str | None:
    row = db.execute(
        "SELECT state FROM messages WHERE order_key = ? AND step = ?",
        (norm_key(m.order_id), m.step),
    ).fetchone()
    return row[0] if row else None


def _set_position(db: sqlite3.Connection, folder: str, uidvalidity: int, uid: int,
                  at: str) -> None:
    """Move the folder's position forward (a new UIDVALIDITY replaces it)."""
    db.execute(
        "INSERT INTO mailbox_position (folder, uidvalidity, uid, updated) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO UPDATE SET uid = CASE WHEN uidvalidity = excluded.uidvalidity THEN "
        "max(uid, excluded.uid) ELSE excluded.uid END, uidvalidity = excluded.uidvalidity, "
        "updated = excluded.updated",
        (folder, uidvalidity, uid, at),
    )


def _upsert(db: sqlite3.Connection, m: MessageRef, *, state: str, detail: str, at: str) -> None:
    db.execute(
        "INSERT INTO messages (order_key, order_id, plan_key, plan, step, state, due_date, "
        "emails, detail, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
        "SET order_id = excluded.order_id, plan_key = excluded.plan_key, plan = "
        "excluded.plan, state = excluded.state, due_date = excluded.due_date, emails = "
        "excluded.emails, detail = excluded.detail, updated = excluded.updated",
        (norm_key(m.order_id), m.order_id, m.plan_key, m.plan, m.step, state,
         _iso_date(m.due_date), m.emails, detail, at),
    )


def _add_event(db: sqlite3.Connection, m: MessageRef, *, status: str, at: str, day: str,
               subject: str = "", detail: str = "", archive_file: str = "",
               resend: bool = False) -> None:
    """Append one SentLog event about message `m`."""
    db.execute(
        "INSERT INTO events (at, order_id, customer_id, email, plan, plan_key, step, due_date, "
        "status, subject, detail, archive_file, resend, day) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (at, m.order_id, m.customer_id, m.emails, m.plan, m.plan_key, m.step,
         _iso_date(m.due_date), status, subject, detail, archive_file, int(resend), day),
    )


def _iso_date(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _at(now: dt.datetime, day: dt.date | None = None) -> str:
    """When an outcome happened: on the run's `day` (`--today`), at the clock's time."""
    if day is not None and day != now.date():
        now = dt.datetime.combine(day, now.time())
    return now.isoformat(timespec="seconds")


def _day(now: dt.datetime, day: dt.date | None) -> str:
    return (day or now.date()).isoformat()


_date = dt.date.fromisoformat
