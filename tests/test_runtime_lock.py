"""The one-writer-per-folder lock, tested across real processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from lock_holder import hold, stop

from camwall.errors import CamwallError
from camwall.runtime import LOCK_NAME, folder_lock


def test_second_writer_fails_at_once_naming_the_pid(tmp_path: Path) -> None:
    proc = hold(tmp_path)
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
        stop(proc)


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    proc = hold(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    stop(proc)
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
