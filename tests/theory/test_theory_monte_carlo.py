"""Monte Carlo over fresh initializations against the exact expectation, and its internals."""

import math

import pytest
import torch

from camwall.errors import CamwallError
from camwall.theory import SimpleCNN, expected_gradcam, gradcam_autograd, monte_carlo_gradcam
from camwall.theory._monte_carlo import _gradcam_samples, _image_patches, _sample_weights


def _image() -> torch.Tensor:
    """A 13x13 crop-sized image (h = w = 12, h' = w' = 6) with a zero band: 144 positions."""
    x = torch.rand(13, 13, generator=torch.Generator().manual_seed(42), dtype=torch.float64)
    x[4, :] = 2.0
    x[:, 10:] = 0  # a bright row so that ||m|| varies a lot across positions
    return x


@pytest.mark.parametrize("v", [64, 512])
def test_exact_inside_four_standard_errors_everywhere(v):
    x = _image()
    mc = monte_carlo_gradcam(x, v, 2, 1.0, 3000, torch.Generator().manual_seed(v))
    exact = expected_gradcam(x, v, 2, 1.0)
    assert mc.mean.shape == mc.stderr.shape == (12, 12)
    nonzero = exact > 0
    assert int(nonzero.sum()) == 12 * 10  # the zero band leaves 2 zero columns of patches
    assert torch.all(mc.stderr[nonzero] > 0)
    assert torch.all((mc.mean - exact).abs() <= 4 * mc.stderr)  # at every position
    # zero patches give exactly zero GradCAM in every sample
    assert torch.all(mc.mean[~nonzero] == 0)
    # the estimate is precise enough for the check to mean something: about 3% relative
    assert float((mc.stderr[nonzero] / exact[nonzero]).max()) < 0.03


def test_alpha_sampling_agrees_with_exact():
    x = _image()
    mc = monte_carlo_gradcam(
        x, 256, 2, 0.5, 3000, torch.Generator().manual_seed(0), head_sampling="alpha"
    )
    exact = expected_gradcam(x, 256, 2, 0.5)
    assert torch.all((mc.mean - exact).abs() <= 4 * mc.stderr)


def test_walled_rows_matter_for_the_expectation():
    # With a different wall the expectation changes by sqrt(n_u) and Monte Carlo follows.
    x = _image()
    rows = (5,)  # only the last pooled row walled: n_u = 5 * 6 instead of 3 * 6
    mc = monte_carlo_gradcam(x, 64, 2, 1.0, 3000, torch.Generator().manual_seed(1), wall_rows=rows)
    exact = expected_gradcam(x, 64, 2, 1.0, wall_rows=rows)
    torch.testing.assert_close(
        exact, expected_gradcam(x, 64, 2, 1.0) * math.sqrt(30 / 18), rtol=1e-13, atol=0
    )
    assert torch.all((mc.mean - exact).abs() <= 4 * mc.stderr)


def test_sampled_gradcam_equals_autograd_on_the_same_weights():
    # The Monte Carlo uses Proposition 2's alpha for L = 1; check it against autograd GradCAM
    # of walled SimpleCNNs carrying the very same sampled weights.
    x = _image()
    v, k, hp, n = 32, 2, 6, 4
    conv, head = _sample_weights(n, v, k, 3, 6, 1.0, torch.Generator().manual_seed(0), x.device)
    maps = _gradcam_samples(_image_patches(x, k), conv, head, (12, 12)).reshape(n, 12, 12)
    for s in range(n):
        model = SimpleCNN(v, k, (13, 13)).double()
        with torch.no_grad():
            model.conv.weight.copy_(conv[s][:, None])
            full = torch.zeros(v, hp, hp, dtype=torch.float64)
            full[:, :3, :] = head[s]
            model.head[0].weight.copy_(full.reshape(1, -1))
        ref = gradcam_autograd(model, x)
        assert ref.cam.max() > 0
        torch.testing.assert_close(maps[s], ref.cam, rtol=1e-12, atol=1e-15)


def test_reproducible_and_equal_to_direct_statistics():
    x = _image()
    a = monte_carlo_gradcam(x, 32, 2, 1.0, 50, torch.Generator().manual_seed(3), batch_size=7)
    b = monte_carlo_gradcam(x, 32, 2, 1.0, 50, torch.Generator().manual_seed(3), batch_size=7)
    c = monte_carlo_gradcam(x, 32, 2, 1.0, 50, torch.Generator().manual_seed(3), batch_size=50)
    assert torch.equal(a.mean, b.mean)
    assert torch.equal(a.stderr, b.stderr)
    # one batch of 50: the statistics equal a direct computation on the same draws
    conv, head = _sample_weights(50, 32, 2, 3, 6, 1.0, torch.Generator().manual_seed(3), x.device)
    maps = _gradcam_samples(_image_patches(x, 2), conv, head, (12, 12))
    torch.testing.assert_close(c.mean.flatten(), maps.mean(dim=0), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(
        c.stderr.flatten(), maps.std(dim=0) / math.sqrt(50), rtol=1e-10, atol=1e-15
    )


def test_running_merge_equals_direct_statistics():
    # batch_size=1: the block-by-block merge must give the plain mean and standard error.
    x = _image()
    gen = torch.Generator().manual_seed(11)
    mc = monte_carlo_gradcam(x, 16, 2, 1.0, 20, gen, batch_size=1)
    gen = torch.Generator().manual_seed(11)
    patches = _image_patches(x, 2)
    maps = torch.cat(
        [_gradcam_samples(patches, *_sample_weights(1, 16, 2, 3, 6, 1.0, gen, x.device), (12, 12))
         for _ in range(20)]
    )  # fmt: skip
    torch.testing.assert_close(mc.mean.flatten(), maps.mean(dim=0), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(
        mc.stderr.flatten(), maps.std(dim=0) / math.sqrt(20), rtol=1e-10, atol=1e-15
    )


def test_bad_arguments():
    x = _image()
    with pytest.raises(CamwallError, match="at least 2"):
        monte_carlo_gradcam(x, 8, 2, samples=1)
    with pytest.raises(CamwallError, match="batch_size"):
        monte_carlo_gradcam(x, 8, 2, samples=4, batch_size=0)
    with pytest.raises(CamwallError, match="head_sampling"):
        monte_carlo_gradcam(x, 8, 2, samples=4, head_sampling="nope")  # type: ignore[arg-type]
    with pytest.raises(CamwallError, match="NaN"):
        monte_carlo_gradcam(torch.full((13, 13), float("nan")), 8, 2, samples=4)
