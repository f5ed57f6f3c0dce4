"""Walls for Swin transformers (torchvision and timm, V1 and V2): dead zones against
brute-force gradient support in float64, bit-identical logits under noise, 1e30, NaN and inf
in the dead zone, the unwalled twin against the original, checkpoints and plain state dicts,
and what is refused (misaligned regions, padding before merging, mixed V1 / V2, MaxViT).
All weights random; the fast tests use small Swins (64 x 64 inputs, 3 stages, 16 x 16 patch
grid, 4 x 4 coarse grid of 4 x 4-patch cells), the ``slow`` one swin_t / swin_tiny /
swin_v2_t at 224 and swinv2_tiny at 256."""

from __future__ import annotations

import copy
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
    wall_swin,
    wall_vit,
    walled_timm,
    walled_torchvision,
)
from camwall.walls._swin import (
    JoinedBiasLinear,
    KeyBiasFreeLinear,
    LiveGridPool,
    TimmWindowAttention,
    TimmWindowAttentionV2,
    TorchvisionWindowAttention,
    TorchvisionWindowAttentionV2,
    WindowSoftmax,
    window_dead,
)

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
from torchvision.models.swin_transformer import (  # noqa: E402
    PatchMergingV2,
    SwinTransformer,
    SwinTransformerBlockV2,
)

_TIMM_SMALL: dict[str, Any] = {
    "img_size": 64,
    "embed_dim": 16,
    "depths": (2, 2, 2),
    "num_heads": (2, 2, 2),
    "num_classes": 5,
}


def _tv_small(window: int = 4, seed: int = 0, v2: bool = False) -> nn.Module:
    """torchvision's SwinTransformer, small: 3 stages (16, 8, 4 grids at 64 x 64); ``v2``:
    with V2 blocks and merging, its key bias, logit scale and position MLP made non-trivial."""
    torch.manual_seed(seed)
    kinds: dict[str, Any] = (
        {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    )
    model = SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[2, 2, 2],
        num_heads=[2, 2, 2],
        window_size=[window, window],
        num_classes=5,
        **kinds,
    )
    if v2:
        with torch.no_grad():
            for m in model.modules():
                if hasattr(m, "logit_scale"):
                    m.qkv.bias.normal_()  # the key third too: read as 0, as torchvision does
                    m.logit_scale.uniform_(1.0, 5.0)  # 5 > log 100: the clamp is reached
    return model.eval()


_TIMM_V2 = "swinv2_tiny_window8_256"


def _timm_small(window: int = 4, seed: int = 0, v2: bool = False) -> nn.Module:
    """timm's Swin, small; ``v2``: its Swin V2 with random q / v biases and logit scales (some
    beyond the clamp at log 100)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        name = _TIMM_V2 if v2 else "swin_tiny_patch4_window7_224"
        model = timm.create_model(name, pretrained=False, window_size=window, **_TIMM_SMALL)
        if v2:
            _randomize_v2(model)
        return model.eval()


def _randomize_v2(model: nn.Module) -> nn.Module:
    """Make a Swin V2's biases and logit scales non-trivial (they start at 0 and log 10)."""
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "logit_scale"):
                m.logit_scale.uniform_(1.0, 5.0)  # 5 > log 100: the clamp is reached
                for name in ("q_bias", "v_bias"):
                    if getattr(m, name, None) is not None:
                        getattr(m, name).normal_()
    return model


def _gradient_support(model: nn.Module, shape: tuple[int, int, int], trials: int = 2) -> Tensor:
    """Pixels where ``d (r . logits) / dx`` is non-zero in some channel for random ``x`` and
    ``r ~ U[1, 2]``, the model in float64: bool ``[H, W]``."""
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


def _pixels(spec: WallSpec, grid: tuple[int, int], patch: int) -> Tensor:
    return spec.blocked(*grid).repeat_interleave(patch, 0).repeat_interleave(patch, 1)


def _attends(model: nn.Module) -> list[WindowSoftmax]:
    return [m for m in model.modules() if isinstance(m, WindowSoftmax)]


