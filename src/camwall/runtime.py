"""What ``bench`` and ``train`` share at run time.

* :func:`resolve_device`: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> ``torch.device`` (a clear
  :class:`~camwall.errors.CamwallError` naming ``--device`` otherwise);
* :class:`DistInfo`, :func:`dist_info`, :func:`dist_setup`, :func:`dist_teardown`,
  :func:`distributed`, :func:`all_reduce_sum`: joining and leaving the ``torchrun`` process group;
* :func:`seed_everything`: the torch, Python and NumPy RNGs from one seed;
* :func:`config_hash` and :func:`cache_key`: stable names for configurations;
* :func:`folder_lock` and :func:`file_lock`: one writer per folder / cache entry;
* :data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`: the RGB normalization of ImageNet models.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import random
import re
import stat
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from camwall.errors import CamwallError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LOCK_NAME",
    "DistInfo",
    "all_reduce_sum",
    "cache_key",
    "config_hash",
    "dist_info",
    "dist_setup",
    "dist_teardown",
    "distributed",
    "file_lock",
    "folder_lock",
    "resolve_device",
    "seed_everything",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel RGB mean of ImageNet (inputs in [0, 1]); ``x_norm = (x - mean) / std``."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel RGB standard deviation of ImageNet."""

LOCK_NAME = ".camwall.lock"

_DEVICE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


# --------------------------------------------------------------------------- devices


def resolve_device(
    device: str | torch.device = "auto", local_rank: int | None = None
) -> torch.device:
    """The ``torch.device`` named by a ``--device`` value.

    ``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``cuda`` ->
    ``cuda:<local_rank>``; ``cuda:N`` -> that GPU; ``cpu`` -> CPU. ``local_rank`` defaults to
    ``$LOCAL_RANK`` (set by ``torchrun``), else 0.

    Raises:
        CamwallError: for any other name (e.g. ``tpu``), for ``cuda``/``cuda:N`` without CUDA,
            and for ``cuda:N`` beyond the visible GPUs; the message names ``--device``.
    """
    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).strip().lower()
    match = _DEVICE.match(name)
    if match is None or (match.group(1) != "cuda" and match.group(2) is not None):
        raise CamwallError(
            f"--device {device}: unknown device {str(device)!r}; use auto, cpu, cuda or cuda:N."
        )
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise CamwallError(f"--device {device}: CUDA is not available here; use --device cpu.")
    if index is None:
        index = str(local_rank if local_rank is not None else os.environ.get("LOCAL_RANK", "0"))
    count = torch.cuda.device_count()
    if int(index) >= count:
        raise CamwallError(
            f"--device {device}: there is no GPU cuda:{index} ({count} visible); "
            f"use cuda:0 .. cuda:{count - 1}."
        )
    return torch.device("cuda", int(index))


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world`` processes; rank 0 writes files."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        """Wait for every rank (a no-op in one process)."""
        if self.world > 1:
            dist.barrier()


def dist_info() -> DistInfo:
    """The current process group's rank and size (``DistInfo()`` when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    return DistInfo()


def dist_setup(device: torch.device) -> tuple[DistInfo, bool]:
    """Join the process group described by the ``torchrun`` environment, if any.

    Without ``WORLD_SIZE`` > 1 nothing happens. Otherwise the backend is NCCL on CUDA (after
    ``torch.cuda.set_device(device)``) and gloo on CPU, and CPU ranks share the cores:
    ``torch.set_num_threads(max(1, cpu_count // LOCAL_WORLD_SIZE))``.

    Returns:
        ``(info, owned)``: this process's :class:`DistInfo`, and whether this call created the
        group (then pass ``owned`` to :func:`dist_teardown`).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), False
    owned = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owned = True
    if device.type == "cpu":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return dist_info(), owned


def dist_teardown(owned: bool) -> None:
    """Leave the process group if :func:`dist_setup` created it (``owned``)."""
    if owned and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed(device: str | torch.device = "auto") -> Iterator[tuple[DistInfo, torch.device]]:
    """``with distributed(device) as (info, dev):`` resolve the device, join the ``torchrun``
    group if any, and leave it again at the end of the block (also on errors)."""
    dev = resolve_device(device)
    info, owned = dist_setup(dev)
    try:
        yield info, dev
    finally:
        dist_teardown(owned)


def all_reduce_sum(values: Tensor) -> Tensor:
    """Sum ``values`` over all ranks (a no-op in one process); returns the summed tensor."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


# --------------------------------------------------------------------------- seeds and hashes


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), Python's ``random`` and NumPy's global RNG."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global state is what we seed)


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 (64 hex digits) of ``json.dumps(config, sort_keys=True)``.

    Key order does not matter (at any depth); values must be JSON-ready.
    """
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def cache_key(name: str, config: Mapping[str, Any], version: str = "") -> str:
    """``<name>-<hash16>``: the first 16 hex digits of
    ``config_hash({"config": config, "version": version})``; names one trained-pair cache entry."""
    return f"{name}-{config_hash({'config': dict(config), 'version': version})[:16]}"


# --------------------------------------------------------------------------- locks


def _holder(lock: Path) -> str:
    """The PID written in ``lock`` by its holder, or ``"unknown"``."""
    try:
        text = lock.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return "unknown"
    return text if text.isdigit() else "unknown"


@contextlib.contextmanager
def file_lock(lock: str | Path, what: str, *, wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on the file ``lock`` (created; it holds our PID).

    The kernel drops the lock when the process exits, even on SIGKILL, so a crash never leaves a
    stale lock. The file itself is left in place (removing it would race).

    Args:
        lock: the lock file.
        what: what it guards, for messages (e.g. ``"--out runs/x"``).
        wait: when another process holds it, print one line naming its PID to stderr and wait
            for it; otherwise (default) fail at once.

    Raises:
        CamwallError: another process holds the lock and ``wait`` is false.
    """
    lock = Path(lock)
    try:  # never follow a link planted there: it would overwrite its target with our PID
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        if not lock.is_symlink() and err.errno != errno.ELOOP:
            raise
        raise CamwallError(
            f"{what}: {lock} is a symbolic link, which camwall never follows; remove the link "
            "(not its target) or choose another folder."
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CamwallError(
            f"{what}: {lock} is not a regular file; remove it or choose another folder."
        )
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            if not wait:
                raise CamwallError(
                    f"{what}: another camwall process (PID {_holder(lock)}) is writing "
                    "there; wait for it to finish or choose another folder."
                ) from None
            print(
                f"camwall: waiting for PID {_holder(lock)}, which is writing {what} ...",
                file=sys.stderr,
                flush=True,
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        try:
            yield lock
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "--out", *, wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive advisory lock on ``folder`` for the duration of the ``with`` block.

    The lock is :func:`file_lock` on ``folder/.camwall.lock``, which holds the writer's PID. A
    second writer fails at once (or, with ``wait=True``, waits) with a :class:`CamwallError`
    naming the PID that holds the folder.

    Args:
        folder: the folder to lock; created if missing.
        what: how the folder was named by the user, for the error message (e.g. ``"--out"``).
        wait: wait for the holder instead of failing.

    Yields:
        The lock file's path.
    """
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    with file_lock(path / LOCK_NAME, f"{what} {path}", wait=wait) as lock:
        yield lock
