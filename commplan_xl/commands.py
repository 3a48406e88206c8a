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
import time
from collections import Counter
from operator import itemgetter
from pathlib import Path

from commplan_xl import i18n
from commplan_xl.core.schedule import reason_text
from commplan_xl.gc_pause import no_gc
from commplan_xl.i18n import N_, _, ngettext, quoted, set_language
from commplan_xl.problems import CommplanError
from commplan_xl.run import batch

EXIT_OK, EXIT_ATTENTION = 0, 1


def home_of(args: argparse.Namespace) -> Path:
    return batch.resolve_paths(args.home, args.workbook)[0]


def _site(args: argparse.Namespace, *, tables=None) -> batch.Site:
    """The home's workbook, read and checked; from now on the tool speaks its language."""
    from commplan_xl.problems import Problem

    before = i18n.current()
    with working(_("Reading the workbook")):
        if tables is None:
            tables = batch.open_workbook(batch.resolve_paths(args.home, args.workbook)[1])
        site = batch.load_site(args.home, args.workbook, tables=tables)
        i18n.set_language(site.settings.locale)
        if i18n.current() != before and any(p.kind is Problem.TEXT for p in site.problems):
            # Some sentences are made while the sheets are checked, before the workbook
            # names its language: checked again (the sheets are read once), they speak it.
            site = batch.load_site(args.home, args.workbook, tables=tables)
    return site


class working:
    """On a terminal, a line on stderr saying the tool is at work while the block lasts
    longer than a moment; nothing when stderr is a file or a pipe."""

    DELAY = 0.5  # seconds before the line appears: quick work shows nothing

    def __init__(self, text: str, stream=None) -> None:
        self.text = text
        self.stream = stream or sys.stderr
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> working:
        if _is_terminal(self.stream):
            self.thread = threading.Thread(target=self._spin, daemon=True)
            self.thread.start()
        return self

    def _spin(self) -> None:
        start = time.monotonic()
        shown = False
        while not self.done.wait(self.DELAY if not shown else 0.25):
            shown = True
            seconds = int(time.monotonic() - start)
            self.stream.write(f"\r{self.text}… {seconds} s ")
            self.stream.flush()
        if shown:
            self.stream.write("\r" + " " * (len(self.text) + 12) + "\r")
            self.stream.flush()

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()


