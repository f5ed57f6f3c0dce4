"""Walls for any ViT (torchvision and timm): dead zones against brute-force gradient support in
float64, bit-identical logits under noise and extreme dead inputs, checkpoints, plain state
dicts, and what is refused. All weights random; the fast tests use small image sizes and
depths of the real architectures, the ``slow`` ones the real sizes (224 x 224)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from camwall.errors import CamwallError
from camwall.walls import (
    WallSpec,
    dead_zone,
    describe,
    load_model,
    load_weights,
    save_model,
    verify_wall,
    wall_vit,
    walled_timm,
    walled_torchvision,
)
from camwall.walls._vit_any import TimmMaskedAttention, TorchvisionMaskedAttention, token_mask

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


def _random_head(model: nn.Module) -> nn.Module:
    """torchvision initialises a ViT head to 0 (constant logits, nothing to see): redraw it."""
    head = model.heads.head if hasattr(model, "heads") else model.head
    with torch.no_grad():
        head.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    return model.eval()


def _gradient_support(model: nn.Module, shape: tuple[int, int, int], trials: int = 2) -> Tensor:
    """Pixels where ``d (r . logits) / dx`` is non-zero in some channel, for random ``x`` and
    ``r ~ U[1, 2]`` (so no two outputs cancel), in float64: bool ``[H, W]``."""
    m = copy.deepcopy(model).double().eval()
    gen = torch.Generator().manual_seed(0)
    support = torch.zeros(shape[1:], dtype=torch.bool)
    for _ in range(trials):
        x = torch.rand(1, *shape, generator=gen, dtype=torch.float64).requires_grad_(True)
        out = m(x)
        r = 1.0 + torch.rand(out.shape, generator=gen, dtype=torch.float64)
        (grad,) = torch.autograd.grad((out * r).sum(), x)
        support |= (grad[0] != 0).any(0)
    return support


def _patch_zone(spec: WallSpec, grid: tuple[int, int], patch: int) -> Tensor:
    """The dead patches of ``spec`` on ``grid`` as input pixels (bool ``[H, W]``)."""
    dead = spec.blocked(*grid)
    return dead.repeat_interleave(patch, 0).repeat_interleave(patch, 1)


def _check_wall(model: nn.Module, spec: WallSpec, patch: int, trials: int = 2) -> dict[str, Any]:
    """The Show figures: dead zone == the spec's patches == the complement of the float64
    gradient support, and verify_wall bit-identical (noise, zeros, +-1e30, +-float32 max)."""
    shape = describe(model).input_shape
    assert shape is not None
    zone = dead_zone(model, shape)
    grid = (shape[1] // patch, shape[2] // patch)
    assert torch.equal(zone, _patch_zone(spec, grid, patch))
    support = _gradient_support(model, shape)
    assert torch.equal(~zone, support)
    check = verify_wall(model, zone, trials=trials)
    assert check.ok, check
    assert check.max_logit_change == 0.0
    assert check.max_dead_grad == 0.0
    assert check.extremes == 4
    assert check.live_grad_max > 0
    return {"dead": int(zone.sum()), "live": int(support.sum())}


# -- torchvision ------------------------------------------------------------------------------


def test_torchvision_vit_b_16_small_image() -> None:
    spec = WallSpec(rows=(1, None), cols=(0, 1))  # 2 x 2 grid at 32 x 32: patch (1, 0) dead
    walls = {"encoder": spec}
    model = _random_head(
        walled_torchvision("vit_b_16", walls=walls, image_size=32, num_classes=3, seed=0)
    )
    info = describe(model)
    assert info.input_shape == (3, 32, 32)
    assert info.target_layer == "encoder.layers.encoder_layer_11.ln_1"
    assert info.walls[0]["kind"] == "attention"
    assert info.walls[0]["dead_patches"] == [2]
    assert info.reshape is not None
    out = _check_wall(model, spec, 16)
    assert out == {"dead": 256, "live": 768}


@pytest.mark.slow
def test_torchvision_vit_b_16_at_224() -> None:
    spec = WallSpec.bottom(4)
    model = _random_head(walled_torchvision("vit_b_16", walls={"encoder": spec}, seed=0))
    assert _check_wall(model, spec, 16) == {"dead": 4 * 16 * 224, "live": 10 * 16 * 224}


def test_torchvision_attention_is_multihead_attention_without_a_wall() -> None:
    """With nothing masked, the masked attention computes torch's MultiheadAttention."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    want = mha(x, x, x, need_weights=False)[0]
    got, none = TorchvisionMaskedAttention(copy.deepcopy(mha), torch.ones(5, 5, dtype=torch.bool))(
        x, x, x, need_weights=False
    )
    assert none is None
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# -- timm -------------------------------------------------------------------------------------

