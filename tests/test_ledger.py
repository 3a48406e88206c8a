"""The ledger: what was sent survives crashes, reopening and concurrent readers."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from commplan_xl.model import LedgerEntry, MessageRef, Outcome
from commplan_xl.problems import CommplanError
from commplan_xl.store.ledger import SCHEMA_VERSION, UNCERTAIN_DETAIL, Ledger, LedgerConflict
from commplan_xl.store.ledger_schema import MIGRATIONS, migrate

NOW = dt.datetime(2026, 11, 27, 7, 30, 5)
DUE = dt.date(2026, 11, 25)


def msg(order_id: str = "CMD-1", step: int = 3, due_date: dt.date | None = DUE) -> MessageRef:
    """One message, named as the batch names it."""
    return MessageRef(order_id=order_id, customer_id="C0001", plan="Baie vitrée",
                      plan_key="baie vitrée", step=step, due_date=due_date,
                      emails="a@x.fr;b@y.fr")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "commplan-ledger.sqlite3"


@pytest.fixture
def ledger(path: Path):
    with Ledger(path) as led:
        yield led


def test_opens_in_wal_with_a_versioned_schema(path: Path) -> None:
    """The file uses WAL, synchronous NORMAL and records its schema in user_version."""
    with Ledger(path) as led:
        assert led.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert led.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert led.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert led.db.execute("PRAGMA busy_timeout").fetchone()[0] > 0


def test_newer_schema_is_refused(path: Path) -> None:
    """A ledger written by a newer version is not touched: a plain sentence says so."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(CommplanError, match="newer commplan"):
        Ledger(path).open()


def test_missing_folder_is_a_sentence(tmp_path: Path) -> None:
    """A ledger in a folder that does not exist fails with a sentence naming the folder."""
    with pytest.raises(CommplanError, match="does not exist"):
        Ledger(tmp_path / "nope" / "l.sqlite3").open()


def test_begin_then_finish_sent(ledger: Ledger) -> None:
    """begin records `sending`; finish(sent) makes it `sent` with one `sent` event."""
    token = ledger.begin(msg(), subject="Votre commande", now=NOW)
    assert ledger.entry("CMD-1", 3).state == "sending"
    ledger.finish(token, status="sent", archive_file="archive/C0001/x.eml", now=NOW)
    entry = ledger.entry("CMD-1", 3)
    assert (entry.state, entry.attempts, entry.due_date) == ("sent", 1, DUE)
    assert ledger.events() == [Outcome(
        date=NOW, order_id="CMD-1", customer_id="C0001", email="a@x.fr;b@y.fr",
        plan="Baie vitrée", step=3, due_date=DUE, status="sent", subject="Votre commande",
        detail="", archive_file="archive/C0001/x.eml",
    )]


def test_begin_without_finish_is_recovered_as_uncertain(path: Path) -> None:
    """A `sending` row found at the next open becomes `uncertain` with an uncertain event."""
    with Ledger(path) as led:
        led.begin(msg(), subject="S", now=NOW)
    later = NOW + dt.timedelta(days=1)
    with Ledger(path) as led:
        recovered = led.recover(later)
        assert [(e.order_id, e.step, e.state) for e in recovered] == [("CMD-1", 3, "uncertain")]
        (event,) = led.events()
        assert (event.status, event.detail, event.subject, event.date) == (
            "uncertain", UNCERTAIN_DETAIL, "S", later)
        assert "commplan resend ORDER STEP" in event.detail
        assert led.recover(later) == []  # nothing left to recover