def _check(model: nn.Module, spec: WallSpec, patch: int = 4) -> dict[str, int]:
    """dead zone == the spec's patches == the complement of the float64 gradient support;
    verify_wall bit-identical; mixed windows (dead and live tokens) and shifted blocks occur."""
    shape = describe(model).input_shape
    assert shape is not None
    zone = dead_zone(model, shape)
    assert torch.equal(zone, _pixels(spec, (shape[1] // patch, shape[2] // patch), patch))
    assert torch.equal(~zone, _gradient_support(model, shape))
    check = verify_wall(model, zone, trials=2)
    assert check.ok, check
    assert check.max_logit_change == 0.0
    assert check.max_dead_grad == 0.0
    assert check.extremes == 4
    assert check.live_grad_max > 0
    attends = _attends(model)
    mixed = sum(int((a.dead.any(1) & ~a.dead.all(1)).any()) for a in attends)
    shifted = sum(a.shift is not None for a in attends)
    assert mixed > 0
    assert shifted > 0
    return {"dead": int(zone.sum()), "mixed": mixed, "shifted": shifted}


# -- dead zones -------------------------------------------------------------------------------

_BOX = WallSpec(rows=(4, 12), cols=(8, None))  # cells (1..2, 2..3) of the 4 x 4 coarse grid
_OUT = WallSpec(rows=(0, 8), cols=(4, 12), outside=True)


@pytest.mark.parametrize(
    ("window", "spec"), [(4, _BOX), (3, _OUT)], ids=["window4-box", "window3-padded-outside"]
)
def test_torchvision_small_dead_zone_is_the_gradient_support(window: int, spec: WallSpec) -> None:
    model = wall_vit(_tv_small(window), spec, input_shape=(3, 64, 64))  # dispatches to wall_swin
    info = describe(model)
    assert info.target_layer == "features.5.1.norm1"
    assert info.walls[0]["layer"] == "features"
    assert info.walls[0]["coarse_grid"] == [4, 4]
    assert isinstance(model.avgpool, LiveGridPool)
    out = _check(model, spec)
    assert out["dead"] == int(spec.blocked(16, 16).sum()) * 16


@pytest.mark.parametrize(
    ("window", "spec"), [(4, _BOX), (3, _OUT)], ids=["window4-box", "window3-padded-outside"]
)
def test_torchvision_v2_small_dead_zone_is_the_gradient_support(
    window: int, spec: WallSpec
) -> None:
    model = wall_vit(_tv_small(window, v2=True), spec, input_shape=(3, 64, 64))
    info = describe(model)
    assert info.target_layer == "features.5.0"  # post-norm: the last attention's input
    assert all(
        isinstance(b.attn, TorchvisionWindowAttentionV2) for s in model.features[1::2] for b in s
    )
    assert isinstance(model.avgpool, LiveGridPool)
    out = _check(model, spec)
    assert out["dead"] == int(spec.blocked(16, 16).sum()) * 16


@pytest.mark.parametrize(
    ("window", "spec"), [(4, _BOX), (3, _OUT)], ids=["window4-box", "window3-padded-outside"]
)
def test_timm_small_dead_zone_is_the_gradient_support(window: int, spec: WallSpec) -> None:
    kw = {**_TIMM_SMALL, "window_size": window}
    model = walled_timm("swin_tiny_patch4_window7_224", walls={"layers": spec}, seed=0, **kw)
    info = describe(model)
    assert info.target_layer == "layers.2.blocks.1.norm1"
    assert info.input_shape == (3, 64, 64)
    _check(model.eval(), spec)


@pytest.mark.parametrize(
    ("window", "spec"), [(4, _BOX), (3, _OUT)], ids=["window4-box", "window3-padded-outside"]
)
def test_timm_v2_small_dead_zone_is_the_gradient_support(window: int, spec: WallSpec) -> None:
    kw = {**_TIMM_SMALL, "window_size": window}
    model = _randomize_v2(walled_timm(_TIMM_V2, walls={"layers": spec}, seed=0, **kw))
    info = describe(model)
    assert info.target_layer == "layers.2.blocks.0"  # post-norm: the last attention's input
    attns = [b.attn for s in model.layers for b in s.blocks]
    assert all(isinstance(a, TimmWindowAttentionV2) for a in attns)
    assert all(isinstance(a.qkv, JoinedBiasLinear) for a in attns)
    _check(model.eval(), spec)


def test_dead_inputs_of_noise_1e30_nan_and_inf_leave_the_logits_bit_identical() -> None:
    models = [
        wall_swin(_tv_small(3), _BOX, input_shape=(3, 64, 64)),
        wall_swin(_tv_small(3, v2=True), _BOX, input_shape=(3, 64, 64)),
        wall_swin(_timm_small(3), _BOX),
        wall_swin(_timm_small(3, v2=True), _BOX),
    ]
    dead = _pixels(_BOX, (16, 16), 4)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for model in models:
        with torch.no_grad():
            want = model(x)
            for value in ("noise", 1e30, -1e30, float("nan"), float("inf"), float("-inf")):
                fill = torch.randn_like(x) * 1e4 if value == "noise" else torch.full_like(x, value)
                got = model(torch.where(dead, fill, x))
                assert torch.equal(got, want), value


def test_live_tokens_of_every_stage_ignore_the_dead_zone() -> None:
    """Patch merging keeps aligned cells all dead or all live: the live tokens of every
    stage's output (and of every merge) are bit-identical when the dead zone is NaN."""
    model = wall_swin(_tv_small(), _BOX, input_shape=(3, 64, 64))
    dead = _pixels(_BOX, (16, 16), 4)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    outs: dict[str, list[Tensor]] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, n=n: outs.setdefault(n, []).append(o))
        for n, m in model.features.named_children()
    ]
    with torch.no_grad():
        model(x)
        model(torch.where(dead, torch.full_like(x, float("nan")), x))
    for h in hooks:
        h.remove()
    coarse = _BOX.blocked(16, 16)[::4, ::4]
    for name, (a, b) in outs.items():
        f = a.shape[1] // 4  # stage grid / coarse grid
        live = ~coarse.repeat_interleave(f, 0).repeat_interleave(f, 1)
        assert torch.equal(a[:, live], b[:, live]), name
        assert bool(b[:, ~live].isnan().any()), name  # the dead tokens did change


# -- the unwalled twin ------------------------------------------------------------------------


def test_unwalled_twins_compute_the_original_networks() -> None:
    tv = walled_torchvision("swin_t", input_shape=(3, 64, 64), num_classes=5, seed=0).eval()
    plain_tv = torchvision.models.swin_t(weights=None, num_classes=5).eval()
    plain_tv.load_state_dict(tv.state_dict())
    tm = walled_timm("swin_tiny_patch4_window7_224", seed=0, **_TIMM_SMALL).eval()
    plain_tm = _timm_small(7)
    plain_tm.load_state_dict(tm.state_dict())
    tv2 = walled_torchvision("swin_v2_t", input_shape=(3, 64, 64), num_classes=5, seed=0).eval()
    plain_tv2 = torchvision.models.swin_v2_t(weights=None, num_classes=5).eval()
    plain_tv2.load_state_dict(tv2.state_dict())
    tm2 = _randomize_v2(walled_timm(_TIMM_V2, seed=0, window_size=4, **_TIMM_SMALL)).eval()
    plain_tm2 = _timm_small(4, seed=1, v2=True)
    plain_tm2.load_state_dict(tm2.state_dict())
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    pairs = ((tv, plain_tv), (tv2, plain_tv2), (tm, plain_tm), (tm2, plain_tm2))
    for model, plain in pairs:
        assert describe(model).walls == ()
        assert not dead_zone(model, (3, 64, 64)).any()
        with torch.no_grad():
            assert torch.equal(model(x), plain(x))  # the same ops in the same order


def test_window_attention_without_dead_tokens_is_the_original() -> None:
    plain = _tv_small(3)
    block = plain.features[3][1]  # stage 1 (8 x 8 grid), shifted, padded to 9 x 9
    x = torch.randn(2, 8, 8, 32)
    masked = TorchvisionWindowAttention(block.attn, torch.zeros(8, 8, dtype=torch.bool))
    assert masked.shift_size == [1, 1]
    assert torch.equal(masked(x), block.attn(x))
    block2 = _tv_small(3, v2=True).features[3][1]
    masked2 = TorchvisionWindowAttentionV2(block2.attn, torch.zeros(8, 8, dtype=torch.bool))
    assert isinstance(masked2.qkv, KeyBiasFreeLinear)
    assert masked2.qkv.weight is block2.attn.qkv.weight
    assert torch.equal(masked2(x), block2.attn(x))  # key bias, clamp, cosine, MLP bias: as is
    for v2, masked_attention in ((False, TimmWindowAttention), (True, TimmWindowAttentionV2)):
        tblock = _timm_small(3, v2=v2).layers[1].blocks[1]
        windows = window_dead(torch.zeros(8, 8), tblock.window_size, tblock.shift_size, False)
        want = tblock(x)
        tblock.attn = masked_attention(tblock.attn, windows, tblock.attn_mask)
        assert torch.equal(tblock(x), want), v2


def test_window_dead_follows_the_roll_and_the_padding() -> None:
    dead = torch.zeros(4, 4, dtype=torch.bool)
    dead[3, 3] = True
    # torchvision: pad 4 -> 6 first, then roll by -1: (3, 3) -> (2, 2), window 0 token 8
    tv = window_dead(dead, (3, 3), (1, 1), pad_first=True)
    assert tv.shape == (4, 9)
    assert torch.nonzero(tv).tolist() == [[0, 8]]
    # timm: roll by -1 on 4 x 4 first ((3, 3) -> (2, 2)), then pad: also window 0 token 8
    tm = window_dead(dead, (3, 3), (1, 1), pad_first=False)
    assert torch.nonzero(tm).tolist() == [[0, 8]]
    dead = torch.zeros(4, 4, dtype=torch.bool)
    dead[0, 0] = True  # roll by -1 wraps (0, 0) to (3, 3) (timm) / (5, 5) (torchvision)
    assert torch.nonzero(window_dead(dead, (3, 3), (1, 1), False)).tolist() == [[3, 0]]
    assert torch.nonzero(window_dead(dead, (3, 3), (1, 1), True)).tolist() == [[3, 8]]


def test_live_grid_pool_reads_the_live_cells_only() -> None:
    live = torch.tensor([[True, False], [True, True]])
    x = torch.randn(2, 2, 2, 3)
    nhwc = LiveGridPool(live, channels_last=True)
    torch.testing.assert_close(nhwc(x), x[:, live].mean(1), rtol=0, atol=0)
    nchw = LiveGridPool(live, channels_last=False)(x.permute(0, 3, 1, 2))
    assert nchw.shape == (2, 3, 1, 1)
    torch.testing.assert_close(nchw[..., 0, 0], x[:, live].mean(1), rtol=0, atol=0)


def test_cam_engine_reads_the_declared_channels_last_grid() -> None:
    """HiResCAM at the declared target layer (the last block's norm1, B x 4 x 4 x C) and
    reshape is exactly 0 where the upsampled map reads dead cells only (columns 40.. of 64)."""
    from camwall.cams import compute_cams

    model = walled_timm(
        "swin_tiny_patch4_window7_224", walls="layers:cols=8:", seed=0, **_TIMM_SMALL
    ).eval()
    info = describe(model)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    cam = compute_cams(model, x, info.target_layer, ["hirescam"], targets=[0])["hirescam"]
    assert cam.shape[-2:] == (64, 64)
    assert bool((cam[..., 40:] == 0).all())
    assert bool((cam[..., :24] > 0).any())


def test_cam_engine_reads_a_swin_v2_at_the_last_attention_input() -> None:
    """swin_v2_t at 64 x 64: the target layer is the last stage's first block (its output, the
    B x 2 x 2 x C tokens the last attention reads); HiResCAM is exactly 0 on columns 48.. (the
    upsampled map reads the dead right cell only) for two images and two targets."""
    from camwall.cams import compute_cams

    model = walled_torchvision(
        "swin_v2_t", walls="features:cols=8:", input_shape=(3, 64, 64), num_classes=5, seed=0
    ).eval()
    info = describe(model)
    assert info.target_layer == "features.7.0"
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    cam = compute_cams(model, x, info.target_layer, ["hirescam"], targets=[0, 1])["hirescam"]
    assert cam.shape == (2, 64, 64)
    assert bool((cam[..., 48:] == 0).all())
    assert bool((cam[..., :16] > 0).any())


# -- checkpoints and plain weights --------------------------------------------------------------


def _named_models() -> dict[str, nn.Module]:
    tv = walled_torchvision(
        "swin_t", walls="features:rows=8:", input_shape=(3, 64, 64), num_classes=5, seed=0
    )
    tv2 = walled_torchvision(
        "swin_v2_t", walls="features:cols=8:", input_shape=(3, 64, 64), num_classes=5, seed=0
    )
    tm = walled_timm("swin_tiny_patch4_window7_224", walls="layers:cols=:8", seed=0, **_TIMM_SMALL)
    tm2 = walled_timm(_TIMM_V2, walls="layers:rows=:8", seed=0, window_size=4, **_TIMM_SMALL)
    return {"tv": tv.eval(), "tv2": tv2.eval(), "timm": tm.eval(), "timm2": tm2.eval()}


def test_save_load_round_trip_torchvision_and_timm(tmp_path: Path) -> None:
    for key, model in _named_models().items():
        save_model(model, tmp_path / key)
        loaded, meta = load_model(tmp_path / key)
        assert meta["arch"] == ("torchvision" if key.startswith("tv") else "timm")
        assert meta["wall"] == describe(model).wall_list()
        assert meta["dead_zone"]["fraction"] == 0.5
        x = torch.rand(1, 3, 64, 64)
        assert torch.equal(loaded(x), model(x))
        assert set(loaded.state_dict()) == set(model.state_dict())


def test_load_weights_of_the_plain_networks(tmp_path: Path) -> None:
    plains = {
        "tv": torchvision.models.swin_t(weights=None, num_classes=5),
        "tv2": torchvision.models.swin_v2_t(weights=None, num_classes=5),
        "timm": _timm_small(7, seed=4),
        "timm2": _timm_small(4, seed=4, v2=True),
    }
    for key, model in _named_models().items():
        state = plains[key].state_dict()
        assert set(model.state_dict()) == set(state)  # every key is the plain network's
        save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / f"{key}.safetensors")
        load_weights(model, tmp_path / f"{key}.safetensors")
        for k, v in model.state_dict().items():
            assert torch.equal(v, state[k]), k


