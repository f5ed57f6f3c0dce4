"""Reading image datasets: folders written by ``stackmix`` / ``stackgen`` (by their
``manifest.json``) or plain ImageFolder trees."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from camwall.data.folders import FORMAT, MANIFEST
from camwall.data.images import list_image_folder, load_image, preprocess, summarize, to_tensor
from camwall.errors import CamwallError

__all__ = ["ImageDataset", "SkippedFilesWarning", "read_image_dataset"]


class SkippedFilesWarning(UserWarning):
    """Files were left out of a dataset (only with ``skip_bad=True``)."""


@dataclass(frozen=True)
class ImageDataset:
    """An image dataset read from a folder (same fields as :class:`Composites`, plus files).

    Attributes:
        images: float32 ``N x C x H x W`` in [0, 1].
        labels: int64 ``N``, indices into ``class_names``.
        class_names: names of all classes (for ImageNet folders: the 1000 folder names).
        files: the image files, in order.
        sources: the manifest's item dicts (or ``{"file": ...}`` for ImageFolder trees).
        meta: the manifest without its items (or a short description), plus ``skipped_on_read``.
    """

    images: Tensor
    labels: Tensor
    class_names: list[str]
    files: list[Path]
    sources: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


def _load_manifest_json(path: Path) -> dict[str, Any]:
    """The parsed manifest, checked to be a camwall dataset manifest."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CamwallError(
            f"{path}: cannot read the manifest ({type(err).__name__}: {err}); rebuild the dataset."
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CamwallError(
            f"{path}: not a camwall dataset manifest (expected format {FORMAT!r}); remove it to "
            "read the folder as a plain ImageFolder tree."
        )
    return manifest


def _manifest_file(root: Path, path: Path, k: int, entry: Any) -> Path:
    """Item ``k``'s image: a relative path that stays inside ``root`` after resolving ``..``
    and symbolic links; anything else (absolute, escaping, not a string) is refused."""
    where = f"{path}: item {k}: file {entry!r}"
    if not isinstance(entry, str) or not entry or "\x00" in entry:
        raise CamwallError(f"{where} is not a relative path to an image; rebuild the dataset.")
    rel = Path(entry)
    try:
        inside = not rel.is_absolute() and (root / rel).resolve().is_relative_to(root.resolve())
    except (OSError, ValueError, RuntimeError):
        inside = False
    if not inside:
        raise CamwallError(
            f"{where} lies outside the dataset folder {root}; a manifest may only name files "
            "inside its own folder (no absolute paths, '..' or symbolic links leading out)."
        )
    return root / rel


def _manifest_label(path: Path, k: int, label: Any) -> int:
    """Item ``k``'s label: a non-negative int (not a bool, float or string)."""
    if not isinstance(label, int) or isinstance(label, bool) or label < 0:
        raise CamwallError(
            f"{path}: item {k}: label {label!r} is not a non-negative integer (a class index)."
        )
    return label


def _read_manifest(
    root: Path,
) -> tuple[list[Path], list[int], list[str], list[dict[str, Any]], dict[str, Any]]:
    path = root / MANIFEST
    manifest = _load_manifest_json(path)
    items = manifest.get("items")
    if not isinstance(items, list) or not items:
        raise CamwallError(f"{path}: the manifest lists no images.")
    names = manifest.get("class_names")
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise CamwallError(f"{path}: 'class_names' must be a list of strings; rebuild the dataset.")
    files: list[Path] = []
    labels: list[int] = []
    for k, it in enumerate(items):
        if not isinstance(it, dict):
            raise CamwallError(f"{path}: item {k} is not an object with 'file' and 'label'.")
        files.append(_manifest_file(root, path, k, it.get("file")))
        labels.append(_manifest_label(path, k, it.get("label")))
    meta = {k: v for k, v in manifest.items() if k != "items"}
    _check_counts(path, meta, labels, names)
    return files, labels, list(names), items, meta


def _check_counts(path: Path, meta: dict[str, Any], labels: list[int], names: list[Any]) -> None:
    """The manifest's ``n`` is its number of items; every label indexes ``class_names``."""
    n = meta.get("n", len(labels))
    if n != len(labels) or isinstance(n, bool):
        raise CamwallError(
            f"{path}: 'n' is {n!r} but the manifest lists {len(labels)} images; rebuild the "
            "dataset."
        )
    k = next((k for k, lab in enumerate(labels) if lab >= len(names)), None)
    if k is not None:
        raise CamwallError(
            f"{path}: item {k}: label {labels[k]} is not below the {len(names)} class names; "
            "rebuild the dataset."
        )


_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _check_headers(path: Path, files: list[Path], meta: dict[str, Any]) -> None:
    """Each file's header agrees with the manifest's ``size`` ([H, W]) and ``channels`` (1: a
    grayscale mode, 3: a colour mode; palette images pass). Only headers are read."""
    size, channels = meta.get("size"), meta.get("channels")
    wrong = _COLOUR_MODES if channels == 1 else _GRAY_MODES if channels == 3 else ()
    for f in files:
        try:
            with Image.open(f) as img:
                mode, (w, h) = img.mode, img.size
        except (OSError, ValueError, SyntaxError):
            continue  # not decodable: load_image names the file with its cause
        if size is not None and list(size) != [h, w]:
            raise CamwallError(
                f"{path}: 'size' is {size} but {f.name} is {h}x{w} (H x W); rebuild the dataset."
            )
        if mode in wrong:
            raise CamwallError(
                f"{path}: 'channels' is {channels} but {f.name} is a {mode} image; rebuild the "
                "dataset."
            )