def test_killed_process_after_begin_leaves_sending_that_is_recovered(path: Path) -> None:
    """A process SIGKILLed right after begin() leaves `sending`, which the next open recovers."""
    code = (
        "import datetime as dt, sys, time\n"
        "from commplan_xl.model import MessageRef\n"
        "from commplan_xl.store.ledger import Ledger\n"
        "led = Ledger(sys.argv[1]); led.open()\n"
        "led.begin(MessageRef(order_id='CMD-9', customer_id='C1', plan='P', plan_key='p',\n"
        "                     step=2, due_date=dt.date(2026, 11, 1), emails='a@x.fr'),\n"
        "          subject='S', now=dt.datetime(2026, 11, 27, 7, 0))\n"
        "print('begun', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "begun"
    finally:
        child.kill()  # SIGKILL: no cleanup, no atexit, connection never closed
        child.wait()
        child.stdout.close()
    with Ledger(path) as led:
        assert led.entry("CMD-9", 2).state == "sending"
        assert [e.state for e in led.recover(NOW)] == ["uncertain"]
        assert [o.status for o in led.events()] == ["uncertain"]


def test_state_survives_closing_and_reopening(path: Path) -> None:
    """Everything recorded is there again after closing and reopening the file."""
    with Ledger(path) as led:
        token = led.begin(msg(step=1), subject="S", now=NOW)
        led.finish(token, status="sent", now=NOW)
        led.record_skip(msg(step=2), reason="superseded by step 3", now=NOW)
        led.record_waiting(msg(step=3), now=NOW)
        before = led.state()
    with Ledger(path) as led:
        after = led.state()
    assert after == before
    assert {k: e.state for k, e in after.items()} == {
        ("cmd-1", 1): "sent",
        ("cmd-1", 2): "skipped",
        ("cmd-1", 3): "waiting",
    }
    assert isinstance(after["cmd-1", 1], LedgerEntry)


def test_entries_built_fast_equal_normal_ones(ledger: Ledger) -> None:
    """Entries read from the ledger compare equal to LedgerEntry built the ordinary way."""
    token = ledger.begin(msg(), subject="S", now=NOW)
    ledger.finish(token, status="sent", now=NOW)
    assert ledger.entry("CMD-1", 3) == LedgerEntry(
        order_id="CMD-1", plan="baie vitrée", step=3, state="sent", due_date=DUE,
        emails="a@x.fr;b@y.fr", detail="", updated=NOW, attempts=1)
    assert ledger.entry("CMD-1", 4) is None


def test_events_oldest_first_and_since_id(ledger: Ledger) -> None:
    """events() lists outcomes oldest first; since_id returns only the newer ones."""
    for step in (1, 2, 3):
        ledger.record_skip(msg(step=step), reason="missed", now=NOW + dt.timedelta(seconds=step))
    assert [o.step for o in ledger.events()] == [1, 2, 3]
    first = ledger.last_event_id() - 2
    assert [o.step for o in ledger.events(since_id=first)] == [2, 3]
    assert ledger.events(since_id=ledger.last_event_id()) == []


def test_sent_on_counts_sent_and_resends_of_that_day_only(ledger: Ledger) -> None:
    """sent_on counts `sent` events (resends too) of one day, not failures or other days."""
    day = NOW.date()
    for step in (1, 2):
        ledger.finish(ledger.begin(msg(step=step), subject="S", now=NOW), status="sent",
                      now=NOW)
    ledger.finish(ledger.begin(msg(step=3), subject="S", now=NOW), status="failed",
                  detail="451 busy", now=NOW)
    ledger.finish(ledger.begin(msg(step=1), subject="S", now=NOW, resend=True),
                  status="sent", now=NOW)
    yesterday = NOW - dt.timedelta(days=1)
    ledger.finish(ledger.begin(msg("CMD-2"), subject="S", now=yesterday), status="sent",
                  now=yesterday)
    assert ledger.sent_on(day) == 3
    assert ledger.sent_on(day - dt.timedelta(days=1)) == 1
    assert ledger.sent_on(day + dt.timedelta(days=1)) == 0


def test_day_overrides_the_calendar_date_for_daily_limit(ledger: Ledger) -> None:
    """With --today the run's day, not the clock's date, is what sent_on counts."""
    today = dt.date(2027, 1, 4)
    token = ledger.begin(msg(), subject="S", now=NOW, day=today)
    ledger.finish(token, status="sent", now=NOW, day=today)
    assert (ledger.sent_on(today), ledger.sent_on(NOW.date())) == (1, 0)


def test_sent_message_is_never_begun_again(ledger: Ledger) -> None:
    """A message already sent (or uncertain, or skipped) refuses a normal begin."""
    ledger.finish(ledger.begin(msg(step=1), subject="S", now=NOW), status="sent", now=NOW)
    ledger.begin(msg(step=2), subject="S", now=NOW)
    ledger.recover(NOW)
    ledger.record_skip(msg(step=3), reason="missed", now=NOW)
    for step, why in ((1, "already sent"), (2, "may have been sent"), (3, "is skipped")):
        with pytest.raises(LedgerConflict, match=why):
            ledger.begin(msg(step=step), subject="S", now=NOW)


def test_message_being_sent_cannot_be_begun_twice(ledger: Ledger) -> None:
    """Two begins of one message without a finish: the second is refused, even as resend."""
    ledger.begin(msg(), subject="S", now=NOW)
    with pytest.raises(LedgerConflict, match="being sent"):
        ledger.begin(msg(), subject="S", now=NOW, resend=True)


def test_temporary_and_permanent_failures(ledger: Ledger) -> None:
    """Failures are `failed` in SentLog; the detail says whether a later run retries."""
    ledger.finish(ledger.begin(msg(step=1), subject="S", now=NOW), status="failed",
                  detail="451 try later", now=NOW)
    ledger.finish(ledger.begin(msg(step=2), subject="S", now=NOW),
                  status="failed_permanent", detail="550 no such user", now=NOW)
    states = {k[1]: e.state for k, e in ledger.state().items()}
    assert states == {1: "failed", 2: "failed_permanent"}
    assert [(o.status, o.detail) for o in ledger.events()] == [
        ("failed", "451 try later; will be retried"),
        ("failed", "not retried: 550 no such user"),
    ]


def test_failure_detail_already_saying_retried_is_kept(ledger: Ledger) -> None:
    """A caller's detail that already says what happens next is not repeated."""
    token = ledger.begin(msg(), subject="S", now=NOW)
    ledger.finish(token, status="failed", detail="down; will be retried by the next run",
                  now=NOW)
    assert ledger.events()[0].detail == "down; will be retried by the next run"


def test_failed_message_is_retried_and_counts_attempts(ledger: Ledger) -> None:
    """A temporary failure may be begun again; attempts counts each begin."""
    ledger.finish(ledger.begin(msg(), subject="S", now=NOW), status="failed", now=NOW)
    ledger.finish(ledger.begin(msg(), subject="S", now=NOW), status="sent", now=NOW)
    entry = ledger.entry("CMD-1", 3)
    assert (entry.state, entry.attempts) == ("sent", 2)
    assert [o.status for o in ledger.events()] == ["failed", "sent"]


def test_resend_is_recorded_as_resent_on_request(ledger: Ledger) -> None:
    """A resend of a sent message adds a `sent` event with resend=1 and "resent on request"."""
    ledger.finish(ledger.begin(msg(), subject="S", now=NOW), status="sent", now=NOW)
    token = ledger.begin(msg(), subject="S", now=NOW, resend=True)
    ledger.finish(token, status="sent", archive_file="archive/a-2.eml", now=NOW)
    last = ledger.events()[-1]
    assert (last.status, last.detail, last.archive_file) == (
        "sent", "resent on request", "archive/a-2.eml")
    assert ledger.db.execute("SELECT resend FROM events ORDER BY id").fetchall() == [(0,), (1,)]
    assert ledger.entry("CMD-1", 3).state == "sent"


@pytest.mark.parametrize("before", ["sent", "uncertain"])
def test_failed_resend_restores_the_previous_state(ledger: Ledger, before: str) -> None:
    """A resend that fails leaves the message as it was, so no run retries it by itself."""
    token = ledger.begin(msg(), subject="S", now=NOW)
    if before == "sent":
        ledger.finish(token, status="sent", now=NOW)
    else:
        ledger.recover(NOW)
    token = ledger.begin(msg(), subject="S", now=NOW, resend=True)
    ledger.finish(token, status="failed", detail="451 busy", now=NOW)
    assert ledger.entry("CMD-1", 3).state == before
    last = ledger.events()[-1]
    assert (last.status, last.detail) == ("failed", "resend failed: 451 busy")


def test_finish_twice_is_an_error(ledger: Ledger) -> None:
    """One attempt has one outcome: finishing a token twice is refused."""
    token = ledger.begin(msg(), subject="S", now=NOW)
    ledger.finish(token, status="sent", now=NOW)
    with pytest.raises(ValueError, match="already finished"):
        ledger.finish(token, status="failed", now=NOW)
    assert len(ledger.events()) == 1


def test_skip_records_reason_once(ledger: Ledger) -> None:
    """record_skip makes the message `skipped` with its reason; repeating adds no event."""
    ledger.record_skip(msg(), reason="superseded by step 4", now=NOW)
    ledger.record_skip(msg(), reason="superseded by step 4", now=NOW)
    entry = ledger.entry("CMD-1", 3)
    assert (entry.state, entry.detail) == ("skipped", "superseded by step 4")
    assert [(o.status, o.detail) for o in ledger.events()] == [
        ("skipped", "superseded by step 4")]


def test_skip_never_overwrites_a_sent_message(ledger: Ledger) -> None:
    """A sent message cannot become skipped: its record is never lost."""
    ledger.finish(ledger.begin(msg(), subject="S", now=NOW), status="sent", now=NOW)
    with pytest.raises(LedgerConflict):
        ledger.record_skip(msg(), reason="missed", now=NOW)
    with pytest.raises(LedgerConflict):
        ledger.record_failure_before_send(msg(), detail="x", now=NOW)
    assert ledger.entry("CMD-1", 3).state == "sent"


def test_waiting_keeps_the_first_day_and_writes_no_event(ledger: Ledger) -> None:
    """record_waiting keeps the day it first waited and adds nothing to SentLog."""
    ledger.record_waiting(msg(), now=NOW)
    ledger.record_waiting(msg(), now=NOW + dt.timedelta(days=2))
    entry = ledger.entry("CMD-1", 3)
    assert (entry.state, entry.first_waiting) == ("waiting", NOW.date())
    assert ledger.events() == []
    ledger.finish(ledger.begin(msg(), subject="S", now=NOW), status="sent", now=NOW)
    assert ledger.entry("CMD-1", 3).state == "sent"


def test_failure_before_send_is_temporary(ledger: Ledger) -> None:
    """A missing attachment records `failed` (retried once fixed) with the detail."""
    entry = ledger.record_failure_before_send(
        msg(), detail="attachment cgv.pdf is missing", subject="S", now=NOW)
    assert (entry.state, entry.attempts) == ("failed", 0)
    (event,) = ledger.events()
    assert (event.status, event.detail) == (
        "failed", "attachment cgv.pdf is missing; will be retried")
    ledger.begin(msg(), subject="S", now=NOW)  # allowed: it is retried


def test_concurrent_reader_sees_committed_rows(path: Path) -> None:
    """Another connection reads what begin committed, while the writer stays open."""
    with Ledger(path) as writer, Ledger(path) as reader:
        writer.begin(msg(), subject="S", now=NOW)
        assert reader.entry("CMD-1", 3).state == "sending"


def test_aware_datetimes_round_trip(ledger: Ledger) -> None:
    """A timezone-aware `now` comes back as the same aware datetime."""
    aware = NOW.replace(tzinfo=dt.timezone(dt.timedelta(hours=1)))
    ledger.record_skip(msg(), reason="missed", now=aware)
    assert ledger.events()[0].date == aware


def test_file_that_is_not_a_ledger_is_a_sentence(path: Path) -> None:
    """A damaged or foreign file is reported with its path, not a traceback."""
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CommplanError, match="Cannot open the ledger"):
        Ledger(path).open()


