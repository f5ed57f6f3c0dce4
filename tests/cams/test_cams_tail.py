"""The tail of any model (camwall.cams._tail): a torch.fx split after the target layer.

Checks: the tail's logits equal the model's for the unmodified activations (torchvision and timm
families); AblationCAM with the tail equals pytorch-grad-cam 1.5.7's (which re-runs the whole
model) on random-weight ResNets; the fallback and its reason; the cache and its invalidation;
hygiene (no hooks left, modes restored).
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from pytorch_grad_cam import AblationCAM
from torch import nn

from camwall.cams import CamEngine, compute_cams, token_grid
from camwall.cams._tail import find_tail
from camwall.modelstate import hook_count

EPS = torch.finfo(torch.float32).eps


def _small_vit() -> nn.Module:
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32
    )


def _timm_resnet_live_blocks() -> nn.Module:
    """timm zero-initializes each block's last BatchNorm (a block's branch would be 0, and
    ablating inside it would change nothing): random scales instead."""
    model = timm.create_model("resnet10t", num_classes=5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
    return model


def _small_vit_random_head() -> nn.Module:
    """torchvision zero-initializes the head (every map would be 0): a random one."""
    model = _small_vit()
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


# name -> (builder, target layer, input size)
MODELS = {
    "resnet18": (torchvision.models.resnet18, "layer4", 64),
    "resnet18-layer3": (torchvision.models.resnet18, "layer3", 64),
    "densenet": (
        lambda: torchvision.models.DenseNet(8, (2, 2), 8, num_classes=7),
        "features.denseblock2",
        32,
    ),
    "efficientnet_b0": (torchvision.models.efficientnet_b0, "features.7", 32),
    "convnext": (lambda: timm.create_model("convnext_atto", num_classes=9), "stages.2", 64),
    "vit-torchvision": (_small_vit, "encoder.layers.encoder_layer_1", 32),
    "vit-timm": (
        lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=6),
        "blocks.10",
        32,
    ),
    "timm-resnet": (lambda: timm.create_model("resnet10t", num_classes=5), "layer4", 64),
    # inside a residual block: the block's input (the shortcut) is captured from before it
    "vit-torchvision-ln_1": (_small_vit_random_head, "encoder.layers.encoder_layer_2.ln_1", 32),
    "vit-timm-norm1": (
        lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=6),
        "blocks.11.norm1",
        32,
    ),
    "resnet18-layer4.1.conv2": (torchvision.models.resnet18, "layer4.1.conv2", 64),
    "timm-resnet-act1": (_timm_resnet_live_blocks, "layer4.0.act1", 64),
}

CAPTURING = [
    "vit-torchvision-ln_1",
    "vit-timm-norm1",
    "resnet18-layer4.1.conv2",
    "timm-resnet-act1",
]


def _build(name: str, seed: int = 0) -> tuple[nn.Module, str, torch.Tensor]:
    builder, layer, size = MODELS[name]
    torch.manual_seed(seed)
    model = builder().eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
    return model, layer, x


@pytest.mark.parametrize("name", MODELS)
def test_tail_logits_equal_the_model_logits(name):
    """For the unmodified activations the tail runs the same modules on the same values as the
    model, so the logits agree to float32 rounding: a few ulps of the largest logit (oneDNN may
    pick another kernel for another memory layout)."""
    model, layer, x = _build(name)
    reshape = token_grid() if name.startswith("vit") else None
    with CamEngine(model, layer, reshape_transform=reshape) as engine:
        (ctx,) = engine.capture_layers(x, None)
        logits = ctx.run_tail(ctx.raw_activations)
        rows = [1, 1, 0]  # the captured values are taken by row, as the maps are
        mixed = ctx.run_tail(ctx.raw_activations[rows], rows)
        info = engine.info["tail"]
    assert info.startswith("graph (")
    assert ("1 value captured from before it" in info) == (name in CAPTURING), info
    tol = 16 * EPS * float(ctx.logits.abs().max())
    torch.testing.assert_close(logits, ctx.logits, rtol=0, atol=tol)
    torch.testing.assert_close(mixed, ctx.logits[rows], rtol=0, atol=tol)


@pytest.mark.parametrize("name", CAPTURING)
def test_tail_inside_a_block_gives_the_whole_model_maps(name):
    """AblationCAM and finercam from a layer inside a residual block (a ViT block's first
    norm, a ResNet block's last conv): the tail with the captured block input gives the maps
    of the whole model re-run with the layer's output replaced (the fallback's way), and the
    part before the layer runs twice (the shared pass and the prefix), not once per chunk.
    In float64: the score drops of AblationCAM amplify float32 rounding (the two paths run
    attention on batches of different sizes) to ~1e-4 on the timm ViT."""
    model, layer, x = _build(name, seed=3)
    model, x = model.double(), x.double()
    reshape = token_grid() if name.startswith("vit") else None
    opts = {"ablationcam_chunk": 16, "reshape_transform": reshape}
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    calls: list[int] = []
    handle = first.register_forward_hook(lambda *args: calls.append(1))
    try:
        fast = compute_cams(model, x, layer, ["ablationcam", "finercam"], **opts)
    finally:
        handle.remove()
    assert len(calls) == 2
    whole = _whole_model_maps(model, x, layer, ["ablationcam", "finercam"], **opts)
    assert float(fast["ablationcam"].max()) > 0.99  # not an all-zero comparison
    for method in ("ablationcam", "finercam"):
        torch.testing.assert_close(fast[method], whole[method], rtol=0, atol=1e-6)


def test_ablationcam_inside_a_timm_block_matches_grad_cam(monkeypatch):
    """timm resnet10t's ``layer4.0.act1`` (a ReLU inside the block; the shortcut is captured):
    grad-cam's AblationCAM (the whole model re-run per chunk), both in float64. In float32 the
    two differ by up to 1.4e-5 (AVX2 kernels): the score drops ``(s0 - s) / s0`` of 512
    channels amplify the rounding of logits computed on batches of other sizes, and grad-cam
    stores the scores as float32; its ablation module is given float64 for that (then 8.9e-7,
    the float32 normalization and resize of the maps)."""
    import types

    import numpy as np
    from pytorch_grad_cam import ablation_cam

    wide = types.SimpleNamespace(**{**vars(np), "float32": np.float64})
    monkeypatch.setattr(ablation_cam, "np", wide)
    model, layer, x = _build("timm-resnet-act1", seed=3)
    model, x = model.double(), x.double()
    ours = compute_cams(model, x, layer, "ablationcam")["ablationcam"]
    with AblationCAM(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        ref = torch.from_numpy(cam(input_tensor=x, targets=None))
    assert float((ours - ref).abs().max()) <= 1e-5
    assert float(ours.max()) > 0.99


@pytest.mark.parametrize(
    ("builder", "layer", "size"),
    [
        (torchvision.models.resnet18, "layer4", 64),
        (torchvision.models.resnet50, "layer3", 32),
    ],
    ids=["resnet18-layer4", "resnet50-layer3"],
)
def test_ablationcam_on_resnets_matches_grad_cam(builder, layer, size):
    """Random-weight ResNets: the tail (layer4, pool, fc) gives grad-cam's maps to 1e-5, and the
    stem runs once (the shared pass), not once per ablated chunk."""
    torch.manual_seed(3)
    model = builder().eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    calls: list[int] = []
    handle = model.conv1.register_forward_hook(lambda *args: calls.append(1))
    try:
        ours = compute_cams(model, x, layer, "ablationcam")["ablationcam"]
    finally:
        handle.remove()
    assert len(calls) == 1
    with AblationCAM(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        ref = torch.from_numpy(cam(input_tensor=x, targets=None))
    assert float((ours - ref).abs().max()) <= 1e-5
    assert float(ours.max()) > 0.99


def test_finercam_uses_the_graph_tail():
    """finercam's gradient through the tail (autograd through the fx graph) equals the one
    through the whole model with the layer's output replaced."""
    model, layer, x = _build("resnet18-layer3")
    fast = compute_cams(model, x, layer, "finercam")["finercam"]
    whole = compute_cams(model, x, layer, "finercam", head=_whole_model_head(model, layer, x))
    torch.testing.assert_close(fast, whole["finercam"], rtol=0, atol=1e-5)


