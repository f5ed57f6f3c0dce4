"""The one-writer-per-folder lock, tested across real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camwall.errors import CamwallError
from camwall.runtime import LOCK_NAME, folder_lock

HOLD = """
import sys, time
from camwall.runtime import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def _hold(folder: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def test_second_writer_fails_at_once_naming_the_pid(tmp_path: Path) -> None:
    proc = _hold(tmp_path)
    try:
        start = time.monotonic()
        with (
            pytest.raises(CamwallError, match=rf"PID {proc.pid}\b") as info,
            folder_lock(tmp_path, "--out"),
        ):
            pass
        assert time.monotonic() - start < 5
        assert str(tmp_path) in str(info.value)
        assert "--out" in str(info.value)
    finally:
        _stop(proc)


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    proc = _hold(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    _stop(proc)
    with folder_lock(tmp_path) as lock:  # no stale lock after SIGKILL
        assert lock == tmp_path / LOCK_NAME
        assert lock.read_text() == str(os.getpid())


def test_lock_is_released_after_the_block_and_after_an_exception(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), folder_lock(tmp_path):
        raise RuntimeError("boom")
    with folder_lock(tmp_path):
        pass


def test_lock_creates_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    with folder_lock(target):
        assert (target / LOCK_NAME).is_file()
