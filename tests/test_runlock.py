"""The run lock: one run per home folder, freed by the OS when its holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from commplan_xl.ops.runlock import run_lock
from commplan_xl.problems import CommplanError, RunLocked

HOLDER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from commplan_xl.ops.runlock import run_lock\n"
    "with run_lock(Path(sys.argv[1])):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(60)\n"
)


@contextmanager
def holder(home: Path) -> Iterator[subprocess.Popen]:
    """A real second process holding the lock on `home` until the block ends."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(home)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()


def test_lock_is_taken_and_released(tmp_path: Path) -> None:
    """The lock can be taken again once the first `with` block ends."""
    with run_lock(tmp_path):
        pass
    with run_lock(tmp_path):
        pass


def test_second_run_in_same_process_is_refused(tmp_path: Path) -> None:
    """Two runs on one home are refused even within one process."""
    with run_lock(tmp_path), pytest.raises(RunLocked), run_lock(tmp_path):
        pass


def test_other_process_holding_the_lock_refuses_at_once(tmp_path: Path) -> None:
    """A second run fails at once with a sentence naming home, start time and pid."""
    with holder(tmp_path) as child, pytest.raises(RunLocked) as caught, run_lock(tmp_path):
        pass
    message = str(caught.value)
    assert message.startswith(f"Another commplan run is already working on {tmp_path} (started ")
    assert f"pid {child.pid}); wait for it to finish." in message


def test_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    """A holder killed with SIGKILL leaves no lock behind: the next run proceeds."""
    with holder(tmp_path) as child:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        with run_lock(tmp_path):
            pass


def test_different_homes_do_not_block_each_other(tmp_path: Path) -> None:
    """The lock is per home folder."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with holder(tmp_path / "a"), run_lock(tmp_path / "b"):
        pass


def test_missing_home_is_a_sentence(tmp_path: Path) -> None:
    """A home folder that does not exist is reported plainly."""
    with pytest.raises(CommplanError, match="does not exist"), run_lock(tmp_path / "nope"):
        pass
