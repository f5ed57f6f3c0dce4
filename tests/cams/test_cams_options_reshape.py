"""reshape_transform and token_grid: ViT tokens against pytorch-grad-cam 1.5.7's reshape."""

from __future__ import annotations

import pytest
import torch
from pytorch_grad_cam import (
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torchvision.models import VisionTransformer

from camwall.cams import CamEngine, compute_cams, finalize_maps, token_grid
from camwall.errors import CamwallError
from camwall.walls import declare, describe

LAYER = "encoder.layers.encoder_layer_1.ln_1"
REFERENCE = {
    "gradcam": GradCAM,
    "hirescam": HiResCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
}


def grad_cam_reshape(tensor, height=4, width=4):
    """pytorch-grad-cam's documented ViT reshape_transform (tutorials/vision_transformers)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def tiny_vit(seed: int) -> VisionTransformer:
    torch.manual_seed(seed)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    # torchvision starts the head at zero and LayerNorms at (1, 0), which make every map
    # constant; random values stand in for trained ones
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm | torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0, 0.5)
                module.weight.normal_(1 if isinstance(module, torch.nn.LayerNorm) else 0, 0.5)
        model.class_token.normal_()
    return model.eval()


def reference(cls, model, x, **kwargs):
    layer = model.get_submodule(LAYER)
    with cls(model=model, target_layers=[layer], reshape_transform=grad_cam_reshape, **kwargs) as c:
        return torch.from_numpy(c(input_tensor=x, targets=None))


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("batch", [1, 3])
def test_vit_tokens_match_grad_cam(name, batch):
    model = tiny_vit(batch)
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch + 1))
    ours = compute_cams(model, x, LAYER, name, reshape_transform=token_grid())[name]
    ref = reference(REFERENCE[name], model, x)
    assert ours.shape == (batch, 32, 32)
    assert float((ours - ref).abs().max()) <= 1e-5
    assert float(ours.max()) > 0.99


class FlippedEigenCAM(BaseCAM):
    """grad-cam's EigenCAM with the opposite SVD sign."""

    def __init__(self, model, target_layers, reshape_transform):
        super().__init__(model, target_layers, reshape_transform, uses_gradients=False)

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, smooth):
        return -get_2d_projection(activations)


def test_eigencam_on_tokens_matches_grad_cam_up_to_sign():
    """grad-cam leaves the SVD sign to LAPACK; camwall fixes it (a documented difference)."""
    model = tiny_vit(4)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    ours = compute_cams(model, x, LAYER, "eigencam", reshape_transform=token_grid())["eigencam"]
    ref, flipped = reference(EigenCAM, model, x), reference(FlippedEigenCAM, model, x)
    per_image = torch.minimum(
        (ours - ref).abs().amax(dim=(1, 2)), (ours - flipped).abs().amax(dim=(1, 2))
    )
    assert float(per_image.max()) <= 1e-5


def test_ablationcam_inverts_tokens_like_a_hand_computation():
    """grad-cam ablates to ``min - 1e7`` on layers with negative values (a documented
    difference), so the reference is the definition: zero channel k of the grid, put the
    tokens back (class token kept), re-run; ``w_k = (s0 - s_k) / s0``."""
    model = tiny_vit(6).double()  # float64: the weights are ratios of small score differences
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7)).double()
    ours = compute_cams(model, x, LAYER, "ablationcam", reshape_transform=token_grid())
    layer = model.get_submodule(LAYER)
    with torch.no_grad():
        seen = []
        handle = layer.register_forward_hook(lambda m, i, o: seen.append(o))
        logits = model(x)
        handle.remove()
        tokens, classes = seen[0], logits.argmax(1)
        grid = grad_cam_reshape(tokens)
        s0 = logits[torch.arange(2), classes]
        weights = torch.zeros(2, 16, dtype=torch.float64)
        for k in range(16):
            ablated = grid.clone()
            ablated[:, k] = 0
            back = torch.cat([tokens[:, :1], ablated.flatten(2).transpose(1, 2)], dim=1)
            handle = layer.register_forward_hook(lambda m, i, o, back=back: back)
            weights[:, k] = (s0 - model(x)[torch.arange(2), classes]) / s0
            handle.remove()
    raw = (weights[:, :, None, None] * grid).sum(dim=1)
    expected = finalize_maps(raw, (32, 32))
    assert float((ours["ablationcam"] - expected).abs().max()) <= 1e-5
    assert float(ours["ablationcam"].max()) > 0.99


