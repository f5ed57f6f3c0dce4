"""Both variants in two processes: bit-for-bit the sequential weights; child errors surface."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from camwall.errors import CamwallError
from camwall.runtime import DistInfo
from camwall.train import TrainConfig, resolve_config, train
from camwall.train._parallel import (
    SMALL_RUN,
    _Child,
    _collect,
    child_main,
    child_threads,
    use_parallel,
)

TINY = {
    "arch_kwargs": {"width": 2},
    "epochs": 2,
    "batch_size": 64,
    "train_limit": 128,
    "val_limit": 64,
    "threads": 1,
}


def test_parallel_pair_equals_sequential_pair_bit_for_bit(tmp_path: Path) -> None:
    seq = train("fashion-vgg", TINY, tmp_path / "seq", device="cpu", parallel=False)
    par = train("fashion-vgg", TINY, tmp_path / "par", device="cpu", parallel=True)
    for variant in ("walled", "baseline"):
        a = load_file(str(seq.checkpoints[variant]))
        b = load_file(str(par.checkpoints[variant]))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (variant, key)
        drop = ("seconds", "images_per_second")
        rows_a = [{k: v for k, v in r.items() if k not in drop} for r in seq.histories[variant]]
        rows_b = [{k: v for k, v in r.items() if k not in drop} for r in par.histories[variant]]
        assert rows_a == rows_b
        assert len(rows_a) == 2
        assert (tmp_path / "par" / variant / "metrics.csv").is_file()
    manifest = json.loads((tmp_path / "par" / "manifest.json").read_text())
    assert manifest["completed"] is True
    assert (tmp_path / "par" / "curves.png").is_file()


def test_a_user_error_in_a_child_is_a_clear_error_in_the_parent(tmp_path: Path) -> None:
    # An unknown arch is refused in the parent (camwall.train._arch.check_arch); a bad builder
    # argument only by the child's create_model.
    bad = {**TINY, "epochs": 1, "arch_kwargs": {"width": 0}}
    with pytest.raises(
        CamwallError, match=r"training (walled|baseline) \(in its own process\): .*width"
    ):
        train("fashion-vgg", bad, tmp_path, device="cpu", parallel=True)


def test_a_crash_in_a_child_carries_its_traceback() -> None:
    read, write = os.pipe()
    assert child_main(write, "{not json") == 1  # the child's code, run here: it reports
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    child = _Child("walled", proc, read)
    try:
        with pytest.raises(RuntimeError, match=r"(?s)in its own process with JSONDecodeError.*Tra"):
            _collect([child])
    finally:
        os.close(read)


def test_a_child_that_dies_without_a_word_is_an_error_not_a_hang() -> None:
    read, write = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", "import os; os._exit(3)"], pass_fds=(write,))
    os.close(write)
    try:
        with pytest.raises(RuntimeError, match=r"baseline in its own process died without a "
                           r"result \(exit code 3"):  # fmt: skip
            _collect([_Child("baseline", proc, read)])
    finally:
        os.close(read)


def test_an_unguarded_script_can_train_in_parallel(tmp_path: Path) -> None:
    """The children never re-run the caller's ``__main__`` (no ``if __name__`` guard needed)."""
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        "from camwall.train import train\n"
        f"res = train('fashion-vgg', {dict(TINY, epochs=1)!r}, sys.argv[1], device='cpu',"
        " parallel=True)\n"
        "print('done', sorted(res.checkpoints))\n"
    )
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout == "done ['baseline', 'walled']\n"
    assert run.stderr.count("train fashion-vgg walled: epoch 1/1") == 1
    assert run.stderr.count("train fashion-vgg baseline: epoch 1/1") == 1


def test_when_training_goes_parallel() -> None:
    cpu, one = torch.device("cpu"), DistInfo()
    big = resolve_config("fashion-vgg")  # no train_limit: 7 epochs of 60,000 canvases
    tiny = resolve_config("fashion-vgg", {"train_limit": SMALL_RUN // 7 - 1})
    pair = ("walled", "baseline")
    assert use_parallel(None, big, pair, one, cpu, hooks=False) == ((os.cpu_count() or 1) >= 2)
    assert not use_parallel(None, tiny, pair, one, cpu, hooks=False)
    assert use_parallel(True, tiny, pair, one, cpu, hooks=False)
    assert not use_parallel(False, big, pair, one, cpu, hooks=False)
    assert not use_parallel(True, big, ("walled",), one, cpu, hooks=False)
    assert not use_parallel(True, big, pair, DistInfo(0, 2), cpu, hooks=False)  # torchrun
    assert not use_parallel(True, big, pair, one, torch.device("cuda", 0), hooks=False)
    assert not use_parallel(None, big, pair, one, cpu, hooks=True)
    with pytest.raises(CamwallError, match="parallel=False"):
        use_parallel(True, big, pair, one, cpu, hooks=True)


def test_child_threads_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert child_threads(TrainConfig(threads=None)) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert child_threads(TrainConfig(threads=None)) == 8
    assert child_threads(resolve_config("fashion-vgg")) == 1  # the preset's threads=1
    assert child_threads(resolve_config("fashion-vgg", {"threads": 32})) == 8
