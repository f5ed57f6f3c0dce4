"""Detection models through the compat layer and the engine, against pytorch-grad-cam 1.5.7.

Random-weight torchvision Faster R-CNNs (every box kept: ``box_score_thresh=0``), the targets
made from the model's own predictions as grad-cam's Faster R-CNN tutorial does. grad-cam's
EigenCAM sign is given camwall's rule (docs/cam-methods.md) as in test_compat_parity.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam as gc
import torch
from compat_models import mobilenet_detector, resnet50_detector, signed_projection, tiny_detector
from pytorch_grad_cam import base_cam, eigen_cam
from pytorch_grad_cam.utils import model_targets as gc_targets
from pytorch_grad_cam.utils import reshape_transforms as gc_reshape
from torch import nn

import camwall.compat.pytorch_grad_cam as cw
from camwall.cams import FpnGrid, compute_cams
from camwall.compat.pytorch_grad_cam.utils import model_targets as cw_targets
from camwall.compat.pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform
from camwall.errors import CamwallError

TOL = 1e-5
GRADIENT = ["GradCAM", "HiResCAM", "GradCAMElementWise", "GradCAMPlusPlus", "XGradCAM", "LayerCAM"]


@pytest.fixture(autouse=True)
def _signed_gradcam(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (base_cam, eigen_cam):
        monkeypatch.setattr(module, "get_2d_projection", signed_projection)


@pytest.fixture(scope="module")
def mobilenet() -> nn.Module:
    return mobilenet_detector()


def image(h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def predicted(model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The model's own boxes and labels (grad-cam's tutorial: the detections to explain)."""
    with torch.no_grad():
        out = model(x)[0]
    assert len(out["boxes"]) > 0
    return out["labels"].numpy(), out["boxes"].numpy()


def both(name: str, model: nn.Module, layers, x, reshape=None, **kw) -> tuple:
    labels, boxes = predicted(model, x)
    ours = getattr(cw, name)(model, layers, reshape_transform=reshape and reshape[0], **kw)
    theirs = getattr(gc, name)(model, layers, reshape_transform=reshape and reshape[1], **kw)
    a = ours(x, [cw_targets.FasterRCNNBoxScoreTarget(labels, boxes)])
    b = theirs(x, [gc_targets.FasterRCNNBoxScoreTarget(labels, boxes)])
    return a, b


