"""Helpers shared by the data tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camwall.data.fashion import DEFAULT_FASHION_DIR


def fashion_present() -> bool:
    names = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return all((DEFAULT_FASHION_DIR / n).is_file() for n in names)


needs_fashion = pytest.mark.skipif(
    not fashion_present(), reason=f"Fashion-MNIST not installed in {DEFAULT_FASHION_DIR}"
)


def write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes) -> Path:
    """A gzip-compressed IDX file."""
    raw = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload
    with gzip.open(path, "wb") as fh:
        fh.write(raw)
    return path


def rgb_image(seed: int, w: int, h: int) -> np.ndarray:
    """A smooth but distinct RGB test picture (uint8 h x w x 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, size=3)
    freq = rng.uniform(0.01, 0.08, size=3)
    chans = [(base[c] + 80 * np.sin(freq[c] * (xx + 2 * yy) + c)) % 256 for c in range(3)]
    return np.stack(chans, axis=-1).astype(np.uint8)


def save(arr: np.ndarray, path: Path, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def make_image_tree(root: Path) -> Path:
    """An ImageFolder tree: 4 classes of PNGs (sizes 300x260, 240x320, 400x300), one README."""
    sizes = [(300, 260), (240, 320), (400, 300)]
    for c, name in enumerate(["n001_cat", "n002_dog", "n003_fox", "n004_owl"]):
        for k, (w, h) in enumerate(sizes):
            save(rgb_image(10 * c + k, w, h), root / name / f"img{k}.png")
    (root / "n002_dog" / "README.txt").write_text("not an image")
    return root
