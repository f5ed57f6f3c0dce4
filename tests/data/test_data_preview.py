from __future__ import annotations

import numpy as np
import pytest
import torch
from data_helpers import needs_fashion
from PIL import Image

from camwall.cli import main
from camwall.data import DATASETS, preview_grid


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_preview_grid_draws_images(tmp_path):
    white = torch.ones(4, 1, 16, 16)
    out = preview_grid(white, [0, 1, 0, 1], ["zero", "one"], tmp_path / "g.png", mark_rows=[8])
    px = _pixels(out)
    assert px.shape[0] > 100
    # the figure holds pure white image cells and red marker lines
    red = (px[:, :, 0] > 200) & (px[:, :, 1] < 80) & (px[:, :, 2] < 80)
    assert red.sum() > 20


@needs_fashion
@pytest.mark.parametrize("name", [*DATASETS.names(), "fashion-canvases"])
def test_preview_cli(tmp_path, capsys, name):
    out = tmp_path / f"{name}.png"
    assert main(["data", "preview", "--dataset", name, "--out", str(out), "--n", "4"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    px = _pixels(out)
    assert px.shape[0] > 100
    assert (px < 10).all(axis=2).sum() > 1000  # black canvas backgrounds are drawn


def test_preview_folder(image_tree, tmp_path, capsys):
    out = tmp_path / "f.png"
    argv = ["data", "preview", "--folder", str(image_tree), "--size", "32", "--out", str(out)]
    assert main(argv) == 0
    assert out.stat().st_size > 1000
    assert main(["data", "preview", "--folder", str(image_tree), "--out", str(out)]) == 2
    assert "pass size=" in capsys.readouterr().err
