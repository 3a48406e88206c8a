"""One function per command: call the library, print sentences, return the exit status."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gc
import io
import os
import re
import sys
import threading
from collections import Counter
from operator import itemgetter
from pathlib import Path

from commplan_xl.gc_pause import no_gc
from commplan_xl.problems import CommplanError
from commplan_xl.run import batch

EXIT_OK, EXIT_ATTENTION = 0, 1



def home_of(args: argparse.Namespace) -> Path:
    return batch.resolve_paths(args.home, args.workbook)[0]


def _site(args: argparse.Namespace) -> batch.Site:
    return batch.load_site(args.home, args.workbook)


def _say(text: str = "") -> None:
    _write(text + "\n")


def _write(text: str) -> None:
    """Print `text` as it is (one write for a long listing)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `commplan variables | head`: the reader left; finish the work
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until the process ends


def _problems_summary(site: batch.Site) -> None:
    rows = [p for p in site.problems if not p.message_level]
    if rows:
        print(
            f"Note: {len(rows)} row(s) of the workbook have problems and are left out; "
            "`commplan check` lists them.",
            file=sys.stderr,
        )


def cmd_init(args: argparse.Namespace) -> int:
    from commplan_xl.excel.starter import init_home

    home, workbook = batch.resolve_paths(args.home, args.workbook)
    path = init_home(home, force=args.force, workbook=workbook,
                     lang=getattr(args, "lang", "fr"))
    _say(f"Created {path} with demo data, and the folders attachments/ and archive/ in {home}.")
    _say("Next: open the workbook, put your own plans, customers and orders in it, then run "
         "`commplan check`.")
    return EXIT_OK


def _history_notes(site: batch.Site, recorded: dict | None = None) -> tuple[list[str], bool]:
    """The sentences `check` and `due` add about earlier runs, and whether one of them
    stops a run (a missing ledger)."""
    from commplan_xl.run import history

    notes: list[str] = []
    missing = history.missing_ledger_message(site)
    if missing:
        notes.append(missing.replace("so nothing was sent", "so a run would stop without "
                                     "sending anything"))
    plans = recorded if recorded is not None else history.recorded_plans(site)
    notes += history.moved_notes(site, plans)
    return notes, missing is not None


def cmd_check(args: argparse.Namespace) -> int:
    from commplan_xl.run import history

    site = _site(args)
    problems = list(site.problems) + batch.check_messages(site, today=args.today)
    for p in problems:
        _say(str(p))
    notes, stops = _history_notes(site)
    for line in history.tool_sheet_notes(site, batch.tool_sheet_specs(site)) + notes:
        _say(line)
    status = EXIT_ATTENTION if problems or stops else EXIT_OK
    note = batch.stale_lock_note(site.workbook)
    if note:
        _say(note)
    if args.smtp:
        from commplan_xl.mail.smtp import check_connection
        from commplan_xl.problems import SendFailure

        try:
            _say(check_connection(site.settings))
        except SendFailure as exc:
            _say(str(exc))
            status = EXIT_ATTENTION
        if site.settings.bounces:
            from commplan_xl.run.returned import check_imap

            try:
                _say(check_imap(site.settings))
            except CommplanError as exc:
                _say(f"Returned mails cannot be read: {exc}.")
                status = EXIT_ATTENTION
    m = site.model
    if problems:
        _say(f"{len(problems)} problem(s) to fix in {site.workbook.name}. Rows with a problem are "
             "left out of the run; every other row goes on.")
    elif stops:
        _say(f"{site.workbook.name} is fine, but the ledger is not: restore it (see above) "
             "before the next run.")
    else:
        _say(f"{site.workbook.name} is fine: {len(m.plans)} plan(s), {len(m.customers)} "
             f"customer(s), {len(m.orders)} order(s). Next: `commplan due` to see what a run "
             "would send.")
    return status


def cmd_due(args: argparse.Namespace) -> int:
    # The cycle collector stays off for the whole command, the ledger thread included
    # (entered first, so no nested pause turns it back on midway): `due` builds several
    # hundred thousand objects without cycles, which the collector would rescan again
    # and again (a first run's decisions alone cost about twice as much with it on).
    if args.ends_process:
        # Nothing runs after it: the collector stays off (turned back on, its first pass
        # would walk every object `due` made, a quarter of a second on a first run).
        gc.disable()
        return _due(args)
    with no_gc():
        return _due(args)


def _warm_imports() -> None:
    """Import what validation and scheduling need while the workbook parses.

    The main thread mostly waits for the Orders sheet to parse (calamine releases the GIL):
    importing Jinja2, holidays and dateutil then, not after, takes them off the critical
    path (about 0.15 s). Only third-party modules: no lock order to get wrong with ours.
    """
    import dateutil.relativedelta  # noqa: F401
    import holidays.countries  # noqa: F401 - business days load a country, so all of them
    import jinja2.sandbox  # noqa: F401


