"""Segmentation models through the compat layer and the engine, against pytorch-grad-cam 1.5.7.

Random-weight torchvision deeplabv3_resnet50 and fcn_resnet50 (B x C x H x W scores). grad-cam
needs the model wrapped to return ``out["out"]`` (its tutorial's output wrapper);
camwall also takes the model as it is (a dict: its ``"out"`` entry) and Hugging Face-style
outputs (``"logits"``). The mask is the model's own prediction of the category, as in grad-cam's
tutorial. grad-cam's EigenCAM sign is given camwall's rule as in test_compat_parity.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam as gc
import torch
import torchvision
from compat_models import signed_projection
from pytorch_grad_cam import base_cam, eigen_cam
from pytorch_grad_cam.utils import model_targets as gc_targets
from torch import nn

import camwall.compat.pytorch_grad_cam as cw
from camwall.cams import compute_cams
from camwall.compat.pytorch_grad_cam.utils import model_targets as cw_targets

TOL = 1e-5
METHODS = ["GradCAM", "HiResCAM", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "EigenCAM"]


@pytest.fixture(autouse=True)
def _signed_gradcam(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (base_cam, eigen_cam):
        monkeypatch.setattr(module, "get_2d_projection", signed_projection)


class Out(nn.Module):
    """grad-cam's tutorial wrapper: ``model(x)[key]``."""

    def __init__(self, model: nn.Module, key: str = "out") -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[self.key]


class HuggingFaceStyle(nn.Module):
    """Returns ``{"logits": B x C x H x W}`` as Hugging Face segmentation heads do."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.model(x)["out"]}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    make = getattr(torchvision.models.segmentation, name)
    return make(weights=None, weights_backbone=None, num_classes=3, aux_loss=False).eval()


@pytest.fixture(scope="module", params=["deeplabv3_resnet50", "fcn_resnet50"])
def seg(request) -> nn.Module:
    return build(request.param)


def case(model: nn.Module, category: int = 1) -> tuple[torch.Tensor, np.ndarray]:
    """A 2-image batch and the model's own mask of ``category`` for each image."""
    x = torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        pred = model(x)["out"].argmax(dim=1).numpy()
    masks = (pred == category).astype(np.float32)
    assert masks.sum(axis=(1, 2)).min() > 0  # the category is predicted somewhere
    return x, masks


def targets(module, masks: np.ndarray, category: int = 1) -> list:
    return [module.SemanticSegmentationTarget(category, m) for m in masks]


def check(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == np.float32
    assert a.shape == b.shape
    assert b.max() > 0.5  # not all zero: the comparison is not trivial
    assert float(np.abs(a - b).max()) <= TOL


@pytest.mark.parametrize("name", METHODS)
def test_wrapped_model_matches_gradcam(seg, name: str) -> None:
    wrapped = Out(seg)
    x, masks = case(seg)
    layers = [seg.backbone.layer4]
    a = getattr(cw, name)(wrapped, layers)(x, targets(cw_targets, masks))
    b = getattr(gc, name)(wrapped, layers)(x, targets(gc_targets, masks))
    check(a, b)


@pytest.mark.parametrize("wrap", [lambda m: m, HuggingFaceStyle])
def test_dict_outputs_need_no_wrapper(seg, wrap) -> None:
    """The model as torchvision returns it (``{"out": ...}``) or Hugging Face-style
    (``{"logits": ...}``): grad-cam's maps of the wrapped model."""
    x, masks = case(seg)
    layers = [seg.backbone.layer4]
    a = cw.GradCAM(wrap(seg), layers)(x, targets(cw_targets, masks))
    b = gc.GradCAM(Out(seg), layers)(x, targets(gc_targets, masks))
    check(a, b)


def test_the_engine_takes_the_dict_output(seg) -> None:
    x, masks = case(seg)
    fns = targets(cw_targets, masks)
    maps = compute_cams(seg, x, "backbone.layer4", ["gradcam", "eigencam"], fns)
    ref = compute_cams(Out(seg), x, "model.backbone.layer4", ["gradcam", "eigencam"], fns)
    for name in maps:
        assert torch.equal(maps[name], ref[name])


@pytest.mark.slow
def test_ablationcam_on_deeplab() -> None:
    """AblationCAM on layer4 (2048 channels, a ReLU's output containing zeros: grad-cam
    ablates to 0 as camwall); ~3 minutes for each library on a 2-core CPU."""
    model = build("deeplabv3_resnet50")
    x, masks = case(model)
    x, masks = x[:1], masks[:1]
    layers = [model.backbone.layer4]
    a = cw.AblationCAM(Out(model), layers, batch_size=64)(x, targets(cw_targets, masks))
    b = gc.AblationCAM(Out(model), layers, batch_size=64)(x, targets(gc_targets, masks))
    check(a, b)