_TIMM_CASES = [  # name, builder kwargs, wall; small sizes of the real architectures
    ("deit_tiny_patch16_224", {"img_size": 48, "depth": 2}, WallSpec(rows=(2, None))),
    (  # average pooling, no class token
        "vit_tiny_patch16_224",
        {"img_size": 48, "depth": 2, "global_pool": "avg", "class_token": False},
        WallSpec(cols=(0, 1)),
    ),
    (  # max pooling over the live tokens, LayerNorm on q and k
        "vit_tiny_patch16_224",
        {"img_size": 48, "depth": 2, "global_pool": "max", "class_token": False, "qk_norm": True},
        WallSpec(rows=(0, 2), cols=(1, 3)),
    ),
    (  # class token + 4 register tokens, LayerScale
        "vit_small_patch14_reg4_dinov2",
        {"img_size": 42, "depth": 2},
        WallSpec(rows=(0, 1), cols=(0, 2)),
    ),
    (  # 1 register token, average pooling, LayerScale, no position embedding for prefixes
        "vit_wee_patch16_reg1_gap_256",
        {"img_size": 48, "depth": 2},
        WallSpec(rows=(1, 2), cols=(1, 2), outside=True),
    ),
]


_TIMM_IDS = ["deit-token", "vit-avg", "vit-max-qknorm", "dinov2-reg4", "wee-reg1-avg"]


@pytest.mark.parametrize(("name", "kwargs", "spec"), _TIMM_CASES, ids=_TIMM_IDS)
def test_timm_vits_small(name: str, kwargs: dict[str, Any], spec: WallSpec) -> None:
    model = walled_timm(name, walls={"blocks": spec}, num_classes=3, seed=0, **kwargs).eval()
    patch = int(model.patch_embed.patch_size[0])
    _check_wall(model, spec, patch)


_TIMM_224 = [
    ("deit_tiny_patch16_224", {}),
    ("vit_tiny_patch16_224", {"global_pool": "avg", "class_token": False}),
    ("vit_small_patch14_reg4_dinov2", {"img_size": 224}),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "kwargs"), _TIMM_224, ids=["deit-token", "vit-avg", "dinov2-reg4"]
)
def test_timm_vits_at_224(name: str, kwargs: dict[str, Any]) -> None:
    spec = WallSpec.right(5)
    model = walled_timm(name, walls={"blocks": spec}, num_classes=10, seed=0, **kwargs).eval()
    patch = int(model.patch_embed.patch_size[0])
    _check_wall(model, spec, patch)


