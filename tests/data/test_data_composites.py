from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from data_helpers import needs_fashion

from camwall.data import (
    DATASETS,
    FASHION_CLASSES,
    Composites,
    fashion_canvases,
    load_fashion_mnist,
)
from camwall.errors import CamwallError
from camwall.walls import create_model, dead_zone

pytestmark = needs_fashion


def _full(item: torch.Tensor, size: int = 64) -> torch.Tensor:
    return F.interpolate(
        item.float().div(255)[None, None], size=(size, size), mode="bilinear", align_corners=False
    )[0, 0]


SINGLE_LABEL = [n for n in DATASETS.names() if n != "fashion-grid"]
"""The stacked designs (one label per image; fashion-grid has its own tests)."""


def test_registry_names():
    assert DATASETS.names() == ["fashion-stackmix", "fashion-stackpair", "fashion-grid"]
    with pytest.raises(CamwallError, match="Did you mean 'fashion-stackmix'"):
        DATASETS.get("fashion-stakmix")


@pytest.mark.parametrize("name", DATASETS.names())
def test_deterministic_for_a_seed(name):
    a = DATASETS.get(name)(n=40, seed=3)
    b = DATASETS.get(name).build(n=40, seed=3)
    c = DATASETS.get(name)(n=40, seed=4)
    assert isinstance(a, Composites)
    assert a.images.numpy().tobytes() == b.images.numpy().tobytes()
    assert torch.equal(a.labels, b.labels)
    assert a.sources == b.sources
    assert not torch.equal(a.images, c.images)
    assert a.sources != c.sources


@pytest.mark.parametrize("name", SINGLE_LABEL)
def test_shapes_classes_and_sources(name):
    comp = DATASETS.get(name)(n=100, seed=0)
    assert comp.images.shape == (100, 1, 64, 64)
    assert comp.images.dtype == torch.float32
    assert comp.labels.dtype == torch.int64
    assert float(comp.images.min()) >= 0.0
    assert float(comp.images.max()) <= 1.0
    assert torch.equal(torch.bincount(comp.labels, minlength=10), torch.full((10,), 10))
    assert comp.class_names == list(FASHION_CLASSES)
    assert comp.meta["seed"] == 0
    assert comp.meta["dataset"] == name
    _, test_labels = load_fashion_mnist("test")
    used: list[int] = []
    for lab, src in zip(comp.labels.tolist(), comp.sources):
        first, second = ("x1", "x2") if "x1" in src else ("upper", "lower")
        i1, i2 = src[first]["index"], src[second]["index"]
        assert i1 != i2
        assert int(test_labels[i1]) == lab == int(test_labels[i2]) == src["label"]
        used += [i1, i2]
    assert len(set(used)) == 200  # no test item is used twice


def _placed(item: torch.Tensor, part: dict, size: int = 64) -> torch.Tensor:
    """Oracle: ``F.interpolate`` of the item pasted at ``(top, left)`` on a black canvas."""
    canvas = torch.zeros(size, size)
    t, left, s = part["top"], part["left"], part["size"]
    canvas[t : t + s, left : left + s] = _full(item, s)[: size - t, : size - left]
    return canvas


@pytest.mark.parametrize("split_row", [36, 20, 45])
def test_stackmix_rows_come_from_x1_then_x2(split_row):
    comp = DATASETS.get("fashion-stackmix")(n=10, seed=1, split_row=split_row)
    items, _ = load_fashion_mnist("test")
    assert comp.meta["split_row"] == split_row
    for k in range(10):
        src = comp.sources[k]
        img = comp.images[k, 0]
        x1, x2 = (
            _placed(items[src["x1"]["index"]], src["x1"]),
            _placed(items[src["x2"]["index"]], src["x2"]),
        )
        torch.testing.assert_close(img[:split_row], x1[:split_row], atol=1e-5, rtol=0)
        torch.testing.assert_close(img[split_row:], x2[split_row:], atol=1e-5, rtol=0)


