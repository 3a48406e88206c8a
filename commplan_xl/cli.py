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
import re
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from commplan_xl import __version__, i18n
from commplan_xl.i18n import _
from commplan_xl.problems import CommplanError

# Speed (measured on bench/): numpy, which pandas imports, starts a pool of linear-algebra
# threads that commplan never uses; on a small machine they take CPU from the run and from
# the mail server. One is enough. Set before anything imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

EXIT_OK = 0
EXIT_ATTENTION = 1  # validation errors, a failed or uncertain message, log not written
EXIT_USAGE = 2

log = logging.getLogger("commplan")


_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_DAY_FIRST = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})")


def _date(text: str) -> dt.date:
    """A date as the workbook takes it: 05/03/2026 (always day first) or 2026-03-05."""
    value = text.strip()
    if match := _ISO.fullmatch(value):
        year, month, day = (int(g) for g in match.groups())
    elif match := _DAY_FIRST.fullmatch(value):
        day, month, year = (int(g) for g in match.groups())
    else:
        raise argparse.ArgumentTypeError(
            _('"{text}" is not a date; write it day first, e.g. 05/03/2026 (or 2026-03-05)')
            .format(text=text))
    try:
        return dt.date(year, month, day)
    except ValueError:
        raise argparse.ArgumentTypeError(
            _('"{text}" is not a date (there is no such day)').format(text=text)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(_('"{text}" is not a whole number ≥ 0').format(text=text))
    return value


def _time(text: str) -> str:
    try:
        return dt.datetime.strptime(text, "%H:%M").strftime("%H:%M")
    except ValueError:
        raise argparse.ArgumentTypeError(
            _('"{text}" is not a time as HH:MM').format(text=text)) from None


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    # The subcommands' copies must not overwrite what was given before the command name.
    kw = {"default": argparse.SUPPRESS} if suppress else {}
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--home", metavar=_("FOLDER"),
                   help=_("the home folder (default: COMMPLAN_HOME or here)"), **kw)
    p.add_argument("--workbook", metavar=_("FILE"),
                   help=_("the workbook (default: HOME/workbooks/commplan.xlsx)"), **kw)
    p.add_argument("--debug", action="store_true",
                   help=_("show the details of an unexpected error"), **kw)
    return p


def _today_option(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--today", type=_date, metavar=_("DATE"), help=help or _(
        "the day of the run, e.g. 05/03/2026 (default: today)"))


def _message_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("order", metavar=_("ORDER"), help=_("the order id, as in the Orders sheet"))
    p.add_argument("step", type=int, metavar=_("STEP"), help=_("the step number in its plan"))


def _commands() -> list[tuple[str, str]]:
    """Each command and its one-line description, in the order `commplan` lists them."""
    return [
        ("init", _("create the home folders and a workbook")),
        ("check", _("validate the workbook")),
        ("due", _("list what a run would send or skip")),
        ("run", _("send what is due, archive, write SentLog")),
        ("bounces", _("read returned mails from the mailbox, sending nothing")),
        ("preview", _("render one message to a file")),
        ("resend", _("send one message again on purpose")),
        ("variables", _("print the variables a mail may use")),
        ("schedule", _("print the daily task command")),
        ("log", _("every outcome of a period, from the ledger")),
        ("plan", _("show a plan's dates from a start date")),
        ("demo", _("run the whole flow on demo data")),
        ("auth", _("give the one-time OAuth2 consent for sending (Google)")),
        ("restore-ledger", _("put back a dated copy of the ledger (the current one is kept)")),
    ]