def test_timm_attention_without_a_wall_is_timm_attention() -> None:
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1)
    attn = model.blocks[0].attn.eval()
    x = torch.randn(2, 5, 192)
    want = attn(x)
    got = TimmMaskedAttention(attn, torch.ones(5, 5, dtype=torch.bool))(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_averaging_head_pools_the_live_tokens_only() -> None:
    kw: dict[str, Any] = {"img_size": 32, "depth": 1, "global_pool": "avg", "class_token": False}
    model = walled_timm("vit_tiny_patch16_224", walls="blocks:cols=1:", seed=0, **kw).eval()
    tokens = torch.randn(1, 4, 192)  # 2 x 2 grid, column 1 (tokens 1 and 3) dead
    pooled = model.pool(tokens)
    torch.testing.assert_close(pooled, tokens[:, [0, 2]].mean(1), rtol=0, atol=0)


# -- checkpoints and plain weights --------------------------------------------------------------


def test_save_load_round_trip_torchvision_and_timm(tmp_path: Path) -> None:
    models = {
        "tv": _random_head(
            walled_torchvision("vit_b_32", walls="encoder:rows=1:", image_size=64, seed=0)
        ),
        "timm": walled_timm(
            "deit_tiny_patch16_224", walls="blocks:cols=:1", img_size=32, depth=2, seed=0
        ).eval(),
    }
    for key, model in models.items():
        save_model(model, tmp_path / key)
        loaded, meta = load_model(tmp_path / key)
        assert meta["arch"] == ("torchvision" if key == "tv" else "timm")
        assert meta["wall"] == describe(model).wall_list()
        assert meta["dead_zone"]["fraction"] == 0.5
        x = torch.rand(1, 3, *describe(model).input_shape[1:])
        assert torch.equal(loaded(x), model(x))
        assert set(loaded.state_dict()) == set(model.state_dict())


def test_load_weights_of_the_plain_networks(tmp_path: Path) -> None:
    plain_tv = torchvision.models.vit_b_32(weights=None, image_size=64, num_classes=5)
    kw: dict[str, Any] = {"img_size": 32, "depth": 2, "num_classes": 5, "reg_tokens": 2}
    plain_timm = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw)
    tv = walled_torchvision("vit_b_32", walls="encoder:rows=1:", image_size=64, num_classes=5)
    walled = {
        "tv": (plain_tv, tv),
        "timm": (plain_timm, walled_timm("vit_tiny_patch16_224", walls="blocks:rows=1:", **kw)),
    }
    for key, (plain, model) in walled.items():
        state = plain.state_dict()
        assert set(model.state_dict()) == set(state)  # every key is the plain network's
        save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / f"{key}.safetensors")
        load_weights(model, tmp_path / f"{key}.safetensors")
        for k, v in model.state_dict().items():
            assert torch.equal(v, state[k]), k


def test_walled_parameters_are_the_plain_ones() -> None:
    model = torchvision.models.vit_b_32(weights=None, image_size=64, num_classes=5)
    before = {id(p) for p in model.parameters()}
    assert wall_vit(model, WallSpec.top(1)) is model
    assert {id(p) for p in model.parameters()} == before


# -- refusals and errors ------------------------------------------------------------------------


def test_swin_and_other_models_are_refused_with_the_reason() -> None:
    """Swin V1 is walled (tests/walls/test_walls_swin.py) on regions aligned to its coarsest
    grid; a misaligned one (V1, V2) and MaxViT are refused with the reason, a CNN too."""
    with pytest.raises(CamwallError, match="not aligned to this Swin's coarsest grid"):
        wall_vit(torchvision.models.swin_t(weights=None), WallSpec.bottom(2))
    with pytest.raises(CamwallError, match="not aligned to this Swin's coarsest grid"):
        walled_torchvision("swin_t", walls="features:rows=54:")
    with pytest.raises(CamwallError, match="not aligned to this Swin's coarsest grid"):
        walled_torchvision("swin_v2_t", walls="features:rows=54:")
    with pytest.raises(CamwallError, match="not aligned to this Swin's coarsest grid"):
        walled_timm("swinv2_tiny_window8_256", walls="layers:rows=60:", depths=(1, 1, 1, 1))
    with pytest.raises(CamwallError, match="MaxxVit cannot be walled"):
        walled_timm("maxvit_tiny_tf_224", walls="blocks:rows=2:", depths=(1, 1, 1, 1))
    with pytest.raises(CamwallError, match="VisionTransformer"):
        wall_vit(nn.Sequential(nn.Conv2d(3, 4, 3)), WallSpec.bottom(1))


def test_missing_timm_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(CamwallError, match=r"pip install 'camwall\[timm\]'") as err:
        walled_timm("deit_tiny_patch16_224")
    assert "\n" not in str(err.value)