def test_stackmix_top_item_is_placed_like_a_training_item():
    """x1 follows TRAIN_LAYOUT (evaluation canvases: no mirror); x2 has the training scale and
    reaches the canvas bottom; the default split row is 36; meta records version 2."""
    comp = DATASETS.get("fashion-stackmix")(n=1000, seed=0)
    assert comp.meta["split_row"] == 36
    assert comp.meta["version"] == 2
    assert DATASETS.get("fashion-stackpair")(n=10).meta["version"] == 1
    for key, first_top in (("x1", 0), ("x2", 28)):
        size = torch.tensor([s[key]["size"] for s in comp.sources])
        top = torch.tensor([s[key]["top"] for s in comp.sources])
        left = torch.tensor([s[key]["left"] for s in comp.sources])
        assert sorted(set(size.tolist())) == list(range(28, 37))
        assert int(top.min()) == first_top
        assert bool(((left - (64 - size) // 2).abs() <= 6).all())
        if key == "x1":
            assert int(top.max()) == 4
        else:
            assert int((top + size).max()) == 64
    x2_end = torch.tensor([s["x2"]["top"] + s["x2"]["size"] for s in comp.sources])
    assert int(x2_end.min()) >= 56  # the lower item always fills the bottom of the dead zone


def test_stackmix_bad_split_row():
    with pytest.raises(CamwallError, match=r"split_row must be in 1\.\.63, got 64"):
        DATASETS.get("fashion-stackmix")(n=4, split_row=64)
    with pytest.raises(CamwallError, match="unknown option"):
        DATASETS.get("fashion-stackmix")(n=4, lower_top=3)


def test_stackpair_items_are_the_placed_sources():
    comp = DATASETS.get("fashion-stackpair")(n=100, seed=0)
    items, _ = load_fashion_mnist("test")
    for k, src in enumerate(comp.sources):
        up, lo = src["upper"], src["lower"]
        assert 28 <= up["size"] <= 32
        assert 0 <= up["top"] <= 3
        assert up["top"] + up["size"] <= 35
        assert 22 <= lo["size"] <= 26
        assert 38 <= lo["top"] <= 64 - lo["size"]
        img = comp.images[k, 0]
        for part in (up, lo):  # each item: F.interpolate of its source pasted at (top, left)
            t, left, s = part["top"], part["left"], part["size"]
            torch.testing.assert_close(
                img[t : t + s, left : left + s], _full(items[part["index"]], s), atol=1e-5, rtol=0
            )
        assert float(img[35:38].abs().sum()) == 0.0  # a gap between the two items


@pytest.mark.parametrize(("arch", "first_dead"), [("fashion-vgg", 39), ("fashion-resnet", 37)])
def test_layouts_against_the_walled_models_dead_zones(arch, first_dead):
    """Upper items and training canvases are seen by the walled models; lower items are not."""
    zone = dead_zone(create_model(arch, walled=True), (1, 64, 64))
    assert int(zone.all(1).nonzero().min()) == first_dead
    assert not zone[:first_dead].any()
    imgs = DATASETS.get("fashion-stackpair")(n=100, seed=0).images[:, 0]
    upper, lower = imgs.clone(), imgs.clone()
    upper[:, 36:] = 0
    lower[:, :36] = 0
    assert float((upper * zone).sum()) == 0.0
    outside = float((lower * ~zone).sum()) / float(lower.sum())
    assert outside < 0.01  # fashion-vgg sees row 38 only: 0.6% of the lower items' mass
    canv = fashion_canvases("test", seed=0, augment=False).batch(range(1000))[0][:, 0]
    in_zone = (canv * zone).sum(dim=(1, 2)) / canv.sum(dim=(1, 2))
    assert float(in_zone.mean()) < 0.005  # measured: 0.02% (vgg), 0.27% (resnet)
    assert float(in_zone.max()) < 0.2


def test_render_rebuilds_every_image():
    for name in DATASETS.names():
        builder = DATASETS.get(name)
        comp = builder(n=12, seed=7)
        for k in (0, 5, 11):
            assert torch.equal(builder.render(comp.sources[k]), comp.images[k])


def test_other_canvas_size():
    comp = DATASETS.get("fashion-stackpair")(n=10, seed=0, size=128)
    assert comp.images.shape == (10, 1, 128, 128)
    assert all(s["lower"]["top"] >= 76 for s in comp.sources)
    mix = DATASETS.get("fashion-stackmix")(n=10, seed=0, size=32)
    assert mix.images.shape == (10, 1, 32, 32)
    assert mix.meta["split_row"] == 18  # round(36 * 32 / 64)


def test_too_many_images_refused():
    with pytest.raises(CamwallError, match="use n <= 5000"):
        DATASETS.get("fashion-stackmix")(n=5010)


def test_byte_identical_in_a_fresh_process():
    """Two runs (this process, and a new one with another thread count) give the same bytes."""
    code = (
        "import hashlib, torch; torch.set_num_threads(1)\n"
        "from camwall.data import DATASETS\n"
        "h = hashlib.sha256()\n"
        "for n in DATASETS.names():\n"
        "    h.update(DATASETS.get(n)(n=30, seed=11).images.numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    h = hashlib.sha256()
    for name in DATASETS.names():
        h.update(DATASETS.get(name)(n=30, seed=11).images.numpy().tobytes())
    assert out.stdout.strip() == h.hexdigest()


@pytest.mark.parametrize(
    ("arch", "seen_max", "dead_min"), [("fashion-vgg", 0.11, 0.40), ("fashion-resnet", 0.04, 0.43)]
)
def test_stackmix_against_the_walled_models_dead_zones(arch, seen_max, dead_min):
    """x1's slice is all visible; x2's slice lies mostly in the dead zone (measured on 1000
    images: vgg sees 9.6% of its intensity, rows 36..38; resnet 3.0%, row 36), and the dead zone
    holds 43% (vgg) / 46% (resnet) of each image's intensity."""
    zone = dead_zone(create_model(arch, walled=True), (1, 64, 64))
    imgs = DATASETS.get("fashion-stackmix")(n=1000, seed=0).images[:, 0]
    upper, lower = imgs.clone(), imgs.clone()
    upper[:, 36:] = 0
    lower[:, :36] = 0
    assert float((upper * zone).sum()) == 0.0
    assert float((lower * ~zone).sum() / lower.sum()) < seen_max
    assert float((imgs * zone).sum() / imgs.sum()) > dead_min
