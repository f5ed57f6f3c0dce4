"""Walls on any region, per output: WallSpec bands/boxes/outsides/masks, per-output
WalledLinear, dead_zone(target=), dead_zones, verify_wall per output, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from camwall.errors import CamwallError
from camwall.walls import (
    WalledLinear,
    WallSpec,
    cell_walls,
    create_model,
    dead_zone,
    dead_zones,
    enforce_walls,
    load_model,
    model_kind,
    model_task,
    output_groups,
    save_model,
    verify_wall,
)

SHAPE = (1, 64, 64)


@pytest.fixture(scope="module")
def grid() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("fashion-grid-vgg").eval()


def _blocked(spec: WallSpec, h: int = 4, w: int = 5) -> list[list[int]]:
    return spec.blocked(h, w).int().tolist()


def test_bands_on_every_side_boxes_outsides_and_masks() -> None:
    assert _blocked(WallSpec.top(1), 3, 3) == [[1, 1, 1], [0, 0, 0], [0, 0, 0]]
    assert _blocked(WallSpec.bottom(1), 3, 3) == [[0, 0, 0], [0, 0, 0], [1, 1, 1]]
    assert _blocked(WallSpec.left(1), 2, 3) == [[1, 0, 0], [1, 0, 0]]
    assert _blocked(WallSpec.right(2), 2, 3) == [[0, 1, 1], [0, 1, 1]]
    box = WallSpec(rows=(0, 1), cols=(1, 3))
    assert _blocked(box, 2, 3) == [[0, 1, 1], [0, 0, 0]]
    outside = WallSpec(rows=(0, 1), cols=(1, 3), outside=True)
    assert _blocked(outside, 2, 3) == [[1, 0, 0], [1, 1, 1]]
    mask = WallSpec(mask=("01", "10"))
    assert _blocked(mask, 2, 2) == [[0, 1], [1, 0]]
    assert WallSpec.from_mask(torch.tensor([[False, True], [True, False]])) == mask


def test_json_round_trip_keeps_old_form() -> None:
    assert WallSpec(rows=(7, None)).to_dict() == {"rows": [7, None], "cols": None}
    for spec in (
        WallSpec(rows=(7, None)),
        WallSpec(rows=(0, 4), cols=(4, 8), outside=True),
        WallSpec(mask=("0011", "1100")),
    ):
        assert WallSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mask": ("01", "1")}, "same length"),
        ({"mask": ("00",)}, "blocks nothing"),
        ({"mask": ("01",), "rows": (0, 1)}, "not both"),
        ({"rows": (0, 1), "outside": "yes"}, "true or false"),
    ],
)
def test_bad_specs_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(CamwallError, match=match):
        WallSpec(**kwargs)  # type: ignore[arg-type]


def test_mask_of_wrong_size_is_refused() -> None:
    with pytest.raises(CamwallError, match="mask is 1 x 2 but the feature map is 2 x 2"):
        WallSpec(mask=("01",)).blocked(2, 2)


def _per_output_layer() -> WalledLinear:
    torch.manual_seed(1)
    walls = cell_walls(2)  # a 2 x 2 map: group k reads only cell k
    return WalledLinear(2 * 2 * 2, 8, feature_shape=(2, 2, 2), wall=walls)


def test_per_output_linear_matches_hand_computation() -> None:
    layer = _per_output_layer()
    x = torch.randn(3, 8)
    w, b = layer.weight.detach(), layer.bias.detach()
    expected = torch.empty(3, 8)
    for g in range(4):
        keep = torch.zeros(2, 2, 2, dtype=torch.bool)
        keep[:, g // 2, g % 2] = True
        rows = slice(2 * g, 2 * g + 2)
        expected[:, rows] = (x * keep.reshape(-1)) @ w[rows].T + b[rows]
        # the walled weights are exactly zero: only the 2 channels of cell g are non-zero
        assert int(torch.count_nonzero(w[rows][:, ~keep.reshape(-1)])) == 0
    torch.testing.assert_close(layer(x), expected, rtol=1e-6, atol=1e-6)


def test_per_output_walled_weights_get_zero_gradient_and_are_enforced() -> None:
    layer = _per_output_layer()
    layer(torch.randn(5, 8)).square().sum().backward()
    assert layer.weight.grad is not None
    assert layer.walled_stats(layer.weight.grad)[0] == 0
    with torch.no_grad():
        layer.weight[0, 7] = 3.0  # output 0 (cell 0) reading cell 3: a walled weight
    assert layer.walled_stats() == (1, 3.0)
    assert not layer.wall_intact()
    assert enforce_walls(torch.nn.Sequential(layer)) == 1
    assert layer.wall_intact()


def test_per_output_walls_need_equal_groups() -> None:
    with pytest.raises(CamwallError, match="equal groups"):
        WalledLinear(8, 6, feature_shape=(2, 2, 2), wall=cell_walls(2))


def test_grid_model_declares_its_task_and_kind(grid: torch.nn.Module) -> None:
    assert model_task(grid) == {"name": "grid", "cells": [2, 2], "classes": 10}
    assert model_kind(grid) == "grid"
    assert output_groups(grid) == [(0, 10), (10, 20), (20, 30), (30, 40)]
    fv = create_model("fashion-vgg", width=8)
    assert model_task(fv) == {"name": "single"}
    assert model_kind(fv) == "CNN"
    assert output_groups(fv) == []
    assert model_kind(meta={"arch": "fashion-vit"}) == "ViT"


def _expected_live(cell: int) -> torch.Tensor:
    """Cell ``cell``'s 32 x 32 square plus the 11-pixel margin of the receptive field."""
    r, c = divmod(cell, 2)
    live = torch.zeros(64, 64, dtype=torch.bool)
    rows = slice(0, 43) if r == 0 else slice(21, 64)
    cols = slice(0, 43) if c == 0 else slice(21, 64)
    live[rows, cols] = True
    return live


