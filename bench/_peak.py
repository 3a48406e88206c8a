"""Run `python _peak.py -m module args…` or `-c code args…`, then print its peak RSS as JSON."""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys


def peak_kib() -> int:
    """This process's own peak RSS in KiB.

    Linux's ru_maxrss is inherited across fork/exec (a child of a 210 MiB parent reports
    at least 210 MiB), so read VmHWM, which exec resets; ru_maxrss elsewhere.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])  # "VmHWM:   123456 kB"
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # macOS counts bytes


def _report() -> None:
    sys.stdout.flush()
    print(json.dumps({"maxrss_kib": peak_kib()}), file=sys.stderr, flush=True)


def main() -> None:
    mode, target, *rest = sys.argv[1:]
    sys.argv = [target, *rest]
    code = 0
    real_exit = os._exit

    def exit_now(status: int) -> None:  # `commplan` ends with os._exit: report first
        _report()
        real_exit(status)

    os._exit = exit_now  # type: ignore[assignment]
    try:
        if mode == "-m":
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            exec(compile(target, "<bench>", "exec"), {"__name__": "__main__"})
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        _report()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
