from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from data_helpers import needs_fashion
from torch.utils.data import DataLoader

from camwall.data import TRAIN_LAYOUT, fashion_canvases, place_items


def _reference(item: torch.Tensor, size: int, top: int, left: int, flip: bool, canvas: int):
    """F.interpolate then paste, cut to the canvas: the oracle for place_items."""
    scaled = F.interpolate(
        item.float().div(255)[None, None], size=(size, size), mode="bilinear", align_corners=False
    )[0, 0]
    if flip:
        scaled = scaled.flip(-1)
    pad = 2 * canvas
    big = torch.zeros(canvas + 2 * pad, canvas + 2 * pad)
    big[pad + top : pad + top + size, pad + left : pad + left + size] = scaled
    return big[pad : pad + canvas, pad : pad + canvas]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_place_items_equals_interpolate_and_paste(seed):
    g = torch.Generator().manual_seed(seed)
    b = 12
    items = torch.randint(0, 256, (b, 28, 28), generator=g, dtype=torch.int64).to(torch.uint8)
    size = torch.randint(14, 70, (b,), generator=g)
    top = torch.randint(-10, 50, (b,), generator=g)
    left = torch.randint(-10, 50, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5
    out = place_items(items, size, top, left, flip, canvas=64)
    assert out.shape == (b, 1, 64, 64)
    assert out.dtype == torch.float32
    for i in range(b):
        ref = _reference(items[i], int(size[i]), int(top[i]), int(left[i]), bool(flip[i]), 64)
        torch.testing.assert_close(out[i, 0], ref, atol=1e-5, rtol=0)


def test_place_items_identity_at_native_size():
    items = torch.arange(2 * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8)
    items = items.view(2, 28, 28)
    out = place_items(items, torch.tensor([28, 28]), torch.tensor([3, 0]), torch.tensor([5, 36]))
    torch.testing.assert_close(out[0, 0, 3:31, 5:33], items[0].float() / 255, atol=1e-6, rtol=0)
    assert out[0, 0].sum() == pytest.approx(items[0].float().sum().item() / 255, rel=1e-5)
    torch.testing.assert_close(out[1, 0, 0:28, 36:64], items[1].float() / 255, atol=1e-6, rtol=0)


@needs_fashion
def test_canvases_follow_the_layout():
    ds = fashion_canvases("test", seed=0, augment=False)
    assert len(ds) == 10_000
    p = ds.params
    lo, hi = TRAIN_LAYOUT.size
    assert int(p["size"].min()) == lo
    assert int(p["size"].max()) == hi
    assert int(p["top"].min()) == 0
    assert int(p["top"].max()) == 4
    assert not p["flip"].any()
    assert int((p["top"] + p["size"]).max()) == 40  # last item row is 39
    x, y = ds.batch(torch.arange(64))
    assert x.shape == (64, 1, 64, 64)
    assert y.dtype == torch.int64
    rows = (x[:, 0] > 0).any(dim=-1)  # B x 64: rows holding the item
    for i in range(64):
        r = rows[i].nonzero().flatten()
        assert int(r.min()) >= int(p["top"][i])
        assert int(r.max()) < int(p["top"][i] + p["size"][i])
    # nothing at all below row 39 in any canvas
    assert not rows[:, 40:].any()


@needs_fashion
def test_eval_canvases_fixed_train_canvases_redrawn_per_epoch():
    ev = fashion_canvases("test", seed=0, augment=False)
    a = ev.batch(range(32))[0]
    ev.set_epoch(3)
    assert torch.equal(ev.batch(range(32))[0], a)
    assert torch.equal(fashion_canvases("test", seed=0, augment=False).batch(range(32))[0], a)
    assert not torch.equal(fashion_canvases("test", seed=1, augment=False).batch(range(32))[0], a)

    tr = fashion_canvases("train", seed=0, augment=True)
    e0 = tr.batch(range(256))[0]
    assert 0.35 < tr.params["flip"].float().mean().item() < 0.65
    tr.set_epoch(1)
    e1 = tr.batch(range(256))[0]
    assert not torch.equal(e0, e1)
    tr.set_epoch(0)
    assert torch.equal(tr.batch(range(256))[0], e0)


@needs_fashion
def test_dataloader_batches_equal_direct_batches():
    ds = fashion_canvases("test", seed=0, augment=False)
    sub = torch.utils.data.Subset(ds, list(range(40)))
    assert len(sub) == 40
    loader = DataLoader(ds, batch_size=16, shuffle=False)
    xb, yb = next(iter(loader))
    x, y = ds.batch(range(16))
    assert torch.equal(xb, x)
    assert torch.equal(yb, y)
    single, label = ds[5]
    assert torch.equal(single, x[5])
    assert label == int(y[5])


@needs_fashion
def test_item_intensity_is_preserved_on_average():
    # Scaling by s/28 multiplies an item's pixel mass by about (s/28)^2.
    ds = fashion_canvases("test", seed=0, augment=False)
    x, _ = ds.batch(range(200))
    s = ds.params["size"][:200].float()
    mass = x.sum(dim=(1, 2, 3))
    orig = ds.items[:200].float().sum(dim=(1, 2)) / 255
    ratio = mass / (orig * (s / 28) ** 2)
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.02)
