"""Opti-CAM has no grad-cam counterpart: test its objective, range and determinism."""

from __future__ import annotations

import os

import pytest
import torch

from camwall.cams import compute_cams
from camwall.cams._opti import opticam_masks

FASHION = "/usr/share/datasets/fashion-mnist"


def objective(model, layer_name, x, masks):
    """Target logit (argmax class of x) of the masked inputs ``masks * x``."""
    with torch.no_grad():
        cls = model(x).argmax(1)
        return model(masks[:, None] * x).gather(1, cls[:, None])[:, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objective_at_result_beats_the_uniform_start(seed, make_tiny):
    model, layer, x = make_tiny("flat", seed=seed, batch=3, h=8, w=10)
    maps = compute_cams(model, x, layer, "opticam")["opticam"]
    feats = model[:5](x).clamp_min(0)
    with torch.no_grad():
        start = opticam_masks(feats, torch.full(feats.shape[:2], 0.5), (8, 10))[:, 0]
    before = objective(model, layer, x, start)
    after = objective(model, layer, x, maps)
    assert bool((after >= before - 1e-5).all())
    assert bool((after > before + 1e-4).any())  # the optimization did something


def test_maps_are_in_unit_range_and_stretched(make_tiny):
    model, layer, x = make_tiny("nested", seed=4, batch=2)
    maps = compute_cams(model, x, layer, "opticam", opticam_iters=20)["opticam"]
    assert maps.shape == (2, 8, 12)
    assert float(maps.min()) >= 0.0
    assert float(maps.max()) <= 1.0
    flat = maps.flatten(1)
    torch.testing.assert_close(flat.amin(1), torch.zeros(2), rtol=0, atol=1e-6)
    torch.testing.assert_close(flat.amax(1), torch.ones(2), rtol=0, atol=1e-5)


def test_deterministic_for_a_fixed_seed(make_tiny):
    model, layer, x = make_tiny("custom", seed=6, batch=2)
    runs = [
        compute_cams(model, x, layer, "opticam", opticam_init="random", seed=s, opticam_iters=10)
        for s in (3, 3, 4)
    ]
    torch.testing.assert_close(runs[0]["opticam"], runs[1]["opticam"], rtol=0, atol=0)
    assert not torch.equal(runs[0]["opticam"], runs[2]["opticam"])


def test_one_iteration_returns_the_start_map(make_tiny):
    model, layer, x = make_tiny("flat", seed=9, batch=2)
    maps = compute_cams(model, x, layer, "opticam", opticam_iters=1)["opticam"]
    feats = model[:5](x).clamp_min(0)
    with torch.no_grad():
        start = opticam_masks(feats, torch.full(feats.shape[:2], 0.5), (8, 12))[:, 0]
    torch.testing.assert_close(maps, start, rtol=0, atol=1e-6)


def test_each_image_is_optimised_on_its_own_on_the_shipped_model():
    """Batched maps equal per-image maps on the shipped fashion-vgg (8 test canvases).

    Each image's optimisation runs on its own (one-image passes, per-image stopping), so both
    sides compute the same one-image kernels; the tolerance is the float32 rounding of the final
    min-max normalization of a map in [0, 1] (a few ulps). Before, a batch-wide pass let the
    kernels' rounding steer the stopping and the best-map choice: maps differed by up to 0.086.
    """
    from camwall.data import fashion_canvases
    from camwall.walls import default_target_layer, load_model
    from camwall.weights import shipped_model

    model, _ = load_model(shipped_model("fashion-vgg"))
    if os.path.isdir(FASHION):
        canvases = fashion_canvases("test", seed=0, augment=False)
        x = torch.stack([canvases[i][0] for i in range(8)])
    else:  # no Fashion-MNIST here: the same check on random canvases
        x = torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    layer = default_target_layer(model)
    batched = compute_cams(model, x, layer, "opticam")["opticam"]
    single = torch.cat(
        [compute_cams(model, x[i : i + 1], layer, "opticam")["opticam"] for i in range(8)]
    )
    tolerance = 4 * torch.finfo(torch.float32).eps
    assert float((batched - single).abs().max()) <= tolerance
