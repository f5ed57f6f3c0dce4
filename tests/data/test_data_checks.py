"""Issue 22 §5: a manifest's fields agree with its images, ImageFolder links stay inside, a
set CAMWALL_DATA is used or refused, fashion-grid's size is bounded by its split."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import needs_fashion, rgb_image, save
from PIL import Image

from camwall.data import DATASETS, export_composites, read_image_dataset
from camwall.data.fashion import fashion_dir
from camwall.errors import CamwallError


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A 3-image exported dataset (1 x 8 x 6, classes a, b) in ``tmp_path/ds``."""
    images = torch.rand(3, 1, 8, 6, generator=torch.Generator().manual_seed(0))
    export_composites(images, [0, 1, 1], ["a", "b"], tmp_path / "ds", kind="test")
    return tmp_path / "ds"


def _set(root: Path, **fields: object) -> Path:
    path = root / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return path


def test_an_exported_dataset_passes_the_checks(dataset):
    ds = read_image_dataset(dataset)
    assert ds.images.shape == (3, 1, 8, 6)
    assert ds.labels.tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n": 1000}, "'n' is 1000 but the manifest lists 3 images"),
        ({"n": True}, "'n' is True but the manifest lists 3 images"),
        ({"size": [64, 64]}, "'size' is [64, 64] but 0000_a.png is 8x6 (H x W)"),
        ({"size": [6, 8]}, "'size' is [6, 8] but 0000_a.png is 8x6"),
        ({"channels": 3}, "'channels' is 3 but 0000_a.png is a L image"),
        ({"class_names": ["a"]}, "item 1: label 1 is not below the 1 class names"),
    ],
)
def test_manifest_fields_must_agree_with_the_images(dataset, fields, message):
    path = _set(dataset, **fields)
    with pytest.raises(CamwallError, match=re.escape(message)) as e:
        read_image_dataset(dataset)
    assert str(path) in str(e.value)


def test_a_colour_file_in_a_grayscale_manifest_is_refused(dataset):
    save(rgb_image(1, 6, 8), dataset / "images" / "0002_b.png")
    with pytest.raises(CamwallError, match=r"'channels' is 1 but 0002_b\.png is a RGB image"):
        read_image_dataset(dataset)


def _tree(root: Path) -> Path:
    for c in ("cat", "dog"):
        save(rgb_image(len(c), 8, 8), root / c / "0.png")
    return root


def test_imagefolder_file_links_leading_out_are_refused(tmp_path):
    root = _tree(tmp_path / "tree")
    secret = save(rgb_image(9, 8, 8), tmp_path / "secret" / "secret.png")
    (root / "cat" / "1.png").symlink_to(secret)
    with pytest.raises(CamwallError, match=r"cat/1\.png leads outside the dataset folder"):
        read_image_dataset(root)


def test_imagefolder_class_links_leading_out_are_refused(tmp_path):
    root = _tree(tmp_path / "tree")
    save(rgb_image(9, 8, 8), tmp_path / "elsewhere" / "x.png")
    (root / "zebra").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(CamwallError, match="zebra leads outside the dataset folder"):
        read_image_dataset(root)


def test_imagefolder_links_inside_the_root_are_read(tmp_path):
    root = _tree(tmp_path / "tree")
    (root / "dog" / "1.png").symlink_to(root / "cat" / "0.png")
    ds = read_image_dataset(root)
    assert ds.labels.tolist() == [0, 1, 1]
    torch.testing.assert_close(ds.images[2], ds.images[0], rtol=0, atol=0)  # the same file


def test_a_set_but_unusable_camwall_data_is_an_error(tmp_path, monkeypatch):
    """No silent fall-back to the default folder (which may hold other data)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for where in (empty, tmp_path / "missing"):
        monkeypatch.setenv("CAMWALL_DATA", str(where))
        with pytest.raises(CamwallError, match=f"Looked in: {where} \\(\\$CAMWALL_DATA; missing"):
            fashion_dir(split="test")


def test_a_usable_camwall_data_is_used(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (mine / name).parent.mkdir(exist_ok=True)
        (mine / name).write_bytes(b"")
    monkeypatch.setenv("CAMWALL_DATA", str(mine))
    assert fashion_dir(split="test") == mine


@needs_fashion
def test_fashion_grid_n_is_bounded_by_its_split():
    grid = DATASETS.get("fashion-grid")
    with pytest.raises(CamwallError, match=r"n=1000000 mosaics would hold 15\.3 GiB.*n <= 10000"):
        grid.build(1_000_000)
    assert grid.build(3).images.shape == (3, 1, 64, 64)


def test_palette_images_pass_either_way(dataset):
    """A palette PNG may hold gray or colour: the header alone cannot tell, so it passes."""
    arr = np.asarray(Image.open(dataset / "images" / "0001_b.png"))
    Image.fromarray(arr, mode="L").convert("P").save(dataset / "images" / "0001_b.png")
    assert read_image_dataset(dataset).images.shape == (3, 1, 8, 6)


def test_an_existing_manifest_advises_the_current_flag(dataset):
    """``--force`` is a deprecated alias: the advice names ``--overwrite``."""
    with pytest.raises(CamwallError, match="pass --overwrite to replace it") as err:
        export_composites(torch.zeros(1, 1, 8, 8), [0], ["a"], dataset, kind="test")
    assert "--force" not in str(err.value)
