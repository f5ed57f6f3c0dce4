"""Training configurations (frozen dataclasses) and the ``PRESETS`` registry.

A preset is a complete :class:`TrainConfig`; every field can be overridden by name
(``apply_overrides(config, {"epochs": 2})`` or ``camwall train --epochs 2``). The cache key of a
trained pair is :func:`config_hash` of the final config (fields that do not change the weights,
such as ``num_workers``, are left out of it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from camwall.errors import CamwallError, did_you_mean
from camwall.registry import Registry
from camwall.runtime import cache_key
from camwall.runtime import config_hash as runtime_hash

__all__ = [
    "FINETUNE_BASE",
    "FINETUNE_DEFAULTS",
    "PRESETS",
    "TrainConfig",
    "apply_overrides",
    "config_hash",
    "finetune_config",
    "get_preset",
    "hashed_fields",
    "pair_cache_key",
]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("step", "onecycle", "constant")
DATASET_KINDS = ("fashion-canvases", "fashion-grid", "imagefolder")

# Fields that change how fast a run goes but not the weights it produces.
_NOT_HASHED = frozenset({"num_workers", "checkpoint_every", "threads"})
# Fields written by to_dict only when set (added after the first shipped checkpoints).
_UNSET_OMITTED = ("walls", "init", "init_sha256", "refit")
# Written by to_dict only with a refit (``refit`` > 0): it has no effect without one.
_REFIT_ONLY = ("refit_ridge",)
# Written by to_dict only when not 1 (added after the first shipped checkpoints).
_ONE_OMITTED = ("head_lr_scale",)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run (walled and baseline share it).

    Attributes:
        name: preset name (for manifests and cache keys).
        arch: model name in ``camwall.walls.MODELS``, or ``torchvision:NAME`` / ``timm:NAME``
            (a library classifier built with ``weights=None``, walled with ``walls``).
        arch_kwargs: extra keyword arguments of the model builder (e.g. a width).
        num_classes: number of output classes.
        dataset: ``"fashion-canvases"`` (single-item 1 x 64 x 64 canvases), ``"fashion-grid"``
            (2 x 2 mosaics, labels per cell; the loss is the sum of the cells' cross-entropies)
            or ``"imagefolder"`` (an ImageNet-style ``train/`` + ``val/`` folder tree under
            ``data``).
        data: data folder (Fashion-MNIST IDX files, or the ImageFolder root); ``None`` = default.
        epochs: number of passes over the training set.
        batch_size: global batch size (split evenly across ranks under ``torchrun``).
        lr: peak learning rate.
        momentum: SGD momentum (or AdamW beta1).
        weight_decay: L2 weight decay.
        optimizer: ``"sgd"`` or ``"adamw"``.
        scheduler: ``"step"`` (StepLR per epoch), ``"onecycle"`` (OneCycleLR per step) or
            ``"constant"``.
        step_size: StepLR period in epochs.
        gamma: StepLR factor.
        amp: mixed precision (float16 autocast + GradScaler) when training on CUDA.
        label_smoothing: cross-entropy label smoothing.
        augment: random training augmentation.
        seed: seed of model initialization, data order, augmentation and dropout.
        image_size: input side for the ImageFolder pipeline (``None``: the model's input size).
        train_limit: use only the first ``train_limit`` training examples (``None`` = all).
        val_limit: use only the first ``val_limit`` validation examples (``None`` = all).
        val_batch_size: batch size of the per-epoch validation.
        num_workers: DataLoader worker processes.
        max_steps: stop after this many optimizer steps in total (``None`` = no limit).
        checkpoint_every: also checkpoint every this many steps (0 = only at epoch ends).
        channels_last: train in the channels-last memory format (faster convolutions on CPU
            and on CUDA tensor cores; measured in ``benchmarks/train_speed.md``).
        threads: ``torch.set_num_threads`` while a single CPU process trains (``None``: leave
            torch's setting alone; ignored on CUDA and under ``torchrun``). The Fashion presets
            use 1: on a 2-core machine shared with other jobs, two threads that wait for each
            other at every operation are slower and far less steady than one.
        walls: walls of a library architecture (``arch="torchvision:NAME"`` or
            ``"timm:NAME"``), as ``LAYER:REGION`` strings (:func:`camwall.walls.parse_wall`);
            a registry architecture has its wall built in.
        init: where a fine-tuning run's initial weights come from (``camwall train --init``):
            a camwall checkpoint, a plain state dict file or ``shipped:PRESET-VARIANT``;
            ``None``: a fresh initialization (see :mod:`camwall.train._init`).
        init_sha256: SHA-256 of the initial weights file (set by :func:`camwall.train.train`).
        refit: with ``init``, refit the open weights and the bias of every walled linear layer
            right after the wall is inserted, by ridge regression of the unwalled layer's
            outputs on the open features of the first ``refit`` training examples
            (:mod:`camwall.train._refit`); 0: no refit. Ignored without ``init``.
        refit_ridge: the refit's relative ridge penalty (times the mean square of the open
            features), >= 0.
        head_lr_scale: the learning rate of the head's parameters (the first walled linear
            layer and every linear layer after it, :func:`camwall.train._optim.head_modules`)
            relative to ``lr`` (every schedule scales it alike), > 0; 1: one rate.

    ``walls``, ``init``, ``init_sha256`` and ``refit`` are left out of :meth:`to_dict` while
    unset (``refit_ridge`` too, without a refit), so the configs (and cache keys) of runs from
    scratch are those of earlier camwall versions.
    """

    name: str = "custom"
    arch: str = "fashion-vgg"
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    num_classes: int = 10
    dataset: str = "fashion-canvases"
    data: str | None = None
    epochs: int = 1
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    scheduler: str = "onecycle"
    step_size: int = 30
    gamma: float = 0.1
    amp: bool = True
    label_smoothing: float = 0.0
    augment: bool = True
    seed: int = 0
    image_size: int | None = None
    train_limit: int | None = None
    val_limit: int | None = None
    val_batch_size: int = 256
    num_workers: int = 0
    max_steps: int | None = None
    checkpoint_every: int = 0
    channels_last: bool = True
    threads: int | None = None
    walls: tuple[str, ...] = ()
    init: str | None = None
    init_sha256: str | None = None
    refit: int = 0
    refit_ridge: float = 1e-4
    head_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.val_batch_size >= 1, "val_batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.step_size >= 1, "step_size must be >= 1"),
            (self.num_classes >= 2, "num_classes must be >= 2"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (self.train_limit is None or self.train_limit >= 1, "train_limit must be >= 1"),
            (self.val_limit is None or self.val_limit >= 1, "val_limit must be >= 1"),
            (self.threads is None or self.threads >= 1, "threads must be >= 1"),
            (self.refit >= 0, "refit must be >= 0"),
            (self.refit_ridge >= 0, "refit_ridge must be >= 0"),
            (self.head_lr_scale > 0, "head_lr_scale must be > 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise CamwallError(f"training config {self.name!r}: {msg}.")
        for value, choices, what in (
            (self.optimizer, OPTIMIZERS, "optimizer"),
            (self.scheduler, SCHEDULERS, "scheduler"),
            (self.dataset, DATASET_KINDS, "dataset"),
        ):
            if value not in choices:
                raise CamwallError(
                    f"training config {self.name!r}: unknown {what} {value!r}."
                    f"{did_you_mean(value, choices)} Choose from: {', '.join(choices)}."
                )
        object.__setattr__(self, "arch_kwargs", dict(self.arch_kwargs))
        object.__setattr__(self, "walls", tuple(self.walls))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of the fields (``walls``, ``init``, ``init_sha256``, ``refit`` only
        when set, ``refit_ridge`` only with a refit, ``head_lr_scale`` only when not 1)."""
        out = dataclasses.asdict(self)
        out["arch_kwargs"] = dict(self.arch_kwargs)
        out["walls"] = list(self.walls)
        for key in _UNSET_OMITTED:
            if not out[key]:
                del out[key]
        for key in _REFIT_ONLY if not self.refit else ():
            del out[key]
        for key in _ONE_OMITTED:
            if out[key] == 1.0:
                del out[key]
        return out


PRESETS: Registry[TrainConfig] = Registry("training preset")
"""Named training recipes: ``fashion-vgg``, ``fashion-resnet``, ``fashion-grid-vgg``,
``fashion-vit``, ``imagenet-vgg16``.

The Fashion presets are sized for a 2-core CPU (about 4 minutes per model with one thread,
measured in ``benchmarks/train_speed.md``): width 8, AdamW, one-cycle schedule (peak lr 1e-2)
over 7 epochs of 60,000 canvases, label smoothing 0.1, one CPU thread (``threads=1``).
"""

# The two Fashion presets differ only in the architecture.
for _arch in ("fashion-vgg", "fashion-resnet"):
    PRESETS.add(
        TrainConfig(
            name=_arch,
            arch=_arch,
            arch_kwargs={"width": 8},
            epochs=7,
            batch_size=64,
            lr=1e-2,
            momentum=0.9,
            optimizer="adamw",
            scheduler="onecycle",
            weight_decay=1e-4,
            label_smoothing=0.1,
            threads=1,
        ),
    )
# The walled ViT (camwall.walls.fashion_vit, with its patch-local conv stem): same data and
# loop, a transformer's recipe (AdamW with a lower peak lr and more weight decay, more epochs;
# one thread).
PRESETS.add(
    dataclasses.replace(
        PRESETS.get("fashion-vgg"),
        name="fashion-vit",
        arch="fashion-vit",
        arch_kwargs={"conv_stem": True},
        epochs=15,
        lr=2e-3,
        weight_decay=0.05,
    ),
)
PRESETS.add(
    dataclasses.replace(
        PRESETS.get("fashion-vgg"),
        name="fashion-grid-vgg",
        arch="fashion-grid-vgg",
        dataset="fashion-grid",
        epochs=10,
    ),
)
"""The grid preset: 2 x 2 mosaics (15,000 per epoch, re-drawn each epoch), otherwise the
Fashion recipe; 10 epochs."""
PRESETS.add(
    TrainConfig(
        name="imagenet-vgg16",
        arch="walled-vgg16",
        num_classes=1000,
        dataset="imagefolder",
        epochs=90,
        batch_size=256,
        lr=0.03,
        momentum=0.9,
        weight_decay=1e-4,
        optimizer="sgd",
        scheduler="step",
        step_size=30,
        gamma=0.1,
        amp=True,
        augment=True,
        image_size=224,
        val_batch_size=256,
        num_workers=8,
        checkpoint_every=2000,
    ),
)


FINETUNE_DEFAULTS: dict[str, dict[str, Any]] = {
    "fashion-vgg": {
        "epochs": 1,
        "lr": 3e-3,
        "batch_size": 32,
        "label_smoothing": 0.0,
        "refit": 10_000,
        "head_lr_scale": 0.3,
    },
    "fashion-vit": {"epochs": 1, "lr": 6e-4},
}
"""What ``camwall train --preset P --init W`` changes in preset ``P`` before the command
line's options: a fine-tuning run starts from trained weights, so it gets one or two epochs at
about a third of the preset's peak learning rate, still with its one-cycle schedule and
optimizer. For ``fashion-vgg`` also: the walled head refitted in closed form on 10,000 training
canvases right after the insertion (``refit``, :mod:`camwall.train._refit`), batches of 32, no
label smoothing and the head (the walled linear layer and after) at 0.3 times the lr
(``head_lr_scale``). Measured in ``docs/train.md`` ("Fine-tuning a wall into a trained
model"): from the shipped ``fashion-vgg`` baseline, one epoch ends 0.80 points below the walled
model trained from scratch (87.68% vs 88.48%; 87.49% with seed 1). A preset not listed here is
fine-tuned for one epoch at a tenth of its learning rate."""

FINETUNE_BASE = TrainConfig(
    name="finetune",
    dataset="imagefolder",
    epochs=1,
    batch_size=32,
    lr=1e-4,
    optimizer="adamw",
    scheduler="onecycle",
    weight_decay=0.05,
    label_smoothing=0.1,
)
"""The recipe of ``camwall train --init W --arch torchvision:NAME`` without ``--preset``:
one epoch of AdamW (peak lr 1e-4, one-cycle) on an ImageFolder ``--data`` tree."""


def finetune_config(preset: str | TrainConfig | None) -> TrainConfig:
    """The base config of a fine-tuning run: ``preset`` (a name or a config) with its
    :data:`FINETUNE_DEFAULTS` (one epoch at a tenth of the lr when it has none), or
    :data:`FINETUNE_BASE` for ``None``."""
    if preset is None:
        return FINETUNE_BASE
    base = get_preset(preset) if isinstance(preset, str) else preset
    changes = FINETUNE_DEFAULTS.get(base.name, {"epochs": 1, "lr": base.lr / 10})
    return dataclasses.replace(base, **changes)


def get_preset(name: str) -> TrainConfig:
    """The preset ``name`` (CamwallError with a suggestion if unknown)."""
    return PRESETS.get(name)


def apply_overrides(config: TrainConfig, overrides: Mapping[str, Any] | None) -> TrainConfig:
    """A copy of ``config`` with the given fields replaced; ``None`` values are ignored.

    Raises:
        CamwallError: for a field name that does not exist, with a suggestion.
    """
    if not overrides:
        return config
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in names:
            raise CamwallError(
                f"unknown training option {key!r}.{did_you_mean(key, names)} "
                f"Options: {', '.join(names)}."
            )
        if value is not None:
            changes[key] = value
    return dataclasses.replace(config, **changes)


def hashed_fields(config: TrainConfig) -> dict[str, Any]:
    """The weight-relevant fields of ``config`` (all but ``num_workers``, ``checkpoint_every``,
    ``threads``), JSON-ready."""
    return {k: v for k, v in config.to_dict().items() if k not in _NOT_HASHED}


def config_hash(config: TrainConfig, version: str = "") -> str:
    """SHA-256 (hex) of the weight-relevant fields of ``config`` and ``version``:
    :func:`camwall.runtime.config_hash` of ``{"config": hashed_fields(config), "version": ...}``."""
    return runtime_hash({"config": hashed_fields(config), "version": version})


def pair_cache_key(config: TrainConfig, version: str) -> str:
    """``<preset>-<hash16>``, the cache entry name of ``config``'s trained pair
    (:func:`camwall.runtime.cache_key`; its hash is ``config_hash(config, version)[:16]``)."""
    return cache_key(config.name, hashed_fields(config), version)
