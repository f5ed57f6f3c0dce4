"""Distributed training helpers for ``torchrun`` (one process per device).

``torchrun --nproc_per_node N -m camwall train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them and joins the
process group (NCCL on CUDA, gloo on CPU). Without them everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from camwall.errors import CamwallError

__all__ = ["DistInfo", "all_reduce_sum", "dist_info", "resolve_device", "setup"]


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


def dist_info() -> DistInfo:
    """The current process group's rank and size (``DistInfo()`` when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    return DistInfo()


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else CPU.

    Raises:
        CamwallError: for ``"cuda"`` on a machine without CUDA.
    """
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CamwallError(
                "--device cuda was given but CUDA is not available; use --device cpu."
            )
        if name == "cuda":
            name = f"cuda:{local_rank}"
    try:
        return torch.device(name)
    except RuntimeError:
        raise CamwallError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N.") from None


def setup(device: str | torch.device = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group described by the ``torchrun`` environment, if any.

    Returns the :class:`DistInfo` and this process's device. With ``WORLD_SIZE`` > 1, the backend
    is NCCL on CUDA and gloo on CPU, and CPU processes share the cores (``torch.set_num_threads``).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistInfo(), dev
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cpu":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return dist_info(), dev


def all_reduce_sum(values: Tensor) -> Tensor:
    """Sum ``values`` over all ranks (a no-op in one process); returns the summed tensor."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
