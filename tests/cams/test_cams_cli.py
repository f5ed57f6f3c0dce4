"""``camwall cam`` on a saved checkpoint: files written, maps equal to the library's."""

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


def test_cam_command_writes_maps_equal_to_the_library(tmp_path, checkpoint, capsys):
    path, model = checkpoint
    rng = np.random.default_rng(0)
    img_path = tmp_path / "shirt.png"
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), mode="L").save(img_path)
    out = tmp_path / "out"
    code = main(
        ["cam", str(path), str(img_path), "--methods", "gradcam,hirescam", "--out", str(out)]
    )
    assert code == 0
    maps = load_file(str(out / "maps.safetensors"))
    x = maps["shirt/input"][None]
    assert x.shape == (1, 1, 64, 64)
    manifest = json.loads((out / "manifest.json").read_text())
    expected = compute_cams(model.eval(), x, manifest["layer"], ["gradcam", "hirescam"])
    for name in ("gradcam", "hirescam"):
        torch.testing.assert_close(maps[f"shirt/{name}"], expected[name][0], rtol=0, atol=1e-6)
        assert (out / f"shirt_{name}.png").is_file()
    assert "predicted class" in capsys.readouterr().out


def test_cam_command_unknown_method_exits_2(tmp_path, checkpoint, capsys):
    path, _ = checkpoint
    assert main(["cam", str(path), "nothing.png", "--methods", "gradcamm"]) == 2
    assert "Did you mean 'gradcam'" in capsys.readouterr().err


def test_cam_command_missing_image_exits_2(tmp_path, checkpoint, capsys):
    path, _ = checkpoint
    assert main(["cam", str(path), str(tmp_path / "missing.png"), "--out", str(tmp_path)]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_cam_encodes_everything_before_writing(tmp_path, checkpoint):
    """A name that cannot be stored (not UTF-8; the parser refuses it, the handler is called
    directly here) fails while encoding, before any file exists: no half-written folder."""
    import argparse
    import os

    from camwall.cams.cli import run_cam

    path, _ = checkpoint
    rng = np.random.default_rng(0)
    img = tmp_path / os.fsdecode(b"\xff.png")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), mode="L").save(img)
    out = tmp_path / "out"
    args = argparse.Namespace(
        checkpoint=path, images=[img], methods="gradcam", target_layer=None, target=None,
        normalize="auto", out=out, device="cpu",
    )  # fmt: skip
    with pytest.raises(UnicodeEncodeError):
        run_cam(args)
    assert not out.exists()
