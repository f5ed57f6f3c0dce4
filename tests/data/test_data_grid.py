"""fashion-grid: 2 x 2 mosaics of four different-class test items, labels per cell."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from camwall.data import CELLS, DATASETS, cell_masks, fashion_grids, load_fashion_mnist
from camwall.data.canvas import place_items
from camwall.errors import CamwallError


@pytest.fixture(scope="module")
def built() -> object:
    return DATASETS.get("fashion-grid").build(n=40, seed=3)


def test_layout_labels_and_meta(built: object) -> None:
    comp = built
    assert comp.images.shape == (40, 1, 64, 64)  # type: ignore[attr-defined]
    assert comp.labels.shape == (40, CELLS)
    assert comp.labels.dtype == torch.int64
    for row in comp.labels.tolist():  # type: ignore[attr-defined]
        assert len(set(row)) == 4  # four different classes
    meta = comp.meta  # type: ignore[attr-defined]
    assert meta["version"] == 1
    assert meta["task"] == "grid"
    assert meta["cells"] == [2, 2]
    assert meta["source_split"] == "test"


def test_each_cell_is_its_item_placed_in_the_cell(built: object) -> None:
    """Cell k of image i equals the test item of ``sources[i]`` placed alone on a 32 x 32
    canvas at offset (2, 2), with the label of that item."""
    items, pool = load_fashion_mnist("test")
    comp = built
    for i in (0, 7, 39):
        src = comp.sources[i]  # type: ignore[attr-defined]
        for k, cell in enumerate(src["cells"]):
            assert int(pool[cell["index"]]) == int(comp.labels[i, k])  # type: ignore[attr-defined]
            assert (cell["size"], cell["top"], cell["left"]) == (28, 2, 2)
            alone = place_items(
                items[cell["index"]].unsqueeze(0),
                torch.tensor([28]),
                torch.tensor([2]),
                torch.tensor([2]),
                canvas=32,
            )[0, 0]
            r, c = divmod(k, 2)
            got = comp.images[i, 0, 32 * r : 32 * r + 32, 32 * c : 32 * c + 32]  # type: ignore[attr-defined]
            assert torch.equal(got, alone)


def test_deterministic_by_seed_and_rebuildable(built: object) -> None:
    again = DATASETS.get("fashion-grid").build(n=40, seed=3)
    assert torch.equal(again.images, built.images)  # type: ignore[attr-defined]
    other = DATASETS.get("fashion-grid").build(n=40, seed=4)
    assert not torch.equal(other.labels, built.labels)  # type: ignore[attr-defined]
    one = DATASETS.get("fashion-grid").render(built.sources[5])  # type: ignore[attr-defined]
    assert torch.equal(one, built.images[5])  # type: ignore[attr-defined]


def test_no_item_is_reused_while_its_class_lasts(built: object) -> None:
    used = [c["index"] for s in built.sources for c in s["cells"]]  # type: ignore[attr-defined]
    assert len(used) == len(set(used)) == 160


def test_cell_masks_partition_the_image() -> None:
    masks = cell_masks(64)
    assert masks.shape == (4, 64, 64)
    assert torch.equal(masks.int().sum(0), torch.ones(64, 64, dtype=torch.int64))
    assert bool(masks[1, 0, 32])
    assert not bool(masks[1, 0, 31])
    assert bool(masks[2, 32, 0])


def test_training_mosaics_redraw_per_epoch() -> None:
    ds = fashion_grids("train", seed=0, augment=True)
    assert len(ds) == 15_000
    x0, y0 = ds[0]
    assert x0.shape == (1, 64, 64)
    assert y0.shape == (4,)
    ds.set_epoch(1)
    x1, _y1 = ds[0]
    assert not torch.equal(x0, x1)
    fixed = fashion_grids("test", seed=0, augment=False)
    assert len(fixed) == 2_500
    fixed.set_epoch(3)
    assert torch.equal(fixed[0][0], fashion_grids("test", seed=0, augment=False)[0][0])


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"split": "val"}, "split must be"), ({"size": 63}, "even"), ({"rows": 2}, "unknown")],
)
def test_bad_options(kw: dict[str, object], match: str) -> None:
    with pytest.raises(CamwallError, match=match):
        DATASETS.get("fashion-grid").build(n=2, **kw)


def test_preview_draws_labels_per_cell(tmp_path: Path) -> None:
    from camwall.cli import main

    out = tmp_path / "grid.png"
    assert (
        main(["data", "preview", "--dataset", "fashion-grid", "--n", "4", "--out", str(out)]) == 0
    )
    assert out.stat().st_size > 1000


def test_export_refuses_per_cell_labels(tmp_path: Path) -> None:
    from camwall.cli import main

    assert main(["data", "export", "--dataset", "fashion-grid", "--out", str(tmp_path / "x")]) == 2
