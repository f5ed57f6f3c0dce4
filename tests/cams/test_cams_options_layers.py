"""Several target layers at once against pytorch-grad-cam 1.5.7 (``target_layers=[...]``)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from gradcam_refs import GRADIENT_REFERENCE
from pytorch_grad_cam import FEM, ScoreCAM

from camwall.cams import CamEngine, compute_cams
from camwall.errors import CamwallError

REFERENCE = {**GRADIENT_REFERENCE, "scorecam": ScoreCAM, "fem": FEM}
GRADIENT = ["gradcam", "hirescam", "gradcampp", "xgradcam", "layercam", "gradcamelementwise"]
# (model, seed, batch, h, w, layers)
TINY = [
    ("flat", 0, 1, 8, 12, ["1", "4"]),
    ("flat", 1, 3, 10, 6, ["0", "4"]),
    ("nested", 2, 3, 12, 8, ["features.1", "features.3"]),
    ("custom", 3, 1, 9, 13, ["act1", "conv2", "act2"]),
]


def reference(name, model, layers, x):
    modules = [model.get_submodule(n) for n in layers]
    with REFERENCE[name](model=model, target_layers=modules) as cam:
        return torch.from_numpy(cam(input_tensor=x, targets=None))


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("case", TINY, ids=lambda c: f"{c[0]}-b{c[2]}-{c[3]}x{c[4]}")
def test_several_layers_match_grad_cam(name, case, make_tiny):
    model_name, seed, batch, h, w, layers = case
    model, _, x = make_tiny(model_name, seed=seed, batch=batch, h=h, w=w)
    ours = compute_cams(model, x, layers, name)[name]
    assert ours.shape == (batch, h, w)
    assert float((ours - reference(name, model, layers, x)).abs().max()) <= 1e-5
    assert float(ours.max()) > 0.99


@pytest.fixture(scope="module")
def torchvision_models():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    torch.manual_seed(1)
    vgg = torchvision.models.vgg11(weights=None).eval()
    return {
        "resnet18": (resnet, ["layer3", "layer4"]),
        "vgg11": (vgg, ["features.14", "features.19"]),
    }


@pytest.mark.parametrize("name", GRADIENT)
@pytest.mark.parametrize(
    ("arch", "batch", "h", "w"), [("resnet18", 3, 64, 80), ("vgg11", 1, 64, 48)]
)
def test_several_layers_match_grad_cam_on_torchvision(name, arch, batch, h, w, torchvision_models):
    model, layers = torchvision_models[arch]
    x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(5))
    modules = [model.get_submodule(n) for n in layers]
    ours = compute_cams(model, x, modules, name)[name]  # modules work as well as names
    assert float((ours - reference(name, model, layers, x)).abs().max()) <= 1e-5


def test_one_forward_and_one_backward_for_all_layers(make_tiny):
    model, _, x = make_tiny("nested", batch=2, h=8, w=8)
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        compute_cams(model, x, ["features.1", "features.3"], GRADIENT)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_a_list_of_one_layer_equals_the_layer(make_tiny):
    model, layer, x = make_tiny("custom", batch=2)
    one = compute_cams(model, x, layer, GRADIENT)
    listed = compute_cams(model, x, [layer], GRADIENT)
    for name in GRADIENT:  # bit-equal by construction: a list of one layer takes that path
        torch.testing.assert_close(listed[name], one[name], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["opticam", "fullgrad"])
def test_methods_with_their_own_map_refuse_several_layers(name, make_tiny):
    model, _, x = make_tiny("flat")
    with pytest.raises(CamwallError, match=f"{name} does not support several target layers"):
        compute_cams(model, x, ["1", "4"], name)


def test_bad_layer_lists(make_tiny):
    model, _, _ = make_tiny("flat")
    with pytest.raises(CamwallError, match="twice"):
        CamEngine(model, ["4", model.get_submodule("4")])
    with pytest.raises(CamwallError, match="non-empty list"):
        CamEngine(model, [])
    with pytest.raises(CamwallError, match="not a submodule"):
        CamEngine(model, ["4", "nope"])


def test_no_hook_survives_an_exception_with_several_layers(make_tiny):
    model, _, x = make_tiny("custom", batch=1)

    def boom(row):
        raise RuntimeError("target failed")

    with pytest.raises(RuntimeError, match="target failed"):
        compute_cams(model, x, ["act1", "act2"], "gradcam", targets=[boom])
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    engine = CamEngine(model, ["act1", "act2"])
    with engine:
        assert sum(len(m._forward_hooks) for m in model.modules()) == 2
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
