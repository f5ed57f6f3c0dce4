"""Walled Vision Transformers: the attention mask, exact dead zones, verification, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from camwall.errors import CamwallError
from camwall.walls import (
    MODELS,
    WalledViT,
    create_model,
    dead_zone,
    dead_zone_summary,
    describe,
    load_model,
    save_model,
    verify_wall,
)
from camwall.walls._vit import MaskedSoftmax, attention_mask


def _rows(first_dead: int, size: int = 64) -> Tensor:
    zone = torch.zeros(size, size, dtype=torch.bool)
    zone[first_dead:] = True
    return zone


def _jacobian_live(model: nn.Module, shape: tuple[int, int, int], seeds: int) -> Tensor:
    """Brute force: union over random weights, random inputs and *every* output of the
    input-gradient support (float64)."""
    c, h, w = shape
    live = torch.zeros(h, w, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    for _ in range(seeds):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
        for _ in range(3):
            x = torch.randn(1, c, h, w, generator=gen, dtype=torch.float64)
            jac = torch.autograd.functional.jacobian(model, x)  # 1 x K x 1 x C x H x W
            live |= (jac != 0).flatten(0, 3).any(0)
    return live


def test_registry_and_fashion_vit_record() -> None:
    assert "fashion-vit" in MODELS
    assert "walled-vit" in MODELS
    model = create_model("fashion-vit")
    assert isinstance(model, WalledViT)
    assert describe(model).target_layer == "blocks.3.ln_1"
    (entry,) = describe(model).walls
    assert entry["kind"] == "attention"
    assert entry["grid"] == [8, 8]
    assert entry["region"] == {"rows": [5, None], "cols": None}
    assert entry["dead_patches"] == list(range(40, 64))
    assert describe(create_model("fashion-vit", walled=False)).walls == ()
    stem = create_model("fashion-vit", conv_stem=True)
    assert isinstance(stem.conv_proj, nn.Sequential)
    assert torch.equal(dead_zone(stem, (1, 64, 64)), _rows(40))
    with pytest.raises(CamwallError, match="conv_stem needs patch_size"):
        create_model("walled-vit", patch_size=2, image_size=16, dead_rows=2, conv_stem=True)
    with pytest.raises(CamwallError, match="dead_rows"):
        create_model("walled-vit", dead_rows=8)


def test_attention_mask_live_rows_never_point_at_dead_tokens() -> None:
    dead = torch.zeros(2, 2, dtype=torch.bool)
    dead[1, 0] = True  # patch 2 = token 3
    allowed = attention_mask(dead)
    expected = torch.tensor(
        [
            [1, 1, 1, 0, 1],  # class token: not the dead token
            [1, 1, 1, 0, 1],
            [1, 1, 1, 0, 1],
            [1, 1, 1, 1, 1],  # the dead token attends to all
            [1, 1, 1, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, expected)
    model = create_model("fashion-vit")
    masks = [m.allowed for m in model.modules() if isinstance(m, MaskedSoftmax)]
    assert len(masks) == 4
    assert all(torch.equal(m, masks[0]) for m in masks)
    dead_tok = torch.zeros(65, dtype=torch.bool)
    dead_tok[41:] = True
    assert not masks[0][~dead_tok][:, dead_tok].any()  # no live row points at a dead token
    assert masks[0][dead_tok].all()


def test_masked_softmax_gives_exact_zeros() -> None:
    allowed = attention_mask(torch.tensor([[False, True]]))
    p = MaskedSoftmax(allowed)(torch.randn(2, 3, 3, 3) * 50)
    assert torch.equal(p[..., 0:2, 2], torch.zeros(2, 3, 2))
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 3, 3))


def test_fashion_vit_dead_zone_is_rows_40_to_63_and_holds() -> None:
    torch.manual_seed(0)
    model = create_model("fashion-vit")
    zone = dead_zone(model, (1, 64, 64))
    assert torch.equal(zone, _rows(40))
    assert dead_zone_summary(zone)["rows"] == [[40, 64]]
    check = verify_wall(model, zone, trials=4)
    assert check.ok
    assert check.dead_pixels == 24 * 64
    assert check.live_grad_max > 0
    # one live patch row claimed dead: the check sees it
    assert not verify_wall(model, _rows(32), trials=2).ok


def test_unwalled_vit_has_no_dead_zone() -> None:
    model = create_model("fashion-vit", walled=False)
    assert not dead_zone(model, (1, 64, 64)).any()
    assert bool(attention_mask(torch.zeros(8, 8, dtype=torch.bool)).all())


@pytest.mark.parametrize(("seed", "conv_stem"), [(0, False), (1, False), (2, True)])
def test_structural_dead_zone_equals_brute_force_jacobian_support(
    seed: int, conv_stem: bool
) -> None:
    # A box and a corner of a 4 x 4 patch grid are dead (not only a band).
    dead = torch.zeros(4, 4, dtype=torch.bool)
    dead[1:3, 1:3] = True
    dead[3, 3] = True
    torch.manual_seed(seed)
    model = WalledViT(
        16, 2, 4, dim=8, depth=2, heads=2, mlp_dim=16, num_classes=3, dead=dead,
        conv_stem=conv_stem,
    )  # fmt: skip
    model = model.double().eval()
    zone = dead_zone(model, (2, 16, 16))
    expected = dead.repeat_interleave(4, 0).repeat_interleave(4, 1)
    assert torch.equal(zone, expected)
    assert torch.equal(zone, ~_jacobian_live(model, (2, 16, 16), seeds=2))
    assert verify_wall(model, zone, trials=3).ok


def test_brute_force_sees_everything_without_the_mask() -> None:
    torch.manual_seed(0)
    model = WalledViT(16, 1, 4, dim=8, depth=1, heads=2, mlp_dim=16, num_classes=2, dead=None)
    model = model.double().eval()
    assert not dead_zone(model, (1, 16, 16)).any()
    assert bool(_jacobian_live(model, (1, 16, 16), seeds=1).all())


def test_declared_reshape_is_the_engines_token_grid() -> None:
    from camwall.cams import TokenGrid

    model = create_model("fashion-vit")
    reshape = describe(model).reshape
    assert reshape == TokenGrid(prefix_tokens=1, grid=(8, 8))
    tokens = torch.randn(2, 65, 64)
    grid = reshape(tokens)
    assert grid.shape == (2, 64, 8, 8)
    assert torch.equal(grid[1, :, 5, 3], tokens[1, 1 + 5 * 8 + 3])  # patch (5, 3)
    assert torch.equal(reshape.inverse(grid, tokens), tokens)


@pytest.fixture
def saved_vit(tmp_path: Path) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = create_model("fashion-vit", dim=16, depth=2, heads=2, mlp_dim=32)
    return model, save_model(model, tmp_path / "vit", {"training": {"epochs": 1}})


def test_checkpoint_round_trip_records_the_mask(saved_vit: tuple[nn.Module, Path]) -> None:
    model, path = saved_vit
    loaded, meta = load_model(path)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert meta["arch"] == "fashion-vit"
    assert meta["target_layer"] == "blocks.1.ln_1"
    assert meta["dead_zone"]["rows"] == [[40, 64]]
    assert meta["wall"][0]["dead_patches"] == list(range(40, 64))
    assert "blocks.0.self_attention.attend.allowed" in load_file(str(path))


def test_checkpoint_refuses_an_edited_mask_in_the_json(saved_vit: tuple[nn.Module, Path]) -> None:
    _, path = saved_vit
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["wall"][0]["dead_patches"] = list(range(48, 64))
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CamwallError, match=r"vit\.json: the recorded wall"):
        load_model(path)


def test_checkpoint_refuses_weights_that_break_the_mask(
    saved_vit: tuple[nn.Module, Path],
) -> None:
    _, path = saved_vit
    tensors = load_file(str(path))
    tensors["blocks.1.self_attention.attend.allowed"][0, 60] = True  # class token sees a dead one
    save_file(tensors, str(path))
    with pytest.raises(CamwallError, match=r"vit\.safetensors: the attention mask blocks\.1"):
        load_model(path)
    model = create_model("fashion-vit", dim=16, depth=2, heads=2, mlp_dim=32)
    with pytest.raises(CamwallError, match="refusing to load it"):
        model.load_state_dict(tensors)


_F32_MAX = float(torch.finfo(torch.float32).max)


@pytest.mark.parametrize("value", [1e25, -1e25, _F32_MAX, -_F32_MAX])
def test_huge_dead_tokens_never_reach_a_live_one(value: float) -> None:
    """1e25 overflows the dead tokens' LayerNorm (NaN); the masked attention must not read
    them (``0 x NaN``): the shipped model's logits stay bit-identical."""
    from camwall.weights import shipped_model

    model, _ = load_model(shipped_model("fashion-vit"))
    zone = dead_zone(model, (1, 64, 64))
    x = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x)
        y2 = model(torch.where(zone, torch.tensor(value), x))
    assert bool(y.isfinite().all())
    assert torch.equal(y, y2)


def test_reading_only_allowed_values_is_bit_identical_to_p_times_v(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """For finite inputs, zeroing the values a row may not read changes nothing: the products
    it replaces were ``0 x v_j`` already (same matmul shapes, so the same kernels)."""
    from camwall.weights import shipped_model

    model, _ = load_model(shipped_model("fashion-vit"))
    x = torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model(x)
        monkeypatch.setattr(MaskedSoftmax, "read", lambda self, p, v: torch.matmul(p, v))
        plain = model(x)
    assert torch.equal(ours, plain)
