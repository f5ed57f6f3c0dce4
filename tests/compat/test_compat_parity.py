"""camwall.compat.pytorch_grad_cam against the real pytorch-grad-cam 1.5.7, class by class.

Every map is compared by its max abs difference with grad-cam's, budget 1e-5 (the library's
parity budget, docs/cam-methods.md). Deliberate differences are handed to grad-cam instead of
loosening the budget: the eigen sign rule (grad-cam's SVD projection patched with camwall's
documented rule), KPCA_CAM's float64 decomposition (grad-cam's kernel PCA fed float64
activations: its float32 result is itself up to 7e-5 from its float64 one on the tiny CNN) and
RandomCAM's draws (grad-cam's np.random.uniform fed camwall's draws).
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam as gc
import torch
from compat_models import TinySeg, signed_projection, vit_grid
from pytorch_grad_cam import (
    base_cam,
    eigen_cam,
    eigen_grad_cam,
    fullgrad_cam,
    grad_cam_elementwise,
    hirescam,
    kpca_cam,
)
from pytorch_grad_cam.ablation_layer import AblationLayer as GcAblationLayer
from pytorch_grad_cam.ablation_layer import AblationLayerVit as GcAblationLayerVit
from pytorch_grad_cam.refine_cam import RefineCAM as GcRefineCAM
from pytorch_grad_cam.utils import model_targets as gc_targets
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

import camwall.compat.pytorch_grad_cam as cw
from camwall.compat.pytorch_grad_cam.utils import model_targets as cw_targets

TOL = 1e-5

#: Classes whose maps need no extra argument; run on every model that supports them.
GRADIENT = ["GradCAM", "HiResCAM", "GradCAMElementWise", "GradCAMPlusPlus", "XGradCAM", "LayerCAM"]
PLAIN = [*GRADIENT, "ShapleyCAM", "FEM", "KPCA_CAM", "EigenCAM", "EigenGradCAM", "ScoreCAM"]
PLAIN += ["SegEigenCAM"]
CNN_ONLY = ["AblationCAM", "FullGrad", "FinerCAM"]


@pytest.fixture(autouse=True)
def _signed_gradcam(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (
        base_cam,
        eigen_cam,
        eigen_grad_cam,
        hirescam,
        grad_cam_elementwise,
        fullgrad_cam,
    ):
        monkeypatch.setattr(module, "get_2d_projection", signed_projection)
    monkeypatch.setattr(kpca_cam, "get_2d_projection_kernel", float64_kernel_projection)


def float64_kernel_projection(batch: np.ndarray, kernel: str, gamma) -> np.ndarray:
    return get_2d_projection_kernel(batch.astype(np.float64), kernel, gamma)


def both(name: str, model, layers, x, targets=None, call=None, **kw) -> tuple:
    """``(camwall map, grad-cam map)`` for the class ``name`` of both libraries."""
    call = call or {}
    ours = getattr(cw, name)(model=model, target_layers=layers, **kw)
    theirs = getattr(gc, name)(model=model, target_layers=layers, **kw)
    theirs_targets = (
        None if targets is None else [gc_targets.ClassifierOutputTarget(t) for t in targets]
    )
    ours_targets = (
        None if targets is None else [cw_targets.ClassifierOutputTarget(t) for t in targets]
    )
    a = ours(x, ours_targets, **call)
    b = theirs(x, theirs_targets, **call)
    return a, b


def check(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == np.float32
    assert a.shape == b.shape
    assert b.max() > 0.5  # not all zero: the comparison is not trivial
    assert float(np.abs(a - b).max()) <= TOL


@pytest.mark.parametrize("name", [*PLAIN, *CNN_ONLY])
@pytest.mark.parametrize("targets", [None, [3, 1]])
def test_tiny_cnn(cnn, name: str, targets) -> None:
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    check(*both(name, cnn, [cnn[5]], x, targets))


@pytest.mark.parametrize("name", [*PLAIN, *CNN_ONLY])
def test_resnet18(resnet, name: str) -> None:
    """layer3 (4 x 5 positions at 64 x 80): layer4 would be 2 x 3, where FEM's mean + 2 std
    threshold is never exceeded and several maps are all zero (trivially equal)."""
    x = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(2))
    check(*both(name, resnet, [resnet.layer3[-1]], x))


# grad-cam's ShapleyCAM fails on this ViT twice over: torch's fused CPU attention has no double
# backward, and its ShapleyCAM never reshapes the activations ("Invalid activation shape").
# camwall's (attention's math path) is checked against a float64 hvp in tests/cams.
@pytest.mark.parametrize("name", [n for n in PLAIN if n != "ShapleyCAM"])
def test_vit_reshape_transform(vit, name: str) -> None:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    layer = vit.encoder.layers.encoder_layer_1.ln_1
    check(*both(name, vit, [layer], x, reshape_transform=vit_grid))


@pytest.mark.parametrize("name", ["GradCAM", "HiResCAM", "EigenCAM", "ScoreCAM"])
def test_several_layers(resnet, name: str) -> None:
    x = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(4))
    check(*both(name, resnet, [resnet.layer4[-1], resnet.layer3[-1]], x))


@pytest.mark.parametrize("name", ["GradCAM", "HiResCAM", "GradCAMElementWise", "ScoreCAM"])
def test_eigen_smooth(cnn, name: str) -> None:
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(5))
    check(*both(name, cnn, [cnn[5]], x, call={"eigen_smooth": True}))


def test_aug_smooth(cnn) -> None:
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(6))
    check(*both("GradCAM", cnn, [cnn[5]], x, call={"aug_smooth": True}))


def test_random_cam_given_the_same_draws(cnn, monkeypatch: pytest.MonkeyPatch) -> None:
    """grad-cam draws np.random.uniform(-1, 1, (B, K)); hand it camwall's draws for seed 3."""

    def draws(low, high, size):
        g = torch.Generator().manual_seed(3)
        return (torch.rand(size, generator=g, dtype=torch.float64) * 2 - 1).numpy()

    monkeypatch.setattr(np.random, "uniform", draws)
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(7))
    ours = cw.RandomCAM(cnn, [cnn[5]], seed=3)(x)
    theirs = gc.RandomCAM(cnn, [cnn[5]])(x, None)
    check(ours, theirs)


