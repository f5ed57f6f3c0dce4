"""sess against pytorch-grad-cam 1.5.7's SESS (final maps, 1e-5), and its pieces by hand.

The 'mean' fusion counts, per pixel, the patch maps above ``theta`` (0 by default): a pixel that
is exactly 0 in one library and 1e-7 in the other (a patch map's minimum, or a pasted patch's
edge blended with the zeros around it) changes that count. The cases below are ones where no
pixel sits within rounding of ``theta``; docs/cam-methods.md names the difference (seen: 48 x 56
input, gradcampp base, 2 scales: 8e-3; 56 x 48, gradcam, 3 scales: 1.3e-2, and 6.6e-7 with
``theta=-1``, which counts every patch).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.sess import SESS as RefSESS

from camwall.cams import compute_cams
from camwall.cams._sess import gaussian_blur, window_starts
from camwall.errors import CamwallError

BASES = {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus}


def _reference(model, layer, x, base="gradcam", **kwargs):
    ref = RefSESS(model, [model.get_submodule(layer)], base_method=BASES[base], **kwargs)
    try:
        return torch.from_numpy(ref(x, targets=None))
    finally:
        ref.base_cam.activations_and_grads.release()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.mark.parametrize(
    ("batch", "h", "w", "base", "kwargs"),
    [
        (2, 48, 48, "gradcam", {"num_scales": 3}),
        (1, 48, 48, "gradcampp", {"num_scales": 2, "step_size": 30}),
        (2, 48, 48, "gradcam", {"scales": [48, 61], "pool": "max", "use_softmax_scores": False}),
        (1, 56, 48, "gradcam", {"num_scales": 2, "pre_filter_ratio": 0.5, "theta": 0.1}),
        # theta = -1 counts every patch: this input differs by 1.3e-2 at theta = 0 (knife edge)
        (1, 56, 48, "gradcam", {"num_scales": 3, "theta": -1.0}),
    ],
)
def test_sess_matches_grad_cam(resnet, batch, h, w, base, kwargs):
    x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(3))
    ref = _reference(resnet, "layer3", x, base, **kwargs)
    names = {
        "num_scales": "sess_num_scales",
        "step_size": "sess_step",
        "scales": "sess_scales",
        "pool": "sess_pool",
        "use_softmax_scores": "sess_softmax",
        "pre_filter_ratio": "sess_pre_filter",
        "theta": "sess_theta",
    }
    opts = {names[k]: v for k, v in kwargs.items()}
    ours = compute_cams(resnet, x, "layer3", "sess", sess_base=base, **opts)["sess"]
    assert ours.shape == ref.shape
    assert float(ref.max()) > 0.99
    assert float((ours - ref).abs().max()) <= 1e-5


def test_sess_over_two_layers_matches_grad_cam(resnet):
    """Each patch explained over layer2 and layer3 (grad-cam's multi-layer aggregation), from
    one recorded pass per chunk of patches; native and through the compat class."""
    from camwall.compat.pytorch_grad_cam import SESS as CompatSESS
    from camwall.compat.pytorch_grad_cam import GradCAM as CompatGradCAM

    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    layers = [resnet.layer2, resnet.layer3]
    ref = RefSESS(resnet, layers, base_method=GradCAM, num_scales=2)
    try:
        want = torch.from_numpy(ref(x, targets=None))
    finally:
        ref.base_cam.activations_and_grads.release()
    one = _reference(resnet, "layer3", x, num_scales=2)
    assert float((want - one).abs().max()) > 1e-2  # the second layer changes the map
    ours = compute_cams(resnet, x, ["layer2", "layer3"], "sess", sess_num_scales=2)["sess"]
    assert float((ours - want).abs().max()) <= 1e-5
    with CompatSESS(resnet, layers, base_method=CompatGradCAM, num_scales=2) as cam:
        got = torch.from_numpy(cam(x))
    assert float((got - want).abs().max()) <= 1e-5


def test_gaussian_blur_is_opencv():
    m = torch.rand(2, 17, 23, generator=torch.Generator().manual_seed(0))
    ref = np.stack([cv2.GaussianBlur(a, (11, 11), 5.0, 0) for a in m.numpy()])
    assert float((gaussian_blur(m) - torch.from_numpy(ref)).abs().max()) <= 1e-6


def test_window_starts_by_hand():
    assert window_starts(32, 32, 32) == [0]
    assert window_starts(41, 32, 32) == [0, 9]
    assert window_starts(100, 24, 32) == [0, 24, 48, 68]


def test_sess_options_are_checked(resnet):
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(CamwallError, match="option sess_base must be one of"):
        compute_cams(resnet, x, "layer3", "sess", sess_base="sess")
    with pytest.raises(CamwallError, match="at least the window size 32"):
        compute_cams(resnet, x, "layer3", "sess", sess_scales=[16])
    with pytest.raises(CamwallError, match="sess_pool must be 'mean' or 'max'"):
        compute_cams(resnet, x, "layer3", "sess", sess_pool="min")


def test_sess_names_models_that_refuse_square_patches(make_tiny):
    model, layer, x = make_tiny("flat")  # Flatten + Linear sized for 8 x 12 inputs
    with pytest.raises(CamwallError, match=r"sess runs the model on \(8, 8\) patches"):
        compute_cams(model, x, layer, "sess")
