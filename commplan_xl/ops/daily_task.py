"""`commplan schedule`: the daily task for Windows Task Scheduler or cron."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

TASK_NAME = "commplan daily run"


def commplan_command() -> list[str]:
    """The absolute command that runs this installed commplan."""
    exe = shutil.which("commplan")
    if exe:
        return [str(Path(exe).absolute())]
    return [sys.executable, "-m", "commplan_xl"]


def windows_wrapper(home: Path, workbook: Path) -> str:
    """A .cmd file: go to the home folder, run the batch, append everything to the log."""
    cmd = " ".join(f'"{part}"' for part in commplan_command())
    return (
        "@echo off\r\n"
        "rem Written by `commplan schedule`: the daily run started by Task Scheduler.\r\n"
        f'cd /d "{home}"\r\n'
        f'{cmd} run --home "{home}" --workbook "{workbook}" >> "{home}\\commplan-task.log" 2>&1\r\n'
        "exit /b %ERRORLEVEL%\r\n"
    )


def schedule_instructions(home: Path, workbook: Path, *, at: str = "06:30",
                          install: bool = False, windows: bool | None = None) -> str:
    """What to paste on this machine for a daily run at `at` (HH:MM)."""
    windows = os.name == "nt" if windows is None else windows
    if windows:
        wrapper = home / "commplan-daily.cmd"
        wrapper.write_bytes(windows_wrapper(home, workbook).encode("utf-8"))
        line = (f'schtasks /Create /TN "{TASK_NAME}" /TR "\\"{wrapper}\\"" /SC DAILY '
                f"/ST {at} /F")
        text = (
            f"Wrote {wrapper}: it runs `commplan run` on {home} and appends to "
            f"{home / 'commplan-task.log'}.\n"
            "To run it every day, paste this in a Command Prompt (as the user who sends):\n\n"
            f"    {line}\n\n"
            "Task Scheduler's 'Last Run Result' then shows 0 (all went well), 1 (something "
            "needs attention: read commplan.log) or 2 (bad command line)."
        )
        if install:
            result = subprocess.run(line, shell=True, capture_output=True, text=True)
            text += ("\n\nThe task is installed." if result.returncode == 0 else
                     f"\n\nschtasks failed: {result.stderr.strip() or result.stdout.strip()}")
        return text
    hour, minute = at.split(":")
    cmd = " ".join(shlex.quote(p) for p in commplan_command())
    line = (f"{int(minute)} {int(hour)} * * * cd {shlex.quote(str(home))} && {cmd} run "
            f"--home {shlex.quote(str(home))} --workbook {shlex.quote(str(workbook))} "
            f">> {shlex.quote(str(home / 'commplan-task.log'))} 2>&1")
    text = ("Add this line to your crontab (`crontab -e`) for a daily run at "
            f"{at}:\n\n    {line}\n")
    if install:
        text += "\n--install only creates Windows tasks; add the line above by hand here."
    return text
