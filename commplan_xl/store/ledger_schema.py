"""The ledger's schema as numbered migrations, applied in order when the ledger opens.

The file's `PRAGMA user_version` is the number of the last migration applied. To change the
schema (a new column, an index), append one migration with the next number: never edit one
that has shipped, since ledgers in the field already ran it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from commplan_xl.i18n import _
from commplan_xl.model import norm_key
from commplan_xl.problems import CommplanError

# A migration's SQL statements are split on ";": keep semicolons out of its text values.
Migration = tuple[int, str | Callable[[sqlite3.Connection], None]]

_V1_SCHEMA = """
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

_RETURNED_SCHEMA = """
-- The Message-ID and our reference header of each mail handed to the server (by send
-- attempt), to find the mail a returned one reports.
CREATE TABLE IF NOT EXISTS mail_ids (
    send_id    INTEGER PRIMARY KEY,
    message_id TEXT    NOT NULL,
    ref        TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS mail_ids_message_id ON mail_ids (message_id);
CREATE INDEX IF NOT EXISTS mail_ids_ref ON mail_ids (ref);

-- How far the mailbox has been read, per folder: UIDVALIDITY and the last UID handled.
CREATE TABLE IF NOT EXISTS mailbox_position (
    folder      TEXT    PRIMARY KEY,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    updated     TEXT
) WITHOUT ROWID;

-- Returned mails acted on or listed: hard, soft, sender_side, delayed, to_review.
CREATE TABLE IF NOT EXISTS returned (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT    NOT NULL,
    day         TEXT    NOT NULL,
    folder      TEXT    NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    send_id     INTEGER,
    address     TEXT    NOT NULL DEFAULT '',
    status      TEXT    NOT NULL DEFAULT '',
    reason      TEXT    NOT NULL DEFAULT '',
    subject     TEXT    NOT NULL DEFAULT '',
    report_id   TEXT    NOT NULL DEFAULT '',
    UNIQUE (folder, uidvalidity, uid)
);
CREATE INDEX IF NOT EXISTS returned_address ON returned (address);
"""


def _v3_order_and_step(db: sqlite3.Connection) -> None:
    """Messages keyed by (order key, step) instead of (order id, plan key, step).

    The order key is the id folded as plan names are (case and surrounding spaces
    ignored), so lower-casing the ids, renaming a plan or moving an order to another plan
    never makes a message new again. Rows that now share a key are merged into the one
    that says the most (sending, uncertain, sent, skipped, then the failures and waits);
    the old table stays as `messages_by_plan`, every row of it kept.
    """
    db.create_function("commplan_fold", 1, norm_key, deterministic=True)
    for statement in _V3_STATEMENTS:
        db.execute(statement)


_V3_STATEMENTS = (
    "ALTER TABLE messages RENAME TO messages_by_plan",
    "DROP INDEX IF EXISTS messages_sending",
    """CREATE TABLE messages (
    order_key     TEXT    NOT NULL,
    order_id      TEXT    NOT NULL,
    plan_key      TEXT    NOT NULL,
    plan          TEXT    NOT NULL DEFAULT '',
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
    PRIMARY KEY (order_key, step)
) WITHOUT ROWID""",
    # The name each plan key was last shown with (the SentLog's), for `moved` notes.
    """CREATE TEMP TABLE v3_plan_names AS SELECT plan_key, plan, max(id) AS last
    FROM events GROUP BY plan_key""",
    """INSERT INTO messages (order_key, order_id, plan_key, plan, step, state, due_date,
    emails, detail, updated, attempts, first_waiting, send_id)
    SELECT order_key, order_id, plan_key, plan, step, state, due_date, emails, detail,
    updated, attempts, first_waiting, send_id FROM (
        SELECT commplan_fold(m.order_id) AS order_key, m.order_id, m.plan_key,
        coalesce(s.plan, n.plan, m.plan_key) AS plan, m.step, m.state, m.due_date,
        m.emails, m.detail, m.updated, m.attempts, m.first_waiting, m.send_id,
        row_number() OVER (PARTITION BY commplan_fold(m.order_id), m.step ORDER BY
            CASE m.state WHEN 'sending' THEN 0 WHEN 'uncertain' THEN 1 WHEN 'sent' THEN 2
            WHEN 'skipped' THEN 3 WHEN 'failed_permanent' THEN 4 WHEN 'failed' THEN 5
            ELSE 6 END, m.updated DESC) AS rank
        FROM messages_by_plan m LEFT JOIN sends s ON s.id = m.send_id
        LEFT JOIN v3_plan_names n ON n.plan_key = m.plan_key
    ) WHERE rank = 1""",
    "DROP TABLE v3_plan_names",
    "CREATE INDEX messages_sending ON messages (state) WHERE state = 'sending'",
)

_V4_REFUSED_AND_MARKS = """
-- Recipients the server refused for good while it took a mail for the others (by send).
CREATE TABLE IF NOT EXISTS refused_recipients (
    send_id INTEGER NOT NULL,
    address TEXT    NOT NULL,
    reply   TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (send_id, address)
) WITHOUT ROWID;

-- Mails the server refused for themselves (their content or a policy) after the data.
CREATE TABLE IF NOT EXISTS content_refusals (
    send_id INTEGER PRIMARY KEY,
    reply   TEXT    NOT NULL DEFAULT ''
);

-- Small facts a run keeps for the next: e.g. the day the summary mail last went.
CREATE TABLE IF NOT EXISTS marks (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID
"""

# (number, SQL or function of the connection), numbered 1, 2, 3... in order.
MIGRATIONS: tuple[Migration, ...] = (
    (1, _V1_SCHEMA),  # messages, send attempts and SentLog events
    (2, _RETURNED_SCHEMA),  # Message-IDs of sent mails, mailbox position, returned mails
    (3, _v3_order_and_step),  # a message is (order, step): ids fold, plans may change
    (4, _V4_REFUSED_AND_MARKS),  # refused recipients, refused contents; run marks
)


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """The schema version a ledger has once every migration ran."""
    return migrations[-1][0] if migrations else 0


def migrate(db: sqlite3.Connection, path: Path,
            migrations: Sequence[Migration] = MIGRATIONS) -> None:
    """Apply, in one transaction, every migration the file has not had yet.

    A file written by a newer commplan (a version beyond the last migration) is refused
    untouched.
    """
    if [number for number, _step in migrations] != list(range(1, len(migrations) + 1)):
        raise ValueError("ledger migrations must be numbered 1, 2, 3... in order")
    latest = latest_version(migrations)
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > latest:
            raise CommplanError(_(
                "The ledger {path} was written by a newer commplan (schema {version}); update "
                "commplan before running it on this home folder.").format(
                    path=path, version=version))
        for number, step in migrations[version:]:
            _apply(db, step)
            # PRAGMA takes no parameters; `number` is an int from the list above.
            db.execute(f"PRAGMA user_version = {int(number)}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _apply(db: sqlite3.Connection, step: str | Callable[[sqlite3.Connection], None]) -> None:
    # Not executescript: it would COMMIT first and run outside the migration's transaction.
    if callable(step):
        step(db)
        return
    for statement in step.split(";"):
        if statement.strip():
            db.execute(statement)