def _is_terminal(stream) -> bool:
    """Whether `stream` is an interactive terminal (a file, a pipe or a closed stream: no)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


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
        print(ngettext(
            "Note: {n} row of the workbook has problems and is left out; `commplan check` "
            "lists them.",
            "Note: {n} rows of the workbook have problems and are left out; `commplan check` "
            "lists them.", len(rows)).format(n=len(rows)), file=sys.stderr)


def cmd_init(args: argparse.Namespace) -> int:
    from commplan_xl.excel.starter import init_home

    home, workbook = batch.resolve_paths(args.home, args.workbook)
    lang = getattr(args, "lang", None)
    if lang:  # the workbook's language, asked for: say the rest in it too
        set_language(lang)
    path = init_home(home, force=args.force, workbook=workbook, lang=lang or "fr")
    _say(_("Created {path} with demo data, and the folders attachments/ and archive/ in "
           "{home}.").format(path=path, home=home))
    _say(_("Next: open the workbook, put your own plans, customers and orders in it, then run "
           "`commplan check`."))
    return EXIT_OK


def _history_notes(site: batch.Site, recorded: dict | None = None) -> tuple[list[str], bool]:
    """The sentences `check` and `due` add about earlier runs, and whether one of them
    stops a run (a missing ledger)."""
    from commplan_xl.run import history

    notes: list[str] = []
    missing = history.missing_ledger_message(site)
    if missing:
        notes.append(history.missing_ledger_message(
            site, _("so a run would stop without sending anything")) or missing)
    plans = recorded if recorded is not None else history.recorded_plans(site)
    notes += history.moved_notes(site, plans)
    return notes, missing is not None


def cmd_check(args: argparse.Namespace) -> int:
    from commplan_xl.run import history

    site = _site(args)
    with working(_("Checking every message")):
        problems = list(site.problems) + batch.check_messages(site, today=args.today)
    for p in problems:
        _say(str(p))
    notes, stops = _history_notes(site)
    for line in history.tool_sheet_notes(site, batch.tool_sheet_specs(site)) + notes:
        _say(line)
    status = EXIT_ATTENTION if problems or stops else EXIT_OK
    for note in (batch.stale_lock_note(site.workbook), _demo_note(site)):
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
                _say(_("Returned mails cannot be read: {error}.").format(error=exc))
                status = EXIT_ATTENTION
    m = site.model
    if problems:
        _say(ngettext(
            "{n} problem to fix in {workbook}. Rows with a problem are left out of the run; "
            "every other row goes on.",
            "{n} problems to fix in {workbook}. Rows with a problem are left out of the run; "
            "every other row goes on.", len(problems)).format(
                n=len(problems), workbook=site.workbook.name))
    elif stops:
        _say(_("{workbook} is fine, but the ledger is not: restore it (see above) before the "
               "next run.").format(workbook=site.workbook.name))
    else:
        counts = ", ".join((
            ngettext("{n} plan", "{n} plans", len(m.plans)).format(n=len(m.plans)),
            ngettext("{n} customer", "{n} customers", len(m.customers)).format(
                n=len(m.customers)),
            ngettext("{n} order", "{n} orders", len(m.orders)).format(n=len(m.orders))))
        _say(_("{workbook} is fine: {counts}. Next: `commplan due` to see what a run would "
               "send.").format(workbook=site.workbook.name, counts=counts))
    return status


def _demo_note(site: batch.Site) -> str | None:
    """A sentence while the demo rows of `commplan init` are still in the workbook."""
    from commplan_xl.excel.starter import demo_note
    from commplan_xl.run.reports import order_ids_by_row

    try:
        order_ids = list(order_ids_by_row(site.workbook).values())
    except CommplanError:
        order_ids = []
    return demo_note(order_ids, site.model.customers)


def cmd_due(args: argparse.Namespace) -> int:
    # Speed (measured on bench/): the cycle collector stays off for the whole command,
    # ledger thread included: `due` builds hundreds of thousands of objects without
    # cycles, which it would rescan again and again.
    if args.ends_process:
        # Nothing runs after it: turned back on, its first pass would walk every object.
        gc.disable()
        return _due(args)
    with no_gc():
        return _due(args)


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


# The listings below: a first run over an old base lists hundreds of thousands of decisions
# sharing a few thousand ends (plan name, step, due date, action, reason); each end is made
# once and the lines are joined from it, instead of formatting every field of every line.

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


_ACTIONS = {"send": N_("send"), "skip": N_("skip"), "wait": N_("wait")}


def _listing_end(plan_name: str, step: int, due: dt.date, action: str,
                 reason: str) -> tuple[str, str]:
    width = max(len(_(verb)) for verb in _ACTIONS.values())
    return f"{_(_ACTIONS.get(action, action)):<{width}}", _(
        "{plan} step {step}  due {date}  ({reason})").format(
            plan=plan_name, step=step, date=f"{due:%d/%m/%Y}", reason=reason_text(reason)) + "\n"


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
    # Reading Orders is what `due` waits for: it starts first, and the rest (the pandas
    # import, the other sheets' checks, the ledger) happens while it parses. The ledger is
    # read once pandas is imported: both at once, on two cores that also parse the
    # workbook, slowed the import more than the overlap gained.
    home, workbook = batch.resolve_paths(args.home, args.workbook)
    tables = batch.open_workbook(workbook)
    from commplan_xl.excel import validate  # noqa: F401 - pandas, see above
    ledger = batch.prefetch_ledger(home)
    site = _site(args, tables=tables)
    day = args.today or batch.today_in(site.settings)
    state = ledger.result()
    with working(_("Deciding what is due")):
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
        _say(_("Nothing is due on {date}.").format(date=f"{day:%d/%m/%Y}"))
    else:
        _say(_("A run on {date} would:").format(date=f"{day:%d/%m/%Y}"))
        _write(due_listing(decisions))
        counts = _("{send} to send, {skip} to skip").format(send=actions["send"],
                                                            skip=actions["skip"])
        if actions["wait"]:
            counts += _(", {wait} waiting").format(wait=actions["wait"])
        _say(_("{counts}. Nothing was sent; `commplan run` sends them.").format(counts=counts))
    for note in notes:
        _say(note)
    _problems_summary(site)
    return status


class Progress:
    """A one-line progress bar on a terminal (mails done of due, pace, time left); silent
    when stderr is a file or a pipe (Task Scheduler's log stays clean)."""

    WIDTH = 30

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.active = _is_terminal(self.stream)
        self.start: float | None = None

    def line(self, done: int, total: int, elapsed: float) -> str:
        """The bar's text after `done` of `total` mails in `elapsed` seconds."""
        filled = int(self.WIDTH * done / total) if total else self.WIDTH
        text = _("Sending [{bar}] {done}/{total}").format(
            bar="#" * filled + "." * (self.WIDTH - filled), done=done, total=total)
        if done and elapsed > 0:
            pace = done / elapsed
            left = (total - done) / pace
            text += "  " + _("{pace} mails/min, {left} left").format(
                pace=f"{pace * 60:.0f}", left=_duration(left))
        return text

    def __call__(self, done: int, total: int) -> None:
        if not self.active or total <= 0:
            return
        now = time.monotonic()
        if self.start is None:
            self.start = now
        self.stream.write("\r" + self.line(done, total, now - self.start).ljust(70))
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    """"45 s", "3 min", "1 h 05"."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d}"


def print_report(report: batch.RunReport) -> None:
    for line in report.failures:
        _say(_("  failed: {detail}").format(detail=line))
    for line in report.held:
        _say(_("  waiting: {detail}").format(detail=line))
    for note in report.notes:
        _say(note)
    rows = [p for p in report.problems if not p.message_level]
    if rows:
        _say(ngettext(
            "{n} row of the workbook has problems and was left out: run `commplan check` to "
            "see it.",
            "{n} rows of the workbook have problems and were left out: run `commplan check` to "
            "see them.", len(rows)).format(n=len(rows)))
    word = _("Would send") if report.dry_run else _("Sent")
    summary = _("{sent_word} {sent}, skipped {skipped}, failed {failed}, uncertain "
                "{uncertain}").format(sent_word=word, sent=report.sent, skipped=report.skipped,
                                      failed=report.failed, uncertain=report.uncertain)
    if report.waiting:
        summary += _(", waiting {n}").format(n=report.waiting)
    if report.not_tried:
        summary += _(", not tried {n}").format(n=report.not_tried)
    if report.returned:
        summary += _(", returned {n}").format(n=report.returned)
    if report.held:
        summary += _(", waiting for a value {n}").format(n=len(report.held))
    _say(_("{summary} (run of {date}).").format(summary=summary,
                                                date=f"{report.today:%d/%m/%Y}"))
    if report.dry_run:
        _say(_("Dry run: nothing was sent or recorded."))
    elif report.needs_attention:
        _say(_("Something needs attention: see above, the SentLog sheet and commplan.log."))


def cmd_run(args: argparse.Namespace) -> int:
    site = _site(args)
    today = batch.today_in(site.settings)
    if args.today and args.today > today and not args.dry_run:
        raise CommplanError(_(
            "--today {day} is after today ({today}): a run sends what is due on its day, so "
            "it cannot run in the future. Use --dry-run to see what that day would send."
        ).format(day=f"{args.today:%d/%m/%Y}", today=f"{today:%d/%m/%Y}"))
    report = batch.run(site, today=args.today, dry_run=args.dry_run, limit=args.limit,
                       progress=Progress(), new_ledger=args.new_ledger)
    print_report(report)
    return EXIT_ATTENTION if report.needs_attention else EXIT_OK


# How `commplan bounces` labels each kind of returned mail.
_RETURNED_KINDS = {"hard": N_("hard"), "soft": N_("soft"), "sender_side": N_("sender side"),
                   "delayed": N_("delayed"), "to_review": N_("to review")}


def cmd_bounces(args: argparse.Namespace) -> int:
    """Read the mailbox for returned mails and record them, sending nothing."""
    site = _site(args)
    found, written = batch.bounces(site, today=args.today)
    for item in found.ordered():
        label = _(_RETURNED_KINDS.get(item.kind, item.kind))
        _say(f"  {item.line}" if item.line.lower().startswith(label.lower()) else
             "  " + _("{what}: {detail}").format(what=label, detail=item.line))
    if found.error:
        from commplan_xl.run.returned import unread_sentence

        _say(unread_sentence(found.error))
    if found.skipped:
        _say(ngettext(
            "{n} message could not be read as a returned mail and was skipped (see "
            "commplan.log).",
            "{n} messages could not be read as returned mails and were skipped (see "
            "commplan.log).", found.skipped).format(n=found.skipped))
    moved = _("; handled ones {n} to {folder}").format(
        n=found.moved, folder=site.settings.bounce_folder_done) if found.moved else ""
    _say(_("Read {read} new message(s) in the mailbox: {returned} returned mail(s) to "
           "handle{moved}. Nothing was sent.").format(read=found.read,
                                                      returned=len(found.failures), moved=moved))
    if not written:
        _say(_("The SentLog sheet could not be written (the workbook is open); the next run "
               "completes it."))
    attention = found.error or found.failures or not written
    return EXIT_ATTENTION if attention else EXIT_OK


def cmd_preview(args: argparse.Namespace) -> int:
    site = _site(args)
    paths = batch.preview(site, args.order, args.step, to=args.to, today=args.today)
    if args.to:
        _say(_("Sent order {order} step {step} to {to} as a test; nothing was recorded.")
             .format(order=args.order, step=args.step, to=args.to))
    else:
        for path in paths:
            _say(_("Wrote {path}").format(path=path))
        html = next((p for p in paths if p.suffix == ".html"), None)
        if html is not None and args.open and _interactive() and _open_in_browser(html):
            _say(_("Opened the .html file in your browser; open the .eml file in your mail "
                   "program to see the whole mail."))
        else:
            _say(_("Open the .html file in a browser, or the .eml file in your mail program."))
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
        _say(_("Sent order {order} step {step} again; the SentLog records it as a resend.")
             .format(order=args.order, step=args.step))
    for line in report.failures:
        _say(_("Not sent: {detail}").format(detail=line))
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
            _say(_("There is no dated copy of the ledger in {folder}.").format(folder=folder))
            return EXIT_OK if args.list else EXIT_ATTENTION
        _say(_("Dated copies of the ledger in {folder}, oldest first:").format(folder=folder))
        for path in copies:
            _say(f"  {ledger_backup.describe(path)}")
        return EXIT_OK
    source = Path(args.source).expanduser().absolute() if args.source else copies[-1]
    if not source.is_file():
        raise CommplanError(_("There is no file {path}; `commplan restore-ledger --list` "
                              "shows the copies.").format(path=source))
    ledger = home / batch.LEDGER_NAME
    with run_lock(home):
        kept = ledger_backup.restore(ledger, source, now=dt.datetime.now())
    _say(_("Restored {ledger} from {copy}.").format(ledger=ledger,
                                                    copy=ledger_backup.describe(source)))
    if kept is not None:
        _say(_("The ledger it replaced is kept as {path}.").format(path=kept))
    _say(_("Next: `commplan due` shows what a run would send now."))
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
        _say(_("{n} variables; the list is also in the {sheet} sheet.").format(
            n=len(rows), sheet=sheet.name))
    except WorkbookLocked as exc:
        _say(_("{error}. Run `commplan variables` again once it is closed.").format(error=exc))
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
    from babel.dates import format_date

    from commplan_xl.core.units import UNIT_ROWS
    from commplan_xl.model import norm_key

    site = _site(args)
    plan = site.model.plans.get(norm_key(args.name))
    if plan is None:
        names = quoted(p.name for p in site.model.plans.values())
        raise CommplanError(_('There is no plan "{plan}" in Plans (there are {names}).')
                            .format(plan=args.name, names=names))
    lang = i18n.current()

    def day(when: dt.date) -> str:
        return format_date(when, "EEE dd/MM/yyyy", locale="en" if lang == "en" else "fr")

    _say(_('Plan "{plan}" for an order whose dates are {date} (subjects shown with example '
           "values):").format(plan=plan.name, date=f"{args.start:%d/%m/%Y}"))
    problems = 0
    for line in batch.plan_lines(site, plan, args.start):
        step = line.step
        row = UNIT_ROWS.get(step.unit)
        unit = (row.english if lang == "en" else row.french) if row else str(step.unit)
        src = "" if step.from_column == "start_date" else _(" from {column}").format(
            column=step.from_column)
        moved = _(", goes {day}").format(day=day(line.goes)) if line.goes != line.due else ""
        extra = "" if step.active else _("  (inactive)")
        delay = f"{step.delay:g}" if lang == "en" else f"{step.delay:g}".replace(".", ",")
        _say(_("  step {number}: {day}  (+{delay} {unit}{source})  {subject}{extra}").format(
            number=f"{step.number:>2}", day=day(line.due), delay=delay, unit=unit,
            source=src + moved, subject=line.subject, extra=extra))
        if line.problem:
            problems += 1
            _say(f"           ⚠ {line.problem}")
    left_out = sorted({p.row for p in site.problems
                       if p.sheet == "Plans" and p.row is not None and not p.message_level})
    if left_out:
        _say(_("Plans rows {rows} have problems and are left out of every plan: `commplan "
               "check` lists them.").format(rows=", ".join(map(str, left_out))))
    if problems:
        _say(ngettext("{n} step marked ⚠ cannot be sent as it is: `commplan check` shows where.",
                      "{n} steps marked ⚠ cannot be sent as they are: `commplan check` shows "
                      "where.", problems).format(n=problems))
    return EXIT_ATTENTION if problems or left_out else EXIT_OK


def cmd_auth(args: argparse.Namespace) -> int:
    """`commplan auth google`: the one-time consent, by a person at a terminal."""
    from commplan_xl.mail.oauth import google_consent, google_token_file

    if not sys.stdin.isatty():
        raise CommplanError(_("`commplan auth google` asks questions: run it in a terminal "
                              "window, never from a scheduled task."))
    site = _site(args)
    s = site.settings
    email = (s.smtp_user or s.sender_email).strip()
    if not email:
        raise CommplanError(_("Put the Gmail or Google Workspace address in smtp_user (or "
                              "sender_email) in the Settings sheet first."))
    path = google_consent(google_token_file(s), email=email, say=_say)
    _say(_("Saved the consent for {email} in {path}; keep this file private.").format(
        email=email, path=path))
    if s.smtp_auth != "oauth2-google":
        _say(_("Next: set smtp_auth to oauth2-google in the Settings sheet."))
    _say(_("Then run `commplan check --smtp` to test the login (nothing is sent)."))
    return EXIT_OK


def _log_row(o) -> tuple:
    """One outcome as the SentLog columns hold it (dates as Python dates)."""
    return (o.date, o.order_id, o.customer_id, o.email, o.plan, o.step, o.due_date, o.status,
            o.subject, o.detail, o.archive_file)


def log_csv(outcomes: list) -> str:
    """`commplan log --csv`: the SentLog's header, then one row per outcome (ISO dates)."""
    from commplan_xl.store.sentlog import SENTLOG_HEADER

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SENTLOG_HEADER)
    for o in outcomes:
        row = list(_log_row(o))
        row[0] = f"{o.date:%Y-%m-%d %H:%M:%S}"
        row[6] = o.due_date.isoformat() if o.due_date else ""
        writer.writerow(row)
    return buffer.getvalue()


