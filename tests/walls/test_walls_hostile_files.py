"""Checkpoints and weights that are not what they claim (issue 22 §5): one line, exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from camwall.cli import main
from camwall.errors import CamwallError
from camwall.walls import create_model, load_model, save_model, walled_torchvision

FIXTURE = Path(__file__).parent / "fixtures" / "v1" / "fashion-vgg"


def _copy(tmp_path: Path, text: str, name: str = "ck") -> Path:
    """A checkpoint ``name`` in ``tmp_path``: the fixture's weights with JSON ``text``."""
    shutil.copy(FIXTURE.with_suffix(".safetensors"), tmp_path / f"{name}.safetensors")
    (tmp_path / f"{name}.json").write_text(text)
    return tmp_path / f"{name}.json"


def _record() -> dict:
    return json.loads(FIXTURE.with_suffix(".json").read_text())


def _one_line_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1
    return err


def test_a_json_nested_2000_deep_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = json.dumps(_record())[:-1] + ', "extra": ' + "[" * 2000 + "]" * 2000 + "}"
    path = _copy(tmp_path, text)
    with pytest.raises(CamwallError, match="nested too deeply"):
        load_model(path)
    assert "nested too deeply" in _one_line_error(capsys, ["deadzone", "--model", str(path)])


def test_deep_metadata_is_refused_when_saving(tmp_path: Path) -> None:
    deep: list = []
    for _ in range(2000):
        deep = [deep]
    with pytest.raises(CamwallError, match="nested too deeply"):
        save_model(create_model("fashion-vgg", width=1), tmp_path / "m", {"training": deep})


@pytest.mark.parametrize(
    ("version", "match"),
    [(99, "newer camwall; upgrade"), (0, "modified"), ("1", "modified"), (True, "modified")],
)
def test_an_unknown_checkpoint_version_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], version: object, match: str
) -> None:
    path = _copy(tmp_path, json.dumps({**_record(), "version": version}))
    with pytest.raises(CamwallError, match=match):
        load_model(path)
    assert "checkpoint version" in _one_line_error(capsys, ["deadzone", "--model", str(path)])


def test_a_checkpoint_without_a_version_still_loads(tmp_path: Path) -> None:
    record = _record()
    del record["version"]
    model, _ = load_model(_copy(tmp_path, json.dumps(record)))
    assert model is not None


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: it must never happen."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def test_a_pickle_as_weights_gets_our_line_not_torchs_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": _Payload(marker)}, evil)
    args = ["deadzone", "--model", "fashion-vgg", "--weights", str(evil)]
    err = _one_line_error(capsys, args)
    assert "never unpickles" in err
    assert "the Python object io.open" in err
    assert "weights_only" not in err
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a torch file\n")
    err = _one_line_error(
        capsys, ["deadzone", "--model", "fashion-vgg", "--weights", str(tmp_path / "junk.pt")]
    )
    assert "weights_only" not in err


def test_num_classes_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["deadzone", "--model", "fashion-vgg", "--num-classes", "100000000"]
    assert "at most 100,000 classes" in _one_line_error(capsys, args)
    with pytest.raises(CamwallError, match="at most 100,000 classes"):
        create_model("walled-vgg16", num_classes=100_001)
    with pytest.raises(CamwallError, match="at most 100,000 classes"):
        walled_torchvision("resnet18", [], num_classes=10**8)
    assert create_model("fashion-vgg", width=1, num_classes=100_000) is not None
