"""``camwall deadzone``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from camwall.cli import main
from camwall.walls import create_model, save_model


def test_deadzone_for_a_registered_model_draws_a_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fig" / "dz.png"
    assert main(["deadzone", "--model", "fashion-resnet", "--out", str(out), "--trials", "2"]) == 0
    text = capsys.readouterr().out
    assert "dead rows: 37..63 (27 rows)" in text
    assert "dead columns: none" in text
    assert "dead area: 1728 of 4096 pixels = 42.2%" in text
    assert "verification: PASS (2 trials)" in text
    with Image.open(out) as im:
        assert im.size[0] > 100
        assert im.size[1] > 100


def test_deadzone_for_a_checkpoint_and_other_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    path = save_model(create_model("fashion-vgg", width=4), tmp_path / "ck")
    assert main(["deadzone", "--model", str(path), "--trials", "1"]) == 0
    text = capsys.readouterr().out
    assert "ck.safetensors (fashion-vgg, walled)" in text
    assert "dead rows: 39..63 (25 rows)" in text
    # A Flatten head fixes the input size: a clear error, not a traceback.
    assert main(["deadzone", "--model", str(path), "--input-size", "96", "80"]) == 2
    assert "cannot run on an input of shape (1, 96, 80)" in capsys.readouterr().err
    # The ResNet's global pool takes any size; its dead band starts 37 rows down either way.
    assert main(["deadzone", "--model", "fashion-resnet", "--input-size", "96", "80"]) == 0
    text = capsys.readouterr().out
    assert "input: 1 x 96 x 80" in text
    assert "dead rows: 37..95 (59 rows)" in text
    assert main(["deadzone", "--model", "simple-cnn", "--trials", "1"]) == 0
    assert "dead rows: 15..28 (14 rows)" in capsys.readouterr().out
    assert main(["deadzone", "--model", "fashion-vgg", "--baseline", "--trials", "1"]) == 0
    assert "dead rows: none" in capsys.readouterr().out


def test_deadzone_errors_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deadzone", "--model", "fashion-resnt"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'fashion-resnet'" in err
    assert "Traceback" not in err
    assert main(["deadzone", "--model", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.json not found" in capsys.readouterr().err


def test_deadzone_walls_any_torchvision_classifier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import save_file
    from torchvision.models import resnet18

    # An ordinary torchvision export (no wall in its names) as --weights.
    torch.manual_seed(0)
    weights = tmp_path / "r18.safetensors"
    save_file(resnet18(weights=None, num_classes=5).state_dict(), str(weights))
    args = ["deadzone", "--model", "resnet18", "--wall", "layer2:rows=4:", "--num-classes", "5"]
    args += ["--input-size", "96", "96", "--trials", "1", "--weights", str(weights)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "model: resnet18 (torchvision, wall layer2:rows=4:, weights r18.safetensors)" in text
    assert "input: 3 x 96 x 96" in text
    assert "dead rows: 74..95 (22 rows)" in text
    assert "dead area: 2112 of 9216 pixels = 22.9%" in text
    assert "verification: PASS (1 trial)" in text


def test_deadzone_torchvision_checkpoint_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from camwall.walls import walled_torchvision

    model = walled_torchvision(
        "resnet18", ["layer2:rows=4:"], num_classes=3, input_shape=(3, 96, 96)
    )
    path = save_model(model, tmp_path / "tv")
    assert main(["deadzone", "--model", str(path), "--trials", "1"]) == 0
    text = capsys.readouterr().out
    assert "tv.safetensors (torchvision, wall layer2:rows=4:)" in text
    assert "dead rows: 74..95 (22 rows)" in text
    assert main(["deadzone", "--model", "resnt18", "--wall", "layer2:rows=4:"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'resnet18'" in err
    assert "Traceback" not in err
    assert main(["deadzone", "--model", "resnet18", "--wall", "layer2:rows=4"]) == 2
    assert "not a range START:STOP" in capsys.readouterr().err
    assert main(["deadzone", "--model", "fashion-vgg", "--wall", "9:rows=2:"]) == 2
    assert "--wall applies to torchvision names" in capsys.readouterr().err
    assert main(["deadzone", "--model", str(path), "--wall", "layer3:rows=1:"]) == 2
    assert "drop --wall" in capsys.readouterr().err
