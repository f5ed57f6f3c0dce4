"""The methods added after the nine: parity with pytorch-grad-cam 1.5.7 (tiny CNNs and random
torchvision resnet18 / vgg11), and their own invariants (sign, seeded draws, Hessian term)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import pytorch_grad_cam as pg
import torch
import torchvision
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import nn

from camwall.cams import DEFAULT_METHODS, METHODS, compute_cams
from camwall.errors import CamwallError

NEW = ["gradcamelementwise", "eigengradcam", "kpcacam", "fem", "randomcam", "finercam"]
NEW += ["shapleycam", "fullgrad"]
REFERENCE = {
    "gradcamelementwise": pg.GradCAMElementWise,
    "eigengradcam": pg.EigenGradCAM,
    "kpcacam": pg.KPCA_CAM,
    "fem": pg.FEM,
    "randomcam": pg.RandomCAM,
    "finercam": pg.FinerCAM,
    "shapleycam": pg.ShapleyCAM,
    "fullgrad": pg.FullGrad,  # ignores the target layer (every biased Conv2d / BatchNorm2d)
}
TINY_CASES = [("flat", 0, 1, 8, 12), ("nested", 2, 3, 12, 8), ("custom", 4, 2, 9, 13)]


class _FlippedEigenGradCAM(BaseCAM):
    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, smooth):
        return -get_2d_projection(grads * activations)


def reference(name, model, layer, x, **kwargs) -> torch.Tensor:
    """grad-cam's map; hooks released by hand (ShapleyCAM's and FinerCAM's `with` exit raise)."""
    cls = _FlippedEigenGradCAM if name == "eigengradcam-flipped" else REFERENCE[name]
    cam = cls(model, [model.get_submodule(layer)])
    try:
        out = cam(x, targets=None, **kwargs)
    finally:
        hooks = getattr(cam, "base_cam", cam).activations_and_grads
        hooks.gradients, hooks.activations = [], []
        hooks.release()
    return torch.from_numpy(out)


def max_diff(name, model, layer, x, **options) -> float:
    """Max abs difference of camwall vs grad-cam (eigengradcam: per image, up to sign)."""
    ours = compute_cams(model, x, layer, name, **options)[name]
    assert ours.shape == x.shape[:1] + x.shape[2:]
    assert ours.dtype == torch.float32
    assert name == "randomcam" or float(ours.max()) > 0.99  # random weights may sum below 0
    if name == "randomcam":  # grad-cam draws np.random.uniform: hand it our draws
        return _randomcam_diff(model, layer, x, ours, **options)
    per_image = (ours - reference(name, model, layer, x)).abs().amax(dim=(1, 2))
    if name == "eigengradcam":  # the SVD sign is LAPACK's in grad-cam; ours is fixed
        flipped = reference("eigengradcam-flipped", model, layer, x)
        per_image = torch.minimum(per_image, (ours - flipped).abs().amax(dim=(1, 2)))
    return float(per_image.max())


def _randomcam_diff(model, layer, x, ours, seed=None, generator=None) -> float:
    from camwall.cams._activation import random_weights

    k = dict(model.named_modules())[layer]
    with torch.no_grad():
        feats = []
        h = k.register_forward_hook(lambda m, i, o: feats.append(o.shape[1]))
        model(x)
        h.remove()
    draws = random_weights(x.shape[0], feats[0], seed, generator).numpy()
    saved = np.random.uniform
    np.random.uniform = lambda low, high, size: draws  # type: ignore[assignment]
    try:
        ref = reference("randomcam", model, layer, x)
    finally:
        np.random.uniform = saved
    return float((ours - ref).abs().max())


FAST_NEW = ("gradcamelementwise", "eigengradcam", "fem", "randomcam", "finercam", "fullgrad")


def test_default_methods_are_the_nine_and_the_fast_new_ones():
    assert DEFAULT_METHODS == (
        "gradcam", "hirescam", "gradcampp", "xgradcam", "layercam", "gradcamelementwise",
        "eigencam", "eigengradcam", "scorecam", "ablationcam", "opticam",
        "fem", "randomcam", "finercam", "fullgrad",
    )  # fmt: skip
    slow = ["kpcacam", "shapleycam", "cam", "smoothgradcampp", "sscam", "iscam", "sess"]
    for name in slow:
        assert METHODS.get(name).default is False


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("case", TINY_CASES, ids=lambda c: f"{c[0]}-b{c[2]}-{c[3]}x{c[4]}")
def test_matches_grad_cam_on_tiny_cnns(name, case, make_tiny):
    model_name, seed, batch, h, w = case
    model, layer, x = make_tiny(model_name, seed=seed, batch=batch, h=h, w=w)
    assert max_diff(name, model, layer, x, **({"seed": 3} if name == "randomcam" else {})) <= 1e-5


