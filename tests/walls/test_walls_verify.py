"""verify_wall beyond ordinary noise (issue 22 §3): extreme values in the dead zone, paths
that depend on the input, NaN gradients, and zones of the wrong shape."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from camwall.errors import CamwallError
from camwall.walls import (
    MaskedSoftmax,
    Wall,
    WallSpec,
    create_model,
    dead_zone,
    dead_zones,
    load_model,
    verify_wall,
)
from camwall.weights import shipped_model


class _Walled(nn.Module):
    """conv 3 x 3 -> ReLU -> Wall (feature rows 4..7 of 8) -> Linear: input rows 5..7 dead."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
        self.wall = Wall(WallSpec(rows=(4, None)))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.wall(self.body(x)))


class _ReadsDeadRowsWhenHuge(_Walled):
    """Reads the dead rows only when ``f.mean() > 1e9`` (the issue's model): the structural
    trace (all-ones input) and N(0, 100) noise never take the branch."""

    def forward(self, x: Tensor) -> Tensor:
        f = self.body(x)
        out = self.head(self.wall(f))
        if f.mean() > 1e9:
            out = out + f[:, :, 5:].mean()
        return out


class _OtherLayersWhenHuge(_Walled):
    """Runs a copy of its head when the input is huge: the same logits, another path."""

    def __init__(self) -> None:
        super().__init__()
        self.spare = nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 3))
        self.spare.load_state_dict(self.head.state_dict())

    def forward(self, x: Tensor) -> Tensor:
        f = self.wall(self.body(x))
        return self.spare(f) if x.abs().amax() > 1e20 else self.head(f)


class _NanGradient(_Walled):
    """Adds ``0 x sqrt|x_dead|``: the logits never change, but the gradient at a dead pixel
    of value 0 is ``0 x inf = NaN``, which must not read as 0."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + 0.0 * x[:, :, 5:].abs().sqrt().sum()


ZONE = torch.zeros(8, 8, dtype=torch.bool)
ZONE[5:] = True


def test_the_plain_walled_model_passes_with_extremes() -> None:
    model = _Walled()
    assert torch.equal(dead_zone(model, (1, 8, 8)), ZONE)
    check = verify_wall(model, ZONE, channels=1)
    assert check.ok
    assert check.extremes == 4
    assert check.notes == ()
    assert check.live_grad_max > 0


def test_a_branch_on_huge_values_is_caught() -> None:
    model = _ReadsDeadRowsWhenHuge()
    assert torch.equal(dead_zone(model, (1, 8, 8)), ZONE)  # the proof misses the branch
    with pytest.warns(UserWarning, match="^verify_wall: ") as warned:
        check = verify_wall(model, ZONE, channels=1)
    assert any("reads tensor values into Python (__bool__)" in str(w.message) for w in warned)
    assert not check.ok
    assert check.max_logit_change > 0
    assert any("__bool__" in n for n in check.notes)


def test_an_input_dependent_path_fails_even_with_equal_logits() -> None:
    with pytest.warns(UserWarning, match="^verify_wall: ") as warned:
        check = verify_wall(_OtherLayersWhenHuge(), ZONE, channels=1)
    assert any("ran other layers than the first" in str(w.message) for w in warned)
    assert not check.ok
    assert check.max_logit_change == 0.0
    assert check.max_dead_grad == 0.0


def test_a_nan_gradient_on_the_dead_zone_is_not_read_as_zero() -> None:
    check = verify_wall(_NanGradient(), ZONE, channels=1, trials=2)
    assert check.max_logit_change == 0.0
    assert check.max_dead_grad == float("inf")
    assert not check.ok


def test_the_shipped_vit_passes_with_extremes_and_the_plain_product_would_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, _ = load_model(shipped_model("fashion-vit"))
    zone = dead_zone(model, (1, 64, 64))
    check = verify_wall(model, zone, trials=2)
    assert check.ok
    assert check.extremes == 4
    monkeypatch.setattr(MaskedSoftmax, "read", lambda self, p, v: torch.matmul(p, v))
    leaky = verify_wall(model, zone, trials=2)  # 0 x inf: NaN logits at 1e30
    assert not leaky.ok
    assert leaky.max_logit_change == float("inf")


@pytest.mark.parametrize(
    ("zone", "match"),
    [
        (torch.zeros(32, 32, dtype=torch.bool), "cannot run on a 1 x 32 x 32 input"),
        (torch.zeros(3, 64, 64, dtype=torch.bool), "K = 3 for a model with 10 outputs"),
        (torch.zeros(64, 64), "must be a bool"),
    ],
)
def test_a_zone_of_the_wrong_shape_is_a_camwall_error(zone: Tensor, match: str) -> None:
    model = create_model("fashion-vgg", width=2)
    with pytest.raises(CamwallError, match=match):
        verify_wall(model, zone)


def test_per_output_zones_still_verify() -> None:
    model = create_model("fashion-grid-vgg", width=1)
    zones = dead_zones(model, (1, 64, 64))
    check = verify_wall(model, zones, trials=2)
    assert check.ok
    assert check.extremes == 4