def _read_imagefolder(
    root: Path,
) -> tuple[list[Path], list[int], list[str], list[dict[str, Any]], dict[str, Any]]:
    class_names, per_class, ignored = list_image_folder(root)
    files = [f for fs in per_class for f in fs]
    labels = [k for k, fs in enumerate(per_class) for _ in fs]
    if not files:
        raise CamwallError(
            f"{root}: no image files in its {len(class_names)} class folder(s) "
            f"(image extensions: .png, .jpg, ...; {len(ignored)} other file(s) found)."
        )
    sources = [{"file": f.relative_to(root).as_posix()} for f in files]
    meta = {"kind": "imagefolder", "ignored": [p.relative_to(root).as_posix() for p in ignored]}
    return files, labels, class_names, sources, meta


def _load_images(
    files: list[Path], mode: str, size: int | None, allow_skip: bool
) -> tuple[list[Tensor], list[int], list[Path]]:
    """Decode ``files`` (optionally resized and centre-cropped to ``size``): the tensors, the
    indices of the files kept, and the undecodable files skipped (only with ``allow_skip``)."""
    tensors: list[Tensor] = []
    kept: list[int] = []
    skipped: list[Path] = []
    for k, f in enumerate(files):
        try:
            img = load_image(f, mode=mode)
        except CamwallError:
            if not allow_skip:
                raise
            skipped.append(f)
            continue
        if size is not None:
            img = preprocess(img, size, size)
        tensors.append(to_tensor(img))
        kept.append(k)
    return tensors, kept, skipped


def _check_sizes(root: Path, tensors: list[Tensor], n_files: int) -> None:
    if not tensors:
        raise CamwallError(f"{root}: none of the {n_files} image files could be read.")
    shapes = sorted({tuple(t.shape[1:]) for t in tensors})
    if len(shapes) > 1:
        raise CamwallError(
            f"{root}: images have different sizes ({', '.join(f'{h}x{w}' for h, w in shapes[:4])}"
            f"{', ...' if len(shapes) > 4 else ''}); pass size= (--size) to resize and "
            "centre-crop them to one size."
        )


def _channels(requested: int | None, meta: dict[str, Any]) -> int:
    channels = meta.get("channels", 3) if requested is None else requested
    if isinstance(channels, float) and channels.is_integer():
        channels = int(channels)
    if isinstance(channels, bool) or channels not in (1, 3):
        raise CamwallError(f"channels must be 1 or 3, got {channels}.")
    return int(channels)


def read_image_dataset(
    path: str | os.PathLike[str],
    size: int | None = None,
    channels: int | None = None,
    skip_bad: bool = False,
) -> ImageDataset:
    """Read a dataset folder into memory.

    ``path`` is either a folder with ``manifest.json`` (written by ``camwall stackmix`` or
    ``camwall stackgen``) or an ImageFolder tree (one subfolder per class, sorted names give the
    labels, files without an image extension are not part of it).

    Args:
        path: the folder.
        size: if given, resize the shorter side to ``size`` and centre-crop ``size x size``;
            if ``None``, all images must already have the same size.
        channels: 3 (RGB) or 1 (grayscale, ITU-R 601-2 luma); default: the manifest's, else 3.
        skip_bad: leave out undecodable files of an ImageFolder tree instead of raising; a
            :class:`SkippedFilesWarning` names them and ``meta["skipped_on_read"]`` lists them.
            Files listed in a manifest are never skipped.

    Returns:
        :class:`ImageDataset` with ``images`` float32 ``N x C x H x W`` in [0, 1].

    Raises:
        CamwallError: missing or empty folder, unreadable manifest, a manifest file outside the
            folder or a label that is not a non-negative int, an undecodable image (named),
            mixed image sizes without ``size``, bad ``channels``.
    """
    if channels is not None and channels not in (1, 3):
        raise CamwallError(f"channels must be 1 or 3, got {channels}.")
    root = Path(path)
    if not root.is_dir():
        raise CamwallError(f"{root}: no such dataset folder.")
    from_manifest = (root / MANIFEST).is_file()
    read = _read_manifest if from_manifest else _read_imagefolder
    files, labels, class_names, sources, meta = read(root)
    if from_manifest:
        _check_headers(root / MANIFEST, files, meta)
    mode = "RGB" if _channels(channels, meta) == 3 else "L"
    tensors, kept, skipped = _load_images(files, mode, size, skip_bad and not from_manifest)
    if skipped:
        warnings.warn(
            f"{root}: skipped {len(skipped)} undecodable file(s) of {len(files)}: "
            f"{summarize(skipped)}",
            SkippedFilesWarning,
            stacklevel=2,
        )
    _check_sizes(root, tensors, len(files))
    return ImageDataset(
        images=torch.stack(tensors),
        labels=torch.tensor([labels[k] for k in kept], dtype=torch.int64),
        class_names=list(class_names),
        files=[files[k] for k in kept],
        sources=[sources[k] for k in kept],
        meta={**meta, "skipped_on_read": [str(p) for p in skipped]},
    )