def test_grid_dead_zone_per_output_is_the_other_cells_minus_the_margin(
    grid: torch.nn.Module,
) -> None:
    zones = dead_zones(grid, SHAPE)
    assert zones.shape == (40, 64, 64)
    for o in range(40):
        assert torch.equal(zones[o], ~_expected_live(o // 10)), o
        assert torch.equal(dead_zone(grid, SHAPE, target=o), zones[o])
    assert torch.equal(dead_zone(grid, SHAPE, target=range(10, 20)), zones[10])
    assert int(zones[0].sum()) == 4096 - 43 * 43
    assert not bool(dead_zone(grid, SHAPE).any())  # every pixel reaches some cell
    # the baseline's outputs see everything
    assert not bool(dead_zone(create_model("fashion-grid-vgg", walled=False), SHAPE, 0).any())


def test_structural_dead_zones_match_brute_force_gradient_support(
    grid: torch.nn.Module,
) -> None:
    """Input gradients of each output over 32 random inputs: their support is exactly the
    structural live zone (no live pixel without a gradient, no gradient on a dead pixel)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(32, *SHAPE, generator=gen).requires_grad_(True)
    out = grid(x)
    zones = dead_zones(grid, SHAPE)
    for o in range(40):
        (g,) = torch.autograd.grad(out[:, o].sum(), x, retain_graph=True)
        support = g.abs().sum((0, 1)) > 0
        assert torch.equal(support, ~zones[o]), (o, int((support == zones[o]).sum()))


def test_verify_wall_per_output(grid: torch.nn.Module) -> None:
    zones = dead_zones(grid, SHAPE)
    check = verify_wall(grid, zones, trials=2)
    assert check.ok
    assert check.max_logit_change == 0.0
    assert check.max_dead_grad == 0.0
    assert check.live_grad_max > 0
    assert check.dead_pixels == 4 * 2247  # four distinct zones
    assert verify_wall(grid, zones[13], trials=2, target=range(10, 20)).ok
    # cell 1's zone claimed for cell 0's outputs: cell 0's own pixels are in it
    wrong = verify_wall(grid, zones[13], trials=2, target=3)
    assert not wrong.ok
    assert wrong.max_logit_change > 0
    assert wrong.max_dead_grad > 0


def test_bad_targets_are_refused(grid: torch.nn.Module) -> None:
    with pytest.raises(CamwallError, match="not an output index"):
        dead_zone(grid, SHAPE, target=40)
    with pytest.raises(CamwallError, match="not an output index"):
        dead_zone(grid, SHAPE, target=[])
    with pytest.raises(CamwallError, match="omit it"):
        verify_wall(grid, dead_zones(grid, SHAPE), trials=1, target=0)


def test_grid_checkpoint_records_per_output_walls_and_refuses_tampering(
    grid: torch.nn.Module, tmp_path: Path
) -> None:
    path = save_model(grid, tmp_path / "g")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["task"] == {"name": "grid", "cells": [2, 2], "classes": 10}
    assert meta["kind"] == "grid"
    first = meta["wall"][0]
    assert first["layer"] == "12"
    assert len(first["per_output"]) == 4
    assert first["per_output"][1] == {
        "outputs": [64, 128],
        "region": {"rows": [0, 4], "cols": [4, 8], "outside": True},
    }
    assert [z["outputs"] for z in meta["output_dead_zones"]] == [
        [0, 10],
        [10, 20],
        [20, 30],
        [30, 40],
    ]
    assert meta["output_dead_zones"][0]["rows"] == [[43, 64]]
    assert meta["output_dead_zones"][0]["pixels"] == 2247
    loaded, _ = load_model(path)
    x = torch.rand(2, *SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded(x), grid(x))
    # a widened wall in the JSON
    meta["wall"][0]["per_output"][1]["region"]["cols"] = [0, 8]
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CamwallError, match="metadata was modified"):
        load_model(path)
    # a walled weight made non-zero in the safetensors file
    path2 = save_model(grid, tmp_path / "h")
    state = load_file(str(path2))
    state["12.weight"][0, 5] = 0.5  # hidden unit 0 (cell 0) reading block column 5 (cell 1)
    save_file(state, str(path2))
    with pytest.raises(CamwallError, match="wall of layer '12' is broken"):
        load_model(path2)


def test_deadzone_cli_per_output(capsys: pytest.CaptureFixture[str]) -> None:
    from camwall.cli import main

    assert main(["deadzone", "--model", "fashion-grid-vgg", "--target", "13", "--trials", "1"]) == 0
    out = capsys.readouterr().out
    assert "output 13" in out
    assert "dead area: 2247 of 4096 pixels = 54.9%" in out
    assert "PASS" in out
    assert main(["deadzone", "--model", "fashion-grid-vgg", "--target", "40"]) == 2


def test_single_output_checkpoints_keep_their_json(tmp_path: Path) -> None:
    """No task/kind/output_dead_zones keys for models without them: the JSON of a band wall
    is written exactly as before (and the shipped pair loads unchanged, tests/bench)."""
    path = save_model(create_model("fashion-vgg", width=8), tmp_path / "fv")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert not {"task", "kind", "output_dead_zones"} & set(meta)
    assert meta["wall"] == [
        {
            "kind": "linear",
            "layer": "11",
            "feature_shape": [8, 16, 16],
            "region": {"rows": [7, None], "cols": None},
        }
    ]


def test_wall_grammar_has_outside() -> None:
    from camwall.walls import format_wall, parse_wall

    layer, spec = parse_wall("layer4:rows=0:4,cols=4:8,outside")
    assert (layer, spec) == ("layer4", WallSpec(rows=(0, 4), cols=(4, 8), outside=True))
    assert format_wall(layer, spec) == "layer4:rows=0:4,cols=4:8,outside"
    with pytest.raises(CamwallError, match="needs rows"):
        parse_wall("layer4:outside")
