"""`commplan schedule`: the daily task for Windows Task Scheduler or cron."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from commplan_xl.i18n import _

TASK_NAME = "commplan daily run"


def commplan_command() -> list[str]:
    """The absolute command that runs this installed commplan."""
    exe = shutil.which("commplan")
    if exe:
        return [str(Path(exe).absolute())]
    return [sys.executable, "-m", "commplan_xl"]


def _cmd_quoted(path: object) -> str:
    """A path for a .cmd file: in double quotes (spaces, accents), `%` doubled (cmd.exe
    would read it as a variable)."""
    return '"' + str(path).replace("%", "%%") + '"'


def windows_wrapper(home: Path, workbook: Path) -> str:
    """A .cmd file: UTF-8 console, go to the home folder, run the batch, append everything
    to the log.

    cmd.exe reads a batch file line by line in the console's code page: the lines before
    `chcp 65001` are plain ASCII, the ones after may hold any path (written in UTF-8).
    """
    cmd = " ".join(_cmd_quoted(part) for part in commplan_command())
    log_file = _cmd_quoted(home / "commplan-task.log")
    return (
        "@echo off\r\n"
        "rem Written by `commplan schedule`: the daily run started by Task Scheduler.\r\n"
        "chcp 65001 >nul\r\n"
        "set PYTHONIOENCODING=utf-8\r\n"
        f"cd /d {_cmd_quoted(home)}\r\n"
        f"{cmd} run --home {_cmd_quoted(home)} --workbook {_cmd_quoted(workbook)} "
        f">> {log_file} 2>&1\r\n"
        "exit /b %ERRORLEVEL%\r\n"
    )


def _windows_user(environ: dict[str, str] | None = None) -> str:
    """DOMAIN\\user of the person who sets the task up (the task runs as them)."""
    env = os.environ if environ is None else environ
    user = env.get("USERNAME", "") or "%USERNAME%"
    domain = env.get("USERDOMAIN", "")
    return f"{domain}\\{user}" if domain else user


def schtasks_line(wrapper: Path, at: str, user: str) -> str:
    """The schtasks command for a daily run at `at` as `user`, logged on or not: /RP
    without a password makes Windows ask for it once, when the task is created."""
    return (f'schtasks /Create /TN "{TASK_NAME}" /TR "\\"{wrapper}\\"" /SC DAILY /ST {at} '
            f'/RU "{user}" /RP /F')


def schedule_instructions(home: Path, workbook: Path, *, at: str = "06:30",
                          install: bool = False, windows: bool | None = None) -> str:
    """What to paste on this machine for a daily run at `at` (HH:MM)."""
    windows = os.name == "nt" if windows is None else windows
    if windows:
        return _windows_instructions(home, workbook, at=at, install=install)
    hour, minute = at.split(":")
    cmd = " ".join(shlex.quote(p) for p in commplan_command())
    line = (f"{int(minute)} {int(hour)} * * * cd {shlex.quote(str(home))} && {cmd} run "
            f"--home {shlex.quote(str(home))} --workbook {shlex.quote(str(workbook))} "
            f">> {shlex.quote(str(home / 'commplan-task.log'))} 2>&1")
    text = _("Add this line to your crontab (`crontab -e`) for a daily run at {time}:").format(
        time=at) + f"\n\n    {line}\n"
    if install:
        text += "\n" + _("--install only creates Windows tasks; add the line above by hand "
                         "here.")
    return text


def _windows_instructions(home: Path, workbook: Path, *, at: str, install: bool) -> str:
    wrapper = home / "commplan-daily.cmd"
    wrapper.write_bytes(windows_wrapper(home, workbook).encode("utf-8"))
    line = schtasks_line(wrapper, at, _windows_user())
    text = (
        _("Wrote {wrapper}: it runs `commplan run` on {home} and appends to {log}.").format(
            wrapper=wrapper, home=home, log=home / "commplan-task.log") + "\n"
        + _("To run it every day, paste this in a Command Prompt (as the user who sends):")
        + f"\n\n    {line}\n\n"
        + _("Windows asks for that user's password once: the task then runs every day, "
            "whether or not anyone is logged on.") + "\n"
        + _("Task Scheduler's 'Last Run Result' then shows 0 (all went well), 1 (something "
            "needs attention: read commplan.log) or 2 (bad command line).")
    )
    if install:
        # Not captured: schtasks asks for the password on this console.
        result = subprocess.run(line, shell=True)
        text += "\n\n" + (_("The task is installed.") if result.returncode == 0 else
                           _("schtasks failed (exit status {status}).").format(
                               status=result.returncode))
    return text
