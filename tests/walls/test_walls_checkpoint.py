"""Checkpoints: safetensors + JSON, round trip, tamper refusal, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from camwall.errors import CamwallError
from camwall.walls import checkpoint_paths, create_model, load_model, save_model


@pytest.fixture
def saved(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = create_model("fashion-vgg", width=8)
    path = save_model(
        model,
        tmp_path / "runs" / "fv",
        {"class_names": [str(i) for i in range(10)], "training": {"epochs": 2}, "note": "x"},
    )
    return model, path


def test_round_trip_gives_identical_outputs(saved: tuple[torch.nn.Module, Path]) -> None:
    model, path = saved
    assert path.name == "fv.safetensors"
    assert path.with_suffix(".json").is_file()
    x = torch.rand(3, 1, 64, 64)
    model.eval()
    for spec in (path, path.with_suffix(".json"), path.parent / "fv", str(path.parent / "fv")):
        loaded, meta = load_model(spec)
        assert not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
    assert meta["arch"] == "fashion-vgg"
    assert meta["arch_kwargs"] == {"num_classes": 10, "walled": True, "width": 8}
    assert meta["input_shape"] == [1, 64, 64]
    assert meta["target_layer"] == "9"
    assert meta["dead_zone"] == {
        "shape": [64, 64],
        "rows": [[39, 64]],
        "cols": [],
        "pixels": 25 * 64,
        "fraction": 25 / 64,
    }
    assert meta["wall"][0]["region"] == {"rows": [7, None], "cols": None}
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert meta["training"] == {"epochs": 2}
    assert meta["note"] == "x"
    assert meta["format"] == "camwall-checkpoint"


def test_dataparallel_wrapper_is_saved_unwrapped(tmp_path: Path) -> None:
    model = create_model("fashion-resnet", width=4)
    path = save_model(torch.nn.DataParallel(model), tmp_path / "dp")
    loaded, meta = load_model(path)
    assert meta["arch"] == "fashion-resnet"
    assert set(loaded.state_dict()) == set(model.state_dict())


def test_tampered_wall_weights_are_refused(saved: tuple[torch.nn.Module, Path]) -> None:
    _, path = saved
    tensors = load_file(str(path))
    tensors["11.weight"].view(64, 8, 16, 16)[5, 3, 12, 7] = 1e-6
    save_file(tensors, str(path))
    with pytest.raises(CamwallError, match=r"fv\.safetensors: the wall of layer '11' is broken"):
        load_model(path)


def test_tampered_wall_metadata_is_refused(saved: tuple[torch.nn.Module, Path]) -> None:
    _, path = saved
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["wall"][0]["region"]["rows"] = [9, None]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CamwallError, match=r"fv\.json: the recorded wall"):
        load_model(path)


def test_missing_and_corrupt_files_name_the_file(
    saved: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    _, path = saved
    with pytest.raises(CamwallError, match=r"nope\.json not found"):
        load_model(tmp_path / "nope")
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CamwallError, match=r"fv\.safetensors cannot be read"):
        load_model(path)
    meta_path = path.with_suffix(".json")
    meta_path.write_text("{not json")
    with pytest.raises(CamwallError, match=r"fv\.json is not valid JSON"):
        load_model(path)
    meta_path.write_text(
        json.dumps({"format": "camwall-checkpoint", "arch": "fashion-vgg", "arch_kwargs": {"x": 1}})
    )
    with pytest.raises(CamwallError, match=r"fv\.json: cannot rebuild fashion-vgg: .* take x"):
        load_model(path)
    meta_path.write_text(json.dumps({"format": "camwall-checkpoint", "arch": "resnet9000"}))
    with pytest.raises(CamwallError, match="unknown architecture 'resnet9000'"):
        load_model(path)


def test_weights_that_do_not_fit_are_refused(
    saved: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    _, path = saved
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["arch_kwargs"]["num_classes"] = 5
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CamwallError, match=r"fv\.safetensors do not fit fashion-vgg"):
        load_model(path)


def test_save_refuses_broken_walls_and_unrecorded_models(tmp_path: Path) -> None:
    model = create_model("fashion-resnet", width=4)
    save_model(model, tmp_path / "r.json")  # a Wall module: nothing to break in the weights
    _, meta = load_model(tmp_path / "r.safetensors")
    assert meta["dead_zone"]["rows"] == [[37, 64]]
    assert meta["class_names"] is None
    vgg = create_model("fashion-vgg", width=4)
    with torch.no_grad():
        vgg[11].weight.view(64, 4, 16, 16)[0, 0, 15, 0] = 1.0
    with pytest.raises(CamwallError, match="enforce_walls"):
        save_model(vgg, tmp_path / "v")
    with pytest.raises(CamwallError, match="no camwall architecture record"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "l")
    with pytest.raises(CamwallError, match="cannot be written as JSON"):
        save_model(create_model("fashion-vgg", width=4), tmp_path / "w", {"bad": object()})
    expected = (Path("a/b.v1.safetensors"), Path("a/b.v1.json"))
    assert checkpoint_paths("a/b.v1.safetensors") == expected
