"""A ViT target layer inside a residual block (``blocks.N.norm1``): its tail captures the block
input from before it (camwall.cams._tail); the enclosing block's output needs no capture."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from camwall.cams import CamEngine
from camwall.cams._tail import find_tail


def _timm_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=6).eval()


def _torchvision_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32
    ).eval()


CASES = [
    (
        _timm_vit,
        "blocks.3.norm1",
        "blocks.3",
        ["patch_embed", "cls_token", "pos_embed", "blocks.2"],
    ),
    (
        _torchvision_vit,
        "encoder.layers.encoder_layer_1.ln_1",
        "encoder.layers.encoder_layer_1",
        ["conv_proj", "class_token", "encoder.pos_embedding", "encoder.layers.encoder_layer_0"],
    ),
]


@pytest.mark.parametrize(("build", "inner", "outer", "before"), CASES)
def test_inner_tail_holds_nothing_of_the_part_before(build, inner, outer, before):
    """The tail starts at the layer: no module or parameter used only before it (those run once,
    in the prefix that computes the captured block input)."""
    model = build()
    tail = find_tail(model, inner)
    used = {str(n.target) for n in tail.fn.graph.nodes if n.op in ("call_module", "get_attr")}
    assert used
    assert not [u for u in used if any(u == b or u.startswith(b + ".") for b in before)]
    prefix_used = {str(n.target) for n in tail.prefix.module.graph.nodes if n.op == "call_module"}
    assert inner not in prefix_used


@pytest.mark.parametrize(("build", "inner", "outer", "before"), CASES)
def test_inner_layer_captures_the_block_input(build, inner, outer, before):
    """Both tails run the same modules on the same values, batch for batch, as the model:
    bit-identical logits."""
    model = build()
    info = CamEngine(model, inner).info["tail"]
    assert info.startswith("graph (")
    assert info.endswith(", 1 value captured from before it)")
    assert find_tail(model, outer).prefix is None
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    store: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: store.__setitem__(name, o)
        )
        for name in (inner, outer)
    ]
    with torch.no_grad():
        logits = model(x)
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        inner_tail = find_tail(model, inner)
        assert inner_tail.prefix is not None
        from_inner = inner_tail.fn(store[inner], *inner_tail.prefix(x))
        from_outer = find_tail(model, outer).fn(store[outer])
    assert torch.equal(from_inner, logits)
    assert torch.equal(from_outer, logits)
