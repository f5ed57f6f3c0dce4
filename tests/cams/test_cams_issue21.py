"""The methods and options of issue 21 against pytorch-grad-cam 1.5.7 (max abs diff 1e-5):
refinecam, ablationcam over several layers / a share of channels / a caller's ablation layer,
fullgrad's eigen_smooth, finercam over several layers, shapleycam through ViT attention on CPU,
and ablationcam where the target score is 0."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam as pg
import torch
import torchvision
from pytorch_grad_cam import fullgrad_cam
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.refine_cam import RefineCAM
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import nn

from camwall.cams import compute_cams, token_grid
from camwall.cams._ablation import score_drop
from camwall.cams._post import finalize_maps
from camwall.errors import CamwallError

TOL = 1e-5
# ReLU outputs (grad-cam ablates to 0 there, as camwall), in forward order: grad-cam 1.5.7
# pairs AblationCAM's per-layer weights with the activations in forward order
ABLATION_LAYERS = [
    ("flat", 0, 2, 8, 12, ["1", "4"]),
    ("nested", 2, 3, 12, 8, ["features.1", "features.3"]),
    ("custom", 3, 2, 9, 13, ["act1", "act2"]),  # torch.fx tails
    ("skip", 4, 2, 9, 13, ["act1", "act2"]),  # no tail after act1 / act2: whole-model re-runs
]
REFINE_BASES = {
    "gradcampp": pg.GradCAMPlusPlus,
    "gradcam": pg.GradCAM,
    "scorecam": pg.ScoreCAM,
    "layercam": pg.LayerCAM,
    "ablationcam": pg.AblationCAM,
}


def grad_cam(cls, model, layers, x, **call) -> torch.Tensor:
    modules = [model.get_submodule(n) for n in layers]
    return torch.from_numpy(cls(model=model, target_layers=modules)(x, None, **call))


def close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    assert float(ref.max()) > 0.5  # not all zero
    assert float((ours - ref).abs().max()) <= TOL


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=7).eval()


@pytest.mark.parametrize("case", ABLATION_LAYERS, ids=lambda c: f"{c[0]}-b{c[2]}")
def test_ablationcam_over_several_layers(case, make_tiny):
    name, seed, batch, h, w, layers = case
    model, _, x = make_tiny(name, seed=seed, batch=batch, h=h, w=w)
    x = x.abs()  # positive scores: grad-cam divides by them
    ours = compute_cams(model, x, layers, "ablationcam")["ablationcam"]
    close(ours, grad_cam(pg.AblationCAM, model, layers, x))


def test_ablationcam_several_layers_on_resnet18(resnet):
    x = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    layers = ["layer3.0", "layer3.1"]
    ours = compute_cams(resnet, x, layers, "ablationcam")["ablationcam"]
    close(ours, grad_cam(pg.AblationCAM, resnet, layers, x))


@pytest.mark.parametrize("ratio", [0.3, 0.1])
def test_ablationcam_ratio_of_channels(ratio, resnet):
    """grad-cam's channel choice (SVD mask, NumPy's tie order) and weight 0 for the rest."""
    x = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(2))
    layers = ["layer3.1"]
    ours = compute_cams(resnet, x, layers, "ablationcam", ablationcam_ratio=ratio)["ablationcam"]
    modules = [resnet.layer3[1]]
    with np.errstate(invalid="ignore"):  # grad-cam scores constant channels 0 / 0
        ref = pg.AblationCAM(resnet, modules, ratio_channels_to_ablate=ratio)(x, None)
    close(ours, torch.from_numpy(ref))
    assert (
        float((ours - compute_cams(resnet, x, layers, "ablationcam")["ablationcam"]).abs().max())
        > 1e-3
    )


class HalfAblation(AblationLayer):
    """A caller's ablation layer: the ablated channel is halved, not zeroed."""

    def __call__(self, x):
        out = self.activations
        for i in range(out.size(0)):
            out[i, self.indices[i]] = out[i, self.indices[i]] / 2
        return out


def test_ablationcam_with_a_callers_ablation_layer(make_tiny):
    model, layer, x = make_tiny("nested", seed=5, batch=2, h=8, w=8)
    x = x.abs()
    ours = compute_cams(model, x, layer, "ablationcam", ablationcam_layer=HalfAblation())
    ref = pg.AblationCAM(model, [model.get_submodule(layer)], ablation_layer=HalfAblation())
    close(ours["ablationcam"], torch.from_numpy(ref(x, None)))
    zeroed = compute_cams(model, x, layer, "ablationcam")["ablationcam"]
    assert float((ours["ablationcam"] - zeroed).abs().max()) > 1e-3
    with pytest.raises(CamwallError, match="ablationcam_layer must be None or an ablation"):
        compute_cams(model, x, layer, "ablationcam", ablationcam_layer=3)
    with pytest.raises(CamwallError, match=r"ablationcam_ratio must be in \(0, 1\]"):
        compute_cams(model, x, layer, "ablationcam", ablationcam_ratio=0)


def test_score_drop_where_the_score_is_zero():
    s0 = torch.tensor([2.0, 0.0, -1.0])
    ablated = torch.tensor([[1.0, 3.0], [0.5, -0.25], [-2.0, 0.0]])
    expected = torch.tensor([[0.5, -0.5], [-0.5, 0.25], [-1.0, 1.0]])
    torch.testing.assert_close(score_drop(s0, ablated), expected, rtol=0, atol=0)


