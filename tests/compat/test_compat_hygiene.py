"""Hygiene of the drop-in classes, grad-cam's README example, and the clear errors for what
camwall's engine does not provide yet."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import camwall.compat.pytorch_grad_cam as cw
from camwall.compat.pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from camwall.errors import CamwallError

ALL = [
    "GradCAM", "HiResCAM", "GradCAMElementWise", "GradCAMPlusPlus", "XGradCAM", "LayerCAM",
    "EigenCAM", "EigenGradCAM", "KPCA_CAM", "ScoreCAM", "AblationCAM", "FullGrad", "ShapleyCAM",
    "FEM", "FinerCAM", "SESS", "RandomCAM",
]  # fmt: skip


def state(model: nn.Module) -> tuple:
    hooks = sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    grads = [p.grad is None for p in model.parameters()]
    return hooks, modes, flags, grads


@pytest.mark.parametrize("name", ALL)
def test_no_hooks_modes_flags_or_grads_left(cnn, name: str) -> None:
    cnn.train()
    cnn[1].eval()
    cnn[0].weight.requires_grad_(False)
    before = state(cnn)
    x = torch.rand(2, 3, 12, 10, requires_grad=True)
    with getattr(cw, name)(cnn, [cnn[5]]) as cam:
        maps = cam(x)
        assert state(cnn) == before  # nothing stays between calls, even inside the block
    assert maps.shape == (2, 12, 10)
    assert maps.dtype == np.float32
    assert state(cnn) == before
    assert x.grad is None


def test_state_restored_after_an_error(cnn) -> None:
    before = state(cnn)
    cam = cw.GradCAM(cnn, [cnn[5]])
    with pytest.raises(CamwallError, match="targets"):
        cam(torch.rand(2, 3, 12, 10), [ClassifierOutputTarget(1)])  # one target for two images
    assert state(cnn) == before


def test_guided_backprop_restores_relus_and_writes_no_grad(cnn) -> None:
    relus = [m for m in cnn.modules() if isinstance(m, nn.ReLU)]
    x = torch.rand(1, 3, 12, 10)
    gb = cw.GuidedBackpropReLUModel(cnn, device="cpu")(x, target_category=2)
    assert gb.shape == (12, 10, 3)
    assert [m for m in cnn.modules() if isinstance(m, nn.ReLU)] == relus
    assert all(p.grad is None for p in cnn.parameters())


def test_pytorch_grad_cam_is_never_imported() -> None:
    code = (
        "import sys, camwall.compat.pytorch_grad_cam as g\n"
        "import camwall.compat.pytorch_grad_cam.metrics.road\n"
        "import camwall.compat.pytorch_grad_cam.sobel_cam\n"
        "import camwall.compat.pytorch_grad_cam.utils.image\n"
        "print(sorted(m for m in sys.modules if m.startswith('pytorch_grad_cam')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_readme_usage_example_runs() -> None:
    """grad-cam's README "Usage examples" with its imports changed; resnet18 with random
    weights replaces ResNet50_Weights.DEFAULT (offline), a random image stands in for rgb_img."""
    from camwall.compat.pytorch_grad_cam import (  # noqa: F401 (the README's import line)
        AblationCAM,
        EigenCAM,
        FullGrad,
        GradCAM,
        GradCAMPlusPlus,
        HiResCAM,
        ScoreCAM,
        XGradCAM,
    )  # fmt: skip
    from camwall.compat.pytorch_grad_cam.utils.image import preprocess_image, show_cam_on_image

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    target_layers = [model.layer4[-1]]
    rgb_img = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    input_tensor = preprocess_image(rgb_img)
    targets = [ClassifierOutputTarget(281)]
    with GradCAM(model=model, target_layers=target_layers) as cam:
        grayscale_cam = cam(input_tensor=input_tensor, targets=targets)
        grayscale_cam = grayscale_cam[0, :]
        visualization = show_cam_on_image(rgb_img, grayscale_cam, use_rgb=True)
        model_outputs = cam.outputs
    assert visualization.shape == (64, 64, 3)
    assert visualization.dtype == np.uint8
    assert model_outputs.shape == (1, 1000)


class Detector(nn.Module):
    """Returns torchvision-style detections: a list of dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> list:
        s = self.conv(x).mean(dim=(1, 2, 3))
        return [{"boxes": torch.zeros(1, 4), "scores": v[None], "labels": torch.ones(1)} for v in s]


def test_detection_outputs_without_targets_name_the_fix() -> None:
    model = Detector()
    with pytest.raises(CamwallError, match=r"per-image dicts.*FasterRCNNBoxScoreTarget"):
        cw.GradCAM(model, [model.conv])(torch.rand(1, 3, 8, 8))


def test_fasterrcnn_ablation_without_its_transform_names_it(cnn) -> None:
    with pytest.raises(CamwallError, match="pass reshape_transform=fasterrcnn_reshape_transform"):
        cw.AblationCAM(cnn, [cnn[5]], ablation_layer=cw.AblationLayerFasterRCNN())


class _Halve(cw.AblationLayer):
    def __call__(self, x):
        out = self.activations
        for i in range(out.size(0)):
            out[i, self.indices[i]] = out[i, self.indices[i]] / 2
        return out


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda m: cw.SESS(m, [m[2], m[5]], pool="min")(torch.rand(1, 3, 8, 8)), "sess_pool"),
        (
            lambda m: cw.RefineCAM(m, [m[2], m[5]], base_method=cw.SESS)(torch.rand(1, 3, 8, 8)),
            "refinecam_base must be",
        ),
        (lambda m: cw.RefineCAM(m, [m[5]], base_method=int), "base_method must be one of"),
        (
            lambda m: cw.FinerCAM(m, [m[5]], base_method=cw.FullGrad)(torch.rand(1, 3, 8, 8)),
            "finercam_base must be one of",
        ),
        (
            lambda m: cw.AblationCAM(m, [m[5]], ratio_channels_to_ablate=0)(torch.rand(1, 3, 8, 8)),
            r"ablationcam_ratio must be in \(0, 1\]",
        ),
        (lambda m: cw.FullGrad(m, [])(torch.rand(1, 3, 6, 8), eigen_smooth=True), "at least 8 x 8"),
    ],
)
def test_bad_options_of_the_new_paths_raise_camwall_errors(cnn, build, message: str) -> None:
    with pytest.raises(CamwallError, match=message):
        build(cnn)


def test_vit_ablation_needs_an_invertible_transform(vit) -> None:
    """AblationCAM re-runs the model from ablated token grids: with camwall's token_grid (it has
    an inverse) it gives the engine's map; a plain lambda gets a CamwallError naming the fix."""
    from camwall.cams import compute_cams, token_grid

    layer = vit.encoder.layers.encoder_layer_1.ln_1
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ours = cw.AblationCAM(vit, [layer], token_grid(), ablation_layer=cw.AblationLayerVit())(
        x,
        [ClassifierOutputTarget(1)],  # the argmax class gives an all-zero map on this input
    )
    engine = compute_cams(vit, x, layer, "ablationcam", [1], reshape_transform=token_grid())
    assert ours.max() > 0.5
    assert np.array_equal(ours, engine["ablationcam"].numpy())
    with pytest.raises(CamwallError, match="inverse"):
        cw.AblationCAM(vit, [layer], lambda t: token_grid()(t))(x)