def test_walled_parameters_are_the_plain_ones() -> None:
    """The same parameter tensors under the same names (an optimizer built before the wall
    keeps training the walled model)."""
    for model in (_tv_small(), _tv_small(v2=True), _timm_small(), _timm_small(v2=True)):
        before = {n: id(p) for n, p in model.named_parameters()}
        shape = (3, 64, 64) if isinstance(model, SwinTransformer) else None
        assert wall_swin(model, "rows=12:", input_shape=shape) is model
        assert {n: id(p) for n, p in model.named_parameters()} == before


# -- refusals -----------------------------------------------------------------------------------


def test_misaligned_regions_are_refused_with_one_line() -> None:
    for spec in ("rows=13:", "cols=2:6", WallSpec(rows=(4, 8), cols=(5, 8))):
        with pytest.raises(CamwallError, match="not aligned to this Swin's coarsest grid") as err:
            wall_swin(_tv_small(), spec, input_shape=(3, 64, 64))
        assert "\n" not in str(err.value)
        assert "4 x 4 cells of 4 x 4 patches" in str(err.value)
        assert "'rows=12:'" in str(err.value)
    with pytest.raises(CamwallError, match=r"walled_timm.*e\.g\. 'rows=48:'"):
        walled_timm("swin_tiny_patch4_window7_224", walls="layers:rows=50:")


