"""camwall.runtime: device names, hashing, seeding, distributed set-up outside torchrun."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest
import torch

from camwall import runtime
from camwall.bench import resolve_device as bench_resolve_device
from camwall.errors import CamwallError
from camwall.runtime import (
    DistInfo,
    cache_key,
    config_hash,
    dist_setup,
    distributed,
    resolve_device,
    seed_everything,
)
from camwall.train import TrainConfig
from camwall.train import config_hash as train_config_hash
from camwall.train import resolve_device as train_resolve_device


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend two GPUs are visible (resolve_device only names them; nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_bench_and_train_use_the_one_resolver() -> None:
    assert bench_resolve_device is runtime.resolve_device
    assert train_resolve_device is runtime.resolve_device


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize("name", ["cpu", "auto", "CPU", torch.device("cpu")])
def test_cpu_names(name: object) -> None:
    assert resolve_device(name) == torch.device("cpu")  # type: ignore[arg-type]


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize("name", ["cuda", "cuda:1", "cuda:0"])
def test_cuda_names_parse_but_need_cuda(name: str) -> None:
    """``cuda:1`` is a valid name (bench rejected it before); without CUDA the error says why."""
    with pytest.raises(
        CamwallError, match=rf"--device {name}: CUDA is not available.*--device cpu"
    ):
        resolve_device(name)


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "cpu:1", "cuda:", "mps", ""])
def test_unknown_device_is_a_clear_error(name: str) -> None:
    with pytest.raises(CamwallError, match=r"--device .* use auto, cpu, cuda or cuda:N"):
        resolve_device(name)
    with pytest.raises(CamwallError, match=r"--device"):
        bench_resolve_device(name)


@pytest.mark.usefixtures("two_gpus")
def test_cuda_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert bench_resolve_device("cuda:1") == torch.device("cuda", 1)  # bench refused it before
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)  # torchrun's local rank
    assert resolve_device("auto") == torch.device("cuda", 1)
    with pytest.raises(
        CamwallError, match=r"--device cuda:2: there is no GPU cuda:2 \(2 visible\)"
    ):
        resolve_device("cuda:2")


def test_config_hash_is_sha256_of_sorted_json_and_order_free() -> None:
    a = {"b": [1, 2, {"y": 1, "x": 2}], "a": None, "c": 0.5}
    b = {"c": 0.5, "a": None, "b": [1, 2, {"x": 2, "y": 1}]}
    assert config_hash(a) == config_hash(b)
    # pinned (value from `printf %s {"a": 1} | sha256sum`): keys must not change across versions
    assert config_hash({"a": 1}) == hashlib.sha256(b'{"a": 1}').hexdigest()
    assert config_hash({"a": 1}) == (
        "f9d86028c6e0d64e225186f96acb69338b2c59764df79162107f5c4bb34d1310"
    )
    assert config_hash(a) != config_hash({**a, "c": 0.25})
    assert config_hash({"b": [1, 2]}) != config_hash({"b": [2, 1]})  # lists keep their order


def test_train_cache_key_keeps_its_old_formula() -> None:
    """Existing cache entries stay valid: same hash as the formula used before the move."""
    config = TrainConfig(name="p", epochs=2, num_workers=3)
    payload = config.to_dict()
    for k in ("num_workers", "checkpoint_every", "threads"):
        payload.pop(k)
    old = hashlib.sha256(
        json.dumps({"config": payload, "version": "9.9"}, sort_keys=True).encode()
    ).hexdigest()
    assert train_config_hash(config, "9.9") == old
    assert cache_key("p", payload, "9.9") == f"p-{old[:16]}"


def test_seed_everything_replays_torch_python_and_numpy() -> None:
    def draw() -> tuple[list[float], float, float]:
        return torch.rand(3).tolist(), random.random(), float(np.random.rand())  # noqa: NPY002

    seed_everything(7)
    first = draw()
    seed_everything(7)
    assert draw() == first
    seed_everything(8)
    assert draw() != first


def test_dist_setup_outside_torchrun_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist_setup(torch.device("cpu")) == (DistInfo(), False)
    with distributed("cpu") as (info, dev):
        assert (info.rank, info.world, info.is_main, info.enabled) == (0, 1, True, False)
        assert dev == torch.device("cpu")
        info.barrier()  # a no-op in one process
    assert not torch.distributed.is_initialized()
