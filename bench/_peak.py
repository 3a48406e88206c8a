"""Run `python _peak.py -m module args…` or `-c code args…`, then print its peak RSS as JSON."""

from __future__ import annotations

import json
import resource
import runpy
import sys


def main() -> None:
    mode, target, *rest = sys.argv[1:]
    sys.argv = [target, *rest]
    code = 0
    try:
        if mode == "-m":
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            exec(compile(target, "<bench>", "exec"), {"__name__": "__main__"})
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        sys.stdout.flush()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        print(json.dumps({"maxrss_kib": peak}), file=sys.stderr)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