@pytest.fixture(scope="module")
def torchvision_models():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    torch.manual_seed(1)
    vgg = torchvision.models.vgg11(weights=None).eval()
    return {"resnet18": (resnet, "layer4"), "vgg11": (vgg, "features.19")}


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize(
    ("arch", "batch", "h", "w"), [("resnet18", 3, 64, 80), ("vgg11", 1, 64, 64)]
)
def test_matches_grad_cam_on_random_torchvision(name, arch, batch, h, w, torchvision_models):
    model, layer = torchvision_models[arch]
    x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(5))
    if name == "kpcacam" and arch == "vgg11":
        # grad-cam's float32 kernel PCA is itself 1.7e-5 away from its float64 result here; we
        # compute in float64, so compare with grad-cam run in float64
        ours = compute_cams(model, x, layer, name)[name]
        ref = reference(name, model.double(), layer, x.double())
        model.float()
        assert float((ours - ref).abs().max()) <= 1e-5
        return
    # seed 3: the draws whose cancellation once exposed channels-last rounding (1.4e-5 on vgg11)
    assert max_diff(name, model, layer, x, **({"seed": 3} if name == "randomcam" else {})) <= 1e-5


def test_randomcam_same_draws_same_map_and_generator_wins(make_tiny):
    model, layer, x = make_tiny("custom", batch=3)
    a = compute_cams(model, x, layer, "randomcam", seed=9)["randomcam"]
    b = compute_cams(model, x, layer, "randomcam", seed=9)["randomcam"]
    c = compute_cams(model, x, layer, "randomcam", seed=10)["randomcam"]
    g = torch.Generator().manual_seed(9)
    d = compute_cams(model, x, layer, "randomcam", seed=1, generator=g)["randomcam"]
    # bit-equal by construction: the same call (same draws, same shapes, same kernels)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, d, rtol=0, atol=0)
    assert float((a - c).abs().max()) > 0.01
    with pytest.raises(CamwallError, match=r"generator must be a torch\.Generator"):
        compute_cams(model, x, layer, "randomcam", generator=9)


def test_eigengradcam_sign_correlates_with_the_channel_mean(make_tiny):
    from camwall.cams import CamEngine
    from camwall.cams._eigen import first_component

    model, layer, x = make_tiny("nested", batch=3, h=10, w=10)
    with CamEngine(model, layer) as engine:
        ctx = engine.runner.capture(x, None, True)
    p = ctx.gradients * ctx.activations
    proj = first_component(p)
    assert bool(((proj * p.mean(dim=1)).flatten(1).sum(dim=1) >= 0).all())
    # the sign follows the data, not LAPACK: negating the input negates the map
    torch.testing.assert_close(first_component(-p), -proj, rtol=0, atol=1e-6)


class SmoothTail(nn.Module):
    """A tail with a second derivative (Tanh, GELU), so shapleycam's H A is not zero."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.Conv2d(6, 5, 1), nn.Tanh(), nn.Flatten(), nn.LazyLinear(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.nn.functional.gelu(self.act(self.conv(x))))


def test_shapleycam_hessian_term_matches_grad_cam_and_is_not_zero():
    torch.manual_seed(3)
    model = SmoothTail()
    x = torch.randn(3, 3, 7, 9, generator=torch.Generator().manual_seed(4))
    model(x)  # materialize the lazy layer
    assert max_diff("shapleycam", model, "act", x) <= 1e-5
    shapley = compute_cams(model, x, "act", "shapleycam")["shapleycam"]
    grad = compute_cams(model, x, "act", "gradcam")["gradcam"]
    assert float((shapley - grad).abs().max()) > 1e-3  # H A really contributes


@pytest.mark.parametrize(
    "opts", [{"finercam_alpha": 0.5}, {"finercam_comparison": [1, 2]}, {"finercam_target_idx": 2}]
)
def test_finercam_options_match_grad_cam(opts, make_tiny):
    model, layer, x = make_tiny("custom", seed=8, batch=3, h=10, w=12)
    ours = compute_cams(model, x, layer, "finercam", **opts)["finercam"]
    kwargs = {
        "alpha": opts.get("finercam_alpha", 1),
        "comparison_categories": opts.get("finercam_comparison"),
        "target_idx": opts.get("finercam_target_idx"),
    }
    ref = reference("finercam", model, layer, x, **kwargs)
    assert float((ours - ref).abs().max()) <= 1e-5


def test_finercam_with_explicit_targets_is_gradcam(make_tiny):
    model, layer, x = make_tiny("flat", batch=2)
    got = compute_cams(model, x, layer, ["finercam", "gradcam"], targets=[1, 3])
    # bit-equal by construction: one pass, both weights are the mean of the same gradients
    torch.testing.assert_close(got["finercam"], got["gradcam"], rtol=0, atol=0)


def test_new_options_are_checked(make_tiny):
    model, layer, x = make_tiny("flat", batch=1)
    with pytest.raises(CamwallError, match="kpcacam_kernel must be"):
        compute_cams(model, x, layer, "kpcacam", kpcacam_kernel="poly")
    with pytest.raises(CamwallError, match="fem_k must be a finite number"):
        compute_cams(model, x, layer, "fem", fem_k="2")
    with pytest.raises(CamwallError, match="finercam_target_idx must be a class index 0 to 4"):
        compute_cams(model, x, layer, "finercam", finercam_target_idx=5)
    with pytest.raises(CamwallError, match="finercam needs at least one comparison class"):
        compute_cams(model, x, layer, "finercam", finercam_comparison=[7])


class GapNet(nn.Module):
    """Conv -> ReLU -> global average pooling -> Linear: what CAM needs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


