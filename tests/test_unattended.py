"""Unattended mornings: crashes, a second run, server faults, daily_limit, schedule, log file."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openpyxl

from commplan_xl.cli import main
from tests.builders import DEFAULT_PLANS, make_workbook
from tests.smtp_server import SMTPServer, free_port
from tests.test_run import sentlog, settings_for

PLAN_ONE_STEP = [{**DEFAULT_PLANS[0], "delay": 0}]


def many_orders(n: int, start: dt.date = dt.date(2026, 3, 2)) -> tuple[list, list]:
    customers = [{"customer_id": f"C{i:04d}", "name": f"Client {i}",
                  "email": f"client{i}@example.test"} for i in range(n)]
    orders = [{"order_id": f"O{i:04d}", "customer_id": f"C{i:04d}", "plan": "Baie vitrée",
               "start_date": start, "product": "Baie"} for i in range(n)]
    return customers, orders


def cmd(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "commplan_xl", *args, "--home", str(home)]


def test_kill_mid_batch_then_rerun_delivers_each_mail_once(tmp_path):
    """SIGKILL during a run of 300 mails: after a second run every mail arrived once, except at
    most the one in flight, which is uncertain and not resent; ledger, archive and SentLog agree."""
    n = 300
    customers, orders = many_orders(n)
    with SMTPServer(delay=0.01) as server:
        make_workbook(tmp_path, settings=settings_for(server), plans=PLAN_ONE_STEP,
                      customers=customers, orders=orders)
        proc = subprocess.Popen(cmd(tmp_path, "run", "--today", "2026-03-02"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(server.received) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first = len(server.received)
        assert 0 < first < n
        r = subprocess.run(cmd(tmp_path, "run", "--today", "2026-03-02"), capture_output=True,
                           text=True)
        received = [rc for m in server.received for rc in m.rcpt_tos]
    rows = sentlog(tmp_path)
    statuses = [r["status"] for r in rows]
    uncertain = [r["email"] for r in rows if r["status"] == "uncertain"]
    assert len(uncertain) <= 1
    assert r.returncode == (1 if uncertain else 0), r.stdout + r.stderr
    counts = {a: received.count(a) for a in set(received)}
    assert all(c == 1 for c in counts.values())  # never twice
    expected = {c["email"] for c in customers}
    assert set(received) | set(uncertain) == expected
    assert statuses.count("sent") + len(uncertain) == n
    sent_rows = [r for r in rows if r["status"] == "sent"]
    archived = {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "archive").rglob("*.eml")}
    logged = {r["archive_file"] for r in sent_rows}
    assert logged <= archived
    # A kill between the archive write and the ledger's "sent" leaves the uncertain mail's
    # archive file: never another one.
    extra = archived - logged
    assert len(extra) <= len(uncertain)
    uncertain_orders = {r["order_id"] for r in rows if r["status"] == "uncertain"}
    assert all(any(o in name for o in uncertain_orders) for name in extra), (extra, uncertain)
    # The killed run's temporary files are gone after the second run.
    assert not list((tmp_path / "archive").rglob(".tmp-*.part"))
    assert not list((tmp_path / "workbooks").glob(".commplan.*.tmp"))


def test_second_run_while_one_is_running_exits_at_once(tmp_path):
    """Only one run at a time: a second one says so and sends nothing."""
    customers, orders = many_orders(40)
    with SMTPServer(delay=0.05) as server:
        make_workbook(tmp_path, settings=settings_for(server), plans=PLAN_ONE_STEP,
                      customers=customers, orders=orders)
        first = subprocess.Popen(cmd(tmp_path, "run", "--today", "2026-03-02"),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not server.received and time.monotonic() < deadline:
            time.sleep(0.01)
        second = subprocess.run(cmd(tmp_path, "run", "--today", "2026-03-02"),
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert "travaille déjà" in (second.stdout + second.stderr)
        first.wait(timeout=60)
        recipients = [rc for m in server.received for rc in m.rcpt_tos]
    assert len(recipients) == len(set(recipients)) == 40


def test_server_down_at_start_then_next_run_sends(tmp_path, capsys):
    """Server down: exit 1, a few failures recorded and the run stops trying; the next run sends."""
    customers, orders = many_orders(10)
    port = free_port()
    server = SMTPServer(port=port)
    make_workbook(tmp_path, settings=settings_for(server), plans=PLAN_ONE_STEP,
                  customers=customers, orders=orders)
    assert main(["run", "--today", "2026-03-02", "--home", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "a cessé d'essayer" in out
    failed = [r for r in sentlog(tmp_path) if r["status"] == "failed"]
    assert 1 <= len(failed) <= 3  # not one failure per mail
    with server:
        assert main(["run", "--today", "2026-03-03", "--home", str(tmp_path)]) == 0
        assert len(server.received) == 10


def test_550_not_retried_451_retried(tmp_path):
    """A 550 for one address is not retried; a 451 for another is retried by the next run."""
    customers, orders = many_orders(3)
    with SMTPServer(rcpt_replies={"client0@example.test": "550 5.1.1 no such user",
                                  "client1@example.test": "451 4.7.1 try later"}) as server:
        make_workbook(tmp_path, settings=settings_for(server), plans=PLAN_ONE_STEP,
                      customers=customers, orders=orders)
        assert main(["run", "--today", "2026-03-02", "--home", str(tmp_path)]) == 1
        assert [m.rcpt_tos for m in server.received] == [["client2@example.test"]]
        server.handler.rcpt_replies.clear()
        assert main(["run", "--today", "2026-03-03", "--home", str(tmp_path)]) == 0
        got = [rc for m in server.received for rc in m.rcpt_tos]
    assert got == ["client2@example.test", "client1@example.test"]
    rows = sentlog(tmp_path)
    perm = next(r for r in rows if r["email"] == "client0@example.test")
    assert perm["status"] == "failed" and "550" in perm["detail"]


def test_permanent_failure_is_due_again_after_address_change(tmp_path):
    """A 550 is not retried, unless the customer's address changes."""
    customers, orders = many_orders(1)
    with SMTPServer(rcpt_replies={"client0@example.test": "550 5.1.1 no such user"}) as server:
        make_workbook(tmp_path, settings=settings_for(server), plans=PLAN_ONE_STEP,
                      customers=customers, orders=orders)
        assert main(["run", "--today", "2026-03-02", "--home", str(tmp_path)]) == 1
        assert main(["run", "--today", "2026-03-03", "--home", str(tmp_path)]) == 0
        assert server.received == []
        customers[0]["email"] = "client0.new@example.test"
        make_workbook(tmp_path, settings=settings_for(server), plans=PLAN_ONE_STEP,
                      customers=customers, orders=orders)
        assert main(["run", "--today", "2026-03-04", "--home", str(tmp_path)]) == 0
        assert [m.rcpt_tos for m in server.received] == [["client0.new@example.test"]]