def test_state_keeps_every_message_and_its_state(ledger: Ledger, path: Path) -> None:
    """The state read back (done messages packed per order) says the same as the rows: each
    message once, with its exact state, whatever its step or its order's other steps."""
    ledger.finish(ledger.begin(msg(step=1), subject="S", now=NOW), status="sent", now=NOW)
    ledger.record_skip(msg(step=2), reason="missed", now=NOW)
    ledger.begin(msg(step=3), subject="S", now=NOW)  # left sending: a crash
    ledger.begin(msg(step=10), subject="S", now=NOW)
    ledger.recover(NOW)  # step 3 and 10 become uncertain
    ledger.begin(msg(step=4), subject="S", now=NOW)  # sending, not recovered
    ledger.finish(ledger.begin(msg(step=5), subject="S", now=NOW), status="failed",
                  detail="451 later", now=NOW)
    ledger.record_skip(msg(order_id="CMD-2", step=1), reason="missed", now=NOW)
    ledger.record_skip(msg(order_id="CMD-2", step=40), reason="missed", now=NOW)
    expected = {
        ("cmd-1", 1): "sent", ("cmd-1", 2): "skipped",
        ("cmd-1", 3): "uncertain", ("cmd-1", 10): "uncertain",
        ("cmd-1", 4): "sending", ("cmd-1", 5): "failed",
        ("cmd-2", 1): "skipped", ("cmd-2", 40): "skipped",
    }
    with sqlite3.connect(path) as db:
        rows = {(o, n): st for o, n, st in
                db.execute("SELECT order_key, step, state FROM messages")}
    assert rows == expected
    state = ledger.state()
    assert {key: entry.state for key, entry in state.items()} == expected
    assert len(state) == len(expected) == len(list(state))
    assert {entry.state for entry in state.values()} == set(expected.values())
    for key, value in expected.items():
        assert key in state and state[key].state == value and state.get(key).state == value
    for missing in [("cmd-1", 6), ("CMD-1", 1), ("cmd-3", 1), ("cmd-1", "x", 1),
                    ("cmd-1", -1), ("cmd-1", 99), "junk"]:
        assert missing not in state and state.get(missing) is None
    with pytest.raises(KeyError):
        state[("cmd-1", 6)]
    assert state.done_steps["cmd-1"] == 0b10000011110
    assert state[("cmd-1", 5)].detail.startswith("451 later")


