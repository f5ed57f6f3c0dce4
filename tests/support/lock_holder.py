"""A second process that holds a folder's writer lock, for the one-writer tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HOLD = """
import sys, time
from camwall.runtime import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def hold(folder: Path) -> subprocess.Popen[str]:
    """Start a process that takes ``folder``'s lock; return once it holds it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill the holder (the lock dies with it) and close its pipe."""
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()
