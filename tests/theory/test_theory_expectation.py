"""The exact expected GradCAM at initialization, its ingredients, and Theorem 3's bound."""

import math

import pytest
import torch

from camwall.errors import CamwallError
from camwall.theory import (
    SimpleCNN,
    expected_gradcam,
    expected_sqrt_relu_chi2,
    patch_norms,
    theorem3_bound,
    unmasked_positions,
)


def _image(size=(13, 13), seed=0) -> torch.Tensor:
    x = torch.rand(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x[:, :3] = 0  # zero patches on the left
    return x


def test_sqrt_relu_chi2_small_v_by_hand():
    # V = 1: R_1 = ReLU(Z)^2, so E[sqrt(R_1)] = E[ReLU(Z)] = 1 / sqrt(2 pi).
    assert expected_sqrt_relu_chi2(1) == pytest.approx(1 / math.sqrt(2 * math.pi), rel=1e-14)
    # V = 2: (1/2) E|chi_1| + (1/4) E[chi_2] = (1/2) sqrt(2/pi) + (1/4) sqrt(pi/2).
    v2 = 0.5 * math.sqrt(2 / math.pi) + 0.25 * math.sqrt(math.pi / 2)
    assert expected_sqrt_relu_chi2(2) == pytest.approx(v2, rel=1e-14)


@pytest.mark.parametrize("v", [3, 10, 50, 150])
def test_sqrt_relu_chi2_log_gamma_equals_plain_sum(v):
    plain = math.fsum(
        math.comb(v, n) * 2.0**-v * math.sqrt(2) * math.gamma((n + 1) / 2) / math.gamma(n / 2)
        for n in range(1, v + 1)
    )
    assert expected_sqrt_relu_chi2(v) == pytest.approx(plain, rel=1e-12)


@pytest.mark.parametrize("v", [1, 7, 64, 512])
def test_sqrt_relu_chi2_equals_simulation(v):
    n = 20_000
    z = torch.randn(n, v, generator=torch.Generator().manual_seed(v), dtype=torch.float64)
    s = torch.relu(z).pow(2).sum(dim=1).sqrt()
    mean, se = float(s.mean()), float(s.std() / math.sqrt(n))
    assert abs(expected_sqrt_relu_chi2(v) - mean) < 4 * se


def test_sqrt_relu_chi2_asymptotics():
    # E[sqrt(R_V)] = sqrt(V/2) (1 - 5/(8V) + O(V^-2)): V * (1 - E/sqrt(V/2)) -> 5/8.
    for v in (1_000, 10_000, 100_000):
        ratio = expected_sqrt_relu_chi2(v) / math.sqrt(v / 2)
        assert ratio < 1
        assert v * (1 - ratio) == pytest.approx(5 / 8, rel=2e-3 * 1000 / v + 1e-4)
    assert math.isfinite(expected_sqrt_relu_chi2(1_000_000))


def test_patch_norms_by_loop():
    x = _image((7, 9), seed=3)
    got = patch_norms(x, 3)
    assert got.shape == (5, 7)
    for i in range(5):
        for j in range(7):
            assert float(got[i, j]) == pytest.approx(float(x[i : i + 3, j : j + 3].norm()), 1e-12)


def test_expected_map_formula_and_sizes():
    x = _image()
    v, k, tau = 64, 2, 0.7
    got = expected_gradcam(x, v, k, tau)
    assert got.shape == (12, 12)
    assert got.dtype == torch.float64
    # h = w = 12, h' = w' = 6: E = tau^2 ||m|| sqrt(h'w') / (2 sqrt(pi) h w) E[sqrt(R_V)].
    c = tau**2 * 6 / (2 * math.sqrt(math.pi) * 144) * expected_sqrt_relu_chi2(v)
    torch.testing.assert_close(got, c * patch_norms(x, k), rtol=1e-14, atol=0)
    assert torch.all(got[:, :2] == 0)
    assert torch.all(got[:, 3:] > 0)
    assert unmasked_positions((13, 13), 2) == 18
    assert unmasked_positions((13, 13), 2, wall_rows=(5,)) == 30


def test_expectation_scales_with_tau_squared_and_patch_norm():
    x = _image()
    base = expected_gradcam(x, 128, 2, 1.0)
    torch.testing.assert_close(expected_gradcam(x, 128, 2, 3.0), 9.0 * base, rtol=1e-13, atol=0)
    torch.testing.assert_close(expected_gradcam(2.5 * x, 128, 2), 2.5 * base, rtol=1e-13, atol=0)
    # it depends on the patch only through ||m||: a sign flip of the image changes nothing
    torch.testing.assert_close(expected_gradcam(-x, 128, 2), base, rtol=1e-13, atol=0)


def test_conditional_expectation_given_filters():
    # E[GC_ij | filters] = tau sqrt(h'w') / (2 sqrt(pi) h w) sqrt(S_ij), S_ij = sum_v B_v[i,j]^2:
    # average GradCAM over many heads for one fixed set of filters.
    x = _image(seed=5)
    model = SimpleCNN(16, 2, (13, 13)).double()
    model.reset_gaussian_(1.0, torch.Generator().manual_seed(0))
    b = torch.relu(torch.nn.functional.conv2d(x[None, None], model.conv.weight))[0]
    n = 40_000
    # alpha_v = sum of 18 unmasked N(0,1) weights / (h w), drawn for n heads at once
    heads = torch.randn(n, 16, 18, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    alpha = heads.sum(dim=2) / 144
    gc = torch.relu(torch.einsum("nv,vij->nij", alpha, b))
    expected = 6 / (2 * math.sqrt(math.pi) * 144) * b.pow(2).sum(dim=0).sqrt()
    se = gc.std(dim=0) / math.sqrt(n)
    assert torch.all((gc.mean(dim=0) - expected).abs() <= 4 * se + 1e-15)


@pytest.mark.parametrize("v", [512, 1024])
def test_bound_below_exact_and_positive(v):
    x = _image()
    exact = expected_gradcam(x, v, 2)
    bound = theorem3_bound(x, v, 2)
    assert torch.all(bound <= exact)
    nonzero = patch_norms(x, 2) > 0
    walled_half = torch.zeros_like(nonzero)
    walled_half[6:, :] = True  # activation rows read by walled pooled rows 3..5
    assert bool((nonzero & walled_half).any())
    assert torch.all(bound[nonzero & walled_half] > 0)
    assert torch.all(bound[~nonzero] == 0)
    # exact / bound is the same at every non-zero patch: 2 E[sqrt(R_V)] / sqrt(V - 20 sqrt(V)).
    ratio = exact[nonzero] / bound[nonzero]
    slack = 2 * expected_sqrt_relu_chi2(v) / math.sqrt(v - 20 * math.sqrt(v))
    torch.testing.assert_close(ratio, torch.full_like(ratio, slack), rtol=1e-12, atol=0)


def test_bound_slack_tends_to_sqrt2():
    x = _image()
    nonzero = patch_norms(x, 2) > 0
    ratios = []
    for v in (10**4, 10**6):
        ratio = expected_gradcam(x, v, 2)[nonzero] / theorem3_bound(x, v, 2)[nonzero]
        ratios.append(float(ratio.max()))
    assert ratios[0] > ratios[1] > math.sqrt(2)
    assert ratios[1] == pytest.approx(math.sqrt(2), rel=0.03)


def test_bad_arguments():
    x = _image()
    with pytest.raises(CamwallError, match="V > 400"):
        theorem3_bound(x, 400, 2)
    with pytest.raises(CamwallError, match="positive integer"):
        expected_gradcam(x, 0, 2)
    with pytest.raises(CamwallError, match="tau"):
        expected_gradcam(x, 8, 2, tau=-1.0)
    with pytest.raises(CamwallError, match="one grayscale image"):
        expected_gradcam(torch.zeros(2, 13, 13), 8, 2)
    with pytest.raises(CamwallError, match="outside"):
        expected_gradcam(x, 8, 2, wall_rows=(9,))
