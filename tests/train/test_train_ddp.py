"""Two gloo processes on CPU follow the same trajectory as one process on the same global batch."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch.utils.data import BatchSampler, DistributedSampler
from train_helpers import ddp_worker, tiny_config, tiny_data, tiny_model

from camwall.train import fit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_rank_batches_cover_the_one_process_batch() -> None:
    """Step s of ranks 0 and 1 together = batch s of a one-process run (same seed and epoch)."""
    data = tiny_data()
    one = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0)
    one.set_epoch(3)
    single = list(BatchSampler(one, 16, drop_last=False))
    per_rank = []
    for rank in (0, 1):
        s = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=0)
        s.set_epoch(3)
        per_rank.append(list(BatchSampler(s, 8, drop_last=False)))
    assert len(single) == len(per_rank[0]) == len(per_rank[1]) == 4
    for step, batch in enumerate(single):
        assert sorted(batch) == sorted(per_rank[0][step] + per_rank[1][step])


def test_ddp_two_processes_equal_single_process(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    single = tiny_model(dropout=0.0)
    data = tiny_data()
    res = fit(single, data, data, tiny_config(scheduler="constant", epochs=2), tmp_path / "one")
    ctx = mp.start_processes(
        ddp_worker,
        args=(2, _free_port(), str(tmp_path)),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = 90.0
    start = time.monotonic()
    while not ctx.join(timeout=5):
        if time.monotonic() - start > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-process gloo run did not finish in 90 s")
    ddp = load_file(str(tmp_path / "ddp.safetensors"))
    ref = single.state_dict()
    assert ddp.keys() == ref.keys()
    init = tiny_model(dropout=0.0).state_dict()
    for k in ref:
        assert not torch.equal(ref[k], init[k])  # training moved every tensor
        torch.testing.assert_close(ddp[k], ref[k], rtol=1e-5, atol=1e-6)
    # validation metrics are all-reduced over the two halves of the validation set
    assert float((tmp_path / "val.txt").read_text()) == pytest.approx(res.history[-1]["val_top1"])
    # only rank 0 wrote files
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoints",
        "metrics.csv",
        "metrics.jsonl",
    ]


@pytest.mark.slow
def test_ddp_fine_tune_equals_single_process(tmp_path: Path) -> None:
    """`camwall train --init` under torchrun: two gloo ranks load the init and report the
    accuracy after insertion of one process (all-reduced over the halves of the validation
    set); rank 0 saves a fine-tuned model whose wall holds. (The weights are not compared with
    the one-process run's: fashion-vgg's dropout draws differ per rank.)"""
    import json

    from train_helpers import ddp_finetune_worker

    from camwall.train import train
    from camwall.weights import shipped_model

    torch.set_num_threads(1)
    over = {"init": "shipped:fashion-vgg-baseline", "train_limit": 128, "val_limit": 200}
    one = train("fashion-vgg", over, tmp_path / "one", device="cpu", progress=False)
    ctx = mp.start_processes(
        ddp_finetune_worker,
        args=(2, _free_port(), str(tmp_path)),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    start = time.monotonic()
    while not ctx.join(timeout=5):
        if time.monotonic() - start > 300.0:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-process gloo fine-tuning run did not finish in 300 s")
    init = json.loads((tmp_path / "init.json").read_text())
    assert init["sha256"] == one.init["sha256"]
    assert init["inserted"]["n"] == one.init["inserted"]["n"] == 200
    assert init["inserted"]["val_top1"] == pytest.approx(one.init["inserted"]["val_top1"])
    ddp = load_file(str(tmp_path / "ddp" / "walled.safetensors"))
    base = load_file(str(shipped_model("fashion-vgg", "baseline")))
    assert not torch.equal(ddp["0.weight"], base["0.weight"])  # it trained
    assert int(torch.count_nonzero(ddp["11.weight"].view(-1, 8, 16, 16)[:, :, 7:])) == 0
    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert manifest["init"] == init
