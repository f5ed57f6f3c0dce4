"""Exact dead zones: hand-derived for the paper's models, brute force for ResNet18."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camwall.errors import CamwallError
from camwall.walls import (
    Wall,
    WallSpec,
    create_model,
    dead_zone,
    dead_zone_summary,
    insert_wall,
    simple_cnn,
    verify_wall,
)


def _rows(h: int, w: int, first_dead: int) -> Tensor:
    zone = torch.zeros(h, w, dtype=torch.bool)
    zone[first_dead:] = True
    return zone


def test_walled_vgg16_dead_zone_is_rows_170_to_223_and_holds() -> None:
    from camwall.walls import walled_vgg16

    model = walled_vgg16()
    zone = dead_zone(model, (3, 224, 224))
    assert torch.equal(zone, _rows(224, 224, 170))
    info = dead_zone_summary(zone)
    assert info["rows"] == [[170, 224]]
    assert info["pixels"] == 54 * 224
    check = verify_wall(model, zone, trials=1, generator=torch.Generator().manual_seed(1))
    assert check.ok
    assert check.max_logit_change == 0.0
    assert check.max_dead_grad == 0.0
    assert check.live_grad_max > 0.0
    # The baseline sees everything.
    del model
    assert not dead_zone(walled_vgg16(walled=False), (3, 224, 224)).any()


def test_simple_cnn_dead_zone_is_the_bottom_14_rows() -> None:
    # Pooled row p = max of conv rows 2p, 2p+1; conv row r reads input rows r, r+1 (k = 2).
    # So pooled rows 0..6 (live) read input rows 0..14; rows 15..28 are dead.
    torch.manual_seed(0)
    model = simple_cnn(channels=32)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()  # the paper's N(0, 1) weights
    model[4].enforce()
    zone = dead_zone(model, (1, 29, 29))
    assert torch.equal(zone, _rows(29, 29, 15))
    x = torch.rand(5, 1, 29, 29)
    x_zeroed = x.clone()
    x_zeroed[:, :, 15:] = 0
    with torch.no_grad():
        assert torch.equal(model(x), model(x_zeroed))
        x_row14 = x.clone()
        x_row14[:, :, 14] += 1
        assert not torch.equal(model(x), model(x_row14))  # row 14 is live
    assert verify_wall(model, zone, trials=4).ok


@pytest.mark.parametrize(("name", "first_dead"), [("fashion-vgg", 39), ("fashion-resnet", 37)])
def test_fashion_models_dead_zone_as_documented(name: str, first_dead: int) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    zone = dead_zone(model, (1, 64, 64))
    assert torch.equal(zone, _rows(64, 64, first_dead))
    check = verify_wall(model, zone, trials=4, generator=torch.Generator().manual_seed(2))
    assert check.ok
    assert check.dead_pixels == (64 - first_dead) * 64
    assert check.live_grad_max > 0
    assert sum(p.numel() for p in model.parameters()) < 500_000
    assert model(torch.rand(3, 1, 64, 64)).shape == (3, 10)
    assert not dead_zone(create_model(name, walled=False), (1, 64, 64)).any()


def _brute_force_live(model: nn.Module, shape: tuple[int, int, int], seeds: int) -> Tensor:
    """Union of the input-gradient support over random weights and inputs (float64)."""
    c, h, w = shape
    live = torch.zeros(h, w, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    for _ in range(seeds):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
        x = torch.randn(3, c, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(model(x).sum(), x)
        live |= (grad != 0).any(0).any(0)
    return live


def test_resnet18_with_two_walls_matches_brute_force_gradient_support() -> None:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=4)
    insert_wall(model, "layer2", WallSpec(rows=(3, None)))  # 12 x 12 map at 96 x 96
    insert_wall(model, "layer3", WallSpec(rows=(0, 1), cols=(-2, None)))  # 6 x 6 map
    model = model.double().eval()
    zone = dead_zone(model, (3, 96, 96))
    live = _brute_force_live(model, (3, 96, 96), seeds=2)
    assert torch.equal(zone, ~live)
    assert dead_zone_summary(zone)["rows"] == [[66, 96]]
    assert verify_wall(model, zone, trials=2).ok


def test_squeezenet_ignores_its_last_row_and_column_at_64_pixels() -> None:
    # No wall: a 7 x 7 stride-2 conv without padding and ceil-mode max-pools never reach the
    # last row and column of a 64 x 64 input. Brute force agrees.
    from torchvision.models import squeezenet1_0

    torch.manual_seed(0)
    model = squeezenet1_0(weights=None, num_classes=3).double().eval()
    zone = dead_zone(model, (3, 64, 64))
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[63] = True
    expected[:, 63] = True
    assert torch.equal(zone, expected)
    assert torch.equal(zone, ~_brute_force_live(model, (3, 64, 64), seeds=1))


def test_structural_dead_zone_ignores_dead_relus_and_weight_values() -> None:
    model = create_model("fashion-vgg")
    with torch.no_grad():
        model[6].bias.fill_(-1e3)  # every ReLU after conv 6 is off: the output is constant
    x = torch.rand(2, 1, 64, 64, requires_grad=True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    assert torch.count_nonzero(grad) == 0
    assert torch.equal(dead_zone(model, (1, 64, 64)), _rows(64, 64, 39))


def test_batchnorm_caveat_eval_mode_is_used_and_modes_are_restored() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        Wall(WallSpec(rows=(6, None))),
        nn.Flatten(),
        nn.Linear(4 * 12 * 12, 3),
    )
    model.train()
    zone = dead_zone(model, (1, 12, 12))
    assert torch.equal(zone, _rows(12, 12, 7))
    assert all(m.training for m in model.modules())
    assert verify_wall(model, zone, trials=3).ok
    assert all(m.training for m in model.modules())
    # In train mode, batch statistics read the dead zone: the wall does not hold.
    x = torch.rand(4, 1, 12, 12)
    x2 = x.clone()
    x2[:, :, 7:] = 5.0
    assert not torch.equal(model(x), model(x2))


def test_plain_linear_with_zero_columns_is_a_wall() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 2))
    with torch.no_grad():
        model[3].weight.view(2, 2, 6, 6)[:, :, :, 4:] = 0  # columns 4, 5 of the map
    zone = dead_zone(model, (1, 8, 8))
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:, 6:] = True  # map column c reads input columns c..c+2
    assert torch.equal(zone, expected)
    assert verify_wall(model, zone, trials=2).ok


def test_pools_strides_dilation_and_padding_modes() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2, padding=2, dilation=2, padding_mode="reflect"),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.AdaptiveMaxPool2d((4, 4)),
        Wall(WallSpec(rows=(2, None))),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2, 2),
    )
    zone = dead_zone(model, (1, 23, 23))
    live = _brute_force_live(model.double(), (1, 23, 23), seeds=6)
    assert torch.equal(zone, ~live)
    assert zone.any()
    assert not zone.all()


class _FunctionalPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(self.conv(x), 2).flatten(1)


class _OwnParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * self.scale


class _Tuple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        return [self.conv(x)], x  # a first item that is not a tensor: no logits to read


def test_clear_errors_for_what_cannot_be_analyzed() -> None:
    with pytest.raises(CamwallError, match="uses its own parameters"):
        dead_zone(_OwnParameter(), (1, 8, 8))
    with pytest.raises(CamwallError, match="type Upsample"):
        dead_zone(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2)), (1, 8, 8))
    with pytest.raises(CamwallError, match="functional call 'max_pool2d'"):
        dead_zone(_FunctionalPool(), (1, 8, 8))
    with pytest.raises(CamwallError, match="returns a tuple"):
        dead_zone(_Tuple(), (1, 8, 8))
    with pytest.raises(CamwallError, match=r"input_shape must be \(C, H, W\)"):
        dead_zone(nn.Conv2d(1, 1, 3), (8, 8))
    with pytest.raises(CamwallError, match="cannot run on an input of shape"):
        dead_zone(create_model("fashion-vgg"), (1, 32, 32))
    # The model is left unpatched after an error.
    m = _FunctionalPool()
    with pytest.raises(CamwallError):
        dead_zone(m, (1, 8, 8))
    assert "forward" not in m.conv.__dict__


def test_works_inside_no_grad() -> None:
    model = create_model("fashion-resnet", width=4)
    with torch.no_grad():
        zone = dead_zone(model, (1, 64, 64))
        assert verify_wall(model, zone, trials=1).ok
    assert dead_zone_summary(zone)["rows"] == [[37, 64]]


def test_verify_wall_catches_a_false_dead_zone() -> None:
    model = create_model("fashion-vgg")
    zone = _rows(64, 64, 36)  # rows 36..38 are live
    check = verify_wall(model, zone, trials=2)
    assert not check.ok
    assert check.max_logit_change > 0
    assert check.max_dead_grad > 0
    with pytest.raises(CamwallError, match="bool \\[H, W\\]"):
        verify_wall(model, zone.float())
