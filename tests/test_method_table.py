"""benchmarks/method_table.py: which peers a method has, its limit passes, one table row."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from camwall.cams import METHODS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def table():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(
            "method_table", BENCHMARKS / "method_table.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_peers_of(table):
    assert table.peers_of("gradcam") == ["grad-cam", "torchcam", "captum"]
    assert table.peers_of("ablationcam") == ["grad-cam"]
    assert table.peers_of("cam") == ["torchcam"]
    assert table.peers_of("sess") == ["grad-cam"]
    assert table.peers_of("opticam") == []


def _tiny() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()  # fmt: skip
    return model, torch.rand(2, 3, 8, 8)


@pytest.mark.parametrize("name", [n for n in METHODS.names() if n not in ("rollout", "legrad")])
def test_limit_passes_run_for_every_method(table, name):
    """The limit of every method in the table runs (sess has none) and leaves no hook."""
    model, x = _tiny()
    opts = table.method_options(name, _args(table), tuple(x.shape))
    run = table.limit_passes(name, model, "1", x, opts)
    if name == "sess":
        assert run is None
        return
    run()
    assert all(not m._forward_hooks for m in model.modules())


def _args(table):
    import argparse

    parser = argparse.ArgumentParser()
    table.cam_speed.add_shared_arguments(parser)
    parser.add_argument("--opticam-iters", type=int, default=3)
    return parser.parse_args([])


def test_row_speed_up_is_against_the_fastest_peer(table):
    cols = {
        "camwall": {"seconds": 0.5, "peak_mib": 10.0},
        "limit": {"seconds": 0.4, "peak_mib": 8.0},
        "grad-cam": {"seconds": 2.0, "peak_mib": 30.0},
        "torchcam": {"seconds": 1.0, "peak_mib": 20.0},
        "captum": {"seconds": math.inf, "peak_mib": 0.0, "error": "RuntimeError: no"},
    }
    line = table.row("gradcam", {"columns": cols, "tail": ""})
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:8] == [
        "gradcam",
        "0.500",
        "0.400",
        "1.25",
        "2.000",
        "1.000",
        "n/a",
        "2.0x (torchcam)",
    ]
    assert cells[8:10] == ["10", "20"]
    assert "captum: RuntimeError: no" in cells[10]
