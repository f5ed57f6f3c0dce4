"""Datasets of the presets: Fashion single-item canvases and ImageNet-style folder trees.

ImageFolder pipeline (paper recipe), for a model with input ``C x S x S``:

* train: ``RandomResizedCrop(S, scale=(0.1, 1), ratio=(0.8, 1.25))`` + ``RandomHorizontalFlip``;
* val: ``Resize(S)`` (shorter side) + ``CenterCrop(S)``;
* then ``ToTensor`` and, for 3 channels, ImageNet mean/std normalization; a 1-channel model
  (the embedded small ones, which take [0, 1] inputs) gets ``Grayscale`` and no normalization.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from camwall.errors import CamwallError
from camwall.runtime import IMAGENET_MEAN, IMAGENET_STD
from camwall.train._config import TrainConfig

__all__ = [
    "DEFAULT_COMPOSITES",
    "EVAL_DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "check_data",
    "eval_dataset",
    "folder_layout",
    "folder_transforms",
    "training_datasets",
]

DEFAULT_COMPOSITES = 1000
"""Composites that ``camwall evaluate`` builds when ``--n`` is not given."""

EVAL_DATASETS = ("fashion-canvases", "fashion-stackmix", "fashion-stackpair", "fashion-grid")
"""Dataset names that ``camwall evaluate --dataset`` accepts besides a folder."""


def folder_transforms(input_shape: tuple[int, int, int], train: bool) -> Any:
    """The torchvision transform of the ImageFolder pipeline for ``input_shape = (C, S, S)``."""
    from torchvision import transforms as T

    channels, size = int(input_shape[0]), int(input_shape[1])
    steps: list[Any] = []
    if train:
        steps += [
            T.RandomResizedCrop(size, scale=(0.1, 1.0), ratio=(0.8, 1.25)),
            T.RandomHorizontalFlip(),
        ]
    else:
        steps += [T.Resize(size), T.CenterCrop(size)]
    if channels == 1:
        steps += [T.Grayscale(1), T.ToTensor()]
    else:
        steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


def _image_folder(root: Path, input_shape: tuple[int, int, int], train: bool) -> Dataset[Any]:
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise CamwallError(
            f"image folder {root} does not exist. --data must be an ImageNet-style tree with "
            "train/<class>/*.JPEG and val/<class>/*.JPEG (one sub-folder per class, e.g. "
            "n01440764); prepare ImageNet-1k val with its devkit's labels into class folders."
        )
    try:
        return ImageFolder(str(root), transform=folder_transforms(input_shape, train))
    except (FileNotFoundError, OSError) as err:
        raise CamwallError(
            f"{root}: not a usable ImageFolder tree ({err}); it needs one sub-folder per class "
            "holding .jpg/.jpeg/.png images."
        ) from None


def _input_shape(config: TrainConfig, model_shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    channels = int(model_shape[0]) if model_shape else 3
    size = config.image_size or (int(model_shape[1]) if model_shape else 224)
    return channels, size, size


def folder_layout(root: Path) -> tuple[Path, Path | None]:
    """``(train folder, val folder or None)`` of an ImageFolder ``--data`` root: ``root/train``
    and ``root/val`` (when present) of an ImageNet-style tree, or ``root`` itself when it has
    no ``train/`` (class sub-folders of images; no validation then)."""
    if (root / "train").is_dir():
        return root / "train", root / "val" if (root / "val").is_dir() else None
    return root, None


def check_data(config: TrainConfig) -> None:
    """Fail early (before building a large model) when an ImageFolder ``--data`` is unusable."""
    if config.dataset != "imagefolder":
        return
    if config.data is None:
        raise CamwallError(
            f"preset {config.name!r} trains on an image folder; give it with --data DIR "
            "(DIR/<class>/*.png, or DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG)."
        )
    if not Path(config.data).is_dir():
        raise CamwallError(
            f"--data {config.data} does not exist. It must hold one sub-folder of images per "
            "class (DIR/<class>/*.png), or train/ and val/ trees of them (ImageNet style)."
        )


def training_datasets(
    config: TrainConfig, model_shape: tuple[int, ...] | None = None
) -> tuple[Dataset[Any], Dataset[Any] | None, list[str]]:
    """``(train_set, val_set, class_names)`` of ``config.dataset``.

    ``fashion-canvases``: training canvases (placements re-drawn each epoch when
    ``config.augment``) and the fixed test canvases. ``fashion-grid``: 2 x 2 training mosaics
    (re-drawn each epoch) and the 2,500 fixed test mosaics (labels ``B x 4``).
    ``imagefolder``: ``config.data/train`` and ``config.data/val`` (``val`` may be missing: no
    validation then), or ``config.data`` itself (class sub-folders, no validation;
    :func:`folder_layout`).
    """
    if config.dataset == "fashion-canvases":
        from camwall.data import fashion_canvases

        train = fashion_canvases(
            "train", seed=config.seed, augment=config.augment, root=config.data
        )
        val = fashion_canvases("test", seed=0, augment=False, root=config.data)
        return train, val, list(train.class_names)
    if config.dataset == "fashion-grid":
        from camwall.data import fashion_grids

        grids = fashion_grids("train", seed=config.seed, augment=config.augment, root=config.data)
        val_grids = fashion_grids("test", seed=0, augment=False, root=config.data)
        return grids, val_grids, list(grids.class_names)
    check_data(config)
    train_dir, val_dir = folder_layout(Path(str(config.data)))
    shape = _input_shape(config, model_shape)
    train_set = _image_folder(train_dir, shape, train=True)
    val_set = None if val_dir is None else _image_folder(val_dir, shape, train=False)
    classes = list(train_set.classes)  # type: ignore[attr-defined]
    if len(classes) != config.num_classes:
        raise CamwallError(
            f"{train_dir} has {len(classes)} class folders but the model has "
            f"{config.num_classes} outputs; pass --num-classes {len(classes)}."
        )
    if val_set is not None and list(val_set.classes) != classes:  # type: ignore[attr-defined]
        raise CamwallError(
            f"{val_dir} and {train_dir} have different class folders; they must match."
        )
    return train_set, val_set, classes


def eval_dataset(
    name_or_dir: str,
    input_shape: tuple[int, ...],
    *,
    n: int | None = None,
    seed: int = 0,
    folder_pipeline: bool = False,
    data_root: str | None = None,
) -> Dataset[Any]:
    """An evaluation dataset of ``(image, label)`` pairs.

    Args:
        name_or_dir: ``fashion-canvases`` (the 10,000 fixed test canvases), ``fashion-stackmix``
            or ``fashion-stackpair`` (composites from the test split), or a folder: read with the
            ImageFolder val pipeline when ``folder_pipeline`` (models trained on folders), else
            with :func:`camwall.data.read_image_dataset` at the model's input size.
        input_shape: the model's ``C x H x W``.
        n: number of composites to build (default :data:`DEFAULT_COMPOSITES`), or a cap on the
            test canvases.
        seed: seed of the composites.
        folder_pipeline: see above.
        data_root: Fashion-MNIST folder.
    """
    from camwall.data import DATASETS, fashion_canvases, read_image_dataset

    if name_or_dir == "fashion-canvases":
        canvases: Dataset[Any] = fashion_canvases("test", seed=0, augment=False, root=data_root)
        if n is not None:
            canvases = torch.utils.data.Subset(canvases, range(min(n, len(canvases))))  # type: ignore[arg-type]
        return canvases
    if name_or_dir in DATASETS:
        count = DEFAULT_COMPOSITES if n is None else n
        comp = DATASETS.get(name_or_dir).build(n=count, seed=seed, root=data_root)
        return TensorDataset(comp.images, comp.labels)
    path = Path(name_or_dir)
    if not path.exists():
        choices = [*EVAL_DATASETS, *(d for d in DATASETS.names() if d not in EVAL_DATASETS)]
        from camwall.errors import did_you_mean

        raise CamwallError(
            f"--dataset {name_or_dir!r} is neither a dataset name nor an existing folder."
            f"{did_you_mean(name_or_dir, choices)} Names: {', '.join(choices)}."
        )
    if folder_pipeline:
        shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
        return _image_folder(path, shape, train=False)
    ds = read_image_dataset(path, size=int(input_shape[-1]), channels=int(input_shape[0]))
    images: Tensor = ds.images
    if int(input_shape[0]) == 3:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        images = (images - mean) / std
    return TensorDataset(images, ds.labels)
