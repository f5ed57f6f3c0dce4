"""LeGrad: torchcam 0.5's maps on torchvision's ViT, autograd on walled ViTs, hooks, refusals."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from camwall.cams import METHODS, compute_cams, finalize_maps, token_grid
from camwall.cams._legrad import legrad_map
from camwall.cams._targets import ClassTarget
from camwall.errors import CamwallError
from camwall.walls import WalledViT, describe, wall_vit


def _torchvision_vit(layers: int = 3, seed: int = 0) -> nn.Module:
    from torchvision.models import VisionTransformer

    torch.manual_seed(seed)
    model = VisionTransformer(
        image_size=16, patch_size=4, num_layers=layers, num_heads=2, hidden_dim=8, mlp_dim=16,
        num_classes=5,
    )  # fmt: skip
    nn.init.normal_(model.heads.head.weight)  # torchvision starts the head at 0: no gradient
    return model.eval()


def _targets(classes: list[int]) -> list[ClassTarget]:
    return [ClassTarget(c) for c in classes]


def _close(ours: Tensor, ref: Tensor) -> None:
    """float32 sums of a few dozen terms: 1e-5 of the map's scale."""
    assert float(ref.abs().max()) > 0  # a map, not zeros
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("blocks", [None, 1, 2])
def test_legrad_matches_torchcam_on_torchvision_vit(seed: int, blocks: int | None) -> None:
    from torchcam.methods import LeGrad as TorchcamLeGrad

    model = _torchvision_vit(seed=seed)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    classes = [1, 3, 4]
    chosen = list(model.encoder.layers)[-(blocks or 3) :]
    with TorchcamLeGrad(model, chosen) as extractor:
        ref = extractor(classes, model(x), normalized=False)[0]
    _close(legrad_map(model, x, _targets(classes), blocks), ref)


def test_final_map_is_finalize_of_the_raw_map_and_matches_torchcam_normalized() -> None:
    from torchcam.methods import LeGrad as TorchcamLeGrad

    model = _torchvision_vit()
    x = torch.rand(2, 3, 16, 16)
    layer = "encoder.layers.encoder_layer_2"
    maps = compute_cams(model, x, layer, ["legrad"], targets=[0, 2], reshape_transform=token_grid())
    raw = legrad_map(model, x, _targets([0, 2]))
    torch.testing.assert_close(maps["legrad"], finalize_maps(raw, (16, 16)))
    with TorchcamLeGrad(model, list(model.encoder.layers)) as extractor:
        ref = extractor([0, 2], model(x))[0]  # min-max on the 4 x 4 grid
    low = raw - raw.amin((1, 2), keepdim=True)
    _close(low / (low.amax((1, 2), keepdim=True) + 1e-8), ref)


def _autograd_legrad(model: nn.Module, blocks: list[nn.Module], x: Tensor, c: list[int]) -> Tensor:
    """The reference: ``ds_l / dP_l`` by autograd on the probabilities a walled attention's
    ``attend`` returns (they feed ``read``), ReLU, mean over heads and queries and blocks."""
    probs: list[Tensor] = []
    tokens: list[Tensor] = []
    hooks = [
        b.self_attention.attend.register_forward_hook(lambda m, a, p: probs.append(p))
        for b in blocks
    ]
    hooks += [b.register_forward_hook(lambda m, a, t: tokens.append(t)) for b in blocks]
    try:
        model(x.clone().requires_grad_(True))
    finally:
        for h in hooks:
            h.remove()
    norm, head = (
        (model.ln, model.head) if isinstance(model, WalledViT) else (model.encoder.ln, model.heads)
    )
    maps = []
    for p, t in zip(probs, tokens, strict=True):
        s = head(norm(t.mean(1)))[torch.arange(len(c)), torch.tensor(c)].sum()
        (g,) = torch.autograd.grad(s, p, retain_graph=True)
        maps.append(g.relu().mean((1, 2))[:, 1:])
    return torch.stack(maps).mean(0).detach()


def test_legrad_on_a_walled_vit_matches_autograd_through_its_masked_attention() -> None:
    torch.manual_seed(0)
    dead = torch.zeros(4, 4, dtype=torch.bool)
    dead[3] = True
    model = WalledViT(16, 1, 4, dim=8, depth=2, heads=2, mlp_dim=16, num_classes=4, dead=dead)
    nn.init.normal_(model.head.weight)
    model.eval()
    x = torch.rand(2, 1, 16, 16)
    ref = _autograd_legrad(model, list(model.blocks), x, [1, 2]).reshape(2, 4, 4)
    _close(legrad_map(model, x, _targets([1, 2])), ref)


def test_legrad_on_a_wall_vit_torchvision_model_matches_autograd() -> None:
    model = _torchvision_vit(layers=2)
    wall_vit(model, "rows=3:")
    x = torch.rand(2, 3, 16, 16)
    ref = _autograd_legrad(model, list(model.encoder.layers), x, [0, 4]).reshape(2, 4, 4)
    _close(legrad_map(model, x, _targets([0, 4])), ref)
    d = describe(model)
    maps = compute_cams(
        model, x, d.target_layer, ["legrad", "rollout"], reshape_transform=d.reshape
    )
    assert maps["legrad"].shape == maps["rollout"].shape == (2, 16, 16)


def test_legrad_leaves_no_hooks_and_refuses_other_models() -> None:
    model = _torchvision_vit()
    legrad_map(model, torch.rand(1, 3, 16, 16), _targets([0]))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(CamwallError, match="only 3 blocks"):
        legrad_map(model, torch.rand(1, 3, 16, 16), _targets([0]), blocks=4)
    with pytest.raises(CamwallError, match="Vision Transformer"):
        legrad_map(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()), torch.rand(1, 3, 8, 8), [])
    with pytest.raises(CamwallError, match="legrad_blocks"):
        METHODS.get("legrad")(legrad_blocks=0)
    assert METHODS.get("legrad").default is False
