from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch
from data_helpers import needs_fashion, write_idx

from camwall.data import FASHION_CLASSES, load_fashion_mnist
from camwall.data.fashion import DEFAULT_FASHION_DIR, _read_idx, fashion_dir
from camwall.errors import CamwallError

IMG, LAB = 0x803, 0x801


def test_read_idx_parses_header_and_payload(tmp_path):
    payload = bytes(range(2 * 3 * 4))
    p = write_idx(tmp_path / "x.gz", IMG, (2, 3, 4), payload)
    dims, data = _read_idx(p, IMG, 3)
    assert dims == (2, 3, 4)
    assert data == payload


def test_read_idx_wrong_magic_names_file(tmp_path):
    p = write_idx(tmp_path / "labels.gz", LAB, (5,), bytes(5))
    with pytest.raises(CamwallError, match=r"labels\.gz: bad IDX magic number 0x00000801"):
        _read_idx(p, IMG, 3)


def test_read_idx_short_payload(tmp_path):
    p = write_idx(tmp_path / "short.gz", IMG, (2, 28, 28), bytes(2 * 28 * 28 - 1))
    with pytest.raises(CamwallError, match=r"short\.gz: header promises 2x28x28 = 1568 bytes"):
        _read_idx(p, IMG, 3)


def test_read_idx_header_only_partly_there(tmp_path):
    p = tmp_path / "tiny.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(b"\x00\x00\x08")
    with pytest.raises(CamwallError, match=r"tiny\.gz: only 3 bytes"):
        _read_idx(p, IMG, 3)


def test_truncated_gzip_names_file(tmp_path):
    p = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", IMG, (10, 28, 28), bytes(7840))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CamwallError, match=r"t10k-images-idx3-ubyte\.gz: cannot decompress"):
        _read_idx(p, IMG, 3)


def test_not_gzip_at_all(tmp_path):
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(b"this is not gzip data")
    with pytest.raises(CamwallError, match="truncated or corrupt"):
        _read_idx(p, LAB, 1)


def test_wrong_count_is_refused(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", IMG, (3, 28, 28), bytes(3 * 784))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", LAB, (3,), bytes([0, 1, 2]))
    with pytest.raises(CamwallError, match="3 images and 3 labels, expected 10000 each"):
        load_fashion_mnist("test", root=tmp_path)


def test_wrong_image_shape_is_refused(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", IMG, (2, 32, 32), bytes(2 * 1024))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", LAB, (2,), bytes(2))
    with pytest.raises(CamwallError, match="images are 32x32, expected 28x28"):
        load_fashion_mnist("test", root=tmp_path)


def test_missing_files_say_where_to_get_them(tmp_path):
    with pytest.raises(CamwallError) as err:
        load_fashion_mnist("train", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg
    assert "train-images-idx3-ubyte.gz" in msg
    assert "dataset-fashion-mnist" in msg
    assert "CAMWALL_DATA" in msg
    assert "zalandoresearch/fashion-mnist" in msg


def test_bad_split():
    with pytest.raises(CamwallError, match="unknown Fashion-MNIST split 'val'"):
        load_fashion_mnist("val")


def test_search_order_env_before_default(tmp_path, monkeypatch):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", IMG, (1, 28, 28), bytes(784))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", LAB, (1,), bytes(1))
    monkeypatch.setenv("CAMWALL_DATA", str(tmp_path))
    assert fashion_dir(None, "test") == tmp_path
    # issue 22: a set but unusable CAMWALL_DATA is an error, never a fall-back to the default
    monkeypatch.setenv("CAMWALL_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(CamwallError, match=r"\$CAMWALL_DATA") as err:
        fashion_dir(None, "test")
    assert str(DEFAULT_FASHION_DIR) not in str(err.value).split("Get Fashion-MNIST")[0]
    monkeypatch.setenv("CAMWALL_DATA", "")  # empty: unset
    if (DEFAULT_FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        assert fashion_dir(None, "test") == DEFAULT_FASHION_DIR


def test_class_names():
    assert len(FASHION_CLASSES) == 10
    assert FASHION_CLASSES[0] == "T-shirt/top"
    assert FASHION_CLASSES[9] == "Ankle boot"


@needs_fashion
@pytest.mark.parametrize(("split", "count"), [("train", 60_000), ("test", 10_000)])
def test_real_data(split, count):
    x, y = load_fashion_mnist(split)
    assert x.shape == (count, 28, 28)
    assert x.dtype == torch.uint8
    assert y.shape == (count,)
    assert y.dtype == torch.int64
    assert int(y.min()) == 0
    assert int(y.max()) == 9
    # Fashion-MNIST is balanced: 6,000 / 1,000 of each class
    assert torch.equal(torch.bincount(y), torch.full((10,), count // 10))
    assert int(x.max()) == 255
    # cached: the second call returns the same tensors
    x2, _ = load_fashion_mnist(split)
    assert x2.data_ptr() == x.data_ptr()


@needs_fashion
def test_real_data_via_env_copy(tmp_path, monkeypatch):
    for n in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(DEFAULT_FASHION_DIR / n, tmp_path / n)
    monkeypatch.setenv("CAMWALL_DATA", str(tmp_path))
    x, y = load_fashion_mnist("test")
    xr, yr = load_fashion_mnist("test", root=DEFAULT_FASHION_DIR)
    assert torch.equal(x, xr)
    assert torch.equal(y, yr)


@needs_fashion
def test_real_file_truncated_copy(tmp_path):
    for n in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(DEFAULT_FASHION_DIR / n, tmp_path / n)
    p = Path(tmp_path / "t10k-images-idx3-ubyte.gz")
    p.write_bytes(p.read_bytes()[:100_000])
    with pytest.raises(CamwallError, match=r"t10k-images-idx3-ubyte\.gz"):
        load_fashion_mnist("test", root=tmp_path)
