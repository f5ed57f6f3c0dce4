"""Tiny models and datasets for the training tests (and the DDP worker, which must be
importable by spawned processes)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import TensorDataset

from camwall.train import TrainConfig, fit


def tiny_data(n: int = 64, seed: int = 0, classes: int = 3) -> TensorDataset:
    """``n`` random 1 x 8 x 8 images whose label is the brightest of ``classes`` row bands."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    bands = x.view(n, 8, 8)[:, : classes * 2].reshape(n, classes, -1).mean(dim=2)
    return TensorDataset(x, bands.argmax(dim=1))


def tiny_model(seed: int = 0, dropout: float = 0.2, classes: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 64, 16),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(16, classes),
    )


def tiny_config(**kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "name": "tiny",
        "num_classes": 3,
        "epochs": 3,
        "batch_size": 16,
        "lr": 0.1,
        "scheduler": "onecycle",
        "val_batch_size": 32,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _as_rank(rank: int, world: int, port: int) -> None:
    """This process as rank ``rank`` of ``world`` (torchrun's variables), one thread."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)


def ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    """One rank of the 2-process gloo run; rank 0 saves the final weights."""
    _as_rank(rank, world, port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = tiny_model(dropout=0.0)
        data = tiny_data()
        result = fit(
            model,
            data,
            data,
            tiny_config(scheduler="constant", epochs=2),
            Path(out) / "run",
            progress=False,
        )
        if rank == 0:
            save_file(
                {k: v.contiguous() for k, v in model.state_dict().items()},
                str(Path(out) / "ddp.safetensors"),
            )
            (Path(out) / "val.txt").write_text(repr(result.history[-1]["val_top1"]))
    finally:
        dist.destroy_process_group()


def ddp_finetune_worker(rank: int, world: int, port: int, out: str) -> None:
    """One rank of a 2-process gloo fine-tuning run (``init`` = the shipped fashion-vgg
    baseline); rank 0 writes the run's ``init`` record to ``init.json``."""
    import json

    from camwall.train import train

    _as_rank(rank, world, port)
    over = {"init": "shipped:fashion-vgg-baseline", "train_limit": 128, "val_limit": 200}
    result = train("fashion-vgg", over, Path(out) / "ddp", device="cpu", progress=False)
    if rank == 0:
        (Path(out) / "init.json").write_text(json.dumps(result.init))
