"""A tiny walled model and synthetic images for the benchmark tests.

The model: Conv2d(1->4, 3x3, pad 1), ReLU (the CAM target layer, ``"1"``), MaxPool 2x2, Flatten,
Linear(4*8*8 -> 3) whose weights reading pooled rows 5..7 are zero. Pooled row r sees conv rows
2r, 2r+1, which see input rows 2r-1 .. 2r+2; so pooled rows 0..4 see input rows 0..10 and the
dead zone is input rows 11..15 of a 16 x 16 image (checked by gradient support in the tests).
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from torch import nn

from camwall.bench import BenchDataset, BenchModel
from camwall.cams import DEFAULT_METHODS

# The benchmark's default CAM methods plus the two controls.
ALL = [*DEFAULT_METHODS, "uniform", "random"]

SIZE = 16
DEAD_FIRST = 11


def tiny_model(seed: int = 0, walled: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    )
    if walled:
        with torch.no_grad():
            w = model[4].weight.view(3, 4, 8, 8)
            w[:, :, 5:, :] = 0.0
    return model.eval()


def tiny_dead_zone() -> torch.Tensor:
    dead = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    dead[DEAD_FIRST:] = True
    return dead


def tiny_bench_model(name: str = "tiny", walled: bool = True) -> BenchModel:
    return BenchModel(
        name=name if walled else name + "-baseline",
        model=tiny_model(walled=walled),
        target_layer="1",
        dead_zone=tiny_dead_zone() if walled else torch.zeros(SIZE, SIZE, dtype=torch.bool),
        class_names=["a", "b", "c"],
        info={"source": "tests/bench/tiny.py"},
        walled=walled,
    )


def tiny_dataset(name: str = "tiny-mix", n: int = 6, seed: int = 0) -> BenchDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, SIZE, SIZE, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    return BenchDataset(name=name, images=images, labels=labels, class_names=["a", "b", "c"])


def torchrun_two_ranks(
    args: list[str], port_base: int, timeout: int
) -> subprocess.CompletedProcess[str]:
    """Run ``torchrun --nproc_per_node 2 ARGS`` (one thread per rank) and capture its output."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port_base + os.getpid() % 1000),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