def test_bad_walls_and_sizes_are_refused() -> None:
    with pytest.raises(CamwallError, match="whole 16 x 16 patch grid"):
        wall_swin(_tv_small(), "rows=0:", input_shape=(3, 64, 64))
    with pytest.raises(CamwallError, match="pads before merging"):
        wall_swin(_tv_small(), "rows=8:", input_shape=(3, 56, 56))
    with pytest.raises(CamwallError, match="input_shape"):
        wall_swin(_timm_small(), "rows=8:", input_shape=(3, 128, 128))
    with pytest.raises(CamwallError, match="for its layer 'features'"):
        walled_torchvision("swin_t", walls="layers:rows=48:")
    with pytest.raises(CamwallError, match="for its layer 'layers'"):
        walled_timm("swin_tiny_patch4_window7_224", walls="blocks:rows=12:", **_TIMM_SMALL)
    with pytest.raises(CamwallError, match="dynamic image size"):
        walled_timm("swin_tiny_patch4_window7_224", walls="layers:rows=12:",
                    strict_img_size=False, **_TIMM_SMALL)  # fmt: skip
    with pytest.raises(CamwallError, match="head it cannot wall"):
        walled_timm("swin_tiny_patch4_window7_224", walls="layers:rows=12:", global_pool="max",
                    **_TIMM_SMALL)  # fmt: skip
    model = wall_swin(_timm_small(), "rows=12:")
    with pytest.raises(CamwallError, match="already walled"):
        wall_vit(model, "rows=12:")
    tv = wall_swin(_tv_small(), "rows=12:", input_shape=(3, 64, 64))
    with pytest.raises(CamwallError, match="walled input size"):
        tv(torch.rand(1, 3, 32, 32))