def test_random_cam_follows_numpy_seed(cnn) -> None:
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(8))
    cam = cw.RandomCAM(cnn, [cnn[5]])
    np.random.seed(0)  # noqa: NPY002 (grad-cam's global RNG is the point)
    first, second = cam(x), cam(x)
    np.random.seed(0)  # noqa: NPY002
    again = cam(x)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, second)


def test_sess(resnet) -> None:
    x = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(9))
    kw = {"scales": [64, 82], "theta": -1.0}  # theta below 0: away from the count's knife edge
    ours = cw.SESS(resnet, [resnet.layer3[-1]], **kw)(x)
    theirs = gc.SESS(resnet, [resnet.layer3[-1]], **kw)(x)
    check(ours, theirs)


@pytest.mark.parametrize(
    "kw", [{"alpha": 0.5}, {"comparison_categories": [1, 2]}, {"target_idx": 4}]
)
def test_finer_cam_options(cnn, kw) -> None:
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(10))
    ours = cw.FinerCAM(cnn, [cnn[5]])(x, None, False, **kw)
    theirs = gc.FinerCAM(cnn, [cnn[5]])(x, None, False, **kw)
    check(ours, theirs)


@pytest.mark.parametrize("name", ["GradCAM", "HiResCAM", "ScoreCAM", "EigenCAM", "AblationCAM"])
def test_segmentation_target(name: str) -> None:
    """B x C x H x W outputs with grad-cam's SemanticSegmentationTarget."""
    torch.manual_seed(0)
    model = TinySeg().eval()
    x = torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(11))
    mask = np.zeros((16, 12), dtype=np.float32)
    mask[4:10, 2:8] = 1
    ours_t = [cw_targets.SemanticSegmentationTarget(1, mask)] * 2
    theirs_t = [gc_targets.SemanticSegmentationTarget(1, mask)] * 2
    ours = getattr(cw, name)(model, [model.act])(x, ours_t)
    theirs = getattr(gc, name)(model, [model.act])(x, theirs_t)
    check(ours, theirs)


def test_outputs_and_batch_size(cnn) -> None:
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(12))
    cam = cw.ScoreCAM(cnn, [cnn[5]])
    assert cam.batch_size == 16
    cam.batch_size = 3
    with cam:
        small = cam(x)
    assert torch.allclose(cam.outputs, cnn(x).detach(), atol=1e-6)  # channels-last rounding
    cam.batch_size = 64
    check(small, cam(x))


# ----------------------------------------------------------------- issue 21: new in the engine
REFINE_BASES = ["GradCAMPlusPlus", "GradCAM", "ScoreCAM", "EigenCAM", "AblationCAM"]


@pytest.mark.parametrize("base", REFINE_BASES)
def test_refine_cam(resnet, base: str) -> None:
    x = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(11))
    layers = [resnet.layer4[-1], resnet.layer3[-1]]
    ours = cw.RefineCAM(resnet, layers, base_method=getattr(cw, base))(x)
    theirs = GcRefineCAM(resnet, layers, base_method=getattr(gc, base))(x, None)
    check(ours, theirs)


def test_refine_cam_tiny_cnn_kwargs_and_vit(cnn, vit) -> None:
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(12))
    layers = [cnn[2], cnn[5]]
    kw = {"kernel": "rbf"}  # handed to the base's constructor, as grad-cam
    ours = cw.RefineCAM(cnn, layers, base_method=cw.KPCA_CAM, **kw)(
        x, [cw_targets.ClassifierOutputTarget(1)] * 2
    )
    theirs = GcRefineCAM(cnn, layers, base_method=gc.KPCA_CAM, **kw)(
        x, [gc_targets.ClassifierOutputTarget(1)] * 2
    )
    check(ours, theirs)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(13))
    layers = [vit.encoder.layers.encoder_layer_0.ln_1, vit.encoder.layers.encoder_layer_1.ln_1]
    ours = cw.RefineCAM(vit, layers, vit_grid, base_method=cw.GradCAM)(x)
    theirs = GcRefineCAM(vit, layers, vit_grid, base_method=gc.GradCAM)(x, None)
    check(ours, theirs)


