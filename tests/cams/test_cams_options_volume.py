"""3-D convolutional layers: volumetric maps against pytorch-grad-cam 1.5.7 (its 3-D path:
``np.mean(grads, axis=(2, 3, 4))`` and ``scipy.ndimage.zoom`` in ``scale_cam_image``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gradcam_refs import GRADIENT_REFERENCE
from scipy.ndimage import zoom
from torch import nn

from camwall.cams import compute_cams
from camwall.cams._volume import resize_volume
from camwall.errors import CamwallError

REFERENCE = GRADIENT_REFERENCE


def tiny_3d(d: int, h: int, w: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv3d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * ((d + 1) // 2) * ((h + 1) // 2) * ((w + 1) // 2), 5),
    ).eval()


# (seed, batch, D, H, W, layers)
CASES = [
    (0, 1, 6, 8, 10, ["3"]),
    (1, 3, 5, 7, 4, ["3"]),
    (2, 3, 4, 6, 8, ["1", "3"]),
]


def reference(name, model, layers, x):
    modules = [model.get_submodule(n) for n in layers]
    with REFERENCE[name](model=model, target_layers=modules) as cam:
        return torch.from_numpy(cam(input_tensor=x, targets=None))


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"b{c[1]}-{c[2]}x{c[3]}x{c[4]}-{len(c[5])}")
def test_volumes_match_grad_cam(name, case):
    seed, batch, d, h, w, layers = case
    model = tiny_3d(d, h, w, seed)
    x = torch.randn(batch, 2, d, h, w, generator=torch.Generator().manual_seed(seed + 10))
    ours = compute_cams(model, x, layers, name)[name]
    assert ours.shape == (batch, d, h, w)
    assert float((ours - reference(name, model, layers, x)).abs().max()) <= 1e-5
    assert float(ours.max()) > 0.99


@pytest.mark.parametrize(
    ("shape", "size"), [((3, 4, 5), (6, 8, 10)), ((2, 3, 3), (7, 9, 11)), ((6, 5, 1), (3, 4, 2))]
)
def test_resize_equals_scipy_zoom(shape, size):
    maps = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    ref = np.stack([zoom(m, [t / n for n, t in zip(m.shape, size)]) for m in maps.numpy()])
    assert float((resize_volume(maps, size) - torch.from_numpy(ref)).abs().max()) <= 1e-6


def test_volumes_need_a_3d_model_and_a_volumetric_method(make_tiny):
    model = tiny_3d(4, 4, 4, 0)
    x = torch.randn(1, 2, 4, 4, 4)
    with pytest.raises(CamwallError, match="scorecam does not support 3-D"):
        compute_cams(model, x, "3", "scorecam")
    flat, layer, _ = make_tiny("flat")
    with pytest.raises(CamwallError, match=r"nn\.Conv3d"):
        compute_cams(flat, torch.randn(1, 3, 2, 8, 12), layer, "gradcam")