def _whole_model_maps(model: nn.Module, x: torch.Tensor, layer: str, methods, **opts):
    """The maps with no tail: a (no-op) forward hook on the model stops the graph split, so
    the engine re-runs the whole model with the layer's output replaced."""
    handle = model.register_forward_hook(lambda *args: None)
    try:
        with CamEngine(model, layer, reshape_transform=opts.pop("reshape_transform", None)) as eng:
            maps = eng(x, methods, **opts)
            assert eng.info["tail"].startswith("whole model: forward hooks on the model")
    finally:
        handle.remove()
    return maps


def _whole_model_head(model: nn.Module, layer: str, x: torch.Tensor):
    """``head(A)``: the whole model on ``x`` with the layer's output replaced by ``A``."""

    def head(a: torch.Tensor) -> torch.Tensor:
        handle = model.get_submodule(layer).register_forward_hook(lambda *args: a)
        try:
            return model(x[: a.shape[0]])
        finally:
            handle.remove()

    return head


class _WidthScaled(nn.Module):
    """The part after ``act`` reads the input's width, an int: nothing to take by row."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)) * x.shape[-1])


def test_fallback_says_why_once():
    torch.manual_seed(0)
    model = _WidthScaled().eval()
    x = torch.randn(2, 3, 8, 12)
    engine = CamEngine(model, "act")
    maps = engine(x, "ablationcam")
    assert not engine.has_tail
    assert engine.info["tail"] == (
        "whole model: the part after the layer also needs 'getitem', computed before it, "
        "which is int, not one row per image"
    )
    whole = _whole_model_maps(model, x, "act", "ablationcam")
    torch.testing.assert_close(maps["ablationcam"], whole["ablationcam"], rtol=0, atol=1e-6)


def test_residual_branch_is_captured(make_tiny):
    """SkipNet's ``act1`` output feeds the sum after ``act2``: captured, not re-run."""
    model, layer, x = make_tiny("skip", batch=2)
    engine = CamEngine(model, layer)
    maps = engine(x, "ablationcam")
    assert engine.has_tail
    assert engine.info["tail"] == ("graph (3 nodes after act2, 1 value captured from before it)")
    whole = _whole_model_maps(model, x, layer, "ablationcam")
    torch.testing.assert_close(maps["ablationcam"], whole["ablationcam"], rtol=0, atol=1e-6)


