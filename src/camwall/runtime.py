"""What ``bench`` and ``train`` share at run time.

Today: :func:`folder_lock`, the one-writer-per-folder guard. (Device resolution, distributed
set-up, seeding, config hashing and the cache key move here with the runtime reshape.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from camwall.errors import CamwallError

__all__ = ["LOCK_NAME", "folder_lock"]

LOCK_NAME = ".camwall.lock"


def _holder(lock: Path) -> str:
    """The PID written in ``lock`` by its holder, or ``"unknown"``."""
    try:
        text = lock.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return "unknown"
    return text if text.isdigit() else "unknown"


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "--out") -> Iterator[Path]:
    """Hold an exclusive advisory lock on ``folder`` for the duration of the ``with`` block.

    The lock is ``fcntl.flock`` on ``folder/.camwall.lock``, which holds the writer's PID. The
    kernel drops it when the process exits, even on SIGKILL, so a crash never leaves a stale
    lock. A second writer fails at once (no waiting) with a :class:`CamwallError` naming the PID
    that holds the folder. The lock file itself is left in place (removing it would race).

    Args:
        folder: the folder to lock; created if missing.
        what: how the folder was named by the user, for the error message (e.g. ``"--out"``).

    Yields:
        The lock file's path.
    """
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    lock = path / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise CamwallError(
                f"{what} {path}: another camwall process (PID {_holder(lock)}) is writing "
                "there; wait for it to finish or choose another folder."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        try:
            yield lock
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
