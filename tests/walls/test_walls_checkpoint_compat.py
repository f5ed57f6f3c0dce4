"""Checkpoints written before the model description (``ModelInfo``) still load, and
``save_model`` still writes the same JSON: the shipped checkpoints and today's-format fixtures.

``fixtures/v1/*`` were written by ``save_model`` at commit f8b557c (the last one with loose
``camwall_*`` attributes) from tiny models of every registered family except the 138 M
parameter VGG16; the torchvision fixture is its JSON only (the weights are rebuilt here).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from camwall.errors import CamwallError
from camwall.walls import ModelInfo, declare, describe, load_model, model_config, save_model
from camwall.walls._torchvision import rebuild_torchvision
from camwall.weights import SHIPPED_MODELS, shipped_model

FIXTURES = Path(__file__).parent / "fixtures" / "v1"
_VERSIONS = ("camwall_version", "torch_version")


def _shipped() -> list[Path]:
    return [shipped_model(p, v) for p, variants in SHIPPED_MODELS.items() for v in variants]


def _fixtures() -> list[Path]:
    return sorted(FIXTURES.glob("*.safetensors"))


def _resaved(model: torch.nn.Module, record: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The JSON today's ``save_model`` writes for ``model`` with ``record``'s metadata."""
    extra = {"class_names": record.get("class_names"), "training": record.get("training")}
    path = save_model(model, tmp_path / "again", extra)
    return json.loads(path.with_suffix(".json").read_text())


def _without_versions(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in _VERSIONS}


def _check_description(model: torch.nn.Module, record: dict[str, Any]) -> None:
    info = describe(model)
    assert info.arch == record["arch"]
    assert info.kwargs_dict() == record["arch_kwargs"]
    assert list(info.input_shape or ()) == (record["input_shape"] or [])
    assert info.target_layer == (record["target_layer"] or None)
    assert info.wall_list() == record["wall"]
    assert (dict(info.task) if info.task is not None else None) == record.get("task")
    assert info.kind == record.get("kind")
    names = record.get("class_names")
    assert info.class_names == (tuple(names) if names is not None else None)


@pytest.mark.parametrize("path", _shipped(), ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_shipped_checkpoints_load_and_resave_to_the_same_json(path: Path, tmp_path: Path) -> None:
    model, record = load_model(path)
    _check_description(model, record)
    x = torch.rand(2, *describe(model).input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert bool(model(x).isfinite().all())
    assert _without_versions(_resaved(model, record, tmp_path)) == _without_versions(record)


@pytest.mark.parametrize("path", _fixtures(), ids=lambda p: p.stem)
def test_todays_format_checkpoints_load_and_resave_to_the_same_json(
    path: Path, tmp_path: Path
) -> None:
    model, record = load_model(path)
    assert record["version"] == 1
    _check_description(model, record)
    assert _without_versions(_resaved(model, record, tmp_path)) == _without_versions(record)


def test_fixtures_cover_every_family_but_vgg16() -> None:
    from camwall.walls import MODELS

    archs = {json.loads(p.read_text())["arch"] for p in FIXTURES.glob("*.json")}
    assert archs == {*MODELS.names(), "torchvision"} - {"walled-vgg16"}


def test_todays_format_torchvision_json_loads_and_resaves(tmp_path: Path) -> None:
    src = FIXTURES / "torchvision-resnet18.json"
    record = json.loads(src.read_text())
    shutil.copy(src, tmp_path / "tv.json")
    state = rebuild_torchvision(record["arch_kwargs"]).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "tv.safetensors"))
    model, loaded = load_model(tmp_path / "tv")
    _check_description(model, loaded)
    assert _without_versions(_resaved(model, loaded, tmp_path)) == _without_versions(record)


def test_model_info_is_frozen_and_its_records_are_copies() -> None:
    from camwall.walls import create_model

    model = create_model("fashion-grid-vgg", width=1)
    info = describe(model)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.arch = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        info.kwargs["width"] = 2  # type: ignore[index]
    config = model_config(model)
    config["wall"][0]["layer"] = "changed"
    config["arch_kwargs"]["width"] = 99
    assert model_config(model)["wall"][0]["layer"] == "12"
    assert describe(model).kwargs["width"] == 1
    assert info.output_groups == [(0, 10), (10, 20), (20, 30), (30, 40)]
    assert describe(torch.nn.Linear(2, 2)) == ModelInfo()


def test_the_description_survives_deepcopy_and_pickle() -> None:
    import copy
    import pickle

    from camwall.walls import create_model

    model = create_model("fashion-vit", dim=8, depth=1, heads=2, mlp_dim=8)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert describe(clone) == describe(model)
        assert describe(clone).reshape == describe(model).reshape


def test_declare_refuses_an_unknown_field() -> None:
    with pytest.raises(CamwallError, match="not a model description field"):
        declare(torch.nn.Linear(2, 2), reshap=None)
