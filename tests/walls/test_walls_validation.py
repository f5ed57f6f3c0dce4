"""Malformed checkpoints and arguments: NaN/Inf weights, bad metadata, bad builder sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from camwall.errors import CamwallError
from camwall.walls import create_model, load_model, load_weights, save_model, walled_torchvision
from camwall.walls._checks import input_shape_of, positive_int


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("fashion-vgg", width=4)
    return save_model(model, tmp_path / "fv", {"class_names": [f"c{i}" for i in range(10)]})


def _edit_json(path: Path, **changes: object) -> None:
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))


def _poison(path: Path, key: str, index: tuple[int, ...], value: float) -> None:
    tensors = load_file(str(path))
    tensors[key][index] = value
    save_file(tensors, str(path))


@pytest.mark.parametrize(
    ("value", "count"), [(float("nan"), "1 NaN and 0 Inf"), (float("-inf"), "0 NaN and 1 Inf")]
)
def test_checkpoint_with_a_non_finite_weight_names_file_and_tensor(saved, value, count):
    _poison(saved, "0.weight", (0, 0, 0, 0), value)
    with pytest.raises(CamwallError, match=rf"fv\.safetensors: 0\.weight has {count} values"):
        load_model(saved)


def test_non_finite_walled_weight_is_reported_as_non_finite(saved):
    _poison(saved, "11.weight", (0, 4 * 16 * 16 - 1), float("nan"))  # a walled entry
    with pytest.raises(CamwallError, match=r"11\.weight has 1 NaN"):
        load_model(saved)


def test_several_bad_tensors_are_counted(saved):
    _poison(saved, "0.weight", (0, 0, 0, 0), float("nan"))
    _poison(saved, "14.bias", (3,), float("inf"))
    with pytest.raises(CamwallError, match=r"0\.weight has 1 NaN.*\(2 tensors are affected\)"):
        load_model(saved)


def test_load_weights_refuses_non_finite_values(tmp_path):
    model = create_model("fashion-vgg", width=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["3.bias"][1] = float("nan")
    file = tmp_path / "w.safetensors"
    save_file(state, str(file))
    with pytest.raises(CamwallError, match=r"weights .*w\.safetensors: 3\.bias has 1 NaN"):
        load_weights(create_model("fashion-vgg", width=4), file)


def test_load_weights_refuses_a_broken_wall(tmp_path):
    model = create_model("fashion-vgg", width=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["11.weight"].view(64, 4, 16, 16)[2, 1, 9, 3] = 0.5
    file = tmp_path / "w.safetensors"
    save_file(state, str(file))
    with pytest.raises(CamwallError, match=r"the wall of layer '11' is broken: 1 weights"):
        load_weights(create_model("fashion-vgg", width=4), file)


SHAPE_32 = r"input_shape \[1, 32, 32\] is not the input shape of fashion-vgg \(1 x 64 x 64\)"
ENTRY = r"each entry must be a positive integer"


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("input_shape", [1, 32, 32], SHAPE_32),
        ("input_shape", "abc", r"input_shape must be \[C, H, W\].*'abc'"),
        ("input_shape", [1, 64], r"input_shape must be \[C, H, W\]"),
        ("input_shape", [1, "64", 64], rf"input_shape \[1, '64', 64\]: {ENTRY}, got '64'"),
        ("input_shape", [1, 0, 64], rf"input_shape \[1, 0, 64\]: {ENTRY}, got 0"),
        ("target_layer", "99", r"target_layer '99' is not a layer of fashion-vgg"),
        ("target_layer", 9, r"target_layer 9 is not a layer of fashion-vgg"),
        ("class_names", ["a", "b"], r"class_names must be a list of 10 strings"),
        ("class_names", "abc", r"class_names must be a list of 10 strings"),
        ("class_names", [1] * 10, r"class_names must be a list of 10 strings"),
    ],
)
def test_malformed_metadata_names_the_json_file_and_key(saved, key, value, why):
    _edit_json(saved, **{key: value})
    with pytest.raises(CamwallError, match=rf"fv\.json: {why}"):
        load_model(saved)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"width": -3}, r"width must be a positive integer, got -3"),
        ({"width": 0}, r"width must be a positive integer, got 0"),
        ({"width": "abc"}, r"width must be a positive integer, got 'abc'"),
        ({"width": 4.0}, r"width must be a positive integer, got 4\.0"),
        ({"width": 4, "num_classes": 0}, r"num_classes must be a positive integer, got 0"),
        ({"width": 4, "walled": "yes"}, r"walled must be true or false, got 'yes'"),
    ],
)
def test_malformed_arch_kwargs_name_the_json_file_and_key(saved, kwargs, why):
    _edit_json(saved, arch_kwargs=kwargs)
    with pytest.raises(CamwallError, match=rf"fv\.json: cannot rebuild fashion-vgg: .*{why}"):
        load_model(saved)


def test_metadata_that_fits_still_loads(saved):
    _edit_json(saved, input_shape=[1, 64, 64], target_layer="9", class_names=None)
    _, meta = load_model(saved)
    assert meta["target_layer"] == "9"
    _edit_json(saved, input_shape=None, target_layer=None)
    load_model(saved)


@pytest.mark.parametrize("name", ["fashion-vgg", "fashion-resnet", "simple-cnn", "walled-vgg16"])
@pytest.mark.parametrize("bad", [-1, 0, True, "8"])
def test_builders_refuse_non_positive_or_non_integer_sizes(name, bad):
    size = {"simple-cnn": "channels", "walled-vgg16": "num_classes"}.get(name, "width")
    with pytest.raises(CamwallError, match=rf"model argument {size} must be a positive integer"):
        create_model(name, **{size: bad})
    with pytest.raises(CamwallError, match=r"model argument num_classes must be a positive"):
        create_model(name, num_classes=bad)


def test_walled_torchvision_refuses_bad_sizes():
    with pytest.raises(CamwallError, match=r"num_classes must be a positive integer, got -2"):
        walled_torchvision("resnet18", num_classes=-2)
    with pytest.raises(CamwallError, match=r"input_shape .* positive integer, got 0"):
        walled_torchvision("resnet18", input_shape=(3, 0, 32))
    with pytest.raises(CamwallError, match=r"seed must be an integer, got 'x'"):
        walled_torchvision("resnet18", seed="x")  # type: ignore[arg-type]


def test_value_checks():
    assert positive_int(3, "n") == 3
    assert input_shape_of((1, 2, 3), "s") == (1, 2, 3)
    for bad in (0, -1, True, 2.0, "2", None):
        with pytest.raises(CamwallError, match="n must be a positive integer"):
            positive_int(bad, "n")


def test_resolve_model_meta_has_the_model_facts_for_every_source(tmp_path):
    from camwall.walls import resolve_model

    model, meta = resolve_model("fashion-vgg", num_classes=4)
    assert (meta["arch"], meta["input_shape"], meta["target_layer"]) == (
        "fashion-vgg",
        [1, 64, 64],
        "9",
    )
    assert meta["arch_kwargs"] == {"num_classes": 4, "walled": True, "width": 16}
    assert meta["wall"][0]["layer"] == "11"
    _, meta = resolve_model("resnet18", ["layer3:rows=2:"], num_classes=3)
    assert (meta["arch"], meta["input_shape"], meta["target_layer"]) == (
        "torchvision",
        [3, 224, 224],
        "layer4",
    )
    path = save_model(model, tmp_path / "m")
    _edit_json(path, target_layer=None)
    _, meta = resolve_model(str(path))
    assert (meta["source"], meta["target_layer"]) == ("checkpoint", "9")  # the default


def test_verify_wall_refuses_a_model_with_nan_weights_instead_of_failing_the_wall():
    from camwall.walls import dead_zone, verify_wall

    model = create_model("fashion-vgg", width=4)
    zone = dead_zone(model, (1, 64, 64))
    assert verify_wall(model, zone, trials=1).ok
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(CamwallError, match=r"outputs NaN or Inf .* weights are corrupt"):
        verify_wall(model, zone, trials=1)
