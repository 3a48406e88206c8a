"""Benchmarks: `commplan due` on 50,000 orders and `commplan run` sending 1,000 mails.

Prints medians of several runs, each as a ratio to its floor measured in the same run:

- due:  the whole `commplan due` process (its listing for people; `--csv` takes the same
        time) on a 50,000-order / 20,000-customer workbook, on a usual morning (the
        ledger of the runs before) and on a first run (no ledger: every past step listed),
        against a process that only reads the same sheets with python-calamine;
- run:  the whole `commplan run` process sending 1,000 mails with a 50 KB attachment each to a
        local aiosmtpd server (archive, ledger and SentLog included), against one smtplib
        connection sending 1,000 pre-built messages of the same size to the same server;
- peak memory (max RSS) of each process.

Each round runs the floor and then ours, one after the other, so the shared machine's load
weighs on both alike; the ratio printed is the median of the rounds' ratios.

    python bench/bench.py [--repeat 5] [--orders 50000] [--mails 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEAK = HERE / "_peak.py"
TODAY = dt.date(2026, 11, 27)
FIRST = ["Éloïse", "François", "Zoé", "Mathéo", "Inès", "Noël", "Anaïs", "Jérôme", "Léa", "Gaël"]
LAST = ["Lefèvre", "Nguyễn", "Dupré", "Bénard", "Garçon", "Moreau", "Roux", "Faure", "Brun"]
STORES = ["Lyon Part-Dieu", "Paris Nation", "Nantes Centre", "Lille Grand Place", "Metz"]
UNITS = ["days", "business days", "weeks", "months"]


def plans_rows() -> list[list]:
    rows = [["plan", "step", "delay", "unit", "subject", "body", "from", "attachments",
             "active", "required"]]
    for p, name in enumerate(["Baie vitrée", "Porte d'entrée", "Volets roulants"]):
        for step in range(1, 11):
            unit = UNITS[(p + step) % 4]
            delay = {"days": 5 * step, "business days": 4 * step, "weeks": step,
                     "months": step * 0.5}[unit]
            rows.append([
                name, step, delay, unit,
                f"{{{{ customer.name }}}}, votre commande {{{{ order.order_id }}}} — étape {step}",
                "Bonjour {{ customer.name }},\n\nvotre commande {{ order.product }} avance : "
                f"étape {step} prévue le {{{{ step.due_date|date }}}}.\n"
                "Votre magasin {{ order.store }} reste à votre écoute au {{ company_phone }}.\n"
                "\n{{ sender.name }}",
                "date_de_livraison" if step >= 9 else "", "", "oui", "non",
            ])
    return rows


def write_big_workbook(path: Path, *, orders: int, customers: int, due_mails: int = 0,
                       attachment: str = "", settings: tuple[tuple[str, object], ...] = ()
                       ) -> None:
    """A workbook like a 40-shop chain's: 3 plans x 10 steps, realistic columns; `settings`
    adds rows to the Settings sheet."""
    from openpyxl import Workbook

    rnd = random.Random(42)
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Settings")
    for row in (["key", "value"], ["sender_email", "service@example.test"],
                ["sender_name", "Menuiseries Dupont"], ["smtp_host", "127.0.0.1"],
                ["smtp_port", 2525], ["holidays", "FR"], ["catch_up_days", 7],
                *map(list, settings)):
        ws.append(row)
    ws = wb.create_sheet("Plans")
    plan_rows = plans_rows()
    if due_mails:
        # one plan, one step due today for every order: exactly `due_mails` mails
        plan_rows = [plan_rows[0], ["Envoi", 1, 0, "days", plan_rows[1][4], plan_rows[1][5],
                                    "", attachment, "oui", "non"]]
    for row in plan_rows:
        ws.append(row)
    ws = wb.create_sheet("Customers")
    ws.append(["customer_id", "name", "email", "opt_out", "telephone", "ville"])
    for i in range(customers):
        ws.append([f"C{i:06d}", f"{rnd.choice(FIRST)} {rnd.choice(LAST)}",
                   f"client{i}@example.test", "non" if i % 50 else "oui",
                   f"06 {rnd.randint(10, 99)} {rnd.randint(10, 99)} {rnd.randint(10, 99)} 00",
                   rnd.choice(STORES).split()[0]])
    ws = wb.create_sheet("Orders")
    ws.append(["order_id", "customer_id", "plan", "start_date", "status", "product", "store",
               "amount", "date_de_livraison", "vendeur"])
    names = ["Baie vitrée", "Porte d'entrée", "Volets roulants"]
    for i in range(orders):
        if due_mails:
            start, plan, status = TODAY, "Envoi", "active"
            cust = f"C{i % customers:06d}"
        else:
            start = TODAY - dt.timedelta(days=rnd.randint(0, 120))
            plan = rnd.choice(names)
            status = rnd.choice(["active"] * 8 + ["paused", "done"])
            cust = f"C{rnd.randrange(customers):06d}"
        delivery = start + dt.timedelta(days=56) if rnd.random() < 0.5 else None
        ws.append([f"CMD-{i:07d}", cust, plan, start, status, "Baie coulissante alu",
                   rnd.choice(STORES), round(rnd.uniform(500, 9000), 2), delivery,
                   rnd.choice(FIRST)])
    ws = wb.create_sheet("Variables")
    ws.append(["variable", "value", "description"])
    ws.append(["company_phone", "01 23 45 67 89", "standard"])
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall time of a process and its peak RSS in KiB (printed by _peak.py)."""
    if hasattr(os, "sync"):
        os.sync()  # start on a quiet disk: the last run's files (or their removal) written
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(PEAK), *cmd], capture_output=True, text=True,
                       env=env)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith('{"maxrss_kib"')]
    if not lines:
        raise SystemExit(f"{cmd}: no peak memory reported:\n{r.stderr[-2000:]}")
    peak = json.loads(lines[-1])["maxrss_kib"]
    return elapsed, peak


