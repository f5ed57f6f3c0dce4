"""The simple CNN: sizes, the wall, and the dead rows derived from the structure."""

import pytest
import torch

from camwall.errors import CamwallError
from camwall.theory import SimpleCNN, conv_output_size, default_wall_rows
from camwall.walls import WalledLinear, WallSpec, dead_zone, simple_cnn


def _live_input_rows(model: SimpleCNN, trials: int = 3) -> set[int]:
    """Input rows where some output has a non-zero gradient (an empirical support)."""
    rows: set[int] = set()
    for t in range(trials):
        x = torch.rand(1, 1, *model.input_size, generator=torch.Generator().manual_seed(t))
        x = x.double().requires_grad_(True)
        out = model(x)
        for o in range(out.shape[1]):
            (g,) = torch.autograd.grad(out[0, o], x, retain_graph=True)
            rows |= {int(r) for r in torch.nonzero(g[0, 0].abs().sum(dim=1)).flatten()}
    return rows


def test_sizes_and_default_wall():
    assert conv_output_size((29, 29), 2) == (28, 28, 14, 14)
    assert conv_output_size((13, 16), 3) == (11, 14, 5, 7)
    assert default_wall_rows(14) == tuple(range(7, 14))
    assert default_wall_rows(7) == (4, 5, 6)  # p >= 3.5
    model = SimpleCNN(4, 2, (29, 29))
    assert model.wall_rows == tuple(range(7, 14))
    assert model.depth == 1
    assert SimpleCNN(4, 2, (29, 29), hidden=(5, 6)).depth == 3


def test_wall_weights_are_zero_and_stay_zero():
    model = SimpleCNN(3, 2, (13, 13), outputs=4)  # h' = w' = 6, wall rows 3..5
    model.reset_gaussian_(1.0, torch.Generator().manual_seed(0))
    first = model.head[0]
    w = first.weight.detach().reshape(4, 3, 6, 6)
    assert torch.all(w[:, :, 3:, :] == 0)
    assert torch.all(w[:, :, :3, :] != 0)
    with torch.no_grad():
        first.weight.add_(1.0)  # an optimizer step that ignores the wall
    eff = model.head_weights()[0].reshape(4, 3, 6, 6)
    assert torch.all(eff[:, :, 3:, :] == 0)
    assert torch.all(eff[:, :, :3, :] == first.weight.reshape(4, 3, 6, 6)[:, :, :3, :])


@pytest.mark.parametrize(
    ("size", "k", "wall_rows", "dead"),
    [
        ((29, 29), 2, None, tuple(range(15, 29))),  # the at-init experiment
        ((13, 13), 2, None, tuple(range(7, 13))),  # h'=6, live pooled rows 0..2 reach row 6
        ((16, 12), 3, (5, 6), tuple(range(12, 16))),  # h=14, h'=7: live rows reach 9+2=11
        ((14, 14), 3, (0,), (0, 1)),  # a wall on top
    ],
)
def test_dead_rows_match_gradient_support(size, k, wall_rows, dead):
    model = SimpleCNN(6, k, size, hidden=(5,), outputs=3, wall_rows=wall_rows).double()
    model.reset_gaussian_(1.0, torch.Generator().manual_seed(1))
    assert model.dead_input_rows() == dead
    live = _live_input_rows(model)
    assert live == set(range(size[0])) - set(dead)


def test_unwalled_has_no_dead_rows():
    model = SimpleCNN(3, 2, (12, 12), walled=False)
    assert model.wall_rows == ()
    # h = 11 is odd: floor pooling never reads activation row 10, so input row 11 is dead.
    assert model.dead_input_rows() == (11,)


def test_bad_arguments():
    with pytest.raises(CamwallError, match="max-pool 2x2 needs at least 2x2"):
        SimpleCNN(3, 5, (5, 5))
    with pytest.raises(CamwallError, match="outside the 6 pooled rows"):
        SimpleCNN(3, 2, (13, 13), wall_rows=(6,))
    with pytest.raises(CamwallError, match="walled=False"):
        SimpleCNN(3, 2, (13, 13), walled=False, wall_rows=(1,))
    with pytest.raises(CamwallError, match=">= 1"):
        SimpleCNN(0, 2, (13, 13))
    with pytest.raises(CamwallError, match="have a gap"):
        SimpleCNN(3, 2, (13, 13), wall_rows=(3, 5))
    with pytest.raises(CamwallError, match="empty"):
        SimpleCNN(3, 2, (13, 13), wall_rows=())


def test_the_wall_is_the_librarys():
    model = SimpleCNN(3, 3, (16, 12), wall_rows=(5, 6))  # h' = 7: rows 5..6 reach the end
    first = model.head[0]
    assert isinstance(first, WalledLinear)
    assert first.feature_shape == (3, 7, 5)
    assert model.wall == WallSpec(rows=(5, None))
    assert SimpleCNN(3, 3, (16, 12), wall_rows=(2, 3)).wall == WallSpec(rows=(2, 4))
    assert SimpleCNN(3, 2, (13, 13), walled=False).wall is None
    # the dead rows are the fully dead rows of the library's dead zone
    zone = dead_zone(model, (1, 16, 12))
    assert model.dead_input_rows() == tuple(range(12, 16))
    assert torch.equal(zone.all(dim=1), torch.arange(16) >= 12)


@pytest.mark.parametrize("walled", [True, False])
def test_same_network_as_the_registered_simple_cnn(walled):
    # The paper's CNN at 29x29, k=2, L=1 is camwall.walls.simple_cnn, with named layers.
    ours = SimpleCNN(8, 2, (29, 29), outputs=10, walled=walled).double()
    ours.reset_gaussian_(1.0, torch.Generator().manual_seed(0))
    ref = simple_cnn(num_classes=10, walled=walled, channels=8).double()
    assert [type(m) for m in ours[:4]] == [type(m) for m in ref[:4]]
    assert type(ours.head[0]) is type(ref[4])
    assert len(ours.head) == 1
    if walled:
        assert ours.wall == ref[4].wall
        assert ours.head[0].feature_shape == ref[4].feature_shape
    assert torch.equal(dead_zone(ours, (1, 29, 29)), dead_zone(ref, (1, 29, 29)))
    with torch.no_grad():
        ref[0].weight.copy_(ours.conv.weight)
        ref[4].weight.copy_(ours.head[0].weight)
        x = torch.rand(4, 1, 29, 29, generator=torch.Generator().manual_seed(1)).double()
        assert torch.equal(ours(x), ref(x))