def _cam_raw(model, layer, x, targets=None):
    from camwall.cams import CamEngine

    with CamEngine(model, layer) as engine:
        ctx = engine.runner.capture(x, targets, False)
        return METHODS.get("cam")().raw_map(ctx)


@pytest.mark.parametrize(("batch", "h", "w"), [(1, 64, 64), (3, 64, 80)])
def test_cam_raw_map_matches_torchcam_on_resnet18(batch, h, w, torchvision_models):
    from torchcam.methods import CAM as TorchcamCAM

    model, _ = torchvision_models["resnet18"]
    x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(6))
    ours = _cam_raw(model, "layer4", x)
    with TorchcamCAM(model, "layer4", "fc", input_shape=(3, h, w)) as extractor:
        out = model(x)
        ref = extractor(class_idx=out.argmax(dim=1).tolist(), normalized=False)[0]
    scale = float(ref.abs().max())
    assert float((ours - ref).abs().max()) <= 1e-5 * max(scale, 1.0)
    # on GAP + Linear models CAM's weights are gradcam's times h*w: the same final map
    maps = compute_cams(model, x, "layer4", ["cam", "gradcam"])
    assert float((maps["cam"] - maps["gradcam"]).abs().max()) <= 1e-5


def test_cam_on_a_tiny_gap_model_with_targets_matches_torchcam():
    from torchcam.methods import CAM as TorchcamCAM

    torch.manual_seed(2)
    model = GapNet().eval()
    x = torch.randn(2, 3, 7, 9)
    ours = _cam_raw(model, "act", x, targets=[4, 1])
    with TorchcamCAM(model, "act", input_shape=(3, 7, 9)) as extractor:
        model(x)
        ref = extractor(class_idx=[4, 1], normalized=False)[0]
    assert float((ours - ref).abs().max()) <= 1e-5


def test_cam_refuses_models_without_gap_and_linear(torchvision_models, make_tiny):
    vgg, _ = torchvision_models["vgg11"]
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(CamwallError, match=r"VGG, 'classifier.6' takes 4096 features"):
        compute_cams(vgg, x, "features.19", "cam")
    model, layer, x = make_tiny("custom")  # mean + amax pooling, then Linear
    with pytest.raises(CamwallError, match=r"logits of TwoConvNet are not fc\(mean over space"):
        compute_cams(model, x, layer, "cam")
    flat = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(CamwallError, match=r"Sequential has no nn\.Linear"):
        compute_cams(flat, torch.randn(1, 3, 5, 5), "1", "cam")
    with pytest.raises(CamwallError, match="cam_fc_layer 'nope' is not a submodule"):
        compute_cams(GapNet(), torch.randn(1, 3, 5, 5), "act", "cam", cam_fc_layer="nope")


def test_cam_hygiene_after_an_error():
    model = GapNet()
    model.train()
    with pytest.raises(CamwallError):
        compute_cams(model, torch.randn(1, 3, 5, 5), "act", "cam", targets=[lambda r: r[0]])
    assert model.training
    assert not model._forward_hooks
    assert not model.act._forward_hooks