def interleaved(fns: dict[str, object], repeat: int) -> dict[str, tuple[float, int, float]]:
    """Run each of `fns` once per round, `repeat` rounds, in turn: the shared machine's
    load then weighs on each about alike. Per name: (median time, max peak, median of the
    per-round ratio to the first name's time)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    peaks: dict[str, list[int]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t, p = fn()  # type: ignore[operator]
            times[name].append(t)
            peaks[name].append(p)
    floor = times[next(iter(fns))]
    print("  rounds (s): " + "  ".join(
        "/".join(f"{times[name][r]:.2f}" for name in fns) for r in range(repeat))
        + "   (" + "/".join(fns) + ")", flush=True)
    return {
        name: (statistics.median(ts), max(peaks[name]),
               statistics.median(t / f for t, f in zip(ts, floor, strict=True)))
        for name, ts in times.items()
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    """A local aiosmtpd in its own process that accepts and drops every message."""
    code = (
        "import time,sys\n"
        "from aiosmtpd.controller import Controller\n"
        "class H:\n"
        "    async def handle_DATA(self, server, session, envelope):\n"
        "        return '250 OK'\n"
        f"c=Controller(H(), hostname='127.0.0.1', port={port}, data_size_limit=0)\n"
        "c.start(); print('ready', flush=True)\n"
        "sys.stdin.read()\n"
        "c.stop()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def bench_due(work: Path, orders: int, repeat: int) -> None:
    home = work / "due-home"
    wb = home / "workbooks" / "commplan.xlsx"
    if not wb.exists():
        print(f"generating {orders} orders / {orders * 2 // 5} customers …", flush=True)
        write_big_workbook(wb, orders=orders, customers=orders * 2 // 5)
    (home / "attachments").mkdir(exist_ok=True)
    size = wb.stat().st_size / 1e6
    ledger = home / "commplan-ledger.sqlite3"
    if not ledger.exists():
        print("filling the ledger with what the runs before today did …", flush=True)
        fill_ledger(home, TODAY - dt.timedelta(days=1))
    floor_cmd = ["-c", (
        "import sys; from python_calamine import CalamineWorkbook as W\n"
        "w = W.from_path(sys.argv[1])\n"
        "for n in ('Settings','Plans','Customers','Orders','Variables'):\n"
        "    w.get_sheet_by_name(n).to_python()\n"), str(wb)]
    fresh = work / "due-first"
    if not (fresh / "workbooks" / "commplan.xlsx").exists():
        (fresh / "workbooks").mkdir(parents=True, exist_ok=True)
        (fresh / "attachments").mkdir(exist_ok=True)
        shutil.copy2(wb, fresh / "workbooks" / "commplan.xlsx")
    def due_cmd(h: Path, *extra: str) -> list[str]:
        return ["-m", "commplan_xl", "due", "--home", str(h), "--today", TODAY.isoformat(),
                *extra]

    timed(due_cmd(home))  # warm the file cache and any first-run work
    got = interleaved({"floor": lambda: timed(floor_cmd), "due": lambda: timed(due_cmd(home)),
                       "first": lambda: timed(due_cmd(fresh))}, repeat)
    (floor_t, floor_m, _), (due_t, due_m, due_r), (first_t, first_m, first_r) = got.values()
    lines = subprocess.run([sys.executable, *due_cmd(home, "--csv")],
                           capture_output=True, text=True).stdout.count("\n") - 1
    first_lines = subprocess.run([sys.executable, *due_cmd(fresh, "--csv")],
                                 capture_output=True, text=True).stdout.count("\n") - 1
    print(f"\ndue on {orders} orders ({size:.1f} MB workbook), median of {repeat}:")
    print(f"  floor (calamine read only):            {floor_t:6.2f} s   "
          f"peak {floor_m / 1024:6.0f} MiB")
    print(f"  commplan due, a usual morning:         {due_t:6.2f} s   "
          f"peak {due_m / 1024:6.0f} MiB   ({lines} decisions)")
    print(f"  commplan due, first run (empty ledger): {first_t:5.2f} s   "
          f"peak {first_m / 1024:6.0f} MiB   ({first_lines} decisions)")
    print(f"  ratio, usual morning: {due_r:.2f}x (target <= 2.5x; ratio of medians "
          f"{due_t / floor_t:.2f}x); memory {due_m / floor_m:.2f}x")
    print(f"  ratio, first run:     {first_r:.2f}x (ratio of medians {first_t / floor_t:.2f}x); "
          f"memory {first_m / floor_m:.2f}x")


def fill_ledger(home: Path, day: dt.date) -> None:
    """Record what daily runs up to `day` did (every due message sent or skipped), as a
    site that has run every morning would have it."""
    from commplan_xl.model import MessageRef
    from commplan_xl.run import batch
    from commplan_xl.store.ledger import Ledger

    site = batch.load_site(home)
    decisions = batch.site_decisions(site, {}, today=day)
    now = dt.datetime.combine(day, dt.time(6, 30))
    with Ledger(site.ledger_path) as ledger:
        for d in decisions:
            message = MessageRef(order_id=d.order_id, customer_id=d.customer_id,
                                 plan=d.plan_name, plan_key=d.plan, step=d.step,
                                 due_date=d.due_date, emails="")
            ledger.record_skip(message, reason="bench", now=now, day=day)


def bench_run(work: Path, mails: int, repeat: int) -> None:
    import email.policy
    from email.message import EmailMessage

    port = free_port()
    server = start_server(port)
    copies: list[Path] = []
    try:
        base = work / "run-home"
        wb = base / "workbooks" / "commplan.xlsx"
        (base / "attachments").mkdir(parents=True, exist_ok=True)
        attachment = os.urandom(50_000)
        (base / "attachments" / "fiche.pdf").write_bytes(attachment)
        write_big_workbook(wb, orders=mails, customers=mails, due_mails=mails,
                           attachment="fiche.pdf")
        env = {**os.environ, "COMMPLAN_SMTP_PORT": str(port), "COMMPLAN_SMTP_HOST": "127.0.0.1"}
        env.pop("COMMPLAN_SMTP_USER", None)

        # Each run gets its own copy of the home, and the copies are removed only once
        # every round is done: a run right after a removal of thousands of files is slowed
        # by the file system, not by commplan (ext4 skips recently freed inodes when it
        # makes the archive's 1,000 folders and files). A daily run never follows such a
        # removal.
        def one_run() -> tuple[float, int]:
            home = work / f"run-copy-{os.getpid()}-{len(copies)}"
            copies.append(home)
            shutil.copytree(base, home)
            return timed(["-m", "commplan_xl", "run", "--home", str(home), "--today",
                          TODAY.isoformat()], env=env)

        msgs = []
        for i in range(mails):
            m = EmailMessage()
            m["From"] = "Menuiseries Dupont <service@example.test>"
            m["To"] = f"client{i}@example.test"
            m["Subject"] = f"Client {i}, votre commande CMD-{i:07d} — étape 1"
            m.set_content("Bonjour,\n\nvotre commande avance.\n" * 3)
            m.add_alternative("<p>Bonjour,</p><p>votre commande avance.</p>", subtype="html")
            m.add_attachment(attachment, maintype="application", subtype="pdf",
                             filename="fiche.pdf")
            msgs.append(m.as_bytes(policy=email.policy.SMTP))  # CRLF, as SMTP wants
        blob = work / "prebuilt.bin"
        import pickle

        blob.write_bytes(pickle.dumps(msgs))
        floor_cmd = ["-c", (
            "import pickle, smtplib, sys\n"
            "msgs = pickle.loads(open(sys.argv[1], 'rb').read())\n"
            f"s = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\n"
            "for i, m in enumerate(msgs):\n"
            "    s.sendmail('service@example.test', [f'client{i}@example.test'], m)\n"
            "s.quit()\n"), str(blob)]
        timed(floor_cmd)
        one_run()
        got = interleaved({"floor": lambda: timed(floor_cmd), "run": one_run}, repeat)
        (floor_t, floor_m, _), (run_t, run_m, run_r) = got.values()
        print(f"\nrun sending {mails} mails with a 50 KB attachment, median of {repeat}:")
        print(f"  floor (one smtplib connection, pre-built): {floor_t:6.2f} s   "
              f"peak {floor_m / 1024:6.0f} MiB")
        print(f"  commplan run (archive, ledger, SentLog):  {run_t:6.2f} s   "
              f"peak {run_m / 1024:6.0f} MiB")
        print(f"  ratio: {run_r:.2f}x (target <= 1.2x; ratio of medians "
              f"{run_t / floor_t:.2f}x); memory {run_m / floor_m:.2f}x")
    finally:
        server.stdin.close()
        server.wait(timeout=10)
        for home in copies:
            shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--mails", type=int, default=1_000)
    parser.add_argument("--only", choices=["due", "run"])
    parser.add_argument("--keep", type=Path, help="work folder to keep (and reuse)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="commplan-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    # Byte-compile the package, as `pip install` does: an editable checkout under
    # PYTHONDONTWRITEBYTECODE (as in CI) would otherwise compile it again in every process.
    import compileall

    import commplan_xl

    compileall.compile_dir(Path(commplan_xl.__file__).parent, quiet=1)
    try:
        if args.only in (None, "due"):
            bench_due(work, args.orders, args.repeat)
        if args.only in (None, "run"):
            bench_run(work, args.mails, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