def _serial(value: dt.date | None) -> float | int | None:
    """What the SentLog shows for a date: its Excel serial number."""
    from commplan_xl.excel.sheet_xml import excel_serial

    return None if value is None else excel_serial(value)


def test_sentlog_rows_say_what_the_events_say(ledger: Ledger) -> None:
    """The SentLog rows SQLite formats are the events, field for field: the date to the
    second and the due date as Excel serial numbers (none when empty), oldest first."""
    ledger.finish(ledger.begin(msg(step=1), subject="Sujet é", now=NOW), status="sent",
                  archive_file="archive/C0001/x.eml", now=NOW)
    ledger.record_skip(msg(step=2, due_date=None), reason="missed",
                       now=NOW.replace(microsecond=123456))
    rows = ledger.sentlog_rows()
    expected = [
        (pytest.approx(_serial(o.date.replace(microsecond=0)), abs=1e-6), o.order_id,
         o.customer_id, o.email, o.plan, o.step, _serial(o.due_date), o.status, o.subject,
         o.detail, o.archive_file)
        for o in ledger.events()
    ]
    assert rows == expected
    assert rows[1][6] is None


def test_sentlog_rows_start_at_the_first_day_asked(ledger: Ledger) -> None:
    """The SentLog's window: only the outcomes of run days from the first day asked."""
    for n, day in enumerate((dt.date(2026, 11, 1), dt.date(2026, 11, 20)), start=1):
        ledger.record_skip(msg(step=n), reason="missed", now=NOW, day=day)
    assert [r[5] for r in ledger.sentlog_rows(dt.date(2026, 11, 10))] == [2]
    assert [r[5] for r in ledger.sentlog_rows()] == [1, 2]
    # Dated the run's day, at the clock's time of day.
    assert [o.date for o in ledger.events()] == [
        dt.datetime.combine(day, NOW.time()) for day in (dt.date(2026, 11, 1),
                                                         dt.date(2026, 11, 20))]


