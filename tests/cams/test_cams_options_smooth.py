"""eigen_smooth and aug_smooth against pytorch-grad-cam 1.5.7 (``cam(..., eigen_smooth=True)``,
``aug_smooth=True`` with its default ttach transforms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
    base_cam,
    eigen_cam,
    grad_cam_elementwise,
    hirescam,
    layer_cam,
)
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

from camwall.cams import compute_cams, finalize_maps
from camwall.cams._eigen import first_component
from camwall.cams._smooth import AUG_FACTORS
from camwall.errors import CamwallError

EPS32 = torch.finfo(torch.float32).eps
REFERENCE = {
    "gradcam": GradCAM,
    "hirescam": HiResCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "gradcamelementwise": GradCAMElementWise,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,  # the tiny nets' layers are ReLUs: grad-cam ablates to 0 too
}
GRADIENT = ["gradcam", "hirescam", "gradcampp", "xgradcam", "layercam", "gradcamelementwise"]
CASES = [("flat", 0, 1, 8, 12), ("nested", 1, 3, 10, 6), ("custom", 2, 3, 9, 13)]


def signed_projection(batch: np.ndarray) -> np.ndarray:
    """grad-cam's get_2d_projection with camwall's documented sign rule (the projection
    correlates positively with the channel mean); grad-cam leaves the sign to LAPACK."""
    proj = get_2d_projection(batch)
    corr = (proj * np.nan_to_num(batch).mean(axis=1)).sum(axis=(1, 2))
    return np.where(corr[:, None, None] < 0, -proj, proj).astype(np.float32)


@pytest.fixture
def signed(monkeypatch):
    for module in (base_cam, hirescam, layer_cam, grad_cam_elementwise):
        monkeypatch.setattr(module, "get_2d_projection", signed_projection)


def reference(name, model, layer, x, **call):
    with REFERENCE[name](model=model, target_layers=[model.get_submodule(layer)]) as cam:
        return torch.from_numpy(cam(input_tensor=x, targets=None, **call))


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-b{c[2]}-{c[3]}x{c[4]}")
def test_eigen_smooth_matches_grad_cam(name, case, make_tiny, signed):
    model_name, seed, batch, h, w = case
    model, layer, x = make_tiny(model_name, seed=seed, batch=batch, h=h, w=w)
    ours = compute_cams(model, x, layer, name, eigen_smooth=True)[name]
    ref = reference(name, model, layer, x, eigen_smooth=True)
    assert float((ours - ref).abs().max()) <= 1e-5
    assert float(ours.max()) > 0.99
    plain = compute_cams(model, x, layer, name)[name]
    assert float((ours - plain).abs().max()) > 1e-3  # the option changes the map


@pytest.mark.parametrize("name", GRADIENT)
def test_eigen_smooth_matches_grad_cam_on_resnet18(name, signed):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(3, 3, 64, 80, generator=torch.Generator().manual_seed(5))
    ours = compute_cams(model, x, "layer4", name, eigen_smooth=True)[name]
    assert (
        float((ours - reference(name, model, "layer4", x, eigen_smooth=True)).abs().max()) <= 1e-5
    )


def test_eigen_smooth_for_fem_is_the_projection_of_its_weighted_channels(make_tiny):
    """grad-cam's FEM ignores eigen_smooth (a documented difference); camwall applies it to
    every weighted-sum method: here by hand, from FEM's k-sigma weights."""
    model, layer, x = make_tiny("flat", seed=3, batch=3)
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(x)
    handle.remove()
    a = seen[0].double()  # a float64 reference: ours (float32 SVD) is off by its rounding only
    mean, std = a.mean(dim=(2, 3), keepdim=True), a.std(dim=(2, 3), correction=0, keepdim=True)
    weights = (a > mean + 2 * std).double().mean(dim=(2, 3))
    expected = finalize_maps(first_component(weights[:, :, None, None] * a), x.shape[-2:])
    ours = compute_cams(model, x, layer, "fem", eigen_smooth=True)["fem"]
    # float32 eps times the size of the K x h x w matrix handed to the SVD
    assert float((ours - expected).abs().max()) <= EPS32 * a[0].numel()