def _random_biases(model: nn.Module, seed: int) -> nn.Module:
    """torchvision initializes conv biases and BatchNorm shifts to 0: make them matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) * 0.4 - 0.2)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.rand(m.out_channels, generator=gen) * 0.2 - 0.1)
    return model


@pytest.mark.parametrize(
    ("arch", "batch", "h", "w"), [("resnet18", 3, 64, 80), ("vgg11", 1, 64, 64)]
)
def test_fullgrad_with_nonzero_biases_matches_grad_cam(arch, batch, h, w):
    torch.manual_seed(7)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    _random_biases(model, 8)
    x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(9))
    layer = {"resnet18": "layer4", "vgg11": "features.19"}[arch]  # ignored by fullgrad
    assert max_diff("fullgrad", model, layer, x) <= 1e-5


class _LaterRegisteredFirst(nn.Module):
    """Two same-shaped biased convs, registered in the reverse of the order they run in, each
    followed by an in-place ReLU (so the bias gradients must be pre-activation)."""

    def __init__(self) -> None:
        super().__init__()
        self.second = nn.Conv2d(4, 4, 3, padding=1)  # registered first, runs second
        self.first = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            # N(|b_c dy/dz_c|) drops |b_c| unless it is 0: zeros tell the layers' biases apart
            self.first.bias.copy_(torch.tensor([0.3, 0.0, 0.1, 0.4]))
            self.second.bias.copy_(torch.tensor([0.0, 0.05, 0.2, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.second(self.relu(self.first(x))))
        return self.fc(a.mean(dim=(2, 3)))


def _fullgrad_by_hand(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """FullGrad from its definition in float64: ``N(sum_c N(|x dy/dx|)_c + sum_l sum_c
    N(|b_lc dy/dz_l|)_c)``, each layer with its own bias (all maps at the input's size here)."""
    model, x = model.double(), x.double().requires_grad_(True)
    outs: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
            outs[name] = out
            return out.clone()  # the model goes on with a copy: outs[name] stays pre-activation

        return hook

    hooks = [getattr(model, n).register_forward_hook(keep(n)) for n in ("first", "second")]
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    y = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    grads = torch.autograd.grad(y, [x, outs["first"], outs["second"]])

    def norm(t: torch.Tensor) -> torch.Tensor:
        flat = t.flatten(2)
        flat = flat - flat.amin(dim=2, keepdim=True)
        return (flat / (1e-7 + flat.amax(dim=2, keepdim=True))).view_as(t)

    total = norm((x * grads[0]).abs()).sum(1)
    for name, g in zip(("first", "second"), grads[1:], strict=True):
        bias = getattr(model, name).bias[None, :, None, None]
        total = total + norm((bias * g).abs()).sum(1)
    return norm(total[:, None])[:, 0].detach()


def test_fullgrad_pairs_each_bias_with_its_own_layer_gradient():
    """Biases are paired with the gradient of the call that produced them, not by module order
    (grad-cam 1.5.7 zips module-order biases with call-order gradients: see docs/cam-methods.md);
    an in-place ReLU after each conv leaves dy/dz pre-activation. Float32 against a float64
    reference: maps in [0, 1] from sums over 4 channels and 2 layers of 8 x 8 maps."""
    torch.manual_seed(3)
    model = _LaterRegisteredFirst().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    ours = compute_cams(model, x, "first", "fullgrad")["fullgrad"].double()
    expected = _fullgrad_by_hand(copy.deepcopy(model), x)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    theirs = pg.FullGrad(model=copy.deepcopy(model), target_layers=[])(x, targets=None)
    assert float((torch.from_numpy(theirs).double() - expected).abs().max()) > 0.05


def test_kpcacam_matches_grad_cam_above_200_positions(make_tiny):
    """scikit-learn switches to ARPACK (random start) above 200 positions; its sign rule keeps
    the result deterministic, and our dense float64 eigh gives the same map."""
    model, layer, x = make_tiny("flat", seed=4, batch=2, h=32, w=30)  # 16 x 15 = 240 positions
    assert max_diff("kpcacam", model, layer, x) <= 1e-5


def test_fullgrad_shares_the_pass_and_cleans_up(make_tiny):
    """fullgrad with the gradient methods in one call (one forward, one backward) equals each
    alone; its bias-layer hooks are gone afterwards, also after an exception in that pass."""
    model, layer, x = make_tiny("nested", seed=5, batch=2, h=10, w=12)
    names = ["fullgrad", "gradcam", "shapleycam", "eigengradcam"]
    together = compute_cams(model, x, layer, names)
    # two passes that request other gradients (fullgrad's biases and input): float32 maps in
    # [0, 1] from reductions over the layer's 6 x 10 x 12 activations
    tol = torch.finfo(torch.float32).eps * 6 * 10 * 12
    for n in names:
        alone = compute_cams(model, x, layer, n)[n]
        torch.testing.assert_close(together[n], alone, rtol=0, atol=tol)
    with pytest.raises(RuntimeError, match="boom"):
        compute_cams(model, x, layer, names, targets=[_boom, _boom])
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def _boom(row: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("boom")


def test_fullgrad_on_a_model_without_biases_is_the_input_term():
    """No biased Conv2d / BatchNorm2d: only |x * dy/dx| remains (summed over input channels)."""
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 3)
    )
    x = torch.randn(2, 3, 5, 5)
    assert max_diff("fullgrad", model, "1", x) <= 1e-5