# The schema and rows a ledger written before numbered migrations holds (user_version 1):
# kept here as text so that later migrations are always tested from a real old file.
V1_SCHEMA = """
CREATE TABLE messages (
    order_id TEXT NOT NULL, plan_key TEXT NOT NULL, step INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('sending', 'sent', 'failed',
        'failed_permanent', 'skipped', 'uncertain', 'waiting')),
    due_date TEXT, emails TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '',
    updated TEXT, attempts INTEGER NOT NULL DEFAULT 0, first_waiting TEXT, send_id INTEGER,
    PRIMARY KEY (order_id, plan_key, step)
) WITHOUT ROWID;
CREATE TABLE sends (
    id INTEGER PRIMARY KEY, order_id TEXT NOT NULL, customer_id TEXT NOT NULL,
    plan TEXT NOT NULL, plan_key TEXT NOT NULL, step INTEGER NOT NULL, due_date TEXT,
    emails TEXT NOT NULL, subject TEXT NOT NULL, resend INTEGER NOT NULL, prev_state TEXT,
    started TEXT NOT NULL, day TEXT NOT NULL, finished TEXT
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, order_id TEXT NOT NULL,
    customer_id TEXT NOT NULL, email TEXT NOT NULL, plan TEXT NOT NULL,
    plan_key TEXT NOT NULL, step INTEGER NOT NULL, due_date TEXT,
    status TEXT NOT NULL CHECK (status IN ('sent', 'failed', 'skipped', 'uncertain')),
    subject TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '',
    archive_file TEXT NOT NULL DEFAULT '', resend INTEGER NOT NULL DEFAULT 0,
    day TEXT NOT NULL
);
CREATE INDEX messages_sending ON messages (state) WHERE state = 'sending';
CREATE INDEX events_sent_day ON events (day) WHERE status = 'sent';
INSERT INTO sends VALUES (1, 'CMD-1', 'C0001', 'Baie vitrée', 'baie vitrée', 1,
    '2026-11-25', 'a@x.fr', 'Votre commande', 0, NULL, '2026-11-27T07:30:05', '2026-11-27',
    '2026-11-27T07:30:05');
INSERT INTO sends VALUES (2, 'CMD-1', 'C0001', 'Baie vitrée', 'baie vitrée', 2,
    '2026-11-26', 'a@x.fr', 'Suite', 0, NULL, '2026-11-27T07:30:06', '2026-11-27', NULL);
INSERT INTO messages VALUES ('CMD-1', 'baie vitrée', 1, 'sent', '2026-11-25', 'a@x.fr', '',
    '2026-11-27T07:30:05', 1, NULL, 1);
INSERT INTO messages VALUES ('CMD-1', 'baie vitrée', 2, 'sending', '2026-11-26', 'a@x.fr',
    '', '2026-11-27T07:30:06', 1, NULL, 2);
INSERT INTO messages VALUES ('CMD-2', 'baie vitrée', 1, 'skipped', NULL, 'b@y.fr', 'missed',
    '2026-11-27T07:30:05', 0, NULL, NULL);
INSERT INTO messages VALUES ('CMD-3', 'baie vitrée', 1, 'waiting', '2026-11-27', 'c@z.fr',
    'daily limit', '2026-11-27T07:30:05', 0, '2026-11-27', NULL);
INSERT INTO events VALUES (1, '2026-11-27T07:30:05', 'CMD-2', 'C0002', 'b@y.fr',
    'Baie vitrée', 'baie vitrée', 1, NULL, 'skipped', '', 'missed', '', 0, '2026-11-27');
INSERT INTO events VALUES (2, '2026-11-27T07:30:05', 'CMD-1', 'C0001', 'a@x.fr',
    'Baie vitrée', 'baie vitrée', 1, '2026-11-25', 'sent', 'Votre commande', '',
    'archive/C0001/x.eml', 0, '2026-11-27');
PRAGMA user_version = 1;
"""