def test_daily_limit_across_runs_oldest_first_and_not_missed(tmp_path):
    """daily_limit caps mails per calendar day across runs; the rest wait, oldest due first,
    and are not counted as missed while they wait."""
    customers, orders = many_orders(5)
    for i, o in enumerate(orders):
        o["start_date"] = dt.date(2026, 3, 1) + dt.timedelta(days=i)
    with SMTPServer() as server:
        make_workbook(tmp_path, settings=settings_for(server, daily_limit=2, catch_up_days=4),
                      plans=PLAN_ONE_STEP, customers=customers, orders=orders)
        home = str(tmp_path)
        assert main(["run", "--today", "2026-03-05", "--home", home]) == 0
        assert main(["run", "--today", "2026-03-05", "--home", home]) == 0
        day1 = [m.rcpt_tos[0] for m in server.received]
        assert day1 == ["client0@example.test", "client1@example.test"]
        assert main(["run", "--today", "2026-03-09", "--home", home]) == 0
        assert main(["run", "--today", "2026-03-10", "--home", home]) == 0
        got = [m.rcpt_tos[0] for m in server.received]
    assert got == [f"client{i}@example.test" for i in range(5)]
    assert "skipped" not in [r["status"] for r in sentlog(tmp_path)]


def test_server_that_never_answers_times_out(tmp_path):
    """A server that accepts the connection but never answers ends in a timeout, not a hang."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    port = listener.getsockname()[1]
    conns: list = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        customers, orders = many_orders(2)

        class FakePort:  # settings_for only reads .port
            pass

        srv = FakePort()
        srv.port = port  # type: ignore[attr-defined]
        make_workbook(tmp_path, settings=settings_for(srv, smtp_timeout=1),
                      plans=PLAN_ONE_STEP, customers=customers, orders=orders)
        r = subprocess.run(cmd(tmp_path, "run", "--today", "2026-03-02"), capture_output=True,
                           text=True, timeout=60)
    finally:
        stop.set()
        thread.join()
        for c in conns:
            c.close()
        listener.close()
    assert r.returncode == 1
    assert "échec" in r.stdout
    assert {row["status"] for row in sentlog(tmp_path)} == {"failed"}


def test_schedule_prints_cron_and_windows_wrapper(tmp_path, capsys):
    """schedule prints a crontab line here, and writes a .cmd wrapper + schtasks line on Windows."""
    from commplan_xl.ops.daily_task import schedule_instructions

    assert main(["schedule", "--time", "07:15", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "15 7 * * *" in out and " run --home " in out and "commplan-task.log" in out
    text = schedule_instructions(tmp_path, tmp_path / "workbooks" / "commplan.xlsx",
                                 at="06:30", windows=True)
    wrapper = tmp_path / "commplan-daily.cmd"
    assert wrapper.exists()
    body = wrapper.read_text()
    assert "cd /d" in body and " run --home " in body and ">>" in body
    assert "schtasks /Create" in text and "/ST 06:30" in text and "/SC DAILY" in text
    assert main(["schedule", "--time", "25:99", "--home", str(tmp_path)]) == 2


def test_log_file_records_runs_and_failures(tmp_path):
    """Each run writes its counts and every failure to commplan.log in the home folder."""
    customers, orders = many_orders(2)
    with SMTPServer(rcpt_replies={"client0@example.test": "550 5.1.1 no such user"}) as server:
        make_workbook(tmp_path, settings=settings_for(server), plans=PLAN_ONE_STEP,
                      customers=customers, orders=orders)
        assert main(["run", "--today", "2026-03-02", "--home", str(tmp_path)]) == 1
    text = (tmp_path / "commplan.log").read_text(encoding="utf-8")
    assert "envoyés 1" in text and "O0000" in text and "550" in text


def test_check_points_out_a_stale_excel_lock(tmp_path, capsys):
    """check tells that an old ~$commplan.xlsx blocks the SentLog and what to delete."""
    make_workbook(tmp_path)
    lock = tmp_path / "workbooks" / "~$commplan.xlsx"
    lock.write_bytes(b"x")
    old = time.time() - 3 * 86400
    os.utime(lock, (old, old))
    main(["check", "--home", str(tmp_path)])
    out = capsys.readouterr().out
    assert "~$commplan.xlsx" in out and "supprimez" in out and "plus d'un jour" in out


def test_sentlog_survives_openpyxl_edit_by_staff(tmp_path):
    """Staff saving the workbook (with SentLog in it) does not confuse the next run."""
    customers, orders = many_orders(2)
    with SMTPServer() as server:
        make_workbook(tmp_path, settings=settings_for(server), plans=PLAN_ONE_STEP,
                      customers=customers, orders=orders)
        assert main(["run", "--today", "2026-03-02", "--home", str(tmp_path)]) == 0
        path = tmp_path / "workbooks" / "commplan.xlsx"
        wb = openpyxl.load_workbook(path)
        wb["Orders"]["F1"] = "note"
        wb.save(path)
        assert main(["run", "--today", "2026-03-03", "--home", str(tmp_path)]) == 0
        assert len(server.received) == 2
    assert len(sentlog(tmp_path)) == 2
