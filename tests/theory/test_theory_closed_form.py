"""Proposition 2: the closed form of GradCAM's alpha equals autograd, for any L, any input."""

import pytest
import torch

from camwall.cams import compute_cams, finalize_maps
from camwall.errors import CamwallError
from camwall.theory import SimpleCNN, gradcam_autograd, gradcam_closed_form


def _model(depth: int, walled: bool, seed: int, size=(14, 15), k=3, outputs=4) -> SimpleCNN:
    hidden = (7, 5)[: depth - 1]
    model = SimpleCNN(6, k, size, hidden=hidden, outputs=outputs, walled=walled).double()
    model.reset_gaussian_(1.0, torch.Generator().manual_seed(seed))
    return model


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("walled", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_equals_autograd(depth, walled, seed):
    model = _model(depth, walled, seed)
    x = torch.rand(5, 1, 14, 15, generator=torch.Generator().manual_seed(100 + seed)).double()
    x[0, 0, 8:] = 0  # a zero region: many ties in the max-pool windows
    cf = gradcam_closed_form(model, x)
    ag = gradcam_autograd(model, x)
    assert torch.equal(cf.target, ag.target)
    assert cf.alpha.shape == (5, 6)
    assert cf.cam.shape == (5, 12, 13)
    assert ag.alpha.abs().max() > 0
    assert _rel(cf.alpha, ag.alpha) < 1e-12
    assert ag.cam.max() > 0
    assert _rel(cf.cam, ag.cam) < 1e-12


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("walled", [True, False])
def test_closed_form_equals_the_librarys_gradcam(depth, walled):
    # camwall.cams returns GradCAM after its post-processing (ReLU, min-max normalization,
    # bilinear resize to the input, normalization again), computed in float32; the closed
    # form's raw map, put through the same post-processing, must give the same map.
    model = _model(depth, walled, seed=depth)
    x = torch.rand(5, 1, 14, 15, generator=torch.Generator().manual_seed(200 + depth)).double()
    x[0, 0, 8:] = 0
    cf = gradcam_closed_form(model, x)
    for targets in (None, [3, 0, 1, 2, 3]):
        expected = cf if targets is None else gradcam_closed_form(model, x, torch.tensor(targets))
        maps = compute_cams(model, x, "relu", ["gradcam"], targets=targets)["gradcam"]
        assert maps.shape == (5, 14, 15)
        assert float(maps.amax()) > 0.99  # not only all-zero maps (L = 1 gives some)
        reference = finalize_maps(expected.cam, (14, 15))
        torch.testing.assert_close(maps, reference, rtol=0, atol=2e-5)
    assert model.training  # the engine restored the mode


@pytest.mark.parametrize("target", [0, 3])
def test_every_target_and_odd_sizes(target):
    # 12x12 input, k=2: h = w = 11 is odd, so the last activation row/column is never pooled.
    model = _model(2, True, 7, size=(12, 12), k=2)
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(3)).double()
    cf = gradcam_closed_form(model, x, target=target)
    ag = gradcam_autograd(model, x, target=target)
    assert torch.all(cf.target == target)
    assert _rel(cf.alpha, ag.alpha) < 1e-12
    assert _rel(cf.cam, ag.cam) < 1e-12


def test_l1_alpha_is_the_mean_of_unmasked_head_weights():
    # With L = 1: alpha_v = (1/(h w)) * sum over unmasked (p, q) of W_v[p, q].
    model = _model(1, True, 4, size=(13, 13), k=2, outputs=1)  # h = 12, h' = 6, wall rows 3..5
    x = torch.rand(13, 13, generator=torch.Generator().manual_seed(0)).double()
    w = model.head[0].weight.detach().reshape(6, 6, 6)
    expected = w[:, :3, :].sum(dim=(1, 2)) / (12 * 12)
    cf = gradcam_closed_form(model, x)
    assert cf.alpha.shape == (6,)
    assert cf.cam.shape == (12, 12)
    torch.testing.assert_close(cf.alpha, expected, rtol=1e-14, atol=0)
    # alpha does not depend on the input at all for L = 1
    other = gradcam_closed_form(model, torch.zeros(1, 13, 13, dtype=torch.float64))
    torch.testing.assert_close(other.alpha, expected, rtol=1e-14, atol=0)


def test_unbatched_equals_batched():
    model = _model(3, True, 5)
    x = torch.rand(2, 1, 14, 15, generator=torch.Generator().manual_seed(9)).double()
    batched = gradcam_closed_form(model, x)
    single = gradcam_closed_form(model, x[1, 0])
    # float64 matmuls of another batch size may take other kernels: eps64 x the 14 x 15 input
    tol = torch.finfo(torch.float64).eps * x[0, 0].numel()
    torch.testing.assert_close(single.cam, batched.cam[1], rtol=tol, atol=tol)
    torch.testing.assert_close(single.alpha, batched.alpha[1], rtol=tol, atol=tol)


def test_bad_inputs():
    model = _model(1, True, 0)
    with pytest.raises(CamwallError, match="built for 14x15"):
        gradcam_closed_form(model, torch.zeros(14, 14, dtype=torch.float64))
    with pytest.raises(CamwallError, match="NaN"):
        gradcam_closed_form(model, torch.full((14, 15), float("nan"), dtype=torch.float64))
    with pytest.raises(CamwallError, match="out of range"):
        gradcam_autograd(model, torch.zeros(14, 15, dtype=torch.float64), target=4)
    with pytest.raises(CamwallError, match="expected H x W"):
        gradcam_closed_form(model, torch.zeros(1, 1, 1, 14, 15, dtype=torch.float64))
    with pytest.raises(CamwallError, match="channels"):
        gradcam_closed_form(model, torch.zeros(3, 14, 15, dtype=torch.float64))
