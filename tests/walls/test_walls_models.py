"""Model architectures, the registry and target layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from camwall.errors import CamwallError
from camwall.walls import (
    MODELS,
    Wall,
    WalledLinear,
    create_model,
    default_target_layer,
    model_config,
    walled_vgg16,
)


def test_walled_vgg16_layers_match_the_paper() -> None:
    model = walled_vgg16(num_classes=7)
    assert isinstance(model, nn.Sequential)
    assert len(model) == 38
    convs = [i for i, m in enumerate(model) if isinstance(m, nn.Conv2d)]
    pools = [i for i, m in enumerate(model) if isinstance(m, nn.MaxPool2d)]
    assert convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision indices
    assert pools == [4, 9, 16, 23]  # the last max-pool (30) is gone
    assert all(isinstance(model[i + 1], nn.ReLU) for i in convs)
    assert (model[28].in_channels, model[28].out_channels) == (512, 256)
    assert [(model[i].in_channels, model[i].out_channels) for i in convs[:3]] == [
        (3, 64),
        (64, 64),
        (64, 128),
    ]
    assert isinstance(model[29], nn.ReLU)
    assert isinstance(model[30], nn.Flatten)
    head = model[31]
    assert isinstance(head, WalledLinear)
    assert (head.in_features, head.out_features, head.feature_shape) == (50176, 4096, (256, 14, 14))
    w = head.weight.detach().view(4096, 256, 14, 14)
    assert torch.count_nonzero(w[:, :, 5:]) == 0  # bottom 9 of 14 feature rows
    assert torch.count_nonzero(w[:, :, :5]) > 0.999 * w[:, :, :5].numel()  # N(0, 0.01)
    kinds = [nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert [type(m) for m in model[32:]] == kinds
    assert (model[34].in_features, model[34].out_features) == (4096, 4096)
    assert (model[37].in_features, model[37].out_features) == (4096, 7)
    assert default_target_layer(model) == "29"
    feats = {}
    model[29].register_forward_hook(lambda m, i, o: feats.setdefault("o", o))
    with torch.no_grad():
        out = model.eval()(torch.rand(1, 3, 224, 224))
    assert out.shape == (1, 7)
    assert feats["o"].shape == (1, 256, 14, 14)
    assert model_config(model) == {
        "arch": "walled-vgg16",
        "arch_kwargs": {"num_classes": 7, "walled": True},
        "wall": [
            {
                "kind": "linear",
                "layer": "31",
                "feature_shape": [256, 14, 14],
                "region": {"rows": [5, None], "cols": None},
            }
        ],
        "input_shape": [3, 224, 224],
        "target_layer": "29",
    }


def test_registry_and_create_model() -> None:
    assert MODELS.names()[:4] == ["walled-vgg16", "simple-cnn", "fashion-vgg", "fashion-resnet"]
    model = create_model("fashion-resnet", walled=False, width=8)
    assert isinstance(model.wall, nn.Identity)
    assert model_config(model)["wall"] == []
    assert model_config(model)["arch_kwargs"] == {"num_classes": 10, "walled": False, "width": 8}
    walled = create_model("fashion-resnet")
    assert isinstance(walled.wall, Wall)
    assert default_target_layer(walled) == "layer3"
    assert default_target_layer(create_model("fashion-vgg")) == "9"
    assert isinstance(create_model("fashion-vgg")[9], nn.ReLU)
    with pytest.raises(CamwallError, match="Did you mean 'fashion-vgg'"):
        create_model("fashion_vgg")
    with pytest.raises(CamwallError, match="does not take depth"):
        create_model("fashion-vgg", depth=3)
    with pytest.raises(CamwallError, match="no camwall architecture record"):
        model_config(nn.Linear(2, 2))


def test_default_target_layer_for_other_models() -> None:
    from torchvision.models import resnet18

    assert default_target_layer(resnet18(weights=None)) == "layer4"
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2))
    assert default_target_layer(plain) == "1"
    with pytest.raises(CamwallError, match="cannot find a CAM target layer"):
        default_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(2, 2)))


@pytest.mark.parametrize("name", ["fashion-vgg", "fashion-resnet"])
def test_fashion_models_train_step_and_are_batchnorm_free(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, width=4)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    x, y = torch.rand(4, 1, 64, 64), torch.arange(4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("vgg16", "features.29"),  # the last ReLU, before the last max-pool
        ("efficientnet_b0", "features"),  # squeeze-excitation pools do not end the search
        ("densenet121", "features"),
        ("squeezenet1_1", "features"),  # the last Fire block's concatenated output
        ("googlenet", "inception5b"),  # auxiliary classifiers are skipped
        ("shufflenet_v2_x0_5", "conv5"),
        ("alexnet", "features.11"),
    ],
)
def test_default_target_layer_of_torchvision_classifiers(name: str, layer: str) -> None:
    import torchvision

    kwargs = {"init_weights": True} if name == "googlenet" else {}
    with torch.device("meta"):  # structure only, no weights
        model = torchvision.models.get_model(name, weights=None, num_classes=3, **kwargs)
    assert default_target_layer(model) == layer
    model.get_submodule(layer)


def test_fashion_vgg_has_he_initialisation_and_shares_it_with_its_baseline() -> None:
    torch.manual_seed(0)
    walled = create_model("fashion-vgg", width=8)
    torch.manual_seed(0)
    base = create_model("fashion-vgg", width=8, walled=False)
    for i in (0, 3, 6, 8, 11, 14):
        layer = walled[i]
        fan_in = layer.weight[0].numel()
        w = layer.weight.detach()
        if i == 11:  # the walled head: He scale on the live columns, exact zeros on the wall
            w = w.view(64, 8, 16, 16)
            assert torch.count_nonzero(w[:, :, 7:]) == 0
            w = w[:, :, :7]
            assert torch.equal(base[11].weight.detach().view(64, 8, 16, 16)[:, :, :7], w)
        assert w.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
        assert torch.count_nonzero(layer.bias) == 0
    # the signal keeps its scale through the BatchNorm-free stack (PyTorch's default init
    # shrinks it by about 1/sqrt(6) per ReLU layer)
    x = torch.rand(64, 1, 64, 64)
    with torch.no_grad():
        feat = walled[:10](x)
    ratio = (feat.pow(2).mean() / x.pow(2).mean()).sqrt().item()
    assert 0.3 < ratio < 3.0
