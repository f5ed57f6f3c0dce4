"""Property test: on random linear CNNs the structural dead zone equals the gradient support."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from camwall.walls import Wall, WallSpec, dead_zone

conv_args = st.tuples(
    st.integers(1, 4),  # kernel
    st.integers(1, 3),  # stride
    st.integers(0, 2),  # padding
    st.integers(1, 2),  # dilation
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    convs=st.lists(conv_args, min_size=1, max_size=3),
    pool=st.booleans(),
    size=st.integers(10, 24),
    wall=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(1, 3), st.integers(1, 3)),
    seed=st.integers(0, 2**16),
)
def test_dead_zone_equals_gradient_support_of_random_linear_cnns(
    convs: list[tuple[int, int, int, int]],
    pool: bool,
    size: int,
    wall: tuple[int, int, int, int],
    seed: int,
) -> None:
    # Without ReLUs or max-pools the network is linear: with random float64 weights its input
    # gradient is non-zero exactly on the structurally connected pixels (almost surely).
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    ch = 1
    for k, s, p, d in convs:
        layers.append(nn.Conv2d(ch, 2, k, stride=s, padding=p, dilation=d))
        ch = 2
    if pool:
        layers.append(nn.AvgPool2d(2, stride=1, padding=1))
    body = nn.Sequential(*layers).double()
    try:
        feat = body(torch.zeros(1, 1, size, size, dtype=torch.float64))
    except RuntimeError:
        assume(False)
        raise
    h, w = feat.shape[-2:]
    r0, c0, rn, cn = wall
    assume(r0 < h and c0 < w)
    spec = WallSpec(rows=(r0, r0 + rn), cols=(c0, c0 + cn))
    model = nn.Sequential(body, Wall(spec), nn.Flatten(), nn.Linear(2 * h * w, 3)).double()
    x = torch.randn(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    assert torch.equal(dead_zone(model, (1, size, size)), grad[0, 0] == 0)


@pytest.mark.parametrize("groups", [1, 2])
def test_grouped_convs_keep_channels_apart(groups: int) -> None:
    # A grouped conv reads only its group's input channels: walling channel-free maps is still
    # exact, and the analysis must not mix groups.
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, groups=groups),
        Wall(WallSpec(cols=(0, 4))),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 2),
    ).double()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    expected = (grad == 0).all(0).all(0)
    zone = dead_zone(model, (2, 8, 8))
    assert torch.equal(zone, expected)
    assert zone[:, :3].all()
    assert not zone[:, 3:].any()