def command_list() -> str:
    """What `commplan` alone prints: every command, one line each."""
    commands = _commands()
    width = max(len(name) for name, _text in commands)
    lines = [_("commplan {version}: send customers a planned series of emails about their "
               "order.").format(version=__version__), "", _("Commands:")]
    lines += [f"  commplan {name:<{width}}  {text}" for name, text in commands]
    lines += ["", _("`commplan COMMAND --help` shows the options of a command.")]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The command line, in the current language."""
    common = _common_options(suppress=True)
    parser = argparse.ArgumentParser(
        prog="commplan", parents=[_common_options(suppress=False)],
        description=_("Send customers a planned series of emails about their order."))
    parser.add_argument("--version", action="version", version=f"commplan {__version__}",
                        help=_("show the version and exit"))
    sub = parser.add_subparsers(dest="command", metavar=_("COMMAND"))
    helps = dict(_commands())

    def add(name: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=helps[name],
                              description=helps[name])

    p = add("init")
    p.add_argument("--force", action="store_true",
                   help=_("replace an existing workbook (kept as a backup)"))
    p.add_argument("--lang", choices=("fr", "en"), default=None,
                   help=_("the workbook's language: fr (default) or en"))
    p = add("check")
    p.add_argument("--smtp", action="store_true", help=_(
        "also test the mail server connection and login (and the mailbox's when bounces "
        "is yes)"))
    _today_option(p, _("the day the messages are tried for (default: today)"))
    p = add("due")
    _today_option(p)
    p.add_argument("--csv", action="store_true", help=_("print CSV"))

    p = add("run")
    _today_option(p)
    p.add_argument("--dry-run", action="store_true",
                   help=_("render everything, send and record nothing"))
    p.add_argument("--limit", type=_positive, metavar="N",
                   help=_("send at most N mails in this run"))
    p.add_argument("--new-ledger", action="store_true", help=_(
        "confirm a fresh start: begin a new ledger although the workbook or the archive shows "
        "earlier sends (they may be sent again)"))

    p = add("restore-ledger")
    p.add_argument("--from", dest="source", metavar=_("FILE"), help=_(
        "the copy to restore (default: the newest in HOME/ledger-backups)"))
    p.add_argument("--list", action="store_true", help=_("list the copies, restore nothing"))

    _today_option(add("bounces"), _("the day the returned mails are read on (default: today)"))

    p = add("preview")
    _message_arguments(p)
    p.add_argument("--to", metavar=_("ADDRESS"),
                   help=_("send it to this test address instead (nothing recorded)"))
    p.add_argument("--no-open", dest="open", action="store_false",
                   help=_("do not open the HTML in the browser (it opens only at a terminal)"))
    _today_option(p, _("the day the mail is rendered for (default: today)"))

    p = add("resend")
    _message_arguments(p)
    _today_option(p, _("the day of the resend (default: today)"))

    add("variables")

    p = add("schedule")
    p.add_argument("--time", type=_time, default="06:30", metavar=_("HH:MM"),
                   help=_("time of the daily run (default: 06:30)"))
    p.add_argument("--install", action="store_true", help=_("create the task (Windows)"))

    p = add("plan")
    p.add_argument("name", metavar=_("PLAN"), help=_("the plan's name, as in the Plans sheet"))
    p.add_argument("--from", dest="start", type=_date, required=True, metavar=_("DATE"),
                   help=_("the order's start date, e.g. 05/03/2026"))

    add("demo").add_argument("--days", type=_positive, metavar="N", help=_(
        "simulated mornings (default: from the first demo order to two months ahead)"))

    p = add("log")
    p.add_argument("--from", dest="first", type=_date, metavar=_("DATE"),
                   help=_("the first run day (default: the first)"))
    p.add_argument("--to", dest="last", type=_date, metavar=_("DATE"),
                   help=_("the last run day (default: the last)"))
    p.add_argument("--order", metavar=_("ORDER"), help=_("only this order"))
    p.add_argument("--customer", metavar=_("CUSTOMER"), help=_("only this customer"))
    out = p.add_mutually_exclusive_group()
    out.add_argument("--xlsx", metavar=_("FILE"), help=_("write an Excel file made for reading"))
    out.add_argument("--csv", action="store_true", help=_("print CSV"))

    add("auth").add_argument("provider", choices=["google"],
                             help=_("whose consent to give"))
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
    # Until the workbook is read (it names its language), speak the user's.
    i18n.set_language(i18n.system_language())
    i18n.install_argparse()
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        sys.stdout.write(command_list())
        return EXIT_OK
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help/--version, 2 for bad usage
        return int(exc.code or 0)
    if args.command is None:
        sys.stdout.write(command_list())
        return EXIT_OK
    args.ends_process = ends_process
    from commplan_xl import commands

    home = commands.home_of(args)
    _setup_logging(home, args.debug)
    try:
        return getattr(commands, f"cmd_{args.command.replace('-', '_')}")(args)
    except CommplanError as exc:
        log.error("%s: %s", args.command, exc)
        if args.debug:
            traceback.print_exc()
        print(str(exc), file=sys.stderr)
        return EXIT_ATTENTION
    except KeyboardInterrupt:
        print(_("Interrupted."), file=sys.stderr)
        return EXIT_ATTENTION
    except Exception as exc:  # the last net: one sentence, the traceback in the log file
        log.exception("%s", _("commplan {command} failed").format(command=args.command))
        if args.debug:
            traceback.print_exc()
        print(
            _("commplan {command} stopped on an unexpected error: {error}. The details are in "
              "commplan.log in the home folder (or rerun with --debug).").format(
                command=args.command, error=repr(exc)),
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
    one, the objects a big workbook made, which os._exit skips (speed, measured on bench/).
    """
    for stream in (sys.stdout, sys.stderr):
        # A console or a file in cp1252/cp850 (Task Scheduler's log) cannot show every
        # character of a subject: show "?" rather than stop the run.
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]
    status = main(ends_process=True)
    for stream in (sys.stdout, sys.stderr):
        # A reader that left (`commplan due | head`) or a closed stream: nothing to flush.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    run_cli()