def test_the_model_may_declare_its_own_reshape():
    model = tiny_vit(8)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    explicit = compute_cams(model, x, LAYER, "gradcam", reshape_transform=token_grid())
    declare(model, reshape=token_grid())
    declared = compute_cams(model, x, LAYER, "gradcam")
    torch.testing.assert_close(declared["gradcam"], explicit["gradcam"], rtol=0, atol=0)
    with CamEngine(model, LAYER) as engine:
        torch.testing.assert_close(engine(x, "gradcam")["gradcam"], explicit["gradcam"])


def test_token_grid_round_trip_keeps_the_prefix_tokens():
    tokens = torch.arange(2 * 7 * 3, dtype=torch.float32).view(2, 7, 3)
    reshape = token_grid(prefix_tokens=1, grid=(2, 3))
    grid = reshape(tokens)
    assert grid.shape == (2, 3, 2, 3)
    assert torch.equal(grid[1, :, 1, 2], tokens[1, 1 + 5])  # row-major patches, channels first
    assert torch.equal(reshape.inverse(grid, tokens), tokens)
    square = token_grid(prefix_tokens=0)(torch.zeros(1, 9, 4))
    assert square.shape == (1, 4, 3, 3)


def test_token_grid_equals_grad_cams_documented_transform():
    tokens = torch.randn(3, 17, 5)
    assert torch.equal(token_grid()(tokens), grad_cam_reshape(tokens))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prefix_tokens": -1}, "prefix_tokens"),
        ({"grid": (0, 4)}, "grid"),
    ],
)
def test_token_grid_rejects_bad_arguments(kwargs, match):
    with pytest.raises(CamwallError, match=match):
        token_grid(**kwargs)


def test_clear_errors_for_tokens_without_a_transform_or_an_inverse():
    model = tiny_vit(10)
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(CamwallError, match="reshape_transform"):
        compute_cams(model, x, LAYER, "gradcam")
    with pytest.raises(CamwallError, match=r"ablationcam .*inverse"):
        compute_cams(model, x, LAYER, "ablationcam", reshape_transform=grad_cam_reshape)
    with pytest.raises(CamwallError, match="cannot lay out"):
        compute_cams(model, x, LAYER, "gradcam", reshape_transform=token_grid(prefix_tokens=2))
    with pytest.raises(CamwallError, match="reshape_transform must be a callable"):
        compute_cams(model, x, LAYER, "gradcam", reshape_transform=3)


def test_finercam_takes_its_tail_gradient_through_the_inverse():
    """finercam re-runs the tail from the token grid (via ``inverse``); grad-cam's FinerCAM
    with the same reshape gives the same map."""
    from pytorch_grad_cam import FinerCAM

    model = tiny_vit(11)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(12))
    ours = compute_cams(model, x, LAYER, "finercam", reshape_transform=token_grid())["finercam"]
    cam = FinerCAM(model, [model.get_submodule(LAYER)], reshape_transform=grad_cam_reshape)
    try:
        ref = torch.from_numpy(cam(input_tensor=x, targets=None))
    finally:
        cam.base_cam.activations_and_grads.release()
    assert float((ours - ref).abs().max()) <= 1e-5
    assert float(ours.max()) > 0.99


def test_model_default_reshape_skips_feature_map_layers() -> None:
    """A ViT's declared reshape serves its token layers; its patch embedding (already
    B x K x h x w) passes unchanged: the same maps as with an identity ``reshape_transform``."""
    from camwall.walls import create_model

    torch.manual_seed(0)
    model = create_model("fashion-vit").eval()
    x = torch.rand(2, 1, 64, 64)
    methods = ["gradcam", "ablationcam"]
    own = compute_cams(model, x, "conv_proj", methods)
    identity = compute_cams(model, x, "conv_proj", methods, reshape_transform=_Identity())
    for name in methods:
        assert torch.equal(own[name], identity[name])
    tokens = compute_cams(model, x, describe(model).target_layer, ["gradcam"])["gradcam"]
    assert tokens.shape == (2, 64, 64)


class _Identity:
    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output

    def inverse(self, grid: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        return grid
