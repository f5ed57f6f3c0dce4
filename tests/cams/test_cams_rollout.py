"""Attention rollout: hand computation, torchvision's ViT, the wall, hooks, refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from camwall.cams import DEFAULT_METHODS, METHODS, attention_rollout, compute_cams
from camwall.cams._rollout import attention_probabilities, rollout_matrix
from camwall.errors import CamwallError
from camwall.walls import WalledViT, create_model, describe


def _uniform_vit(dead: torch.Tensor | None, depth: int) -> WalledViT:
    """A 2 x 2-patch ViT whose attention is uniform over the allowed tokens (q = k = 0)."""
    torch.manual_seed(0)
    model = WalledViT(8, 1, 4, dim=4, depth=depth, heads=2, mlp_dim=8, num_classes=3, dead=dead)
    with torch.no_grad():
        for block in model.blocks:
            block.self_attention.qkv.weight[:8].zero_()  # type: ignore[index]
            block.self_attention.qkv.bias[:8].zero_()  # type: ignore[index]
    return model.eval()


def test_hand_computed_rollout_on_a_walled_vit() -> None:
    # Tokens: 0 = class, 1..4 = patches (0,0), (0,1), (1,0), (1,1); patch (1,1) is dead.
    # Live rows attend 1/4 to tokens 0..3, the dead row 1/5 to all. Ã = (A + I) / 2:
    # Ã[0] = [5/8, 1/8, 1/8, 1/8, 0], Ã[k] = 1/8 + 1/2 on the diagonal for live k.
    # Two layers: R[0, j] = sum_k Ã[0, k] Ã[k, j] = (5 + 5 + 1 + 1) / 64 = 3/16 for live j,
    # R[0, 4] = 0.
    dead = torch.tensor([[False, False], [False, True]])
    x = torch.rand(2, 1, 8, 8)
    one = attention_rollout(_uniform_vit(dead, depth=1), x)
    torch.testing.assert_close(one, torch.tensor([[1 / 8, 1 / 8], [1 / 8, 0.0]]).expand(2, 2, 2))
    two = attention_rollout(_uniform_vit(dead, depth=2), x)
    torch.testing.assert_close(two, torch.tensor([[3 / 16, 3 / 16], [3 / 16, 0.0]]).expand(2, 2, 2))
    assert bool((two[:, 1, 1] == 0).all())


def test_rollout_matrix_formula_by_loops() -> None:
    gen = torch.Generator().manual_seed(3)
    layers = [torch.softmax(torch.randn(2, 3, 4, 4, generator=gen), -1) for _ in range(3)]
    expected = torch.eye(4).expand(2, 4, 4).clone()
    for a in layers:
        mixed = (a.mean(1) + torch.eye(4)) / 2  # rows of mean(A) + I sum to 2
        new = torch.zeros(2, 4, 4)
        for b in range(2):
            for i in range(4):
                for j in range(4):
                    new[b, i, j] = sum(mixed[b, i, k] * expected[b, k, j] for k in range(4))
        expected = new
    torch.testing.assert_close(rollout_matrix(layers), expected)


def _tiny_torchvision_vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(
        image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16,
        num_classes=3,
    ).eval()  # fmt: skip


def test_torchvision_vit_probabilities_match_multihead_attention() -> None:
    model = _tiny_torchvision_vit()
    x = torch.rand(2, 3, 16, 16)
    inputs: list[torch.Tensor] = []
    layers = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    handles = [m.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for m in layers]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    probs = attention_probabilities(model, x)
    assert len(probs) == 2
    assert probs[0].shape == (2, 2, 17, 17)
    for layer, q, p in zip(layers, inputs, probs, strict=True):
        with torch.no_grad():
            _, ref = layer(q, q, q, need_weights=True, average_attn_weights=False)
        torch.testing.assert_close(p, ref, rtol=1e-5, atol=1e-6)
    maps = compute_cams(model, x, "conv_proj", ["rollout"])["rollout"]
    assert maps.shape == (2, 16, 16)
    raw = attention_rollout(model, x)
    assert raw.shape == (2, 4, 4)
    torch.testing.assert_close(raw, rollout_matrix(probs)[:, 0, 1:].reshape(2, 4, 4))


def test_rollout_respects_the_fashion_vit_wall() -> None:
    torch.manual_seed(1)
    model = create_model("fashion-vit").eval()
    x = torch.rand(3, 1, 64, 64)
    raw = attention_rollout(model, x)
    assert raw.shape == (3, 8, 8)
    assert bool((raw[:, 5:] == 0).all())
    assert bool((raw[:, :5] > 0).all())
    layer = describe(model).target_layer  # tokens, laid out by describe(model).reshape
    maps = compute_cams(model, x, layer, ["rollout", "gradcam", "hirescam"], targets=[0, 1, 2])
    # bilinear upsampling from the 8 x 8 grid spreads live row 4 into pixel rows 40..43 only
    assert bool((maps["rollout"][:, 44:] == 0).all())
    assert bool((maps["rollout"][:, 40:44] > 0).any())
    # the predictions of docs/walls.md: hirescam is 0 there too, gradcam is not
    assert bool((maps["hirescam"][:, 44:] == 0).all())
    assert bool((maps["gradcam"][:, 44:] > 0).any())


def test_rollout_refuses_other_models_and_leaves_no_hooks() -> None:
    assert "rollout" in METHODS
    assert "rollout" not in DEFAULT_METHODS
    cnn = create_model("fashion-vgg", width=8)
    with pytest.raises(CamwallError, match="rollout needs a Vision Transformer"):
        compute_cams(cnn, torch.rand(1, 1, 64, 64), "9", ["rollout"])
    model = create_model("fashion-vit", dim=16, depth=2, heads=2, mlp_dim=32)
    with pytest.raises(RuntimeError):
        attention_probabilities(model, torch.rand(1, 3, 64, 64))  # wrong channels
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    attention_rollout(model, torch.rand(1, 1, 64, 64))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
