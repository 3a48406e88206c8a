"""The SentLog sheet's columns, defined once: its header, its widths, its formats and the
ledger query. The same columns make `commplan log`'s export.

The names here are English; the sheet is written in the workbook's language (the French
names are in excel/names.py: Journal, `commande`, `envoyé`…).

A new SentLog column is one entry of `SENTLOG_COLUMNS` (plus a ledger migration when the
value is not stored yet).
"""

from __future__ import annotations

from dataclasses import dataclass

# julianday() of Excel's day 0 (1899-12-30): julianday(x) - this is x's Excel serial number.
_EXCEL_EPOCH_JULIAN = 2415018.5


@dataclass(frozen=True)
class SentLogColumn:
    """One SentLog column: its header, its width in characters, its value (an SQL
    expression over one row of the ledger's `events` table) and its cell format."""

    name: str
    width: float
    sql: str
    format: str = ""  # "date", "datetime" (the value is an Excel serial number) or ""


SENTLOG_COLUMNS: tuple[SentLogColumn, ...] = (
    # To the second, from the stored ISO text (the run's day at the clock's time).
    SentLogColumn("date", 16.5, f"round(julianday(substr(at, 1, 19)) - {_EXCEL_EPOCH_JULIAN}, 8)",
                  "datetime"),
    SentLogColumn("order_id", 15, "order_id"),
    SentLogColumn("customer_id", 11, "customer_id"),
    SentLogColumn("email", 26, "email"),
    SentLogColumn("plan", 15, "plan"),
    SentLogColumn("step", 6, "step"),
    SentLogColumn("due_date", 11,
                  f"CAST(julianday(due_date) - {_EXCEL_EPOCH_JULIAN} AS INTEGER)", "date"),
    SentLogColumn("status", 10, "status"),
    SentLogColumn("subject", 40, "subject"),
    SentLogColumn("detail", 40, "detail"),
    SentLogColumn("archive_file", 34, "archive_file"),
)

SENTLOG_HEADER: tuple[str, ...] = tuple(c.name for c in SENTLOG_COLUMNS)
SENTLOG_WIDTHS: dict[str, float] = {c.name: c.width for c in SENTLOG_COLUMNS}
# By column index: the header is written in the workbook's language.
SENTLOG_FORMATS: dict[int, str] = {i: c.format for i, c in enumerate(SENTLOG_COLUMNS)
                                   if c.format}
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


# The outcomes of the run days from a first day on (a parameter), oldest first.
SENTLOG_QUERY = (
    f"SELECT {', '.join(c.sql for c in SENTLOG_COLUMNS)} FROM events WHERE day >= ? "
    "ORDER BY id"
)
