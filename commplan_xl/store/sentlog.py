"""The SentLog sheet's columns, defined once: its header, its widths and the ledger query.

The names here are English; the sheet is written in the workbook's language (the French
names are in excel/names.py: Journal, `commande`, `envoyé`…).

A new SentLog column is one entry of `SENTLOG_COLUMNS` (plus a ledger migration when the
value is not stored yet).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SentLogColumn:
    """One SentLog column: its header, its width in characters and its value, an SQL
    expression over one row of the ledger's `events` table."""

    name: str
    width: float
    sql: str


SENTLOG_COLUMNS: tuple[SentLogColumn, ...] = (
    SentLogColumn("date", 20, "substr(replace(at, 'T', ' '), 1, 19)"),  # to the second
    SentLogColumn("order_id", 16, "order_id"),
    SentLogColumn("customer_id", 12, "customer_id"),
    SentLogColumn("email", 28, "email"),
    SentLogColumn("plan", 18, "plan"),
    SentLogColumn("step", 6, "step"),
    SentLogColumn("due_date", 12, "coalesce(due_date, '')"),
    SentLogColumn("status", 10, "status"),
    SentLogColumn("subject", 50, "subject"),
    SentLogColumn("detail", 60, "detail"),
    SentLogColumn("archive_file", 50, "archive_file"),
)

SENTLOG_HEADER: tuple[str, ...] = tuple(c.name for c in SENTLOG_COLUMNS)
SENTLOG_WIDTHS: dict[str, float] = {c.name: c.width for c in SENTLOG_COLUMNS}
STATUS_COLUMN = SENTLOG_HEADER.index("status")
DETAIL_COLUMN = SENTLOG_HEADER.index("detail")


def in_language(rows: list[tuple], lang: str) -> list[tuple]:
    """The SentLog rows with their status and reasons in `lang` (`envoyé` for `sent`,
    `manqué` for `missed` in French)."""
    from commplan_xl.excel.names import outcome_words

    words = outcome_words(lang)
    if all(word == status for status, word in words.items()):
        return rows
    from commplan_xl.core.schedule import reason_text
    from commplan_xl.i18n import speaking

    i, d = STATUS_COLUMN, DETAIL_COLUMN
    details: dict[str, str] = {}  # the reasons ("missed", "superseded by step 3") said once
    with speaking(lang):
        for row in rows:
            if row[d] not in details:
                details[row[d]] = reason_text(row[d])
    return [(*row[:i], words.get(row[i], row[i]), *row[i + 1:d], details[row[d]], *row[d + 1:])
            for row in rows]


SENTLOG_QUERY = (
    f"SELECT {', '.join(c.sql for c in SENTLOG_COLUMNS)} FROM events ORDER BY id"
)