def test_ablationcam_on_a_zero_head_gives_finite_maps(make_tiny):
    """All logits 0 (a zero-initialized head): grad-cam's weights are 0 / 0 (NaN maps)."""
    model, layer, x = make_tiny("flat", seed=6, batch=2, h=8, w=12)
    last = model.get_submodule("6")
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    ours = compute_cams(model, x, layer, "ablationcam")["ablationcam"]
    assert bool(torch.isfinite(ours).all())
    with np.errstate(all="ignore"):
        ref = pg.AblationCAM(model, [model.get_submodule(layer)])(x, None)
    assert np.isnan(ref).all()


@pytest.mark.parametrize("base", sorted(REFINE_BASES))
def test_refinecam_matches_grad_cam(base, resnet):
    x = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(3))
    layers = ["layer4.1", "layer3.1"]
    ours = compute_cams(resnet, x, layers, "refinecam", refinecam_base=base)["refinecam"]
    modules = [resnet.get_submodule(n) for n in layers]
    ref = RefineCAM(resnet, modules, base_method=REFINE_BASES[base])(x, None)
    close(ours, torch.from_numpy(ref))


def test_refinecam_base_options_and_checks(make_tiny):
    model, _, x = make_tiny("flat", seed=7, batch=2, h=8, w=12)
    layers = ["1", "4"]
    a = compute_cams(
        model,
        x,
        layers,
        "refinecam",
        refinecam_base="scorecam",
        refinecam_base_options={"scorecam_chunk": 3},
    )["refinecam"]
    b = compute_cams(model, x, layers, "refinecam", refinecam_base="scorecam")["refinecam"]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # chunking changes rounding only
    # one layer: the base map itself, normalized once more
    one = compute_cams(model, x, "4", ["refinecam", "gradcampp"])
    torch.testing.assert_close(one["refinecam"], one["gradcampp"], rtol=0, atol=1e-6)
    with pytest.raises(CamwallError, match="refinecam_base must be one of"):
        compute_cams(model, x, layers, "refinecam", refinecam_base="sess")
    with pytest.raises(CamwallError, match="scorecam takes no option"):
        compute_cams(
            model,
            x,
            layers,
            "refinecam",
            refinecam_base="scorecam",
            refinecam_base_options={"nope": 1},
        )


def signed_projection(batch: np.ndarray) -> np.ndarray:
    """grad-cam's projection with camwall's sign rule (as tests/compat/test_compat_parity)."""
    proj = get_2d_projection(batch)
    corr = (proj * np.nan_to_num(batch).mean(axis=1)).sum(axis=(1, 2))
    return np.where(corr[:, None, None] < 0, -proj, proj).astype(np.float32)


@pytest.mark.parametrize("size", [(64, 80), (40, 56)])
def test_fullgrad_eigen_smooth_matches_grad_cam(size, resnet, monkeypatch):
    monkeypatch.setattr(fullgrad_cam, "get_2d_projection", signed_projection)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(4))
    ours = compute_cams(resnet, x, "layer4", "fullgrad", eigen_smooth=True)["fullgrad"]
    close(ours, torch.from_numpy(pg.FullGrad(resnet, [])(x, None, eigen_smooth=True)))
    plain = compute_cams(resnet, x, "layer4", "fullgrad")["fullgrad"]
    assert float((ours - plain).abs().max()) > 1e-2


def test_fullgrad_eigen_smooth_needs_8_pixels(make_tiny):
    model, layer, x = make_tiny("flat", batch=1, h=6, w=12)
    with pytest.raises(CamwallError, match="at least 8 x 8"):
        compute_cams(model, x, layer, "fullgrad", eigen_smooth=True)


def test_finercam_over_several_layers_matches_grad_cam(resnet):
    x = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(5))
    layers = ["layer3.1", "layer4.1"]
    ours = compute_cams(resnet, x, layers, "finercam")["finercam"]
    modules = [resnet.get_submodule(n) for n in layers]
    close(ours, torch.from_numpy(pg.FinerCAM(resnet, modules)(x)))


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=16,
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        mlp_dim=16,
        num_classes=3,
    ).eval()
    nn.init.normal_(model.heads.head.weight)
    return model.double()


def test_shapleycam_through_vit_attention_on_cpu():
    """torch's fused CPU attention has no double backward (grad-cam raises; its ShapleyCAM
    also refuses reshape_transform): camwall runs attention's math path. Reference: float64
    ``torch.autograd.functional.hvp`` of the summed target scores at the layer's tokens."""
    model = tiny_vit()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    layer = model.encoder.layers.encoder_layer_0.ln_1
    grid = token_grid(1, (2, 2))
    ours = compute_cams(
        model, x, "encoder.layers.encoder_layer_0.ln_1", "shapleycam", reshape_transform=grid
    )["shapleycam"]
    tokens: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda m, i, o: tokens.setdefault("t", o.detach()))
    with torch.no_grad():
        classes = model(x).argmax(dim=1)
    handle.remove()

    def scores(t: torch.Tensor) -> torch.Tensor:
        swap = layer.register_forward_hook(lambda m, i, o: t)
        try:
            return model(x).gather(1, classes[:, None]).sum()
        finally:
            swap.remove()

    from torch.nn.attention import SDPBackend, sdpa_kernel

    t = tokens["t"]
    with sdpa_kernel([SDPBackend.MATH]):
        _, ha = torch.autograd.functional.hvp(scores, t, t)
        g = torch.autograd.functional.jacobian(scores, t)
    w = (grid(g) - 0.5 * grid(ha)).mean(dim=(2, 3))
    ref = finalize_maps((w[:, :, None, None] * grid(t)).sum(dim=1), (16, 16))
    close(ours.double(), ref)
    gradcam = compute_cams(
        model, x, "encoder.layers.encoder_layer_0.ln_1", "gradcam", reshape_transform=grid
    )["gradcam"]
    assert float((ours - gradcam).abs().max()) > 1e-3  # the Hessian term matters here
