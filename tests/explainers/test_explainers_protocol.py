"""The reduction rule, by hand: input attributions -> N(sum_c |A_c|); layer maps -> finalize."""

from __future__ import annotations

import pytest
import torch

from camwall.cams import finalize_maps
from camwall.errors import CamwallError
from camwall.explainers import finish_maps, reduce_attributions


def test_reduce_attributions_by_hand():
    a = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]], [[-1.0, 0.0], [0.0, 1.0]]]])  # 1 x 2 x 2 x 2
    # |A| summed over channels: [[2, 2], [0, 4]]; min 0, max 4
    expected = torch.tensor([[[2.0, 2.0], [0.0, 4.0]]], dtype=torch.float64) / (4.0 + 1e-7)
    # float32: exact integer sums, then two roundings (4 + 1e-7 and the division): <= eps32
    eps32 = torch.finfo(torch.float32).eps
    torch.testing.assert_close(reduce_attributions(a).double(), expected, rtol=eps32, atol=0)


def test_reduce_keeps_an_all_zero_map_zero():
    out = reduce_attributions(torch.zeros(2, 3, 4, 5))
    assert out.shape == (2, 4, 5)
    assert torch.count_nonzero(out) == 0


def test_reduce_is_per_image():
    a = torch.stack([torch.ones(1, 2, 2), 5 * torch.eye(2)[None]])
    out = reduce_attributions(a)
    assert torch.count_nonzero(out[0]) == 0  # constant map: empty after min-max
    assert torch.allclose(out[1], torch.eye(2), atol=1e-6)


def test_layer_maps_are_upsampled_like_camwall_cams():
    raw = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))
    x = torch.zeros(2, 1, 16, 12)
    assert torch.equal(finish_maps("t", raw, x, "layer"), finalize_maps(raw, (16, 12)))


def test_numpy_maps_are_accepted():
    import numpy as np

    x = torch.zeros(1, 3, 2, 2)
    out = finish_maps("t", np.array([[[0.0, 1.0], [2.0, 4.0]]], dtype=np.float32), x, "map")
    assert torch.allclose(out, torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]), atol=1e-6)


def test_input_attribution_of_the_wrong_shape():
    with pytest.raises(CamwallError, match=r"expected \(1, 3, 2, 2\) or \(1, 1, 2, 2\)"):
        finish_maps("t", torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2), "input")