def test_maxvit_and_separate_v2_biases_are_refused_with_the_reason() -> None:
    with pytest.raises(CamwallError, match=r"MaxxVit cannot be walled: .* grid attention") as err:
        walled_timm("maxvit_tiny_tf_224", walls="layers:rows=48:", depths=(1, 1, 1, 1))
    assert "\n" not in str(err.value)
    model = timm.create_model(_TIMM_V2, pretrained=False, **_TIMM_SMALL)
    for stage in model.layers:
        for b in stage.blocks:
            b.attn.qkv_bias_separate = True
    before = [type(m) for m in model.modules()]
    with pytest.raises(CamwallError, match="qkv_bias_separate=True adds its bias after"):
        wall_swin(model, "rows=12:")
    assert [type(m) for m in model.modules()] == before


def test_mixed_v1_and_v2_blocks_are_refused() -> None:
    model = _tv_small()
    model.features[3][0] = _tv_small(v2=True).features[3][0]
    with pytest.raises(CamwallError, match=r"other than all V1 .* or all V2 ones"):
        wall_swin(model, "rows=12:", input_shape=(3, 64, 64))
    tm = _timm_small()
    tm.layers[1].blocks[0] = _timm_small(v2=True).layers[1].blocks[0]
    with pytest.raises(CamwallError, match="not all timm's SwinTransformerBlock"):
        wall_swin(tm, "rows=12:")


