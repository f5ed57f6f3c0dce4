"""The fashion-grid-vgg preset (per-cell loss) and the shipped grid model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from camwall.data import fashion_grids
from camwall.train import PRESETS, grid_accuracy
from camwall.train._accuracy import per_cell
from camwall.walls import dead_zones, load_model, verify_wall
from camwall.weights import shipped_manifest, shipped_model


def test_grid_preset() -> None:
    config = PRESETS.get("fashion-grid-vgg")
    assert config.arch == "fashion-grid-vgg"
    assert config.dataset == "fashion-grid"
    assert dict(config.arch_kwargs) == {"width": 8}


def test_per_cell_cross_entropy_is_the_cells_mean() -> None:
    """F.cross_entropy on the per-cell view = the mean of the four cells' own losses."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 40, generator=gen)
    labels = torch.randint(0, 10, (5, 4), generator=gen)
    view = per_cell(logits, labels)
    assert view.shape == (5, 10, 4)
    by_cell = [F.cross_entropy(logits[:, 10 * k : 10 * k + 10], labels[:, k]) for k in range(4)]
    torch.testing.assert_close(F.cross_entropy(view, labels), torch.stack(by_cell).mean())
    assert torch.equal(view.argmax(1), logits.reshape(5, 4, 10).argmax(-1))
    single = torch.randint(0, 10, (5,))
    assert per_cell(logits[:, :10], single) is not None
    assert per_cell(logits[:, :10], single).shape == (5, 10)


@pytest.fixture(scope="module")
def shipped() -> tuple[torch.nn.Module, dict]:
    return load_model(shipped_model("fashion-grid-vgg"))


def test_shipped_grid_model_passes_verify_wall_per_output(shipped: tuple) -> None:
    model, meta = shipped
    assert meta["arch"] == "fashion-grid-vgg"
    assert meta["training"]["preset"] == "fashion-grid-vgg"
    zones = dead_zones(model, (1, 64, 64))
    assert [int(z.sum()) for z in zones[::10]] == [2247] * 4
    assert verify_wall(model, zones, trials=2).ok


def test_shipped_grid_model_reevaluates_to_its_recorded_accuracy(shipped: tuple) -> None:
    model, _ = shipped
    test = fashion_grids("test", seed=0, augment=False)
    items = test.__getitems__(list(range(len(test))))
    images = torch.stack([x for x, _ in items])
    labels = torch.stack([y for _, y in items])
    recorded = shipped_manifest("fashion-grid-vgg")["test_accuracy"]
    got = grid_accuracy(model, images, labels)
    assert got["n"] == recorded["n"] == 2500
    assert got["per_cell"] == recorded["per_cell"]
    assert got["top1"] == recorded["top1"]
    assert got["top1"] > 0.85
