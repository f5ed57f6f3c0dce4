"""Walled torchvision classifiers: build, save/load round trip, external weights, wall parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import resnet18

from camwall.errors import CamwallError
from camwall.walls import (
    Wall,
    WallSpec,
    dead_zone,
    dead_zone_summary,
    format_wall,
    insert_wall,
    load_model,
    load_weights,
    model_config,
    parse_wall,
    save_model,
    walled_torchvision,
)
from camwall.walls._torchvision import check_inserted_walls, plain_to_walled_names

# At 96 x 96 ResNet18's layer2 map is 12 x 12; walling its rows 4.. kills input rows 74..95.
WALL = "layer2:rows=4:"
SHAPE = (3, 96, 96)


def _plain(seed: int = 1, num_classes: int = 5) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = resnet18(weights=None, num_classes=num_classes)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a wrong mapping would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_build_records_a_rebuildable_config_and_is_seeded() -> None:
    state = torch.random.get_rng_state()
    model = walled_torchvision("resnet18", [WALL], num_classes=5, input_shape=SHAPE, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    again = walled_torchvision("resnet18", {"layer2": WallSpec(rows=(4, None))}, 5, seed=0)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(model.layer2[1], Wall)
    assert model.layer2[1].spec == WallSpec(rows=(4, None))
    config = model_config(model)
    assert config == {
        "arch": "torchvision",
        "arch_kwargs": {
            "name": "resnet18",
            "walls": [{"layer": "layer2", "region": {"rows": [4, None], "cols": None}}],
            "num_classes": 5,
            "input_shape": [3, 96, 96],
        },
        "wall": [{"kind": "wall", "layer": "layer2", "region": {"rows": [4, None], "cols": None}}],
        "input_shape": [3, 96, 96],
        "target_layer": "layer4",
    }
    # A wall right after the target layer: the target is read before the wall.
    late = walled_torchvision("resnet18", ["layer4:rows=1:"], num_classes=5)
    assert model_config(late)["target_layer"] == "layer4.0"


def test_save_load_round_trip_gives_identical_outputs_and_dead_zone(tmp_path: Path) -> None:
    model = walled_torchvision("resnet18", [WALL], num_classes=5, input_shape=SHAPE, seed=0)
    model.eval()
    path = save_model(model, tmp_path / "tv", {"class_names": list("abcde")})
    loaded, meta = load_model(path)
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert meta["arch"] == "torchvision"
    assert meta["arch_kwargs"]["name"] == "resnet18"
    assert meta["dead_zone"]["rows"] == [[74, 96]]
    assert meta["dead_zone"]["cols"] == []
    assert dead_zone_summary(dead_zone(loaded, SHAPE)) == meta["dead_zone"]
    assert meta["dead_zone"]["pixels"] == 22 * 96
    assert isinstance(loaded.layer2[1], Wall)


def test_tampered_torchvision_metadata_is_refused(tmp_path: Path) -> None:
    model = walled_torchvision("resnet18", [WALL], num_classes=5, input_shape=SHAPE)
    path = save_model(model, tmp_path / "tv")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["arch_kwargs"]["walls"][0]["region"]["rows"] = [6, None]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CamwallError, match=r"tv\.json: the recorded wall"):
        load_model(path)
    meta["arch_kwargs"]["name"] = "resnet19"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CamwallError, match=r"cannot rebuild torchvision.*Did you mean 'resnet18'"):
        load_model(path)


def test_plain_torchvision_weights_load_into_the_walled_model(tmp_path: Path) -> None:
    plain = _plain()
    file = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(file))
    walled = walled_torchvision("resnet18", [WALL], num_classes=5)
    assert load_weights(walled, file) is walled
    own = walled.state_dict()
    for name, value in plain.state_dict().items():
        moved = name.replace("layer2.", "layer2.0.", 1) if name.startswith("layer2.") else name
        assert torch.equal(own[moved], value), name
    # Same outputs as the plain network with the same wall inserted after loading.
    insert_wall(plain, "layer2", WallSpec(rows=(4, None)))
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(walled.eval()(x), plain(x))
    # .pt / .pth state dicts (weights_only) and DDP "module." prefixes work too.
    pt = tmp_path / "plain.pth"
    torch.save({f"module.{k}": v for k, v in _plain(seed=2).state_dict().items()}, pt)
    load_weights(walled, pt)
    assert torch.equal(walled.fc.weight, _plain(seed=2).fc.weight)
    # The walled model's own names load as they are.
    own_file = tmp_path / "own.safetensors"
    save_file({k: v.contiguous() for k, v in walled.state_dict().items()}, str(own_file))
    other = walled_torchvision("resnet18", [WALL], num_classes=5)
    load_weights(other, own_file)
    assert torch.equal(other.layer2[0][1].conv2.weight, walled.layer2[0][1].conv2.weight)


def test_nested_walls_map_names_and_round_trip(tmp_path: Path) -> None:
    walls = ["layer2:rows=4:", "layer2.0.1:cols=0:1", "layer3.1.conv1:rows=0:1"]
    model = walled_torchvision("resnet18", walls, num_classes=5, input_shape=SHAPE)
    check_inserted_walls(model)
    mapping = plain_to_walled_names(model, ["layer2.1.conv1.weight", "layer3.1.conv1.weight"])
    assert mapping == {
        "layer2.1.conv1.weight": "layer2.0.1.0.conv1.weight",
        "layer3.1.conv1.weight": "layer3.1.conv1.0.weight",
    }
    plain = _plain()
    file = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(file))
    load_weights(model, file)
    assert torch.equal(model.layer2[0][1][0].conv1.weight, plain.layer2[1].conv1.weight)
    assert torch.equal(model.layer3[1].conv1[0].weight, plain.layer3[1].conv1.weight)
    loaded, _ = load_model(save_model(model, tmp_path / "nested"))
    x = torch.rand(1, *SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    model.layer3[1].conv1[1] = torch.nn.Identity()  # a wall that vanished is noticed
    with pytest.raises(CamwallError, match=r"wall recorded after layer 'layer3.1.conv1'"):
        check_inserted_walls(model)


def test_bad_weight_files_are_clear_errors(tmp_path: Path) -> None:
    walled = walled_torchvision("resnet18", [WALL], num_classes=5)
    whole = tmp_path / "whole.pt"
    torch.save(_plain(), whole)
    with pytest.raises(CamwallError, match=r"whole\.pt is not a plain state dict .*unpickles"):
        load_weights(walled, whole)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": _plain().state_dict()}, wrapped)
    with pytest.raises(CamwallError, match=r"wrapped\.pt holds a dict \(keys: epoch, state_dict"):
        load_weights(walled, wrapped)
    ten = tmp_path / "ten.safetensors"
    save_file({k: v.contiguous() for k, v in _plain(num_classes=10).state_dict().items()}, str(ten))
    with pytest.raises(CamwallError, match=r"ten\.safetensors do not fit ResNet: .*fc\.weight"):
        load_weights(walled, ten)
    other = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(1)}, str(other))
    with pytest.raises(CamwallError, match=r"missing 122 keys .* unexpected 1 keys"):
        load_weights(walled, other)
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(CamwallError, match=r"unknown format '\.bin'"):
        load_weights(walled, tmp_path / "w.bin")
    with pytest.raises(CamwallError, match=r"nope\.safetensors not found"):
        load_weights(walled, tmp_path / "nope.safetensors")
    with pytest.raises(CamwallError, match=r"Did you mean 'resnet18'"):
        walled_torchvision("resnet19", [WALL])
    with pytest.raises(CamwallError, match=r"never downloaded"):
        walled_torchvision("resnet18", [WALL], weights="DEFAULT")
    with pytest.raises(CamwallError, match=r"must be JSON-ready"):
        walled_torchvision("resnet18", [WALL], norm_layer=torch.nn.Identity)
    with pytest.raises(CamwallError, match=r"layer 'layer9' not found.*Did you mean"):
        walled_torchvision("resnet18", ["layer9:rows=4:"])


@pytest.mark.parametrize(
    ("text", "layer", "spec"),
    [
        ("layer3:rows=4:", "layer3", WallSpec(rows=(4, None))),
        ("layer3:rows=4:8,cols=0:2", "layer3", WallSpec(rows=(4, 8), cols=(0, 2))),
        (" features.29 : cols = :2 ", "features.29", WallSpec(cols=(None, 2))),
        ("layer2.0.1:rows=-3:", "layer2.0.1", WallSpec(rows=(-3, None))),
        ("layer4:cols=1:-1,rows=:", "layer4", WallSpec(rows=(None, None), cols=(1, -1))),
    ],
)
def test_parse_wall_accepts_the_grammar(text: str, layer: str, spec: WallSpec) -> None:
    assert parse_wall(text) == (layer, spec)
    assert parse_wall(format_wall(layer, spec)) == (layer, spec)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("layer3", "no ':' after the layer name"),
        ("layer3:", "no region"),
        (":rows=4:", "'' is not a layer name"),
        ("layer 3:rows=4:", "is not a layer name"),
        ("layer3:rows=4", r"rows=4 is not a range START:STOP \(write rows=4: "),
        ("layer3:rows4:", "has no '='"),
        ("layer3:height=4:", "unknown axis 'height'"),
        ("layer3:rows=1:2,rows=3:", "rows is given twice"),
        ("layer3:rows=a:", "bound 'a' is not an integer"),
        ("layer3:rows=1:2:3", "more than one ':'"),
    ],
)
def test_parse_wall_rejects_bad_syntax_with_an_example(text: str, why: str) -> None:
    with pytest.raises(CamwallError, match=why) as err:
        parse_wall(text)
    assert "e.g. layer3:rows=4:" in str(err.value)


def test_format_wall_writes_the_parser_form() -> None:
    assert format_wall("layer3", WallSpec(rows=(4, None))) == "layer3:rows=4:"
    assert format_wall("f.2", WallSpec(rows=(4, 8), cols=(-2, None))) == "f.2:rows=4:8,cols=-2:"


def test_resolve_model_order_and_plain_exports_do_not_hide_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from camwall.walls import resolve_model
    from camwall.walls._resolve import is_checkpoint

    monkeypatch.chdir(tmp_path)
    save_file({"x": torch.zeros(1)}, "resnet18.safetensors")  # a plain export, no JSON
    assert not is_checkpoint("resnet18")
    model, meta = resolve_model("resnet18", ["layer2:rows=4:"], num_classes=3)
    assert meta["source"] == "torchvision"
    assert meta["label"] == "resnet18 (torchvision, wall layer2:rows=4:)"
    assert not model.training
    assert isinstance(model.layer2[1], Wall)
    plain = walled_torchvision("resnet18", num_classes=3, input_shape=(3, 64, 64))
    save_model(plain, "resnet18")  # now a checkpoint
    assert is_checkpoint("resnet18")
    _, meta = resolve_model("resnet18")
    assert meta["source"] == "checkpoint"
    assert meta["label"] == "resnet18.safetensors (torchvision, no wall)"
    _, meta = resolve_model("fashion-resnet", baseline=True, num_classes=4)
    assert (meta["source"], meta["label"]) == ("registry", "fashion-resnet (baseline)")
    with pytest.raises(CamwallError, match=r"Did you mean 'fashion-vgg'.*torchvision: resnet18"):
        resolve_model("fashion_vgg")
