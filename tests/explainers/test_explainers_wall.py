"""Explainers through the wall: gradient attributions of a walled model vanish on the dead zone.

A dead pixel has no path of non-zero weights to any output (``camwall.walls.dead_zone``), so
``d y / d x`` is exactly 0.0 there (a product of structural zeros, not a small number): every
method built from input gradients at any input (Saliency, InputXGradient, IntegratedGradients,
GradientShap, NoiseTunnel, GuidedBackprop, Deconvolution, DeepLift, GuidedGradCam) puts exactly
0 there, and mu = 0. The ReLU rules of GuidedBackprop, Deconvolution and DeepLift change only
how gradients pass the ReLUs, never the zero weights of the wall.
"""

from __future__ import annotations

import pytest
import torch
from explainer_refs import patch_mask

from camwall.explainers import explain
from camwall.metrics import wall_leakage

GRADIENT_METHODS = {
    "captum:Saliency": {},
    "captum:InputXGradient": {},
    "captum:IntegratedGradients": {"n_steps": 8},
    "captum:GradientShap": {"n_samples": 4, "stdevs": 0.1, "seed": 0},
    "captum:NoiseTunnel": {"nt_samples": 4, "stdevs": 0.1, "seed": 0},
    "captum:GuidedBackprop": {},
    "captum:Deconvolution": {},
    "captum:DeepLift": {},
    "captum:GuidedGradCam": {},
    "gradcam:GuidedBackpropReLUModel": {},
    "gradcam:FullGrad": {},
}


@pytest.mark.parametrize("name", list(GRADIENT_METHODS))
def test_gradient_methods_are_exactly_zero_in_the_dead_zone(name, vgg):
    model, x, dead = vgg
    maps = explain(model, x, name, None, **GRADIENT_METHODS[name])
    assert int(dead.sum()) == 25 * 64  # input rows 39..63
    assert torch.count_nonzero(maps[:, dead]) == 0
    assert (maps.flatten(1).amax(1) > 0).all()  # not empty: the live zone carries the map
    assert wall_leakage(maps, dead).tolist() == [0.0, 0.0]


def test_occlusion_leaks_only_through_windows_straddling_the_wall(vgg):
    """A window overlapping live rows changes the output, and captum spreads that change over
    the whole window, dead pixels included: mu > 0 but only within one window of the wall."""
    model, x, dead = vgg
    maps = explain(model, x, "captum:Occlusion", [3, 7])  # 8 x 8 windows, stride 4
    assert (wall_leakage(maps, dead) > 0).all()
    assert torch.count_nonzero(maps[:, 39 + 8 :]) == 0


def test_feature_ablation_on_patches_leaks_only_through_patches_straddling_the_wall(vgg):
    model, x, dead = vgg
    maps = explain(model, x, "captum:FeatureAblation", [3, 7], feature_mask=patch_mask(64, 64, 8))
    # patches of rows 32..39 straddle the wall (row 39 is dead); rows 40.. are fully dead
    assert torch.count_nonzero(maps[:, 40:]) == 0
    assert (wall_leakage(maps, dead) > 0).all()


def test_layer_cams_leak(vgg):
    """Grad-CAM at the walled layer spreads into the dead zone through the upsampling and the
    activations behind the wall: mu well above 0 (the paper's finding)."""
    model, x, dead = vgg
    for name in ("gradcam", "captum:LayerGradCam", "gradcam:GradCAM", "torchcam:GradCAM"):
        assert (wall_leakage(explain(model, x, name, None), dead) > 0.3).all(), name
