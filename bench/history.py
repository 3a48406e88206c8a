"""Benchmark: a workbook that stays light. A 40-shop chain's `commplan run` after a year of
history against the same run after one month, with `sentlog_days` 30.

Both homes hold the same workbook (50,000 orders) and the same ledger state (every message
the runs before today sent or skipped); only the history differs: the outcomes of the last
30 days, or of the last 365 days (about 600 a day: 220,000 rows, the size the SentLog grew
to before it kept a window). Each round copies each home and times the whole
`commplan run --today` process (sending today's due mails to a local server that drops
them, archive, ledger, SentLog, Dashboard and Forecast), then reads the workbook's size.

    python bench/history.py [--repeat 3] [--orders 50000] [--per-day 600] [--keep DIR]

Target: the year's time and size within 1.3x of the month's. For reference it also times
the year with `sentlog_days` 365 (the default), whose SentLog holds the whole year.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import (  # noqa: E402 - the sibling script's helpers
    TODAY,
    fill_ledger,
    free_port,
    interleaved,
    start_server,
    timed,
    write_big_workbook,
)

LEDGER = "commplan-ledger.sqlite3"


def add_history(ledger: Path, *, days: int, per_day: int) -> int:
    """Replace the ledger's outcomes by `per_day` outcomes on each of the `days` run days
    before today (the messages' states stay as they are); the number written."""
    db = sqlite3.connect(ledger)
    try:
        sample = db.execute(
            "SELECT order_id, customer_id, email, plan, plan_key, step, due_date "
            "FROM events LIMIT ?", (per_day,)).fetchall()
        db.execute("DELETE FROM events")
        rows = []
        for n in range(days, 0, -1):
            day = TODAY - dt.timedelta(days=n)
            for i, (order, customer, _email, plan, key, step, due) in enumerate(sample):
                at = f"{day.isoformat()}T06:{30 + i % 30:02d}:{i % 60:02d}"
                status = "sent" if i % 5 else "skipped"
                rows.append((at, order, customer, f"{customer.lower()}@example.test", plan,
                             key, step, due, status, f"Votre commande {order}",
                             "" if status == "sent" else "missed",
                             f"archive/{customer}/{day}_{order}_step-{step}.eml" if
                             status == "sent" else "", day.isoformat()))
        db.executemany(
            "INSERT INTO events (at, order_id, customer_id, email, plan, plan_key, step, "
            "due_date, status, subject, detail, archive_file, day) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.commit()
        return len(rows)
    finally:
        db.close()


def make_homes(work: Path, orders: int, per_day: int) -> dict[str, Path]:
    base = work / "base"
    wb = base / "workbooks" / "commplan.xlsx"
    if not (base / LEDGER).exists():
        print(f"generating {orders} orders and the ledger of the runs before today …",
              flush=True)
        write_big_workbook(wb, orders=orders, customers=orders * 2 // 5,
                           settings=(("sentlog_days", 30),))
        (base / "attachments").mkdir(exist_ok=True)
        fill_ledger(base, TODAY - dt.timedelta(days=1))
    homes = {}
    for name, days in (("month", 30), ("year", 365)):
        home = work / name
        if not home.exists():
            shutil.copytree(base, home)
            n = add_history(home / LEDGER, days=days, per_day=per_day)
            print(f"  {name}: {n} outcomes in the ledger", flush=True)
        homes[name] = home
    # For reference: the same year with the default window (365 days: the whole history).
    full = work / "year-365"
    if not full.exists():
        shutil.copytree(homes["year"], full)
        write_big_workbook(full / "workbooks" / "commplan.xlsx", orders=orders,
                           customers=orders * 2 // 5, settings=(("sentlog_days", 365),))
    homes["year-365"] = full
    return homes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--per-day", type=int, default=600)
    parser.add_argument("--keep", type=Path, help="work folder to keep (and reuse)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="commplan-history-"))
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = start_server(port)
    env = {**os.environ, "COMMPLAN_SMTP_PORT": str(port), "COMMPLAN_SMTP_HOST": "127.0.0.1"}
    env.pop("COMMPLAN_SMTP_USER", None)
    sizes: dict[str, float] = {}
    try:
        homes = make_homes(work, args.orders, args.per_day)

        def one_run(name: str):
            def run() -> tuple[float, int]:
                home = work / f"{name}-copy"
                shutil.rmtree(home, ignore_errors=True)
                shutil.copytree(homes[name], home)
                took = timed(["-m", "commplan_xl", "run", "--home", str(home), "--today",
                              TODAY.isoformat()], env=env)
                sizes[name] = (home / "workbooks" / "commplan.xlsx").stat().st_size / 1e6
                return took
            return run

        got = interleaved({"month": one_run("month"), "year": one_run("year"),
                           "year-365": one_run("year-365")}, args.repeat)
        (month_t, month_m, _), (year_t, year_m, year_r), (full_t, full_m, full_r) = got.values()
        print(f"\n40-shop chain, {args.orders} orders, sentlog_days 30, median of "
              f"{args.repeat}:")
        print(f"  after one month: run {month_t:6.2f} s   workbook {sizes['month']:6.2f} MB   "
              f"peak {month_m / 1024:5.0f} MiB")
        print(f"  after one year:  run {year_t:6.2f} s   workbook {sizes['year']:6.2f} MB   "
              f"peak {year_m / 1024:5.0f} MiB")
        print(f"  year / month: time {year_r:.2f}x, workbook "
              f"{sizes['year'] / sizes['month']:.2f}x (target <= 1.3x)")
        print(f"  for reference, the year with sentlog_days 365 (the whole history in the "
              f"sheet): run {full_t:6.2f} s ({full_r:.2f}x), workbook {sizes['year-365']:.2f} MB, "
              f"peak {full_m / 1024:.0f} MiB")
    finally:
        server.stdin.close()
        server.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
