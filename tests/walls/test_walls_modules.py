"""WallSpec, Wall, WalledLinear, insert_wall, wall_head, enforce_walls."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from camwall.errors import CamwallError
from camwall.walls import (
    Wall,
    WalledLinear,
    WallSpec,
    create_model,
    enforce_walls,
    insert_wall,
    wall_head,
    walls_of,
)


@pytest.mark.parametrize(
    ("spec", "rows", "cols"),
    [
        (WallSpec(rows=(5, None)), range(5, 14), range(14)),
        (WallSpec.bottom(9), range(5, 14), range(14)),
        (WallSpec(cols=(0, 3)), range(14), range(3)),
        (WallSpec(rows=(2, 4), cols=(-3, -1)), range(2, 4), range(11, 13)),
    ],
)
def test_wallspec_blocked_is_the_slice(spec: WallSpec, rows: range, cols: range) -> None:
    expected = torch.zeros(14, 14, dtype=torch.bool)
    for r in rows:
        for c in cols:
            expected[r, c] = True
    assert torch.equal(spec.blocked(14, 14), expected)
    assert WallSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_wallspec_rejects_bad_regions() -> None:
    with pytest.raises(CamwallError, match="rows, cols or both"):
        WallSpec()
    with pytest.raises(CamwallError, match="not a \\(start, stop\\) pair"):
        WallSpec(rows=5)  # type: ignore[arg-type]
    with pytest.raises(CamwallError, match="blocks nothing on a 4 x 4"):
        WallSpec(rows=(10, None)).blocked(4, 4)
    with pytest.raises(CamwallError, match="unknown keys"):
        WallSpec.from_dict({"rows": [1, 2], "rowz": [1, 2]})
    assert WallSpec(rows=[1, 2]).rows == (1, 2)  # type: ignore[arg-type]


def test_wall_zeroes_region_and_its_gradient_even_for_inf() -> None:
    wall = Wall(WallSpec(rows=(1, 3), cols=(2, None)))
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    x[0, 1, 2, 4] = float("inf")
    x.requires_grad_(True)
    y = wall(x)
    blocked = torch.zeros(4, 5, dtype=torch.bool)
    blocked[1:3, 2:] = True
    assert torch.equal(y[:, :, blocked], torch.zeros(2, 3, int(blocked.sum()), dtype=x.dtype))
    assert torch.equal(y[:, :, ~blocked], x[:, :, ~blocked])
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(grad, (~blocked).to(x.dtype).expand(2, 3, 4, 5))


def test_walled_linear_masks_flatten_order_and_keeps_mask_on_conversion() -> None:
    lin = WalledLinear(2 * 3 * 4, 5, feature_shape=(2, 3, 4), wall=WallSpec(rows=(2, None)))
    w = lin.weight.detach().view(5, 2, 3, 4)
    assert torch.count_nonzero(w[:, :, 2:, :]) == 0
    assert torch.count_nonzero(w[:, :, :2, :]) == 5 * 2 * 2 * 4
    lin = lin.double()
    assert lin.keep.dtype == torch.bool
    assert torch.equal(lin.keep.view(2, 3, 4)[:, 2], torch.zeros(2, 4, dtype=torch.bool))
    x = torch.randn(3, 24, dtype=torch.float64)
    x2 = x.view(3, 2, 3, 4).clone()
    x2[:, :, 2] = 1e6
    assert torch.equal(lin(x), lin(x2.view(3, 24)))
    with pytest.raises(CamwallError, match="has 24 values but in_features is 23"):
        WalledLinear(23, 5, feature_shape=(2, 3, 4), wall=WallSpec(rows=(2, None)))


def test_walls_survive_sgd_with_momentum_and_weight_decay() -> None:
    torch.manual_seed(0)
    model = create_model("fashion-vgg")
    head = model[11]
    assert isinstance(head, WalledLinear)
    before = head.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, y = torch.rand(4, 1, 64, 64), torch.tensor([0, 1, 2, 3])
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        assert enforce_walls(model) == 0  # the zero gradient kept them at 0
    walled = head.weight.detach().view(64, 16, 16, 16)[:, :, 7:]
    assert torch.count_nonzero(walled) == 0
    assert not torch.equal(head.weight.detach(), before)  # the live weights did learn
    with torch.no_grad():
        head.weight.view(64, 16, 16, 16)[3, 2, 9, 4] = 0.5
    assert not head.wall_intact()
    assert enforce_walls(model) == 1
    assert head.wall_intact()


def test_insert_wall_after_resnet_layer_and_records_it() -> None:
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=10)
    layer2 = model.layer2
    wall = insert_wall(model, "layer2", WallSpec(rows=(4, None)))
    assert isinstance(model.layer2, nn.Sequential)
    assert model.layer2[0] is layer2
    assert model.layer2[1] is wall
    assert walls_of(model) == [
        {"kind": "wall", "layer": "layer2", "region": {"rows": [4, None], "cols": None}}
    ]
    feats = {}
    model.layer2.register_forward_hook(lambda m, i, o: feats.setdefault("o", o))
    model.eval()
    model(torch.rand(1, 3, 64, 64))
    assert torch.count_nonzero(feats["o"][:, :, 4:]) == 0
    assert torch.count_nonzero(feats["o"][:, :, :4]) > 0
    with pytest.raises(CamwallError, match="Did you mean 'layer3'"):
        insert_wall(model, "layer33", WallSpec(rows=(1, None)))


def test_wall_head_copies_weights_and_zeroes_region() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    old = model[2].weight.detach().clone()
    head = wall_head(model, "2", (2, 4, 4), WallSpec(cols=(0, 1)))
    assert model[2] is head
    w = head.weight.detach().view(3, 2, 4, 4)
    assert torch.count_nonzero(w[..., 0]) == 0
    assert torch.equal(w[..., 1:], old.view(3, 2, 4, 4)[..., 1:])
    with pytest.raises(CamwallError, match=r"is a Conv2d, not nn\.Linear"):
        wall_head(model, "0", (2, 4, 4), WallSpec(cols=(0, 1)))
