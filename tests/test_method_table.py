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
from camwall.modelstate import held

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


def test_limit_records_nothing_before_the_target_layer(table):
    """The limit's backward to the layer is the bare work camwall does: with the parameters
    frozen the graph starts at the layer's output, so the layers before it record nothing; a
    backward to the input records from the input. The flags are restored after."""
    model, x = _tiny()
    seen: list[bool] = []
    handle = model[0].register_forward_hook(lambda m, i, o: seen.append(o.requires_grad))
    try:
        with held(model):
            assert not any(p.requires_grad for p in model.parameters())
            a = table._grad_pass(model, "1", x, "layer", False)
            table._grad_pass(model, "1", x, "input", False)
    finally:
        handle.remove()
    assert seen == [False, True]
    assert a.requires_grad
    assert a.grad_fn is None  # the layer's output is the graph's leaf
    assert all(p.requires_grad for p in model.parameters())


def _args(table):
    """The script's own defaults (a flag added there cannot be missing here), fewer opticam
    steps for the tiny models."""
    return table.build_parser().parse_args(["--opticam-iters", "3"])


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
        "2.00x (torchcam)",
    ]
    assert cells[8] == "n/a"  # no CPU times recorded
    assert cells[9:11] == ["10", "20"]
    assert cells[11:13] == ["n/a", "n/a"]  # no tensor peaks measured
    assert cells[13:15] == ["", ""]  # no setting, no load recorded
    assert "captum: RuntimeError: no" in cells[15]


def test_speed_ups_below_ten_keep_two_decimals(table):
    assert [table.times(r) for r in (0.96, 1.0, 9.994, 10.0, 938.4)] == [
        "0.96x",
        "1.00x",
        "9.99x",
        "10.0x",
        "938.4x",
    ]


def test_reduced_row_states_its_setting_and_full_size_estimate(table):
    """resnet50's sscam row: batch 1 at 64 x 64 with 1 sample, instead of 4 x 224 x 224 with
    the default 35 samples: 4 x (224 / 64)^2 x 35 = 1715 times the work."""
    setting = table.setting("resnet50", "sscam", quick=False)
    assert (setting["batch"], setting["size"], setting["samples"]) == (1, 64, 1)
    factor = table.full_size_factor("sscam", setting)
    assert factor == pytest.approx(4 * (224 / 64) ** 2 * 35)
    assert table.setting("resnet50", "sscam", quick=True)["reduced"] == {}
    full = table.setting("resnet50", "sscam", quick=False, full=True)  # --full: no reduction
    assert (full["batch"], full["size"], full["samples"], full["reduced"]) == (4, 224, None, {})
    assert table.full_size_factor("gradcam", table.setting("resnet50", "gradcam", False)) == 1
    cols = {
        "camwall": {"seconds": 2.0, "cpu_seconds": 3.0, "peak_mib": 10.0},
        "limit": {"seconds": 1.0, "peak_mib": 8.0},
        "torchcam": {"seconds": 4.0, "cpu_seconds": 7.5, "peak_mib": 30.0},
    }
    result = {"columns": cols, "setting": setting, "load": [[2.5, 1, 1], [3.25, 1, 1]]}
    cells = [c.strip() for c in table.row("sscam", result).strip("|").split("|")]
    assert cells[7:9] == ["2.00x (torchcam)", "2.50x"]  # wall time, CPU time
    assert cells[13:15] == ["1 x 64, 1 sample(s) (reduced)", "2.5 / 3.2"]
    assert f"~{2.0 * factor:.0f} s camwall, ~{4.0 * factor:.0f} s torchcam" in cells[15]


def test_tensor_peak_is_the_peak_of_live_tensors(table):
    """Closed forms: 4 MiB and 2 MiB alive together peak at 6 MiB; three 4 MiB tensors, each
    freed before the next, at 4 MiB; a tensor made before the call does not count."""
    cpu = torch.device("cpu")
    held = torch.zeros(2**22)

    def together() -> None:
        a = torch.zeros(2**20)
        b = torch.zeros(2**19)
        del a, b

    def one_at_a_time() -> None:
        for _ in range(3):
            torch.zeros(2**20)

    assert table.tensor_peak(together, cpu) == pytest.approx(6.0)
    assert table.tensor_peak(one_at_a_time, cpu) == pytest.approx(4.0)
    assert table.tensor_peak(lambda: held.sum(), cpu) < 0.01


def test_worker_measures_every_column_on_a_small_resnet(table, tmp_path):
    """One real row (resnet18 at 32 x 32, gradcam): camwall, its limit and its three peers are
    timed, camwall's maps equal grad-cam's to float32 rounding."""
    spec = {
        "arch": "resnet18", "size": 32, "batch": 1, "method": "gradcam", "repeats": 1,
        "threads": 1, "device": "cpu", "seed": 0, "options": {}, "tensor_peak_under": 30.0,
        "out": str(tmp_path / "row.json"),
    }  # fmt: skip
    table.worker(spec)
    import json

    out = json.loads((tmp_path / "row.json").read_text())
    assert set(out["columns"]) == {"camwall", "limit", "grad-cam", "torchcam", "captum"}
    for column in out["columns"].values():
        assert "error" not in column
        assert 0 < column["seconds"] < math.inf
        assert 0 < column["cpu_seconds"] < math.inf
        assert column["tensor_mib"] > 0
    assert out["diff"] < 1e-5
    assert len(out["load"]) == 2


def test_kept_rows_are_not_measured_again(table, tmp_path, monkeypatch):
    """A rerun (resume) reads the row's JSON instead of starting a worker; --fresh measures."""
    kept = {"columns": {"camwall": {"seconds": 1.0, "peak_mib": 1.0}}, "tail": ""}
    (tmp_path / "resnet50-gradcam.json").write_text(__import__("json").dumps(kept))

    def no_worker(*args, **kwargs):
        raise AssertionError("a kept row started a worker")

    monkeypatch.setattr(table.subprocess, "run", no_worker)
    args = _args(table)
    args.quick, args.fresh, args.repeats, args.seed = False, False, 1, 0
    again = table.measure("resnet50", "gradcam", args, tmp_path)
    finished = again.pop("finished")  # the file's time, for the table's span line
    assert again == kept
    assert len(finished) == len("2026-01-01 00:00")
    args.fresh = True
    with pytest.raises(AssertionError, match="started a worker"):
        table.measure("resnet50", "gradcam", args, tmp_path)