def log_listing(outcomes: list) -> str:
    """`commplan log`: one line per outcome, for people (in the current language)."""
    from commplan_xl.excel.names import outcome_word

    lang = "fr" if i18n.current() == "fr" else "en"
    lines = []
    for o in outcomes:
        step = _("step {step}").format(step=o.step)
        due = " " + _("due {date}").format(date=f"{o.due_date:%d/%m/%Y}") if o.due_date else ""
        what = "  ".join(t for t in (o.subject, o.detail) if t)
        lines.append(f"{o.date:%d/%m/%Y %H:%M}  {outcome_word(o.status, lang):<9}  "
                     f"{o.order_id}  {o.customer_id}  {o.plan} {step}{due}"
                     + (f"  {what}" if what else "") + "\n")
    return "".join(lines)


def _period(args: argparse.Namespace) -> str:
    first = f"{args.first:%d/%m/%Y}" if args.first else _("the first run")
    last = f"{args.last:%d/%m/%Y}" if args.last else _("the last run")
    return _("from {first} to {last}").format(first=first, last=last)


def _workbook_language(args: argparse.Namespace) -> str:
    """The language of the home's workbook (French when it cannot be read)."""
    from commplan_xl.excel.names import DEFAULT_LANGUAGE

    try:
        return batch.site_language(_site(args))
    except CommplanError:
        return DEFAULT_LANGUAGE


