"""Both variants in two processes: bit-for-bit the sequential weights; child errors surface."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from camwall.errors import CamwallError
from camwall.runtime import DistInfo
from camwall.train import TrainConfig, resolve_config, train
from camwall.train._parallel import SMALL_RUN, _child, _receive, child_threads, use_parallel

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
    bad = {**TINY, "epochs": 1, "arch": "fashion-vggg"}  # the child's create_model refuses it
    with pytest.raises(
        CamwallError, match=r"training walled \(in its own process\): .*fashion-vgg"
    ):
        train("fashion-vgg", bad, tmp_path, device="cpu", parallel=True)


def test_a_crash_in_a_child_carries_its_traceback() -> None:
    receive, send = multiprocessing.Pipe(duplex=False)
    _child(send, "{not json")  # the child's own code path, run here: it reports, never raises
    with pytest.raises(RuntimeError, match=r"(?s)failed in its own process with JSONDecodeError.*"):
        _receive(receive, "walled", _Done())


def test_a_child_that_dies_without_a_word_is_an_error_not_a_hang() -> None:
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=os._exit, args=(3,))
    proc.start()
    send.close()
    with pytest.raises(RuntimeError, match=r"baseline in its own process died without a result "
                       r"\(exit code 3"):  # fmt: skip
        _receive(receive, "baseline", proc)


class _Done:
    """A finished process, for :func:`_receive`."""

    exitcode = 0

    def join(self) -> None:
        pass


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