# -- full size ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_swin_t_swin_tiny_and_swin_v2_t_at_224_and_swinv2_tiny_at_256() -> None:
    """The real sizes: at 224 a 56 x 56 patch grid, 7 x 7 coarse grid of 8 x 8-patch (32 px)
    cells, the box of the bottom 2 cell rows x the right cell column (2 cells, 64 x 32 px)
    dead; swinv2_tiny at 256: 64 x 64 patches, the box rows 40.. x cols 48.. is 3 x 2 cells."""
    spec = WallSpec(rows=(40, None), cols=(48, None))
    models = [
        walled_torchvision("swin_t", walls={"features": spec}, num_classes=10, seed=0),
        walled_timm("swin_tiny_patch4_window7_224", walls={"layers": spec}, num_classes=10, seed=0),
        walled_torchvision("swin_v2_t", walls={"features": spec}, num_classes=10, seed=0),
        _randomize_v2(walled_timm(_TIMM_V2, walls={"layers": spec}, num_classes=10, seed=0)),
    ]
    for model in models:
        shape = describe(model).input_shape
        assert shape is not None
        zone = dead_zone(model.eval(), shape)
        assert torch.equal(zone, _pixels(spec, (shape[1] // 4, shape[2] // 4), 4))
        assert int(zone.sum()) == (64 * 32 if shape[1] == 224 else 96 * 64)
        check = verify_wall(model, zone, trials=1)
        assert check.ok, check
        assert check.max_logit_change == 0.0