def test_bad_walls_are_refused() -> None:
    kw: dict[str, Any] = {"img_size": 32, "depth": 1}
    with pytest.raises(CamwallError, match="for its encoder layer 'blocks'"):
        walled_timm("deit_tiny_patch16_224", walls="encoder:rows=1:", **kw)
    with pytest.raises(CamwallError, match="one wall"):
        walled_timm("deit_tiny_patch16_224", walls=["blocks:rows=1:", "blocks:cols=1:"], **kw)
    with pytest.raises(CamwallError, match="whole 2 x 2 patch grid"):
        walled_timm("deit_tiny_patch16_224", walls="blocks:rows=0:", **kw)
    with pytest.raises(CamwallError, match="input_shape"):
        walled_timm("deit_tiny_patch16_224", walls="blocks:rows=1:", input_shape=(3, 64, 64), **kw)
    with pytest.raises(CamwallError, match="never downloaded"):
        walled_timm("deit_tiny_patch16_224", pretrained=True)
    with pytest.raises(CamwallError, match="unknown timm model"):
        walled_timm("deit_tiny_patch16_2244")
    model = walled_timm("deit_tiny_patch16_224", walls="blocks:rows=1:", **kw)
    with pytest.raises(CamwallError, match="already walled"):
        wall_vit(model, WallSpec.top(1))
    with pytest.raises(CamwallError, match="structural mask"):
        model(torch.rand(1, 3, 32, 32), attn_mask=torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(CamwallError, match="head or parameters"):
        walled_timm("vit_tiny_patch16_224", walls="blocks:rows=1:", global_pool="map", **kw)


def test_token_mask_prefix_tokens_are_live() -> None:
    dead = torch.tensor([[False, True]])
    allowed = token_mask(dead, 2)  # tokens: prefix 0, 1; patch 2 live, patch 3 dead
    assert allowed.tolist() == [
        [True, True, True, False],
        [True, True, True, False],
        [True, True, True, False],
        [True, True, True, True],
    ]


def test_cam_engine_reads_the_declared_token_grid() -> None:
    """HiResCAM (gradient x activation per token) at the declared target layer and reshape is
    exactly 0 where the upsampled map reads dead tokens only (columns 40.. of 64)."""
    from camwall.cams import compute_cams

    kw: dict[str, Any] = {"img_size": 64, "depth": 2, "num_classes": 3, "seed": 0}
    model = walled_timm("deit_tiny_patch16_224", walls="blocks:cols=2:", **kw).eval()
    info = describe(model)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    cam = compute_cams(model, x, info.target_layer, ["hirescam"], targets=[0])["hirescam"]
    assert cam.shape[-2:] == (64, 64)
    assert bool((cam[..., 40:] == 0).all())
    assert bool((cam[..., :24] > 0).any())


def test_unwalled_twins_have_no_dead_zone_and_save() -> None:
    """Without a wall: the same masked layers with nothing masked; nothing is dead, and the
    twin computes the plain network (same weights)."""
    tv = walled_torchvision("vit_b_32", image_size=64, num_classes=3, seed=0)
    plain = torchvision.models.vit_b_32(weights=None, image_size=64, num_classes=3)
    plain.load_state_dict(tv.state_dict())
    tm = walled_timm("deit_tiny_patch16_224", img_size=32, depth=2, global_pool="avg", seed=0)
    plain_tm = timm.create_model("deit_tiny_patch16_224", img_size=32, depth=2, global_pool="avg")
    plain_tm.load_state_dict(tm.state_dict())
    for model, ref in ((_random_head(tv), _random_head(plain)), (tm.eval(), plain_tm.eval())):
        assert describe(model).walls == ()
        assert not dead_zone(model, describe(model).input_shape).any()
        x = torch.rand(2, *describe(model).input_shape)
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)


def test_other_timm_blocks_are_refused_and_left_unchanged() -> None:
    model = timm.create_model("vit_small_patch16_18x2_224", pretrained=False, img_size=32, depth=2)
    before = [type(m) for m in model.modules()]
    with pytest.raises(CamwallError, match="standard Attention"):
        wall_vit(model, WallSpec.top(1))
    assert [type(m) for m in model.modules()] == before
    assert describe(model).walls == ()