class _InPlaceSkip(nn.Module):
    """The tail adds into the captured residual in place (``a += b``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)
        b = self.act(self.conv2(a))
        a += b
        return self.fc(a.mean(dim=(2, 3)))


def test_captured_values_written_in_place_are_computed_again():
    torch.manual_seed(1)
    model = _InPlaceSkip().eval()
    x = torch.randn(2, 3, 6, 6)
    with CamEngine(model, "act") as engine:
        (ctx,) = engine.capture_layers(x, None)
        first = ctx.run_tail(ctx.raw_activations)
        second = ctx.run_tail(ctx.raw_activations)  # the first run wrote into the residual
        assert "1 value captured" in engine.info["tail"]
    tol = 16 * EPS * float(ctx.logits.abs().max())
    torch.testing.assert_close(first, ctx.logits, rtol=0, atol=tol)
    torch.testing.assert_close(second, ctx.logits, rtol=0, atol=tol)


def test_fallback_when_fx_cannot_trace():
    class Branchy(nn.Module):  # data-dependent control flow in the model's own forward
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.conv(x)
            if a.sum() > 0:
                a = a * 2
            return self.fc(a.mean(dim=(2, 3)))

    tail = find_tail(Branchy(), "conv")
    assert tail.fn is None
    assert tail.info.startswith("whole model: torch.fx cannot trace it (TraceError")


def test_fallback_when_an_ancestor_has_a_forward_hook(make_tiny):
    model, layer, _ = make_tiny("custom")
    handle = model.register_forward_hook(lambda m, i, o: o * 2)
    try:
        assert find_tail(model, layer).info.startswith("whole model: forward hooks on the model")
    finally:
        handle.remove()
    assert find_tail(model, layer).fn is not None  # checked again once the hook is gone


def test_split_is_cached_and_remade_when_the_model_changes(make_tiny):
    model, layer, x = make_tiny("custom", batch=2)
    first = find_tail(model, layer)
    assert find_tail(model, layer) is first
    model.fc = nn.Linear(7, 3)  # a new head: the old graph would run the old Linear
    second = find_tail(model, layer)
    assert second is not first
    with CamEngine(model, layer) as engine:
        (ctx,) = engine.capture_layers(x, None)
        assert engine.run_tail(ctx.raw_activations, ctx.x).shape == (2, 3)


def test_split_cache_does_not_keep_the_model_alive(make_tiny):
    import gc
    import weakref

    model, layer, _ = make_tiny("custom")
    find_tail(model, layer)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_tail_hygiene_hooks_and_modes(make_tiny):
    model, layer, x = make_tiny("custom", batch=2)
    model.train()
    model.act1.eval()
    before = hook_count(model)
    compute_cams(model, x, layer, ["ablationcam", "finercam"])
    assert hook_count(model) == before
    assert model.training
    assert model.fc.training
    assert not model.act1.training


def test_ablated_rows_reuse_one_buffer_and_copy_again_after_an_in_place_tail():
    """AblationCAM's batches (camwall.cams._ablation._AblatedRows): each equals fresh copies of
    its images' maps with one channel set, chunks mixing images; a run that writes into its
    input (an in-place tail) makes the next batch copy every row again."""
    from camwall.cams._ablation import _AblatedRows

    a = torch.randn(3, 8, 2, 2, generator=torch.Generator().manual_seed(0))
    owners = torch.arange(3).repeat_interleave(8)
    chans = torch.arange(8).repeat(3)
    for write in (False, True):
        rows_of = _AblatedRows(a, 5)
        for start in range(0, 24, 5):
            rows, part = owners[start : start + 5], chans[start : start + 5]
            want = a[rows].clone()
            want[torch.arange(len(rows)), part] = -7.0
            with rows_of.ablated(rows, part, -7.0) as batch:
                assert torch.equal(batch, want), (write, start)
                if write:
                    batch.add_(1.0)  # a tail writing into its input
    assert torch.equal(a, torch.randn(3, 8, 2, 2, generator=torch.Generator().manual_seed(0)))


class _AblatingIdentity:
    """A reshape transform with ``ablate`` and no ``inverse``: ablation happens in the raw
    layer output (as :class:`camwall.cams.FpnGrid` does for a pyramid)."""

    def __call__(self, raw):
        return raw

    def ablate(self, raw, channels, value):
        out = raw.clone()
        out[torch.arange(out.shape[0]), channels] = value
        return out


def test_ablationcam_over_two_layers_ablates_in_the_raw_output_of_each(make_tiny):
    """With several target layers each layer's runner says it ablates in the raw output, so a
    transform without ``inverse`` is enough; the maps equal those without a transform, which
    ablate the same channels in the feature maps (reused buffer path), bit for bit."""
    model, _, x = make_tiny("flat", batch=2)
    layers = ["1", "4"]
    plain = compute_cams(model, x, layers, "ablationcam", ablationcam_chunk=5)["ablationcam"]
    raw = compute_cams(
        model, x, layers, "ablationcam", ablationcam_chunk=5, reshape_transform=_AblatingIdentity()
    )["ablationcam"]
    assert float(plain.max()) > 0
    torch.testing.assert_close(raw, plain, rtol=0, atol=0)