def cmd_log(args: argparse.Namespace) -> int:
    from commplan_xl.store.ledger import Ledger

    if args.first and args.last and args.first > args.last:
        print(_("--from {first} is after --to {last}.").format(
            first=f"{args.first:%d/%m/%Y}", last=f"{args.last:%d/%m/%Y}"), file=sys.stderr)
        return 2
    home = home_of(args)
    path = home / batch.LEDGER_NAME
    if not path.exists():
        raise CommplanError(_("There is no ledger in {home} yet: nothing was sent from this "
                              "home folder (or --home names another one).").format(home=home))
    with Ledger(path) as ledger:
        unknown = {
            "order_id": _('The ledger has no outcome for order "{id}": check the id (it is '
                          "compared ignoring case and spaces)."),
            "customer_id": _('The ledger has no outcome for customer "{id}": check the id (it '
                             "is compared ignoring case and spaces)."),
        }
        for column, value in (("order_id", args.order), ("customer_id", args.customer)):
            if value is not None and not ledger.knows(column, value):
                raise CommplanError(unknown[column].format(id=value))
        outcomes = ledger.log_events(first=args.first, last=args.last, order_id=args.order,
                                     customer_id=args.customer)
    if args.csv:
        _write(log_csv(outcomes))
        return EXIT_OK
    if args.xlsx:
        from commplan_xl.excel.export import write_new_workbook
        from commplan_xl.problems import WorkbookLocked
        from commplan_xl.run.reports import sentlog_sheet

        target = Path(args.xlsx).expanduser().absolute()
        try:
            write_new_workbook(target, [sentlog_sheet([_log_row(o) for o in outcomes],
                                                      _workbook_language(args))])
        except WorkbookLocked:
            raise CommplanError(_("{file} is open in Excel or LibreOffice: close it and run the "
                                  "command again (nothing was written).").format(
                                      file=target.name)) from None
        _say(ngettext("Wrote {n} outcome {period} to {file}.",
                      "Wrote {n} outcomes {period} to {file}.", len(outcomes)).format(
                          n=len(outcomes), period=_period(args), file=target))
        return EXIT_OK
    _write(log_listing(outcomes))
    _say(ngettext("{n} outcome {period}.", "{n} outcomes {period}.", len(outcomes)).format(
        n=len(outcomes), period=_period(args)))
    return EXIT_OK
