"""Model outputs that are not one tensor and dict-valued target layers, on tiny models.

A detector-like list of per-image dicts, a dict with ``"logits"`` / ``"out"``, and a layer that
returns a dict of levels (an FPN): each compared with the same computation on one tensor (the
same model returning the stacked scores, the level's own module) or with a hand formula.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from camwall.cams import FpnGrid, compute_cams
from camwall.errors import CamwallError

GRADIENT = ["gradcam", "hirescam", "gradcampp", "xgradcam", "layercam", "shapleycam"]


class Levels(nn.Module):
    """B x 3 x H x W -> OrderedDict of two levels (B x 4 x H/2 x W/2, B x 4 x H/4 x W/4);
    level ``'0'`` is ``a``'s output, ``'pool'`` comes from ``a``'s output (``shared``) or from
    its own branch."""

    def __init__(self, shared: bool = True) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1, stride=2)
        self.c = nn.Conv2d(3, 4, 3, padding=1, stride=2)
        self.b = nn.Conv2d(4, 4, 3, padding=1, stride=2)
        self.shared = shared

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        a = self.a(x)
        below = a if self.shared else self.c(x)
        return OrderedDict([("0", a), ("pool", torch.tanh(self.b(torch.tanh(below))))])


class Pyramid(nn.Module):
    """An FPN-like body then a head on both levels: B x 5 scores, or (``rows``) a list of B
    dicts ``{"scores": 5}`` as detection models return."""

    def __init__(self, rows: bool = False) -> None:
        super().__init__()
        self.backbone = Levels()
        self.head = nn.Linear(8, 5)
        self.rows = rows

    def forward(self, x: torch.Tensor):
        levels = self.backbone(x)
        pooled = torch.cat([(v**2).mean(dim=(2, 3)) for v in levels.values()], dim=1)
        y = self.head(pooled)
        if self.rows:
            return [{"scores": row, "labels": torch.arange(5)} for row in y]
        return y


class Keyed(nn.Module):
    def __init__(self, inner: nn.Module, key: str) -> None:
        super().__init__()
        self.inner, self.key = inner, key

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"aux": torch.zeros(1), self.key: self.inner(x)}


def pick(c: int):
    return lambda out: out["scores"][c]


@pytest.fixture
def pyramid() -> Pyramid:
    torch.manual_seed(0)
    return Pyramid()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("methods", [GRADIENT, ["eigencam", "scorecam", "ablationcam"]])
def test_list_of_dicts_equals_the_tensor_output(pyramid, x, methods) -> None:
    """Per-image dicts scored by callables give the maps of the same scores as a B x 5 tensor."""
    expected = compute_cams(pyramid, x, "backbone.a", methods, [1, 3])
    rows = Pyramid(rows=True)
    rows.load_state_dict(pyramid.state_dict())
    got = compute_cams(rows, x, "backbone.a", methods, [pick(1), pick(3)])
    for name in methods:
        assert expected[name].max() > 0.5
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6)


def test_scorecam_zero_channel_on_a_list_output_equals_the_tensor_output(pyramid, x) -> None:
    """An all-zero channel scores the all-zero input once; a list output repeats that row."""
    with torch.no_grad():
        pyramid.backbone.a.weight[2] = 0
        pyramid.backbone.a.bias[2] = 0
    expected = compute_cams(pyramid, x, "backbone.a", "scorecam", [1, 3])["scorecam"]
    rows = Pyramid(rows=True)
    rows.load_state_dict(pyramid.state_dict())
    got = compute_cams(rows, x, "backbone.a", "scorecam", [pick(1), pick(3)])["scorecam"]
    assert expected.max() > 0.5
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("key", ["logits", "out"])
def test_dict_output_uses_its_logits_or_out(pyramid, x, key) -> None:
    expected = compute_cams(pyramid, x, "backbone.a", ["gradcam", "scorecam"], [0, 4])
    got = compute_cams(Keyed(pyramid, key), x, "inner.backbone.a", ["gradcam", "scorecam"], [0, 4])
    for name in expected:
        assert torch.equal(got[name], expected[name])


def test_dict_without_known_key_names_output_fn(pyramid, x) -> None:
    with pytest.raises(CamwallError, match="output_fn"):
        compute_cams(Keyed(pyramid, "scores"), x, "inner.backbone.a", "gradcam", [0, 0])


def test_list_output_refuses_class_indices_and_none_for_gradients(x) -> None:
    pyramid = Pyramid(rows=True)
    with pytest.raises(CamwallError, match="FasterRCNNBoxScoreTarget"):
        compute_cams(pyramid, x, "backbone.a", "gradcam", [1, 2])
    with pytest.raises(CamwallError, match="FasterRCNNBoxScoreTarget"):
        compute_cams(pyramid, x, "backbone.a", "gradcam")
    # a method that scores nothing runs without targets, as with them
    free = compute_cams(pyramid, x, "backbone.a", "eigencam")["eigencam"]
    assert torch.equal(
        free, compute_cams(pyramid, x, "backbone.a", "eigencam", [pick(0)] * 2)["eigencam"]
    )


@pytest.mark.parametrize(
    ("method", "options"), [("finercam", {"finercam_target_idx": 0}), ("cam", {})]
)
def test_class_reading_methods_refuse_a_list_output_in_one_line(x, method, options) -> None:
    """cam, and finercam choosing its comparison classes, read B x num_classes logits: per-image
    dicts are refused with a CamwallError naming the method, not an AttributeError."""
    with pytest.raises(CamwallError, match=f"{method} needs B x num_classes logits.*list"):
        compute_cams(Pyramid(rows=True), x, "backbone.a", method, [pick(0)] * 2, **options)


def test_finercam_with_explicit_targets_scores_a_list_output_as_gradcam(x) -> None:
    rows = Pyramid(rows=True)
    got = compute_cams(rows, x, "backbone.a", ["finercam", "gradcam"], [pick(1), pick(3)])
    assert got["gradcam"].max() > 0.5
    torch.testing.assert_close(got["finercam"], got["gradcam"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", GRADIENT)
def test_one_level_of_a_dict_layer_equals_its_module(pyramid, x, name) -> None:
    """Gradients (and ``H A``) through a dict-valued layer: selecting level ``'0'`` by
    reshape_transform gives the map of the conv that makes that level (here no other level
    depends on it: the levels' gradients are those of the rest of the model, each level one
    of its inputs)."""
    pyramid.backbone.shared = False
    expected = compute_cams(pyramid, x, "backbone.a", name, [1, 3])[name]
    got = compute_cams(pyramid, x, "backbone", name, [1, 3], reshape_transform=lambda d: d["0"])
    assert expected.max() > 0.5
    torch.testing.assert_close(got[name], expected, rtol=0, atol=1e-6)


def hand_gradcam(model: nn.Module, x: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Grad-CAM on the FPN grid by hand: the levels replaced by leaves (the inputs of the rest
    of the model), autograd, FpnGrid on levels and gradients."""
    store: dict = {}

    def hook(module, inputs, out):
        store["levels"] = OrderedDict((k, v.detach().requires_grad_(True)) for k, v in out.items())
        return store["levels"]

    handle = model.backbone.register_forward_hook(hook)
    try:
        y = model(x)
    finally:
        handle.remove()
    levels = store["levels"]
    score = y[torch.arange(len(classes)), classes].sum()
    grads = torch.autograd.grad(score, list(levels.values()))
    grid, ggrid = FpnGrid()(levels), FpnGrid()(OrderedDict(zip(levels, grads, strict=True)))
    cam = F.relu((ggrid.mean(dim=(2, 3), keepdim=True) * grid).sum(dim=1)).detach()
    cam = cam - cam.amin(dim=(1, 2), keepdim=True)
    cam = cam / (cam.amax(dim=(1, 2), keepdim=True) + 1e-7)
    up = F.interpolate(cam[:, None], x.shape[-2:], mode="bilinear")[:, 0]
    up = up - up.amin(dim=(1, 2), keepdim=True)
    return up / (up.amax(dim=(1, 2), keepdim=True) + 1e-7)


