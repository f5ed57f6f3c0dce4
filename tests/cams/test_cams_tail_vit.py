"""A ViT target layer inside a residual block (``blocks.N.norm1``): the fallback's reason names
the enclosing block, whose output has a tail (camwall.cams._tail)."""

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


@pytest.mark.parametrize(
    ("build", "inner", "outer"),
    [
        (_timm_vit, "blocks.3.norm1", "blocks.3"),
        (_torchvision_vit, "encoder.layers.encoder_layer_1.ln_1", "encoder.layers.encoder_layer_1"),
    ],
)
def test_inner_layer_names_the_enclosing_block(build, inner, outer):
    model = build()
    info = CamEngine(model, inner).info["tail"]
    assert info.startswith(f"whole model: the part after {inner!r} also needs ")
    assert f"the tail works from {outer!r}, the enclosing module" in info
    tail = find_tail(model, outer)
    assert tail.fn is not None
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    store: list[torch.Tensor] = []
    handle = model.get_submodule(outer).register_forward_hook(lambda m, i, o: store.append(o))
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    with torch.no_grad():
        again = tail.fn(store[0])
    assert torch.equal(again, logits)  # the same modules on the same values
