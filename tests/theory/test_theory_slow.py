"""Extended checks behind the ``slow`` marker (``make test-slow``)."""

import pytest
import torch

from camwall.cams import compute_cams, finalize_maps
from camwall.data import load_fashion_mnist
from camwall.theory import (
    SimpleCNN,
    expected_gradcam,
    gradcam_autograd,
    gradcam_closed_form,
    monte_carlo_gradcam,
    theorem3_bound,
)
from camwall.theory._at_init import pad_to_29

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", range(10, 30))
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_closed_form_more_seeds(seed, depth):
    gen = torch.Generator().manual_seed(seed)
    k = int(torch.randint(1, 4, (1,), generator=gen))
    size = (
        int(torch.randint(8, 20, (1,), generator=gen)),
        int(torch.randint(8, 20, (1,), generator=gen)),
    )
    model = SimpleCNN(5, k, size, hidden=(6,) * (depth - 1), outputs=3, walled=seed % 2 == 0)
    model = model.double()
    model.reset_gaussian_(1.0, gen)
    x = torch.rand(4, 1, *size, generator=gen, dtype=torch.float64)
    cf, ag = gradcam_closed_form(model, x), gradcam_autograd(model, x)
    scale = ag.alpha.abs().max()
    assert float((cf.alpha - ag.alpha).abs().max()) <= 1e-12 * float(scale)
    assert float((cf.cam - ag.cam).abs().max()) <= 1e-12 * max(float(ag.cam.abs().max()), 1e-300)
    maps = compute_cams(model, x, "relu", ["gradcam"])["gradcam"]  # the library's, post-processed
    torch.testing.assert_close(maps, finalize_maps(cf.cam, size), rtol=0, atol=2e-5)


@pytest.mark.parametrize("v", [512, 1024])
def test_full_size_fashion_item(v):
    items, _ = load_fashion_mnist("test")
    x = pad_to_29(items[:1])[0, 0].double()
    mc = monte_carlo_gradcam(x, v, 2, 1.0, 4000, torch.Generator().manual_seed(v))
    exact = expected_gradcam(x, v, 2)
    assert torch.all((mc.mean - exact).abs() <= 4 * mc.stderr)
    bound = theorem3_bound(x, v, 2)
    assert torch.all(bound <= exact)
    assert torch.all(bound[14:][exact[14:] > 0] > 0)
