"""Optimizer groups: the walled head's own learning rate (``head_lr_scale``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from camwall.errors import CamwallError
from camwall.train._config import get_preset
from camwall.train._optim import head_modules, make_optimizer, make_scheduler
from camwall.walls import WalledLinear, create_model


def _model_and_config(scale: float):
    torch.manual_seed(0)
    model = create_model("fashion-vgg")
    return model, dataclasses.replace(get_preset("fashion-vgg"), head_lr_scale=scale)


def test_one_group_at_lr_by_default_and_the_field_stays_out_of_the_config() -> None:
    model, config = _model_and_config(1.0)
    opt = make_optimizer(model, config)
    assert len(opt.param_groups) == 1
    assert opt.param_groups[0]["lr"] == config.lr
    assert "head_lr_scale" not in config.to_dict()


@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_the_head_gets_its_own_rate_through_the_schedule(scale) -> None:
    model, config = _model_and_config(scale)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    first = next(i for i, m in enumerate(linears) if isinstance(m, WalledLinear))
    assert head_modules(model) == linears[first:]  # the walled layer and the linears after it
    head = {id(p) for m in linears[first:] for p in m.parameters()}
    opt = make_optimizer(model, config)
    trunk_group, head_group = opt.param_groups
    assert {id(p) for p in head_group["params"]} == head
    assert not head & {id(p) for p in trunk_group["params"]}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    sched = make_scheduler(opt, config, steps_per_epoch=50)
    for _ in range(20):
        opt.step()
        sched.step()
        ratio = head_group["lr"] / trunk_group["lr"]
        assert ratio == pytest.approx(scale, rel=1e-12)  # one-cycle scales both alike
    assert config.to_dict()["head_lr_scale"] == scale


def test_a_non_positive_scale_is_refused() -> None:
    with pytest.raises(CamwallError, match="head_lr_scale must be > 0"):
        _model_and_config(0.0)
