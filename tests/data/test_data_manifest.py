"""Manifest entries are untrusted: files must stay inside the dataset folder, labels must be
non-negative ints (issue 15)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import rgb_image, save

from camwall.data import export_composites, read_image_dataset
from camwall.errors import CamwallError


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A 2-image exported dataset (1 x 8 x 8) in ``tmp_path/ds``."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, 8, 8, generator=g)
    export_composites(images, [0, 1], ["a", "b"], tmp_path / "ds", kind="test")
    return tmp_path / "ds"


def _edit(root: Path, index: int, **fields: object) -> Path:
    path = root / "manifest.json"
    m = json.loads(path.read_text())
    m["items"][index].update(fields)
    path.write_text(json.dumps(m))
    return path


def _outside_png(tmp_path: Path) -> Path:
    """A valid 8 x 8 PNG outside the dataset folder (so only the path check can stop it)."""
    return save(rgb_image(3, 8, 8), tmp_path / "secret" / "secret.png")


@pytest.mark.parametrize("entry", ["../secret/secret.png", "../../../etc/passwd", "images/../../x"])
def test_dotdot_entries_are_refused(dataset, tmp_path, entry):
    _outside_png(tmp_path)
    manifest = _edit(dataset, 1, file=entry)
    msg = f"{manifest}: item 1: file {entry!r} lies outside the dataset folder {dataset}"
    with pytest.raises(CamwallError, match=re.escape(msg)):
        read_image_dataset(dataset)


def test_absolute_entry_is_refused_even_inside_the_folder(dataset, tmp_path):
    for entry in (str(_outside_png(tmp_path)), str(dataset / "images" / "0000_a.png")):
        _edit(dataset, 0, file=entry)
        with pytest.raises(CamwallError, match=r"item 0: file .* lies outside the dataset folder"):
            read_image_dataset(dataset)


def test_symlinks_leading_out_are_refused(dataset, tmp_path):
    secret = _outside_png(tmp_path)
    (dataset / "images" / "link.png").symlink_to(secret)
    (dataset / "images" / "linkdir").symlink_to(secret.parent, target_is_directory=True)
    for entry in ("images/link.png", "images/linkdir/secret.png"):
        _edit(dataset, 0, file=entry)
        with pytest.raises(CamwallError, match=f"file '{entry}' lies outside the dataset folder"):
            read_image_dataset(dataset)


def test_paths_that_stay_inside_are_read(dataset, tmp_path):
    """``..`` that comes back inside, a symlink inside the folder, and a symlinked root."""
    ref = read_image_dataset(dataset)
    (dataset / "images" / "inner.png").symlink_to(dataset / "images" / "0001_b.png")
    _edit(dataset, 0, file="images/../images/inner.png")
    alias = tmp_path / "alias"
    alias.symlink_to(dataset, target_is_directory=True)
    ds = read_image_dataset(alias)
    torch.testing.assert_close(ds.images[0], ref.images[1], atol=0, rtol=0)
    assert ds.files[0] == alias / "images/../images/inner.png"


@pytest.mark.parametrize("label", ["1", 1.0, -1, True, None, [1]])
def test_labels_must_be_non_negative_ints(dataset, label):
    manifest = _edit(dataset, 1, label=label)
    msg = f"{manifest}: item 1: label {label!r} is not a non-negative integer"
    with pytest.raises(CamwallError, match=re.escape(msg)):
        read_image_dataset(dataset)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"items": {"file": "x"}}, "the manifest lists no images"),
        ({"items": [3]}, "item 0 is not an object with 'file' and 'label'"),
        ({"items": [{"label": 0}]}, "item 0: file None is not a relative path"),
        ({"items": [{"file": "", "label": 0}]}, "item 0: file '' is not a relative path"),
        ({"class_names": "ab"}, "'class_names' must be a list of strings"),
        ({"channels": "3"}, "channels must be 1 or 3, got 3"),
    ],
)
def test_malformed_manifests(dataset, change, message):
    path = dataset / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(CamwallError, match=re.escape(message)):
        read_image_dataset(dataset)


def test_valid_dataset_still_reads(dataset):
    ds = read_image_dataset(dataset)
    assert ds.labels.tolist() == [0, 1]
    assert ds.images.shape == (2, 1, 8, 8)
    assert np.isfinite(ds.images.numpy()).all()
    assert all(os.path.commonpath([dataset, f]) == str(dataset) for f in ds.files)
