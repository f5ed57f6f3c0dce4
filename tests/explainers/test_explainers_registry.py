"""One registry: names, families, sources, availability, missing packages, targets, output_fn."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from camwall.cams import METHODS
from camwall.errors import CamwallError
from camwall.explainers import (
    EXPLAINERS,
    FAMILIES,
    SOURCES,
    Explainer,
    explain,
    get_explainer,
    list_explainers,
)


def test_native_cams_keep_their_names():
    for name in METHODS.names():
        spec = EXPLAINERS.get(name)
        assert (spec.family, spec.source, spec.needs_layer) == ("cam", "camwall", True)
    assert EXPLAINERS.get("uniform").family == "control"
    assert EXPLAINERS.get("random").family == "control"


def test_every_entry_has_a_known_family_and_source():
    for name, spec in EXPLAINERS.items():
        assert spec.family in FAMILIES, name
        assert spec.source in SOURCES, name
        assert name.split(":")[0] in {"captum", "gradcam", "torchcam"} or ":" not in name
    families = {s.family for _, s in EXPLAINERS.items()}
    assert families == {"cam", "gradient", "perturbation", "control"}
    assert EXPLAINERS.get("captum:Occlusion").family == "perturbation"
    assert EXPLAINERS.get("captum:Saliency").family == "gradient"
    assert EXPLAINERS.get("captum:LayerGradCam").family == "cam"


def test_list_explainers():
    rows = list_explainers()
    assert [r.name for r in rows] == EXPLAINERS.names()
    assert all(r.available for r in rows)  # the test extra installs every peer
    captum_rows = list_explainers("captum:*")
    assert len(captum_rows) == 15
    assert {r.source for r in captum_rows} == {"captum"}


def test_bound_explainer_follows_the_protocol(tiny):
    model, x, _ = tiny
    exp = get_explainer("captum:Saliency")
    assert isinstance(exp, Explainer)
    assert (exp.name, exp.family, exp.source) == ("captum:Saliency", "gradient", "captum")
    maps = exp(model, x)
    assert maps.shape == (3, 16, 16)
    assert maps.dtype == torch.float32
    # by hand: g = |d y_t / d x| summed over channels, then (g - min) / (1e-7 + max(g - min))
    inp = x.clone().requires_grad_(True)
    targets = model(x).argmax(1)
    (grad,) = torch.autograd.grad(model(inp).gather(1, targets[:, None]).sum(), inp)
    g = grad.abs().sum(1).flatten(1)
    g = g - g.amin(1, keepdim=True)
    expected = (g / (1e-7 + g.amax(1, keepdim=True))).view(3, 16, 16)
    assert torch.allclose(maps, expected, atol=1e-6)


def test_unknown_name_suggests():
    with pytest.raises(CamwallError, match="Did you mean 'captum:Saliency'"):
        get_explainer("captum:Salency")


@pytest.mark.parametrize(
    ("name", "modules", "extra"),
    [
        ("captum:Saliency", ["captum", "captum.attr"], "camwall[captum]"),
        ("gradcam:GradCAM", ["pytorch_grad_cam"], "camwall[gradcam]"),
        ("torchcam:GradCAM", ["torchcam", "torchcam.methods"], "camwall[torchcam]"),
    ],
)
def test_missing_package_is_one_line_with_the_pip_command(name, modules, extra, tiny, monkeypatch):
    model, x, _ = tiny
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(CamwallError) as err:
        explain(model, x, name)
    message = str(err.value)
    assert f"pip install '{extra}'" in message
    assert name in message
    assert "\n" not in message
    row = next(r for r in list_explainers() if r.name == name)
    assert row.available is False


def test_targets_none_is_the_argmax(tiny):
    model, x, _ = tiny
    argmax = model(x).argmax(1).tolist()
    for name in ("captum:Saliency", "gradcam:GradCAM", "torchcam:GradCAM", "gradcam"):
        # bit-equal by construction: the same targets through the same pass
        assert torch.equal(explain(model, x, name), explain(model, x, name, argmax)), name


def test_targets_change_the_map(tiny):
    model, x, _ = tiny
    a = explain(model, x, "captum:Saliency", [0, 0, 0])
    b = explain(model, x, "captum:Saliency", [1, 1, 1])
    assert float((a - b).abs().max()) > 1e-3


def test_bad_targets(tiny):
    model, x, _ = tiny
    with pytest.raises(CamwallError, match="3 class indices"):
        explain(model, x, "captum:Saliency", [0, 1])
    with pytest.raises(CamwallError, match="float B x C x H x W"):
        explain(model, x[0], "captum:Saliency")
    with pytest.raises(CamwallError, match="x is on meta but the model is on cpu"):
        explain(model, x.to("meta"), "captum:Saliency")


class TupleOut(nn.Module):
    """Returns ``(logits, features)``, like many detection or multi-head models."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner(x), x.mean(dim=(1, 2, 3))


@pytest.mark.parametrize(
    "name", ["captum:Saliency", "captum:LayerGradCam", "gradcam:GradCAM", "torchcam:GradCAM",
             "gradcam", "captum:DeepLift"],
)  # fmt: skip
def test_output_fn_for_models_returning_a_tuple(name, tiny):
    model, x, _ = tiny
    wrapped = TupleOut(model)
    plain = explain(model, x, name, target_layer="3")
    ours = explain(wrapped, x, name, target_layer="inner.3", output_fn=lambda out: out[0])
    assert torch.allclose(ours, plain, atol=1e-6)
    first = explain(wrapped, x, name, target_layer="inner.3")  # logits first: no output_fn
    assert torch.allclose(first, plain, atol=1e-6)


def test_default_target_layer_is_the_models(tiny):
    model, x, _ = tiny  # bit-equal by construction: the default is that layer, the same pass
    assert torch.equal(explain(model, x, "gradcam"), explain(model, x, "gradcam", target_layer="3"))
    other = explain(model, x, "gradcam", target_layer="1")
    assert not torch.equal(other, explain(model, x, "gradcam"))
