"""Every method (except opticam) against pytorch-grad-cam 1.5.7 on tiny CNNs: max abs diff 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import (
    FEM,
    KPCA_CAM,
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    SegEigenCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from camwall.cams import METHODS, compute_cams

REFERENCE = {
    "gradcam": GradCAM,
    "hirescam": HiResCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
    "gradcamelementwise": GradCAMElementWise,
    "kpcacam": KPCA_CAM,
    "fem": FEM,
    "segeigencam": SegEigenCAM,  # its sign rule does not depend on LAPACK's sign
}
# opticam has no implementation in grad-cam; tests/cams/test_cams_opticam.py covers it.
# eigengradcam (up to sign), shapleycam, finercam (their grad-cam classes fail in `with`) and
# randomcam (draws), fullgrad are compared with grad-cam, cam with torchcam, in
# test_cams_methods.py; smoothgradcampp, sscam, iscam (torchcam) in test_cams_noise.py; sess in
# test_cams_sess.py; rollout (no peer has it) in test_cams_rollout.py; legrad (ViTs) in
# test_cams_legrad.py.
NO_REFERENCE = {"opticam", "eigengradcam", "shapleycam", "finercam", "randomcam", "cam", "fullgrad"}
NO_REFERENCE |= {"smoothgradcampp", "sscam", "iscam", "sess", "rollout", "legrad"}
NO_REFERENCE |= {"refinecam"}  # several layers: tests/cams/test_cams_issue21.py

# (model, seed, batch, h, w): non-square inputs, several seeds and batch sizes.
CASES = [
    ("flat", 0, 1, 8, 12),
    ("flat", 1, 3, 10, 6),
    ("nested", 2, 2, 12, 8),
    ("nested", 3, 1, 6, 10),
    ("custom", 4, 2, 9, 13),
    ("custom", 5, 3, 16, 10),
    ("skip", 6, 2, 9, 13),
]


def reference_maps(name, model, layer, x, targets=None) -> np.ndarray:
    cam = REFERENCE[name](model=model, target_layers=[model.get_submodule(layer)])
    with cam:
        return cam(input_tensor=x, targets=targets)


def test_every_method_has_a_reference_or_its_own_tests():
    assert set(METHODS.names()) == set(REFERENCE) | NO_REFERENCE


@pytest.mark.parametrize("name", [n for n in METHODS.names() if n not in NO_REFERENCE])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-s{c[1]}-b{c[2]}-{c[3]}x{c[4]}")
def test_matches_grad_cam(name, case, make_tiny):
    model_name, seed, batch, h, w = case
    model, layer, x = make_tiny(model_name, seed=seed, batch=batch, h=h, w=w)
    ours = compute_cams(model, x, layer, [name])[name]
    ref = torch.from_numpy(reference_maps(name, model, layer, x))
    assert ours.shape == (batch, h, w)
    assert ours.dtype == torch.float32
    if name == "eigencam":  # deliberate difference: we fix the SVD sign, grad-cam does not
        flipped = torch.from_numpy(reference_maps_flipped(model, layer, x))
        diff = torch.minimum(
            (ours - ref).abs().amax(dim=(1, 2)), (ours - flipped).abs().amax((1, 2))
        )
        assert float(diff.max()) <= 1e-5
    else:
        assert float((ours - ref).abs().max()) <= 1e-5
    assert float(ours.max()) > 0.99  # a real map, not all zeros


def reference_maps_flipped(model, layer, x) -> np.ndarray:
    """grad-cam's EigenCAM with the opposite SVD sign (negate the activations' projection)."""
    from pytorch_grad_cam.base_cam import BaseCAM
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    class FlippedEigenCAM(BaseCAM):
        def __init__(self, model, target_layers):
            super().__init__(model, target_layers, uses_gradients=False)

        def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, smooth):
            return -get_2d_projection(activations)

    with FlippedEigenCAM(model, [model.get_submodule(layer)]) as cam:
        return cam(input_tensor=x, targets=None)


@pytest.mark.parametrize("name", ["gradcam", "hirescam", "scorecam", "ablationcam"])
def test_explicit_targets_match_grad_cam(name, make_tiny):
    model, layer, x = make_tiny("flat", seed=7, batch=3, h=8, w=10)
    classes = [0, 4, 2]
    ours = compute_cams(model, x, layer, name, targets=classes)[name]
    ref = reference_maps(name, model, layer, x, [ClassifierOutputTarget(c) for c in classes])
    assert float((ours - torch.from_numpy(ref)).abs().max()) <= 1e-5
    # callables on the output row give the same maps as class indices
    fns = [ClassifierOutputTarget(c) for c in classes]
    again = compute_cams(model, x, layer, name, targets=fns)[name]
    # the same scores (one logit per row) and the same pass: bit-equal by construction
    torch.testing.assert_close(again, ours, rtol=0, atol=0)


def test_all_gradient_methods_together_equal_one_by_one(make_tiny):
    model, layer, x = make_tiny("nested", seed=11, batch=2, h=10, w=14)
    names = [n for n, cls in METHODS.items() if cls.needs_gradient] + ["eigencam"]
    together = compute_cams(model, x, layer, names)
    # two passes that request other gradients (fullgrad's biases and input): float32 maps in
    # [0, 1] from reductions over the layer's 6 x 10 x 14 activations
    tol = torch.finfo(torch.float32).eps * 6 * 10 * 14
    for n in names:
        alone = compute_cams(model, x, layer, n)[n]
        torch.testing.assert_close(together[n], alone, rtol=0, atol=tol)


def test_ablationcam_with_head_matches_grad_cam(make_tiny):
    model, layer, x = make_tiny("custom", seed=12, batch=2, h=10, w=10)

    def head(a):  # the part of TwoConvNet after act2
        return model.fc(a.mean(dim=(2, 3)) + a.amax(dim=(2, 3)))

    ours = compute_cams(model, x, layer, "ablationcam", head=head)["ablationcam"]
    ref = torch.from_numpy(reference_maps("ablationcam", model, layer, x))
    assert float((ours - ref).abs().max()) <= 1e-5


def test_ablationcam_tail_keeps_a_shared_module(make_tiny):
    """A module used twice in a Sequential after the target layer stays in the tail twice."""
    torch.manual_seed(21)
    relu = torch.nn.ReLU()
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        relu,
        torch.nn.Conv2d(4, 5, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(5, 5, 1),
        relu,  # the same module again: Sequential runs it twice
        torch.nn.Flatten(),
        torch.nn.Linear(5 * 6 * 7, 3),
    )
    x = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(22))
    ours = compute_cams(model, x, "3", "ablationcam")["ablationcam"]
    ref = torch.from_numpy(reference_maps("ablationcam", model, "3", x))
    assert float((ours - ref).abs().max()) <= 1e-5
