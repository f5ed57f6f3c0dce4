"""Fashion-MNIST from the standard IDX ``.gz`` files, decoded once per process.

The four files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``) are searched in this order:

1. the ``root`` argument (or the CLI's ``--data``),
2. the directory in the environment variable ``CAMWALL_DATA``,
3. ``/usr/share/datasets/fashion-mnist/`` (the Debian package ``dataset-fashion-mnist``).

A ``CAMWALL_DATA`` that is set (non-empty) but lacks the files is an error, not a fall-back
to the default folder: the data read is always the data asked for.

IDX format (big-endian): magic ``0x00000801`` (labels, 1 dimension) or ``0x00000803`` (images,
3 dimensions), then one uint32 per dimension, then the uint8 payload.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from camwall.errors import CamwallError

__all__ = ["DEFAULT_FASHION_DIR", "FASHION_CLASSES", "fashion_dir", "load_fashion_mnist"]

FASHION_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Names of the ten Fashion-MNIST classes; label ``k`` is ``FASHION_CLASSES[k]``."""

DEFAULT_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}
_IMAGE_MAGIC = 0x00000803
_LABEL_MAGIC = 0x00000801

_WHERE_TO_GET = (
    "Get Fashion-MNIST from the Debian package 'dataset-fashion-mnist' (installs to "
    f"{DEFAULT_FASHION_DIR}/), or download the four files train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from "
    "https://github.com/zalandoresearch/fashion-mnist (data/fashion/) and point --data or the "
    "environment variable CAMWALL_DATA at their folder."
)


def _check_split(split: str) -> None:
    if split not in _FILES:
        raise CamwallError(f"unknown Fashion-MNIST split {split!r}; choose 'train' or 'test'.")


def fashion_dir(root: str | os.PathLike[str] | None = None, split: str = "train") -> Path:
    """The folder holding the IDX files of ``split``, following the search order above.

    Raises:
        CamwallError: when no candidate folder holds both files (a set ``CAMWALL_DATA`` is the
            only candidate), saying where to get them.
    """
    _check_split(split)
    names = _FILES[split][:2]
    tried: list[str] = []
    if root is not None:
        candidates = [(Path(root), "the given path")]
    else:
        candidates = []
        env = os.environ.get("CAMWALL_DATA")
        if env:
            candidates.append((Path(env), "$CAMWALL_DATA"))
        else:
            candidates.append((DEFAULT_FASHION_DIR, "the default folder"))
    for folder, what in candidates:
        if all((folder / n).is_file() for n in names):
            return folder
        missing = [n for n in names if not (folder / n).is_file()]
        tried.append(f"{folder} ({what}; missing {', '.join(missing)})")
    raise CamwallError(
        f"Fashion-MNIST {split} files not found. Looked in: {'; '.join(tried)}. {_WHERE_TO_GET}"
    )


def _read_idx(path: Path, magic: int, ndim: int) -> tuple[tuple[int, ...], bytes]:
    """Read one gzip-compressed IDX file; return (dims, payload) after checking its header."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as err:
        raise CamwallError(
            f"{path}: cannot decompress ({err}); the file is truncated or corrupt. "
            f"Replace it. {_WHERE_TO_GET}"
        ) from None
    header = 4 + 4 * ndim
    short = CamwallError(f"{path}: only {len(raw)} bytes, shorter than an IDX header; replace it.")
    if len(raw) < 4:
        raise short
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise CamwallError(
            f"{path}: bad IDX magic number 0x{found:08x}, expected 0x{magic:08x}; "
            "this is not the expected Fashion-MNIST file (images/labels swapped or corrupt)."
        )
    if len(raw) < header:
        raise short
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    payload = raw[header:]
    expected = 1
    for d in dims:
        expected *= d
    if len(payload) != expected:
        raise CamwallError(
            f"{path}: header promises {'x'.join(map(str, dims))} = {expected} bytes but the "
            f"file holds {len(payload)}; it is truncated or corrupt. Replace it."
        )
    return dims, payload


@functools.lru_cache(maxsize=8)
def _load_cached(folder: str, split: str) -> tuple[Tensor, Tensor]:
    img_name, lab_name, count = _FILES[split]
    img_path, lab_path = Path(folder) / img_name, Path(folder) / lab_name
    dims, pixels = _read_idx(img_path, _IMAGE_MAGIC, 3)
    if dims[1:] != (28, 28):
        raise CamwallError(f"{img_path}: images are {dims[1]}x{dims[2]}, expected 28x28.")
    (n_lab,), labels_raw = _read_idx(lab_path, _LABEL_MAGIC, 1)
    if dims[0] != count or n_lab != count:
        raise CamwallError(
            f"{img_path} / {lab_path}: {dims[0]} images and {n_lab} labels, expected {count} "
            f"each for the {split} split. Replace the files."
        )
    images = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).reshape(count, 28, 28)
    labels = torch.frombuffer(bytearray(labels_raw), dtype=torch.uint8).to(torch.int64)
    if int(labels.max()) >= len(FASHION_CLASSES):
        raise CamwallError(
            f"{lab_path}: label {int(labels.max())} out of range 0..9; the file is corrupt."
        )
    return images, labels


def load_fashion_mnist(
    split: Literal["train", "test"] | str, root: str | os.PathLike[str] | None = None
) -> tuple[Tensor, Tensor]:
    """Load one Fashion-MNIST split.

    Decoded arrays are cached per process (keyed by folder and split), so repeated calls are
    free. Do not modify the returned tensors in place; clone them first.

    Args:
        split: ``"train"`` (60,000 items) or ``"test"`` (10,000 items).
        root: folder holding the IDX ``.gz`` files; ``None`` searches ``$CAMWALL_DATA``, then
            ``/usr/share/datasets/fashion-mnist/``.

    Returns:
        ``(images, labels)``: uint8 ``N x 28 x 28`` (white item on black, 0..255) and int64
        ``N`` in ``0..9`` (indices into :data:`FASHION_CLASSES`).

    Raises:
        CamwallError: files missing (says where to get them), truncated or corrupt (names the
            file), or with wrong magic numbers, counts or shapes.
    """
    folder = fashion_dir(root, split)
    return _load_cached(str(folder.resolve()), split)
