"""Training walled and baseline models.

Public API:

* :data:`PRESETS` (``fashion-vgg``, ``fashion-resnet``, ``fashion-vit``, ``fashion-grid-vgg``,
  ``imagenet-vgg16``), :class:`TrainConfig`, :func:`apply_overrides`, :func:`config_hash`
* :func:`train` -> :class:`TrainResult`: a preset's walled model and baseline, same seed and data
  order, the wall re-applied after every step, checkpoints + ``--resume``, DDP under ``torchrun``
  (how it runs: :class:`TrainOptions`)
* fine-tuning a wall into trained weights (``camwall train --init``): ``train(preset,
  {"init": "shipped:fashion-vgg-baseline"})``; :func:`resolve_init` -> :class:`InitSource`
  (file, kind, SHA-256), :func:`load_init` (the unwalled weights into the walled model, the
  walled entries set to 0), the closed-form head refit after the insertion (``refit``,
  :mod:`camwall.train._refit`), :data:`FINETUNE_DEFAULTS` / :func:`finetune_config` (a preset's
  fine-tuning recipe); ``arch="torchvision:NAME"`` / ``"timm:NAME"`` with ``walls``
* :func:`fit`: the generic loop for any model and dataset -> :class:`FitResult` (how it runs:
  :class:`FitOptions`)
* :func:`evaluate` (a saved model on a dataset) and :func:`evaluate_model` -> :class:`EvalResult`;
  :func:`grid_accuracy`: top-1 per cell of a grid model
* :func:`cached_pair`: train a pair once, reuse it from the cache (one trainer per entry);
  :func:`pair_cache_folder`: where that entry lives
* :func:`plot_curves`, :func:`read_history`: loss / accuracy curves (paper Figure 5 style)
"""

from camwall.runtime import DistInfo, dist_info, resolve_device
from camwall.train._accuracy import EvalResult, evaluate_model
from camwall.train._cache import cache_root, cached_pair, pair_cache_folder
from camwall.train._config import (
    FINETUNE_DEFAULTS,
    PRESETS,
    TrainConfig,
    apply_overrides,
    config_hash,
    finetune_config,
)
from camwall.train._data import IMAGENET_MEAN, IMAGENET_STD, folder_transforms
from camwall.train._evaluate import evaluate, grid_accuracy
from camwall.train._init import InitSource, load_init, resolve_init
from camwall.train._loop import FitOptions, FitResult, fit
from camwall.train._plot import plot_curves, read_history
from camwall.train._run import (
    VARIANTS,
    TrainOptions,
    TrainResult,
    build_model,
    resolve_config,
    train,
)

__all__ = [
    "FINETUNE_DEFAULTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESETS",
    "VARIANTS",
    "DistInfo",
    "EvalResult",
    "FitOptions",
    "FitResult",
    "InitSource",
    "TrainConfig",
    "TrainOptions",
    "TrainResult",
    "apply_overrides",
    "build_model",
    "cache_root",
    "cached_pair",
    "config_hash",
    "dist_info",
    "evaluate",
    "evaluate_model",
    "finetune_config",
    "fit",
    "folder_transforms",
    "grid_accuracy",
    "load_init",
    "pair_cache_folder",
    "plot_curves",
    "read_history",
    "resolve_config",
    "resolve_device",
    "resolve_init",
    "train",
]