def test_eigen_smooth_leaves_decompositions_alone_and_refuses_whole_maps(make_tiny):
    model, layer, x = make_tiny("custom", batch=2)
    for name in ("eigencam", "eigengradcam", "kpcacam"):
        smoothed = compute_cams(model, x, layer, name, eigen_smooth=True)[name]
        torch.testing.assert_close(smoothed, compute_cams(model, x, layer, name)[name])
    with pytest.raises(CamwallError, match="eigen_smooth does not apply to opticam"):
        compute_cams(model, x, layer, "opticam", eigen_smooth=True)
    with pytest.raises(CamwallError, match="eigen_smooth must be True or False"):
        compute_cams(model, x, layer, "gradcam", eigen_smooth="yes")


@pytest.mark.parametrize("name", ["gradcam", "hirescam", "gradcampp", "xgradcam", "layercam"])
@pytest.mark.parametrize("case", CASES[:2], ids=lambda c: f"{c[0]}-b{c[2]}-{c[3]}x{c[4]}")
def test_aug_smooth_matches_grad_cam(name, case, make_tiny):
    model_name, seed, batch, h, w = case
    model, layer, x = make_tiny(model_name, seed=seed, batch=batch, h=h, w=w)
    ours = compute_cams(model, x, layer, name, aug_smooth=True)[name]
    ref = reference(name, model, layer, x, aug_smooth=True)
    assert ours.shape == (batch, h, w)
    assert float((ours - ref).abs().max()) <= 1e-5
    assert float((ours - compute_cams(model, x, layer, name)[name]).abs().max()) > 1e-3


def test_aug_smooth_with_eigen_smooth_and_scorecam_match_grad_cam(make_tiny, signed):
    model, layer, x = make_tiny("custom", seed=4, batch=3, h=10, w=7)
    both = {"aug_smooth": True, "eigen_smooth": True}
    ours = compute_cams(model, x, layer, ["gradcam", "scorecam"], **both)
    for name in ("gradcam", "scorecam"):
        assert float((ours[name] - reference(name, model, layer, x, **both)).abs().max()) <= 1e-5


def test_aug_smooth_is_the_mean_of_deaugmented_maps(make_tiny):
    """The definition, by hand: flips x factors, each map flipped back, mean not rescaled."""
    model, layer, x = make_tiny("nested", seed=5, batch=2, h=8, w=10)
    maps = []
    for flip in (False, True):
        for factor in AUG_FACTORS:
            xa = (x.flip(-1) if flip else x) * factor
            m = compute_cams(model, xa, layer, "gradcam", targets=[1, 2])["gradcam"]
            maps.append(m.flip(-1) if flip else m)
    expected = torch.stack(maps).mean(dim=0)
    ours = compute_cams(model, x, layer, "gradcam", targets=[1, 2], aug_smooth=True)["gradcam"]
    # the engine runs the flips x factors as one batch, the maps above one call each: other
    # kernels: float32 maps in [0, 1] from reductions over the 6 x 8 x 10 layer activations
    torch.testing.assert_close(ours, expected, rtol=0, atol=EPS32 * 6 * 8 * 10)


def test_eigencam_reference_sign_rule_is_camwalls(make_tiny, monkeypatch):
    """The signed reference above agrees with camwall's eigencam (so it encodes the same rule)."""
    model, layer, x = make_tiny("flat", seed=6, batch=3)
    monkeypatch.setattr(eigen_cam, "get_2d_projection", signed_projection)
    with EigenCAM(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        ref = torch.from_numpy(cam(input_tensor=x, targets=None))
    ours = compute_cams(model, x, layer, "eigencam")["eigencam"]
    assert float((ours - ref).abs().max()) <= 1e-5