def _version_1_file(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.close()


def test_version_1_ledger_keeps_every_row_and_reaches_the_latest_schema(path: Path) -> None:
    """A ledger written before numbered migrations opens with every row it had, reaches the
    latest schema version, and its interrupted send is recovered as before."""
    _version_1_file(path)
    with Ledger(path) as led:
        assert led.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert {k: e.state for k, e in led.state().items()} == {
            ("cmd-1", 1): "sent", ("cmd-1", 2): "sending",
            ("cmd-2", 1): "skipped", ("cmd-3", 1): "waiting",
        }
        assert led.entry("CMD-3", 1).first_waiting == dt.date(2026, 11, 27)
        at = pytest.approx(_serial(dt.datetime(2026, 11, 27, 7, 30, 5)), abs=1e-6)
        assert led.sentlog_rows() == [
            (at, "CMD-2", "C0002", "b@y.fr", "Baie vitrée", 1, None,
             "skipped", "", "missed", ""),
            (at, "CMD-1", "C0001", "a@x.fr", "Baie vitrée", 1,
             _serial(dt.date(2026, 11, 25)), "sent", "Votre commande", "",
             "archive/C0001/x.eml"),
        ]
        (recovered,) = led.recover(NOW)
        assert (recovered.order_id, recovered.step, recovered.state) == ("CMD-1", 2, "uncertain")
        assert led.events()[-1].subject == "Suite"
        with pytest.raises(LedgerConflict, match="already sent"):
            led.begin(msg(step=1), subject="S", now=NOW)
    with Ledger(path) as led:  # opening again changes nothing
        assert len(led.events()) == 3


def test_a_new_migration_adds_a_column_to_an_old_file(path: Path) -> None:
    """Appending a migration is all a new column takes: an old file gets it, keeps its rows
    and records the new version; a function can be a migration too."""
    _version_1_file(path)
    extra = (
        (SCHEMA_VERSION + 1, "ALTER TABLE events ADD COLUMN language TEXT NOT NULL DEFAULT 'fr'"),
        (SCHEMA_VERSION + 2, lambda db: db.execute("UPDATE events SET language = 'en' "
                                                   "WHERE status = 'sent'")),
    )
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, path, (*MIGRATIONS, *extra))
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 2
    assert db.execute("SELECT order_id, status, language FROM events ORDER BY id").fetchall() == [
        ("CMD-2", "skipped", "fr"), ("CMD-1", "sent", "en")]
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 4
    db.close()