def check(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == np.float32
    assert a.shape == b.shape
    assert b.max() > 0.5  # not all zero: the comparison is not trivial
    assert float(np.abs(a - b).max()) <= TOL


FPN = (fasterrcnn_reshape_transform, gc_reshape.fasterrcnn_reshape_transform)


def test_eigencam_on_the_fpn_backbone(mobilenet) -> None:
    """grad-cam's tutorial: EigenCAM on ``model.backbone`` (a dict of FPN levels)."""
    check(*both("EigenCAM", mobilenet, [mobilenet.backbone], image(128, 160), FPN))


@pytest.mark.parametrize("name", ["EigenCAM", "GradCAM"])
def test_fasterrcnn_resnet50_fpn(name: str) -> None:
    """EigenCAM on the FPN backbone and GradCAM on ``backbone.body.layer4``."""
    model = resnet50_detector()
    layer, reshape = (
        (model.backbone, FPN) if name == "EigenCAM" else (model.backbone.body.layer4, None)
    )
    check(*both(name, model, [layer], image(64, 80), reshape))


#: Images whose map is not all zero on this random model (LayerCAM's positive-gradient
#: weights are all zero on image 1).
SEEDS = {"LayerCAM": 2}


@pytest.mark.parametrize("name", GRADIENT)
def test_gradient_methods_on_a_backbone_block(mobilenet, name: str) -> None:
    block = list(mobilenet.backbone.body.children())[-2]
    check(*both(name, mobilenet, [block], image(128, 160, SEEDS.get(name, 1))))


def test_gradcam_on_an_fpn_level_equals_its_conv(mobilenet) -> None:
    """Gradients through the dict-valued backbone (grad-cam records none there): level '0'
    selected by reshape_transform gives grad-cam's map of the FPN conv that makes it."""
    x = image(128, 160)
    labels, boxes = predicted(mobilenet, x)
    ours = cw.GradCAM(mobilenet, [mobilenet.backbone], reshape_transform=lambda d: d["0"])
    theirs = gc.GradCAM(mobilenet, [mobilenet.backbone.fpn.layer_blocks[0]])
    a = ours(x, [cw_targets.FasterRCNNBoxScoreTarget(labels, boxes)])
    b = theirs(x, [gc_targets.FasterRCNNBoxScoreTarget(labels, boxes)])
    check(a, b)


@pytest.fixture
def float64_ablation(monkeypatch: pytest.MonkeyPatch) -> None:
    """grad-cam's AblationCAM summing ``w_k A_k`` in float64.

    With ``fasterrcnn_reshape_transform`` every grid value is ``|A|`` >= 0, so the map is a
    large offset plus a small variation (140 +- 4 on the tiny detector): grad-cam's float32
    channel sum (1280 terms, NumPy's strided accumulation) is itself 2.4e-5 from its float64
    result after min-max scaling; camwall's float32 sum (torch) is within 1e-5 of it.
    """
    weights = gc.AblationCAM.get_cam_weights

    def float64_weights(self, *args):  # type: ignore[no-untyped-def]
        return weights(self, *args).astype(np.float64)

    monkeypatch.setattr(gc.AblationCAM, "get_cam_weights", float64_weights)


@pytest.mark.slow
@pytest.mark.usefixtures("float64_ablation")
def test_ablationcam_with_the_fasterrcnn_layer() -> None:
    """AblationCAM with AblationLayerFasterRCNN (FPN channels set to -1000) on a Faster R-CNN
    with a small backbone and box head (1280 ablated copies through the RPN and box head:
    ~20 s each on a 2-core CPU); the model's state is left as it was."""
    model = tiny_detector()
    x = image(64, 64)
    model.rpn.head.conv[0][0].weight.requires_grad_(False)
    before = state(model)
    a, b = both(
        "AblationCAM", model, [model.backbone], x, FPN, batch_size=256,
        ablation_layer=cw.AblationLayerFasterRCNN(),
    )  # fmt: skip
    check(a, b)
    assert state(model) == before


@pytest.mark.slow
@pytest.mark.usefixtures("float64_ablation")
def test_ablationcam_on_fasterrcnn_resnet50_fpn() -> None:
    """The same on torchvision's fasterrcnn_resnet50_fpn (~40 s each)."""
    model = resnet50_detector()
    x = image(64, 80)
    a, b = both(
        "AblationCAM", model, [model.backbone], x, FPN, batch_size=64,
        ablation_layer=cw.AblationLayerFasterRCNN(),
    )  # fmt: skip
    check(a, b)


def test_the_engine_takes_detection_models(mobilenet) -> None:
    """compute_cams with FpnGrid: the compat classes' maps; eigencam needs no targets."""
    x = image(128, 160)
    labels, boxes = predicted(mobilenet, x)
    target = cw_targets.FasterRCNNBoxScoreTarget(labels, boxes)
    maps = compute_cams(
        mobilenet, x, "backbone", ["eigencam", "gradcam"], [target], reshape_transform=FpnGrid()
    )
    compat = cw.EigenCAM(mobilenet, [mobilenet.backbone], fasterrcnn_reshape_transform)(x, [target])
    assert np.array_equal(maps["eigencam"].numpy(), compat)
    free = compute_cams(mobilenet, x, "backbone", "eigencam", reshape_transform=FpnGrid())
    assert torch.equal(free["eigencam"], maps["eigencam"])
    assert maps["gradcam"].max() > 0.5


def state(model: nn.Module) -> tuple:
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    forwards = [m for m in model.modules() if "forward" in vars(m)]
    return (
        hooks,
        forwards,
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.grad is None for p in model.parameters()],
    )


def test_hygiene_and_outputs() -> None:
    """No hook or replaced forward left, modes and flags restored, no ``.grad``; ``.outputs``
    is the model's list of per-image dicts, detached."""
    model = tiny_detector()
    x = image(64, 64).requires_grad_(True)
    labels, boxes = predicted(model, x.detach())
    model.train()
    model.backbone.eval()
    model.rpn.head.conv[0][0].weight.requires_grad_(False)
    before = state(model)
    target = [cw_targets.FasterRCNNBoxScoreTarget(labels, boxes)]
    for name in ("GradCAM", "EigenCAM"):
        cam = getattr(cw, name)(model, [model.backbone], fasterrcnn_reshape_transform)
        assert cam(x, target).max() > 0.5
        assert state(model) == before
    assert x.grad is None
    assert isinstance(cam.outputs, list)
    assert set(cam.outputs[0]) == {"boxes", "labels", "scores"}
    assert not any(v.requires_grad for v in cam.outputs[0].values())


def test_fasterrcnn_ablation_needs_the_fpn_transform(mobilenet) -> None:
    with pytest.raises(CamwallError, match="fasterrcnn_reshape_transform"):
        cw.AblationCAM(mobilenet, [mobilenet.backbone], lambda d: d["0"],
                       ablation_layer=cw.AblationLayerFasterRCNN())  # fmt: skip