_CSV_HEADER = "order_id,customer_id,plan,step,due_date,action,reason\n"
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')
_WAITING = "daily limit reached: waits for the next run"
_LIMIT = "daily limit reached"  # schedule.REASON_LIMIT (not imported: `due` starts lighter)


def _csv_field(text: str) -> str:
    """One CSV field, quoted (as the csv module quotes) only when it holds a comma, a
    quote or a line break."""
    return '"' + text.replace('"', '""') + '"' if _NEEDS_QUOTES.search(text) else text


def _csv_tail(plan_name: str, step: int, due: object, action: str, reason: str) -> str:
    """The end of a CSV row, from the plan on: action send, skip or wait, and why."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(
        (plan_name, step, due, str(action),
         _WAITING if action == "wait" and reason == _LIMIT else reason))
    return buffer.getvalue()


# The listings below: a first run over an old base lists 200,000 decisions sharing a few
# thousand ends (plan name, step, due date, action, reason); each end is made once and the
# lines are joined from it (half the time of formatting every field of every line).

def due_csv(decisions: list) -> str:
    """`commplan due --csv`: a header, then one row per decision."""
    made: dict[tuple, str] = {}
    lines = [_CSV_HEADER]
    append = lines.append
    for d in decisions:
        key = d[3:]
        end = made.get(key)
        if end is None:
            end = made[key] = _csv_tail(*key)
        append(f"{_csv_field(d[0])},{_csv_field(d[1])},{end}")
    return "".join(lines)


def _listing_end(plan_name: str, step: int, due: dt.date, action: str,
                 reason: str) -> tuple[str, str]:
    return f"{action:<4}", f"{plan_name} step {step}  due {due:%d/%m/%Y}  ({reason})\n"


def due_listing(decisions: list) -> str:
    """`commplan due`: one line per decision, for people."""
    made: dict[tuple, tuple[str, str]] = {}
    lines: list[str] = []
    append = lines.append
    for d in decisions:
        key = d[3:]
        ends = made.get(key)
        if ends is None:
            ends = made[key] = _listing_end(*key)
        append(f"  {ends[0]}  {d[0]}  {d[1]}  {ends[1]}")  # verb, order, customer, rest
    return "".join(lines)


# The last `due`'s workbook and decisions, kept until the process ends: `commplan` ends
# without freeing them one by one (see cli.run_cli). One result at most, for callers of
# main() that run many commands.
_last_due: list[object] = []


def _due(args: argparse.Namespace) -> int:
    # Reading Orders is what `due` waits for: it starts first, and the rest (the ledger,
    # imports, the other sheets' checks) happens while it parses.
    home, workbook = batch.resolve_paths(args.home, args.workbook)
    tables = batch.open_workbook(workbook)
    threading.Thread(target=_warm_imports, daemon=True).start()
    ledger = batch.prefetch_ledger(home)
    site = batch.load_site(args.home, args.workbook, tables=tables)
    day = args.today or batch.today_in(site.settings)
    state = ledger.result()
    decisions = batch.due(site, today=day, ledger=state)
    _last_due[:] = [site, decisions]
    notes, stops = _history_notes(site, getattr(state[0], "plans", {}))
    status = EXIT_ATTENTION if stops else EXIT_OK
    if args.csv:
        _write(due_csv(decisions))
        _problems_summary(site)
        for note in notes:
            print(note, file=sys.stderr)
        return status
    actions = Counter(map(itemgetter(6), decisions))  # by Decision.action
    if not decisions:
        _say(f"Nothing is due on {day:%d/%m/%Y}.")
    else:
        _say(f"A run on {day:%d/%m/%Y} would:")
        _write(due_listing(decisions))
        skips, waits = actions["skip"], actions["wait"]
        _say(f"{actions['send']} to send, {skips} to skip" + (f", {waits} waiting" if waits else "")
             + ". Nothing was sent; `commplan run` sends them.")
    for note in notes:
        _say(note)
    _problems_summary(site)
    return status


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise (Task Scheduler)."""

    def __init__(self) -> None:
        self.active = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.active or total <= 0:
            return
        width = 30
        filled = int(width * done / total)
        sys.stderr.write(f"\rSending [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def print_report(report: batch.RunReport) -> None:
    for line in report.failures:
        _say(f"  failed: {line}")
    for line in report.held:
        _say(f"  waiting: {line}")
    for note in report.notes:
        _say(note)
    rows = [p for p in report.problems if not p.message_level]
    if rows:
        _say(f"{len(rows)} row(s) of the workbook have problems and were left out: run "
             "`commplan check` to see them.")
    word = "Would send" if report.dry_run else "Sent"
    summary = (f"{word} {report.sent}, skipped {report.skipped}, failed {report.failed}, "
               f"uncertain {report.uncertain}")
    if report.waiting:
        summary += f", waiting {report.waiting}"
    if report.not_tried:
        summary += f", not tried {report.not_tried}"
    if report.returned:
        summary += f", returned {report.returned}"
    if report.held:
        summary += f", waiting for a value {len(report.held)}"
    _say(summary + f" (run of {report.today:%d/%m/%Y}).")
    if report.dry_run:
        _say("Dry run: nothing was sent or recorded.")
    elif report.needs_attention:
        _say("Something needs attention: see above, the SentLog sheet and commplan.log.")


def cmd_run(args: argparse.Namespace) -> int:
    site = _site(args)
    report = batch.run(site, today=args.today, dry_run=args.dry_run, limit=args.limit,
                       progress=_Progress(), new_ledger=args.new_ledger)
    print_report(report)
    return EXIT_ATTENTION if report.needs_attention else EXIT_OK


def cmd_bounces(args: argparse.Namespace) -> int:
    """Read the mailbox for returned mails and record them, sending nothing."""
    site = _site(args)
    found, written = batch.bounces(site, today=args.today)
    for item in found.ordered():
        label = item.kind.replace("_", " ")
        _say(f"  {item.line}" if item.line.lower().startswith(label) else
             f"  {label}: {item.line}")
    if found.error:
        from commplan_xl.run.returned import unread_sentence

        _say(unread_sentence(found.error))
    if found.skipped:
        _say(f"{found.skipped} message(s) could not be read as returned mails and were "
             "skipped (see commplan.log).")
    moved = f"; handled ones {found.moved} to {site.settings.bounce_folder_done}" \
        if found.moved else ""
    _say(f"Read {found.read} new message(s) in the mailbox: {len(found.failures)} returned "
         f"mail(s) to handle{moved}. Nothing was sent.")
    if not written:
        _say("The SentLog sheet could not be written (the workbook is open); the next run "
             "completes it.")
    attention = found.error or found.failures or not written
    return EXIT_ATTENTION if attention else EXIT_OK


def cmd_preview(args: argparse.Namespace) -> int:
    site = _site(args)
    paths = batch.preview(site, args.order, args.step, to=args.to, today=args.today)
    if args.to:
        _say(f"Sent order {args.order} step {args.step} to {args.to} as a test; nothing was "
             "recorded.")
    else:
        for path in paths:
            _say(f"Wrote {path}")
        html = next((p for p in paths if p.suffix == ".html"), None)
        if html is not None and args.open and _interactive() and _open_in_browser(html):
            _say("Opened the .html file in your browser; open the .eml file in your mail "
                 "program to see the whole mail.")
        else:
            _say("Open the .html file in a browser, or the .eml file in your mail program.")
    return EXIT_OK


def _interactive() -> bool:
    """A person at a terminal (never a scheduled task, a pipe, a test or CI)."""
    return sys.stdout.isatty() and not os.environ.get("CI") and \
        "PYTEST_CURRENT_TEST" not in os.environ


def _open_in_browser(path: Path) -> bool:
    """Show `path` in the default browser; False when there is none to ask."""
    import webbrowser

    try:
        return webbrowser.open(path.resolve().as_uri())
    except webbrowser.Error:
        return False


def cmd_resend(args: argparse.Namespace) -> int:
    site = _site(args)
    report = batch.resend(site, args.order, args.step, today=args.today)
    if report.sent:
        _say(f"Sent order {args.order} step {args.step} again; the SentLog records it as a "
             "resend.")
    for line in report.failures:
        _say(f"Not sent: {line}")
    for note in report.notes:
        _say(note)
    return EXIT_ATTENTION if report.needs_attention else EXIT_OK


def cmd_restore_ledger(args: argparse.Namespace) -> int:
    """`commplan restore-ledger`: list the dated copies; put the newest (or --from) back."""
    from commplan_xl.ops.runlock import run_lock
    from commplan_xl.store import ledger_backup

    home = home_of(args)
    copies = ledger_backup.backups(home)
    folder = ledger_backup.backup_folder(home)
    if args.list or (not copies and not args.source):
        if not copies:
            _say(f"There is no dated copy of the ledger in {folder}.")
            return EXIT_OK if args.list else EXIT_ATTENTION
        _say(f"Dated copies of the ledger in {folder}, oldest first:")
        for path in copies:
            _say(f"  {ledger_backup.describe(path)}")
        return EXIT_OK
    source = Path(args.source).expanduser().absolute() if args.source else copies[-1]
    if not source.is_file():
        raise CommplanError(f"There is no file {source}; `commplan restore-ledger --list` "
                            "shows the copies.")
    ledger = home / batch.LEDGER_NAME
    with run_lock(home):
        kept = ledger_backup.restore(ledger, source, now=dt.datetime.now())
    _say(f"Restored {ledger} from {ledger_backup.describe(source)}.")
    if kept is not None:
        _say(f"The ledger it replaced is kept as {kept}.")
    _say("Next: `commplan due` shows what a run would send now.")
    return EXIT_OK


def cmd_variables(args: argparse.Namespace) -> int:
    from commplan_xl.run.variables import VARIABLE_LIST, VARIABLE_LIST_HEADER, variable_list

    site = _site(args)
    rows = variable_list(site)
    width = max((len(r[0]) for r in rows), default=10)
    for name, example, description in rows:
        _say(f"  {{{{ {name} }}}}".ljust(width + 8) + f"  {example}"
             + (f"   ({description})" if description else ""))
    from commplan_xl.excel.names import localise
    from commplan_xl.excel.sheet_xml import ToolSheet
    from commplan_xl.problems import WorkbookLocked

    sheet = localise(ToolSheet(name=VARIABLE_LIST, header=VARIABLE_LIST_HEADER,
                               rows=[(f"{{{{ {n} }}}}", e, d) for n, e, d in rows],
                               widths={"A": 34, "B": 40, "C": 60}),
                     "variablelist", batch.site_language(site))
    try:
        batch.write_sheets(site, [sheet])
        _say(f"{len(rows)} variables; the list is also in the {sheet.name} sheet.")
    except WorkbookLocked as exc:
        _say(f"{exc}. Run `commplan variables` again once it is closed.")
        return EXIT_ATTENTION
    return EXIT_OK


def cmd_schedule(args: argparse.Namespace) -> int:
    from commplan_xl.ops.daily_task import schedule_instructions

    home, workbook = batch.resolve_paths(args.home, args.workbook)
    _say(schedule_instructions(home, workbook, at=args.time, install=args.install))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from commplan_xl.ops.demo import run_demo

    home = Path(args.home) if args.home else Path.cwd() / "commplan-demo"
    return run_demo(home.absolute(), days=args.days, out=_say)


def cmd_plan(args: argparse.Namespace) -> int:
    from commplan_xl.model import norm_key

    site = _site(args)
    plan = site.model.plans.get(norm_key(args.name))
    if plan is None:
        names = ", ".join(f'"{p.name}"' for p in site.model.plans.values())
        raise CommplanError(f'There is no plan "{args.name}" in Plans (there are {names}).')
    _say(f'Plan "{plan.name}" for an order whose dates are {args.start:%d/%m/%Y} '
         "(subjects shown with example values):")
    problems = 0
    for line in batch.plan_lines(site, plan, args.start):
        step = line.step
        unit = step.unit.replace("_", " ")
        src = "" if step.from_column == "start_date" else f" from {step.from_column}"
        moved = f", goes {line.goes:%a %d/%m/%Y}" if line.goes != line.due else ""
        extra = "" if step.active else "  (inactive)"
        _say(f"  step {step.number:>2}: {line.due:%a %d/%m/%Y}  (+{step.delay:g} {unit}{src}"
             f"{moved})  {line.subject}{extra}")
        if line.problem:
            problems += 1
            _say(f"           ⚠ {line.problem}")
    left_out = sorted({p.row for p in site.problems
                       if p.sheet == "Plans" and p.row is not None and not p.message_level})
    if left_out:
        _say(f"Plans rows {', '.join(map(str, left_out))} have problems and are left out of "
             "every plan: `commplan check` lists them.")
    if problems:
        _say(f"{problems} step(s) marked ⚠ cannot be sent as they are: `commplan check` shows "
             "where.")
    return EXIT_ATTENTION if problems or left_out else EXIT_OK


def cmd_auth(args: argparse.Namespace) -> int:
    """`commplan auth google`: the one-time consent, by a person at a terminal."""
    from commplan_xl.mail.oauth import google_consent, google_token_file

    if not sys.stdin.isatty():
        raise CommplanError("`commplan auth google` asks questions: run it in a terminal "
                            "window, never from a scheduled task.")
    site = _site(args)
    s = site.settings
    email = (s.smtp_user or s.sender_email).strip()
    if not email:
        raise CommplanError("Put the Gmail or Google Workspace address in smtp_user (or "
                            "sender_email) in the Settings sheet first.")
    path = google_consent(google_token_file(s), email=email, say=_say)
    _say(f"Saved the consent for {email} in {path}; keep this file private.")
    if s.smtp_auth != "oauth2-google":
        _say("Next: set smtp_auth to oauth2-google in the Settings sheet.")
    _say("Then run `commplan check --smtp` to test the login (nothing is sent).")
    return EXIT_OK
