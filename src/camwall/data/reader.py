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


def _read_manifest(
    root: Path,
) -> tuple[list[Path], list[int], list[str], list[dict[str, Any]], dict[str, Any]]:
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CamwallError(
            f"{path}: cannot read the manifest ({err}); rebuild the dataset."
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CamwallError(
            f"{path}: not a camwall dataset manifest (expected format {FORMAT!r}); remove it to "
            "read the folder as a plain ImageFolder tree."
        )
    items = manifest.get("items") or []
    if not items:
        raise CamwallError(f"{path}: the manifest lists no images.")
    files = [root / it["file"] for it in items]
    labels = [int(it["label"]) for it in items]
    meta = {k: v for k, v in manifest.items() if k != "items"}
    return files, labels, list(manifest["class_names"]), items, meta


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
        CamwallError: missing or empty folder, unreadable manifest, an undecodable image (named),
            mixed image sizes without ``size``, bad ``channels``.
    """
    if channels is not None and channels not in (1, 3):
        raise CamwallError(f"channels must be 1 or 3, got {channels}.")
    root = Path(path)
    if not root.is_dir():
        raise CamwallError(f"{root}: no such dataset folder.")
    if (root / MANIFEST).is_file():
        files, labels, class_names, sources, meta = _read_manifest(root)
        allow_skip = False
    else:
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
        allow_skip = skip_bad
    if channels is None:
        channels = int(meta.get("channels", 3))
    if channels not in (1, 3):
        raise CamwallError(f"channels must be 1 or 3, got {channels}.")
    mode = "RGB" if channels == 3 else "L"
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
    if skipped:
        warnings.warn(
            f"{root}: skipped {len(skipped)} undecodable file(s) of {len(files)}: "
            f"{summarize(skipped)}",
            SkippedFilesWarning,
            stacklevel=2,
        )
    if not tensors:
        raise CamwallError(f"{root}: none of the {len(files)} image files could be read.")
    shapes = sorted({tuple(t.shape[1:]) for t in tensors})
    if len(shapes) > 1:
        raise CamwallError(
            f"{root}: images have different sizes ({', '.join(f'{h}x{w}' for h, w in shapes[:4])}"
            f"{', ...' if len(shapes) > 4 else ''}); pass size= (--size) to resize and "
            "centre-crop them to one size."
        )
    meta = {**meta, "skipped_on_read": [str(p) for p in skipped]}
    return ImageDataset(
        images=torch.stack(tensors),
        labels=torch.tensor([labels[k] for k in kept], dtype=torch.int64),
        class_names=list(class_names),
        files=[files[k] for k in kept],
        sources=[sources[k] for k in kept],
        meta=meta,
    )
