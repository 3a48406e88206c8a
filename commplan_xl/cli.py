"""The command line: parse options, call one library function, print, map errors to exit codes.

Imports no pandas and no yagmail: the library modules do, lazily.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import logging.handlers
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from commplan_xl import __version__
from commplan_xl.problems import CommplanError

EXIT_OK = 0
EXIT_ATTENTION = 1  # validation errors, a failed or uncertain message, log not written
EXIT_USAGE = 2

log = logging.getLogger("commplan")


def _date(text: str) -> dt.date:
    """A date as YYYY-MM-DD or DD/MM/YYYY (always day first)."""
    for form in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return dt.datetime.strptime(text.strip(), form).date()
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f'"{text}" is not a date as YYYY-MM-DD or DD/MM/YYYY')


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f'"{text}" is not a whole number ≥ 0')
    return value


def _time(text: str) -> str:
    try:
        return dt.datetime.strptime(text, "%H:%M").strftime("%H:%M")
    except ValueError:
        raise argparse.ArgumentTypeError(f'"{text}" is not a time as HH:MM') from None


def build_parser() -> argparse.ArgumentParser:
    def common_options(suppress: bool) -> argparse.ArgumentParser:
        # The subcommands' copies must not overwrite what was given before the command name.
        kw = {"default": argparse.SUPPRESS} if suppress else {}
        p = argparse.ArgumentParser(add_help=False)
        p.add_argument("--home", help="the home folder (default: COMMPLAN_HOME or here)", **kw)
        p.add_argument("--workbook", help="the workbook (default: HOME/workbooks/commplan.xlsx)",
                       **kw)
        p.add_argument("--debug", action="store_true", help="show tracebacks", **kw)
        return p

    common = common_options(suppress=True)
    parser = argparse.ArgumentParser(
        prog="commplan", parents=[common_options(suppress=False)],
        description="Send customers a planned series of emails about their order.")
    parser.add_argument("--version", action="version", version=f"commplan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("init", parents=[common], help="create the home folders and a workbook")
    p.add_argument("--force", action="store_true",
                   help="replace an existing workbook (kept as a backup)")
    p.add_argument("--lang", choices=("fr", "en"), default="fr",
                   help="the workbook's language: fr (default) or en")

    p = sub.add_parser("check", parents=[common], help="validate the workbook")
    p.add_argument("--smtp", action="store_true",
                   help="also test the mail server connection and login (and the mailbox's "
                   "when bounces is yes)")
    p.add_argument("--today", type=_date, help=argparse.SUPPRESS)

    p = sub.add_parser("due", parents=[common], help="list what a run would send or skip")
    p.add_argument("--today", type=_date, help="the day of the run (YYYY-MM-DD or DD/MM/YYYY)")
    p.add_argument("--csv", action="store_true", help="print CSV")

    p = sub.add_parser("run", parents=[common], help="send what is due, archive, write SentLog")
    p.add_argument("--today", type=_date, help="the day of the run (YYYY-MM-DD or DD/MM/YYYY)")
    p.add_argument("--dry-run", action="store_true",
                   help="render everything, send and record nothing")
    p.add_argument("--limit", type=_positive, help="send at most N mails in this run")

    p = sub.add_parser("bounces", parents=[common],
                       help="read returned mails from the mailbox, sending nothing")
    p.add_argument("--today", type=_date, help=argparse.SUPPRESS)

    p = sub.add_parser("preview", parents=[common], help="render one message to a file")
    p.add_argument("order")
    p.add_argument("step", type=int)
    p.add_argument("--to", help="send it to this test address instead (nothing recorded)")
    p.add_argument("--no-open", dest="open", action="store_false",
                   help="do not open the HTML in the browser (it opens only at a terminal)")
    p.add_argument("--today", type=_date, help=argparse.SUPPRESS)

    p = sub.add_parser("resend", parents=[common], help="send one message again on purpose")
    p.add_argument("order")
    p.add_argument("step", type=int)
    p.add_argument("--today", type=_date, help=argparse.SUPPRESS)

    sub.add_parser("variables", parents=[common], help="print the variables a mail may use")

    p = sub.add_parser("schedule", parents=[common], help="print the daily task command")
    p.add_argument("--time", type=_time, default="06:30", help="time of the daily run (HH:MM)")
    p.add_argument("--install", action="store_true", help="create the task (Windows)")

    p = sub.add_parser("demo", parents=[common], help="run the whole flow on demo data")
    p.add_argument("--days", type=_positive, help="simulated mornings (default: from the first "
                   "demo order to two months ahead)")

    p = sub.add_parser("auth", parents=[common],
                       help="give the one-time OAuth2 consent for sending (Google)")
    p.add_argument("provider", choices=["google"], help="whose consent to give")

    p = sub.add_parser("log", parents=[common], help="every outcome of a period, from the ledger")
    p.add_argument("--from", dest="first", type=_date, help="first run day (default: the first)")
    p.add_argument("--to", dest="last", type=_date, help="last run day (default: the last)")
    p.add_argument("--order", help="only this order")
    p.add_argument("--customer", help="only this customer")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--xlsx", metavar="FILE", help="write an Excel file made for reading")
    out.add_argument("--csv", action="store_true", help="print CSV")

    p = sub.add_parser("plan", parents=[common], help="show a plan's dates from a start date")
    p.add_argument("name")
    p.add_argument("--from", dest="start", type=_date, required=True, help="YYYY-MM-DD")
    return parser


def _setup_logging(home: Path | None, debug: bool) -> None:
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    # Without a log file, records go nowhere: the sentence printed to the user says it
    # all (Python would otherwise print each warning a second time on stderr).
    log.addHandler(logging.NullHandler())
    if home is None or not home.is_dir():
        return
    try:
        handler = logging.handlers.RotatingFileHandler(
            home / "commplan.log", maxBytes=2_000_000, backupCount=5, encoding="utf-8")
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)


def main(argv: list[str] | None = None, *, ends_process: bool = False) -> int:
    """Run one command; its exit status. `ends_process`: nothing runs after it in this
    process (see run_cli), so a command may leave the process's state as it is."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help/--version, 2 for bad usage
        return int(exc.code or 0)
    args.ends_process = ends_process
    from commplan_xl import commands

    home = commands.home_of(args)
    _setup_logging(home, args.debug)
    try:
        return getattr(commands, f"cmd_{args.command}")(args)
    except CommplanError as exc:
        log.error("%s: %s", args.command, exc)
        if args.debug:
            traceback.print_exc()
        print(str(exc), file=sys.stderr)
        return EXIT_ATTENTION
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_ATTENTION
    except Exception as exc:  # the last net: one sentence, the traceback in the log file
        log.exception("%s failed", args.command)
        if args.debug:
            traceback.print_exc()
        print(
            f"commplan {args.command} stopped on an unexpected error: {exc!r}. "
            "The details are in commplan.log in the home folder (or rerun with --debug).",
            file=sys.stderr,
        )
        return EXIT_ATTENTION
    finally:
        for handler in list(log.handlers):
            handler.close()
            log.removeHandler(handler)


def run_cli() -> NoReturn:
    """The `commplan` program: `main`, then the process ends at once.

    Everything is written and closed when `main` returns; what is left is freeing, one by
    one, the objects a big workbook made (a tenth of a second or more for 50,000 orders),
    which os._exit skips.
    """
    status = main(ends_process=True)
    for stream in (sys.stdout, sys.stderr):
        # A reader that left (`commplan due | head`) or a closed stream: nothing to flush.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    run_cli()
