"""Reading image files: mode conversion, the ImageNet evaluation crop, ImageFolder listing.

Conversions (documented, never silent failures):

* ``RGB`` is kept; ``L``, ``LA``, ``1``, ``P``, ``PA``, ``RGBA``, ``CMYK``, ``YCbCr``, ``LAB``,
  ``HSV`` become RGB with Pillow's ``convert("RGB")``: alpha is dropped (as in torchvision's
  ``ImageFolder`` loader), gray is repeated over the three channels, palettes are looked up.
* 16-bit grayscale (``I;16``, ``I;16B``, ``I;16L``, and ``I`` with values up to 65535) is scaled
  to 8 bits with ``round(v * 255 / 65535)``, then repeated over three channels. (Pillow's own
  ``convert`` would clip it to 0..255 instead.) 16-bit RGB PNGs are read by Pillow as 8-bit RGB.
* Float (``F``) images and ``I`` images with values outside 0..65535 are refused.
* A file that cannot be decoded (zero bytes, truncated, corrupt, not an image) raises a
  :class:`~camwall.errors.CamwallError` that names it.
* Images smaller than the crop are **upscaled**: :func:`preprocess` resizes the shorter side to
  ``resize`` whatever the size, like torchvision's ``Resize``. Callers record the original size
  so that such images can be found (``stackmix`` and ``stackgen`` warn about them).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from camwall.errors import CamwallError

__all__ = [
    "IMAGE_EXTENSIONS",
    "is_image_file",
    "list_image_folder",
    "load_image",
    "preprocess",
    "to_tensor",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""File extensions (case-insensitive) taken as images, as in torchvision's ``ImageFolder``."""

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS`."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _sixteen_to_rgb(img: Image.Image, path: Path) -> Image.Image:
    arr = np.asarray(img, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise CamwallError(
            f"{path}: 32-bit integer image with values {arr.min()}..{arr.max()}, outside the "
            "16-bit range; convert it to 8-bit RGB first."
        )
    eight = np.rint(arr * (255.0 / 65535.0)).astype(np.uint8)
    return Image.fromarray(eight, mode="L").convert("RGB")


def load_image(path: str | os.PathLike[str], mode: str = "RGB") -> Image.Image:
    """Open and fully decode an image file, converted to ``mode`` (``"RGB"`` or ``"L"``).

    Raises:
        CamwallError: the file is missing, empty, truncated, corrupt, not an image, or in an
            unsupported pixel format; the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise CamwallError(f"{p}: no such image file.")
    if p.stat().st_size == 0:
        raise CamwallError(f"{p}: empty file (0 bytes); replace or remove it.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. palette-with-transparency notes
            with Image.open(p) as opened:
                opened.load()
                img = opened.copy()
            if img.mode in _SIXTEEN_BIT or img.mode == "I":
                img = _sixteen_to_rgb(img, p)
            elif img.mode == "F":
                raise CamwallError(
                    f"{p}: floating-point image (mode F) is not supported; save it as 8-bit RGB."
                )
            elif img.mode in ("P", "PA") and "transparency" in img.info:
                img = img.convert("RGBA").convert("RGB")
            else:
                img = img.convert("RGB")
    except CamwallError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise CamwallError(
            f"{p}: cannot decode the image ({type(err).__name__}: {err}); the file is "
            "truncated, corrupt or not an image. Replace or remove it."
        ) from None
    except Image.DecompressionBombError as err:
        raise CamwallError(f"{p}: {err}") from None
    return img if mode == "RGB" else img.convert(mode)


def preprocess(img: Image.Image, resize: int = 256, crop: int = 224) -> Image.Image:
    """ImageNet evaluation crop: resize the shorter side to ``resize`` (bilinear, antialiased,
    torchvision's ``Resize``), then centre-crop ``crop x crop`` (torchvision's ``CenterCrop``).
    Images smaller than ``resize`` are upscaled."""
    out = TF.resize(img, resize, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(out, [crop, crop])


def to_tensor(img: Image.Image) -> Tensor:
    """PIL image -> float32 ``C x H x W`` in [0, 1] (C = 3 for RGB, 1 for L)."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32) / 255.0


def list_image_folder(
    root: str | os.PathLike[str],
) -> tuple[list[str], list[list[Path]], list[Path]]:
    """List an ImageFolder tree: one subfolder per class, sorted names = class indices.

    Returns:
        ``(class_names, files_per_class, ignored)``: files are sorted and have an image
        extension; ``ignored`` lists the other files found in class folders (not images).

    Raises:
        CamwallError: ``root`` is missing or has no class subfolders; a class folder or file
            is a symbolic link leading out of ``root`` (as a manifest's files may not).
    """
    r = Path(root)
    if not r.is_dir():
        raise CamwallError(f"{r}: no such folder (expected one subfolder per class).")
    classes = sorted(e.name for e in os.scandir(r) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise CamwallError(
            f"{r}: no class subfolders; an ImageFolder tree has one subfolder per class "
            "(sorted names give the class indices, as in torchvision's ImageFolder)."
        )
    files: list[list[Path]] = []
    ignored: list[Path] = []
    for c in classes:
        inside = sorted(p for p in (r / c).rglob("*") if p.is_file())
        _check_inside(r, [r / c, *inside])
        files.append([p for p in inside if is_image_file(p)])
        ignored.extend(p for p in inside if not is_image_file(p) and not p.name.startswith("."))
    return classes, files, ignored


def _check_inside(root: Path, paths: Sequence[Path]) -> None:
    """Refuse a path that resolves (through symbolic links) outside ``root``."""
    top = root.resolve()
    for p in paths:
        try:
            inside = p.resolve().is_relative_to(top)
        except (OSError, RuntimeError):  # a link loop
            inside = False
        if not inside:
            raise CamwallError(
                f"{p} leads outside the dataset folder {root} (a symbolic link); an ImageFolder "
                "tree may only hold files inside its own folder: copy the file in or remove the "
                "link."
            )


def sample_indices(pool: int, n: int, seed: int) -> list[int]:
    """``n`` distinct indices from ``range(pool)``, sorted, drawn with ``torch.Generator(seed)``.

    ``stackmix`` and ``stackgen --prompts`` use it, so the same seed gives the same classes.
    """
    if n > pool:
        raise CamwallError(f"cannot sample {n} classes from a pool of {pool}; lower --n.")
    g = torch.Generator().manual_seed(int(seed))
    return sorted(int(i) for i in torch.randperm(pool, generator=g)[:n])


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes (for manifests)."""
    return path.relative_to(root).as_posix()


def summarize(paths: Sequence[Path], limit: int = 5) -> str:
    """``"a, b, c (and 7 more)"``."""
    names = [str(p) for p in paths[:limit]]
    more = f" (and {len(paths) - limit} more)" if len(paths) > limit else ""
    return ", ".join(names) + more
