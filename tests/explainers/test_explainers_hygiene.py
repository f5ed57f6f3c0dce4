"""Adapters leave the model as they found it: modes, requires_grad, .grad, hooks, children."""

from __future__ import annotations

import pytest
import torch
from explainer_refs import options_for, tiny_walled

from camwall.explainers import EXPLAINERS, explain, hook_count


def _dirty_model() -> torch.nn.Module:
    """Train mode with one submodule in eval, a frozen parameter, a stale .grad, a user hook,
    an in-place ReLU (GuidedBackpropReLUModel replaces ReLUs with plain ones)."""
    model = tiny_walled()
    model[1] = torch.nn.ReLU(inplace=True)
    model.train()
    model[7].eval()
    model[0].bias.requires_grad_(False)
    model[2].weight.grad = torch.full_like(model[2].weight, 7.0)
    model[5].register_forward_hook(lambda m, i, o: None)
    return model


def _state(model: torch.nn.Module) -> dict:
    return {
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "children": [id(m) for m in model.modules()],
        "hooks": hook_count(model),
        "inplace": model[1].inplace,
    }


def _same(a: dict, b: dict) -> None:
    for key in ("modes", "flags", "children", "hooks", "inplace"):
        assert a[key] == b[key], key
    for ga, gb in zip(a["grads"], b["grads"]):
        assert (ga is None and gb is None) or torch.equal(ga, gb)


@pytest.mark.parametrize(
    "name", [n for n in EXPLAINERS.names() if n not in ("rollout", "legrad")]
)  # ViTs only
def test_model_is_left_as_found(name):
    model = _dirty_model()
    before = _state(model)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    # camwall's `cam` checks that the logits are W . mean(A) + b: the layer before the GAP head.
    layer = {"target_layer": "4"} if name == "cam" else {}
    maps = explain(model, x, name, [0, 1], **layer, **options_for(name))
    assert maps.shape == (2, 16, 16)
    _same(before, _state(model))


def _boom(*args, **kwargs):
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("name", "target", "attribute"),
    [
        ("gradcam:GradCAM", "pytorch_grad_cam.base_cam.BaseCAM", "compute_cam_per_layer"),
        ("gradcam:FinerCAM", "pytorch_grad_cam.base_cam.BaseCAM", "compute_cam_per_layer"),
        (
            "gradcam:GuidedBackpropReLUModel",
            "pytorch_grad_cam.guided_backprop.GuidedBackpropReLUModel",
            "forward",
        ),
        ("torchcam:GradCAM", "torchcam.methods.gradient.GradCAM", "_get_weights"),
        ("torchcam:ScoreCAM", "torchcam.methods.activation.ScoreCAM", "_get_weights"),
        # captum's GradientAttribution binds gradient_func at construction, after its import
        ("captum:GuidedBackprop", "captum.attr._utils.attribution", "compute_gradients"),
        ("captum:DeepLift", "captum.attr._utils.attribution", "compute_gradients"),
    ],
)
def test_hooks_are_removed_when_the_library_raises(name, target, attribute, monkeypatch):
    """The library fails half-way, after registering its hooks (or swapping the ReLUs)."""
    import importlib

    module_name, _, cls_name = target.rpartition(".")
    try:
        owner = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError):
        owner = importlib.import_module(target)
    monkeypatch.setattr(owner, attribute, _boom)
    model = _dirty_model()
    before = _state(model)
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(RuntimeError, match="boom"):
        explain(model, x, name, [0, 1])
    _same(before, _state(model))
