"""Presets, overrides, config hashes, and the no-pickle state helpers."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from camwall.errors import CamwallError
from camwall.train import PRESETS, TrainConfig, apply_overrides, config_hash
from camwall.train._state import _flatten, _unflatten, capture_rng, restore_rng


def test_presets_registered() -> None:
    assert PRESETS.names() == [
        "fashion-vgg",
        "fashion-resnet",
        "fashion-vit",
        "fashion-grid-vgg",
        "imagenet-vgg16",
    ]


@pytest.mark.parametrize("name", PRESETS.names())
def test_preset_arch_is_a_registered_model(name: str) -> None:
    from camwall.walls import MODELS

    assert PRESETS.get(name).arch in MODELS


def test_imagenet_preset_is_the_paper_recipe() -> None:
    c = PRESETS.get("imagenet-vgg16")
    assert (c.arch, c.num_classes, c.dataset) == ("walled-vgg16", 1000, "imagefolder")
    assert (c.optimizer, c.momentum, c.weight_decay, c.lr) == ("sgd", 0.9, 1e-4, 0.03)
    assert (c.scheduler, c.step_size, c.gamma, c.epochs) == ("step", 30, 0.1, 90)
    assert (c.batch_size, c.amp, c.augment, c.image_size) == (256, True, True, 224)


def test_step_schedule_of_the_paper() -> None:
    from camwall.train._optim import make_scheduler

    c = PRESETS.get("imagenet-vgg16")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=c.lr, momentum=c.momentum)
    sched = make_scheduler(opt, c, steps_per_epoch=10)
    lrs = []
    for _ in range(90):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == lrs[29] == pytest.approx(0.03)
    assert lrs[30] == lrs[59] == pytest.approx(0.003)
    assert lrs[60] == lrs[89] == pytest.approx(0.0003)


def test_overrides_replace_fields_and_reject_unknown() -> None:
    base = PRESETS.get("fashion-vgg")
    c = apply_overrides(base, {"epochs": 7, "batch-size": 32, "lr": None})
    assert (c.epochs, c.batch_size, c.lr) == (7, 32, base.lr)
    with pytest.raises(
        CamwallError, match=r"unknown training option 'epoch'.*Did you mean 'epochs'"
    ):
        apply_overrides(base, {"epoch": 3})
    with pytest.raises(CamwallError, match=r"unknown optimizer 'sgdd'.*Did you mean 'sgd'"):
        apply_overrides(base, {"optimizer": "sgdd"})
    with pytest.raises(CamwallError, match="lr must be > 0"):
        apply_overrides(base, {"lr": -1.0})


def test_config_hash_tracks_weight_relevant_fields_only() -> None:
    base = PRESETS.get("fashion-vgg")
    h = config_hash(base, "0.1.0")
    assert h == config_hash(apply_overrides(base, {}), "0.1.0")
    assert h == config_hash(apply_overrides(base, {"num_workers": 4}), "0.1.0")
    assert h == config_hash(apply_overrides(base, {"threads": 2}), "0.1.0")
    assert h != config_hash(apply_overrides(base, {"seed": 1}), "0.1.0")
    assert h != config_hash(apply_overrides(base, {"arch_kwargs": {"width": 4}}), "0.1.0")
    assert h != config_hash(base, "0.2.0")
    assert len(h) == 64


def test_config_to_dict_is_json() -> None:
    c = TrainConfig(arch_kwargs={"width": 4})
    assert json.loads(json.dumps(c.to_dict()))["arch_kwargs"] == {"width": 4}


def test_flatten_round_trip_of_an_optimizer_state() -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    tensors: dict[str, torch.Tensor] = {}
    flat = _flatten(opt.state_dict(), "optimizer", tensors)
    text = json.dumps(flat)  # JSON-serializable: no tensors left
    assert "exp_avg" in text
    assert set(tensors) >= {"optimizer.state.0.exp_avg", "optimizer.state.1.exp_avg_sq"}
    back = _unflatten(json.loads(text), tensors)
    back["state"] = {int(k): v for k, v in back["state"].items()}
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    opt2.load_state_dict(back)
    for k in (0, 1):
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(
                opt2.state_dict()["state"][k][name], opt.state_dict()["state"][k][name]
            )
    assert opt2.param_groups[0]["lr"] == 0.1
    with pytest.raises(TypeError, match="cannot store object"):
        _flatten({"x": object()}, "p", {})


def test_rng_capture_restore_replays_all_generators() -> None:
    meta, tensors = capture_rng()
    meta = json.loads(json.dumps(meta))
    first = (torch.rand(3), random.random(), np.random.rand())  # noqa: NPY002
    restore_rng(meta, tensors)
    again = (torch.rand(3), random.random(), np.random.rand())  # noqa: NPY002
    assert torch.equal(first[0], again[0])
    assert first[1:] == again[1:]


@pytest.mark.parametrize("name", ["fashion-vgg", "fashion-resnet"])
def test_fashion_presets_are_the_measured_cpu_recipe(name: str) -> None:
    # benchmarks/train_speed.md measures these values; change both together.
    config = PRESETS.get(name)
    assert config.arch_kwargs == {"width": 8}
    assert (config.optimizer, config.scheduler, config.lr) == ("adamw", "onecycle", 1e-2)
    assert (config.epochs, config.batch_size, config.weight_decay) == (7, 64, 1e-4)
    assert config.label_smoothing == 0.1
    assert config.threads == 1
    assert PRESETS.get("imagenet-vgg16").threads is None


def test_threads_must_be_positive() -> None:
    with pytest.raises(CamwallError, match="threads must be >= 1"):
        TrainConfig(threads=0)