@pytest.mark.parametrize("kw", [{}, {"ratio_channels_to_ablate": 0.3}])
def test_ablation_cam_several_layers(resnet, kw) -> None:
    """Layers listed in forward order: grad-cam 1.5.7 pairs each layer's ablation weights with
    the activations in forward order (another order gives it wrong maps or an IndexError)."""
    x = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(14))
    layers = [resnet.layer3[-2], resnet.layer3[-1]]
    with np.errstate(invalid="ignore"):  # grad-cam scores constant channels 0 / 0
        check(*both("AblationCAM", resnet, layers, x, **kw))


class HalfAblation(GcAblationLayer):
    """A custom ablation layer (grad-cam's protocol): halve the channel instead of zeroing."""

    def __call__(self, x):
        out = self.activations
        for i in range(out.size(0)):
            out[i, self.indices[i]] = out[i, self.indices[i]] / 2
        return out


class HalfAblationVit(GcAblationLayerVit):
    """A custom ViT ablation layer: halve token channel ``indices[i]`` of copy i (every
    token, the class token included, as grad-cam's AblationLayerVit does)."""

    def __call__(self, x):
        out = self.activations
        for i in range(out.size(0)):
            out[i, :, self.indices[i]] = out[i, :, self.indices[i]] / 2
        return out


class HalfAblationVitOurs(cw.AblationLayerVit):
    __call__ = HalfAblationVit.__call__


@pytest.mark.parametrize("ratio", [1.0, 0.25])
def test_ablation_cam_custom_layer_with_a_reshape_transform(vit, ratio: float) -> None:
    """A caller's ablation layer on ViT tokens with grad-cam's plain reshape function (no
    inverse): the layer ablates the raw tokens, the model runs on from them (camwall: the tail
    inside the block, with the block input captured; grad-cam: the whole model)."""
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(19))
    layer = vit.encoder.layers.encoder_layer_1.ln_1
    kw = {"reshape_transform": vit_grid, "ratio_channels_to_ablate": ratio}
    ours = cw.AblationCAM(vit, [layer], ablation_layer=HalfAblationVitOurs(), **kw)(x)
    theirs = gc.AblationCAM(vit, [layer], ablation_layer=HalfAblationVit(), **kw)(x, None)
    check(ours, theirs)


def test_ablation_cam_custom_layer_and_ratio(cnn) -> None:
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(15))
    ours = cw.AblationCAM(cnn, [cnn[5]], ablation_layer=HalfAblation())(x)
    theirs = gc.AblationCAM(cnn, [cnn[5]], ablation_layer=HalfAblation())(x, None)
    check(ours, theirs)
    for ratio in (0.5, 0.25):
        with np.errstate(invalid="ignore"):  # grad-cam scores constant channels 0 / 0
            check(*both("AblationCAM", cnn, [cnn[5]], x, ratio_channels_to_ablate=ratio))


@pytest.mark.parametrize("model_name", ["cnn", "resnet"])
def test_full_grad_eigen_smooth(request, model_name: str) -> None:
    model = request.getfixturevalue(model_name)
    x = torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(16))
    check(*both("FullGrad", model, [], x, call={"eigen_smooth": True}))


@pytest.mark.parametrize("base", ["GradCAM", "GradCAMPlusPlus", "ScoreCAM", "EigenCAM"])
def test_finer_cam_bases_and_layers(resnet, base: str) -> None:
    x = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(17))
    layers = [resnet.layer3[-1], resnet.layer4[-1]]
    ours = cw.FinerCAM(resnet, layers, base_method=getattr(cw, base))(x, None, alpha=0.7)
    theirs = gc.FinerCAM(resnet, layers, base_method=getattr(gc, base))(x, None, alpha=0.7)
    check(ours, theirs)


def test_finer_cam_eigen_smooth(cnn) -> None:
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(18))
    for base in ("GradCAM", "HiResCAM"):
        ours = cw.FinerCAM(cnn, [cnn[5]], base_method=getattr(cw, base))(x, None, True)
        theirs = gc.FinerCAM(cnn, [cnn[5]], base_method=getattr(gc, base))(x, None, True)
        check(ours, theirs)


def test_sess_eigen_smooth_and_base_kwargs(cnn) -> None:
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(19))
    kw = {"scales": [10, 13], "theta": -1.0}
    ours = cw.SESS(cnn, [cnn[5]], base_method=cw.HiResCAM, **kw)(x, None, True)
    theirs = gc.SESS(cnn, [cnn[5]], base_method=gc.HiResCAM, **kw)(x, None, True)
    check(ours, theirs)
    kw = {**kw, "kernel": "rbf"}  # a base constructor argument (**kwargs)
    ours = cw.SESS(cnn, [cnn[5]], base_method=cw.KPCA_CAM, **kw)(x)
    theirs = gc.SESS(cnn, [cnn[5]], base_method=gc.KPCA_CAM, **kw)(x)
    check(ours, theirs)
