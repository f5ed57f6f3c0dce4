"""``camwall cam`` with pytorch-grad-cam's options: several --target-layer, --aug-smooth,
--eigen-smooth; maps equal to the library's, bad combinations refused before any file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from camwall.cams import compute_cams
from camwall.cli import main


@pytest.fixture
def checkpoint(tmp_path):
    from camwall.walls import create_model, save_model

    torch.manual_seed(0)
    model = create_model("fashion-vgg")
    return save_model(model, tmp_path / "ckpt" / "net"), model


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "shirt.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), mode="L").save(path)
    return path


def test_several_layers_and_both_smoothings_equal_the_library(tmp_path, checkpoint, image):
    path, model = checkpoint
    out = tmp_path / "out"
    argv = ["cam", str(path), str(image), "--methods", "gradcam,layercam", "--out", str(out)]
    flags = ["--target-layer", "4", "--target-layer", "9", "--aug-smooth", "--eigen-smooth"]
    assert main([*argv, *flags]) == 0
    maps = load_file(str(out / "maps.safetensors"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layer"] == ["4", "9"]
    assert manifest["aug_smooth"] is True
    assert manifest["eigen_smooth"] is True
    x = maps["shirt/input"][None]
    expected = compute_cams(
        model.eval(), x, ["4", "9"], ["gradcam", "layercam"], aug_smooth=True, eigen_smooth=True
    )
    for name in ("gradcam", "layercam"):
        torch.testing.assert_close(maps[f"shirt/{name}"], expected[name][0], rtol=0, atol=1e-6)


def test_one_target_layer_stays_a_name_in_the_manifest(tmp_path, checkpoint, image):
    path, _ = checkpoint
    out = tmp_path / "out"
    assert main(["cam", str(path), str(image), "--target-layer", "7", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layer"] == "7"
    assert manifest["aug_smooth"] is False
    assert manifest["eigen_smooth"] is False


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--methods", "gradcam,opticam", "--eigen-smooth"], "--eigen-smooth does not apply to"),
        (["--target-layer", "9", "--target-layer", "9"], "lists a layer twice"),
        (["--target-layer", "4", "--target-layer", "nine"], "is not a submodule"),
        (["--methods", "opticam", "--target-layer", "4", "--target-layer", "9"], "several"),
    ],
)
def test_bad_option_combinations_exit_2_and_write_nothing(
    tmp_path, checkpoint, image, capsys, flags, message
):
    path, _ = checkpoint
    out = tmp_path / "out"
    assert main(["cam", str(path), str(image), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