def test_fpn_grid_gradcam_by_hand(pyramid, x) -> None:
    got = compute_cams(pyramid, x, "backbone", "gradcam", [1, 3], reshape_transform=FpnGrid())
    torch.testing.assert_close(got["gradcam"], hand_gradcam(pyramid, x, [1, 3]), rtol=0, atol=1e-5)


def test_fpn_ablation_sets_the_level_channel(pyramid, x) -> None:
    """ablationcam with FpnGrid: grid channel k is channel k - 4 of level 'pool' for k >= 4;
    the weights are (s0 - s_k) / s0 with that raw channel set to ablation_value (by hand)."""
    value = -3.0
    got = compute_cams(
        pyramid, x, "backbone", "ablationcam", [1, 3], reshape_transform=FpnGrid(),
        ablation_value=value,
    )["ablationcam"]  # fmt: skip
    with torch.no_grad():
        levels = pyramid.backbone(x)
        grid = FpnGrid()(levels)

        def score(lv: OrderedDict) -> torch.Tensor:
            pooled = torch.cat([(v**2).mean(dim=(2, 3)) for v in lv.values()], dim=1)
            return pyramid.head(pooled)[torch.arange(2), torch.tensor([1, 3])]

        s0 = score(levels)
        w = torch.empty(2, 8)
        for k in range(8):
            lv = OrderedDict((key, v.clone()) for key, v in levels.items())
            key, c = ("0", k) if k < 4 else ("pool", k - 4)
            lv[key][:, c] = value
            w[:, k] = (s0 - score(lv)) / s0
        cam = F.relu((w[:, :, None, None] * grid).sum(dim=1))
    cam = cam - cam.amin(dim=(1, 2), keepdim=True)
    cam = cam / (cam.amax(dim=(1, 2), keepdim=True) + 1e-7)
    up = F.interpolate(cam[:, None], x.shape[-2:], mode="bilinear")[:, 0]
    up = up - up.amin(dim=(1, 2), keepdim=True)
    up = up / (up.amax(dim=(1, 2), keepdim=True) + 1e-7)
    assert up.max() > 0.5
    torch.testing.assert_close(got, up, rtol=0, atol=1e-5)


def test_dict_layer_needs_a_reshape_transform(pyramid, x) -> None:
    with pytest.raises(CamwallError, match="reshape_transform"):
        compute_cams(pyramid, x, "backbone", "gradcam", [1, 3])


def test_dict_layer_ablation_without_ablate_or_inverse_names_the_fix(pyramid, x) -> None:
    with pytest.raises(CamwallError, match="inverse"):
        compute_cams(
            pyramid, x, "backbone", "ablationcam", [1, 3], reshape_transform=lambda d: FpnGrid()(d)
        )


def test_whole_model_rerun_skips_and_restores_the_layer(pyramid, x) -> None:
    """The ablation re-runs the model with the backbone's forward skipped (its output replaced);
    afterwards the module's forward is its class's again and no hook is left."""
    calls = []
    pyramid.backbone.a.register_forward_hook(lambda m, i, o: calls.append(1))
    compute_cams(pyramid, x, "backbone", "ablationcam", [1, 3], reshape_transform=FpnGrid())
    assert len(calls) == 1  # the recorded pass only: ablated copies skip the backbone
    assert "forward" not in vars(pyramid.backbone)
    assert sum(len(m._forward_hooks) for m in pyramid.modules()) == 1