def test_migrations_must_be_numbered_in_order(path: Path) -> None:
    """A gap or a repeat in the migration numbers is refused before the file is touched."""
    db = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(ValueError, match="numbered"):
        migrate(db, path, (*MIGRATIONS, (SCHEMA_VERSION + 2, "SELECT 1")))
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()


def test_newer_than_known_schema_is_refused_untouched(path: Path) -> None:
    """A ledger at a version this commplan does not know is refused with a sentence naming
    the file and what to do, and its rows stay as they were."""
    _version_1_file(path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(CommplanError) as refused:
        Ledger(path).open()
    assert str(refused.value) == (
        f"The ledger {path} was written by a newer commplan (schema {SCHEMA_VERSION + 1}); "
        "update commplan before running it on this home folder.")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 2


def test_sentlog_sheet_written_from_the_ledger_reads_back(tmp_path: Path) -> None:
    """The SentLog sheet the batch writes from the ledger (of an en_GB workbook) reads back
    as the outcomes: the header, real dates with a date format, numbers, text, an empty due
    date left empty."""
    import openpyxl

    from commplan_xl.run.batch import load_site, write_sentlog
    from tests.builders import DEFAULT_SETTINGS, make_workbook

    make_workbook(tmp_path, settings=[*(r for r in DEFAULT_SETTINGS if r["key"] != "locale"),
                                      {"key": "locale", "value": "en_GB"}])
    site = load_site(tmp_path)
    with Ledger(site.ledger_path) as led:
        led.finish(led.begin(msg(step=1), subject="Sujet é", now=NOW), status="sent",
                   archive_file="archive/C0001/x.eml", now=NOW)
        led.record_skip(msg(step=2, due_date=None), reason="missed", now=NOW)
        assert write_sentlog(site, led)
    ws = openpyxl.load_workbook(site.workbook)["SentLog"]
    assert [[c.value for c in row] for row in ws.iter_rows()] == [
        ["date", "order_id", "customer_id", "email", "plan", "step", "due_date", "status",
         "subject", "detail", "archive_file"],
        [NOW.replace(microsecond=0), "CMD-1", "C0001", "a@x.fr;b@y.fr", "Baie vitrée", 1,
         dt.datetime(2026, 11, 25), "sent", "Sujet é", "", "archive/C0001/x.eml"],
        [NOW.replace(microsecond=0), "CMD-1", "C0001", "a@x.fr;b@y.fr", "Baie vitrée", 2,
         None, "skipped", "", "missed", ""],
    ]
    assert (ws["A2"].number_format, ws["G2"].number_format) == ("dd/mm/yyyy hh:mm",
                                                                "dd/mm/yyyy")
    assert ws["A1"].font.b and ws.freeze_panes == "A2" and ws.auto_filter.ref == "A1:K3"
