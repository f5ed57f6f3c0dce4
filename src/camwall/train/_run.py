"""Training a preset: the walled model and its baseline, with the same seed and data order.

Output folder (``out_dir``)::

    manifest.json               config, versions, device, world size, final metrics
    walled.safetensors/.json    final walled model (camwall.walls.save_model; load_model reads it)
    baseline.safetensors/.json  final baseline model
    walled/metrics.csv|.jsonl   per-epoch metrics; walled/checkpoints/ resumable state
    baseline/...
    curves.png                  train loss and validation top-1 of both (paper Figure 5 style)

A fine-tuning run (``init``: :mod:`camwall.train._init`) trains only the walled model, from the
initial weights with the wall inserted; its manifest and checkpoint record ``init``: the source,
its SHA-256 and the validation accuracy right after the insertion, before any step.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from camwall._versions import versions
from camwall.errors import CamwallError
from camwall.runtime import DistInfo, distributed
from camwall.train._arch import build_model, check_arch
from camwall.train._config import TrainConfig, apply_overrides, finetune_config, get_preset
from camwall.train._data import check_data, training_datasets
from camwall.train._init import insert_init, resolve_init
from camwall.train._loop import BatchHook, EpochHook, FitResult, fit
from camwall.train._parallel import VariantOutcome, train_in_parallel, use_parallel
from camwall.train._plot import plot_curves
from camwall.train._state import atomic_write_text

__all__ = [
    "VARIANTS",
    "TrainOptions",
    "TrainResult",
    "build_model",
    "resolve_config",
    "train",
    "train_variant",
]

VARIANTS = ("walled", "baseline")


@dataclass(frozen=True)
class TrainResult:
    """Result of :func:`train`.

    Attributes:
        config: the config that was trained.
        out_dir: the output folder.
        checkpoints: variant (``walled`` / ``baseline``) -> final model ``.safetensors`` path.
        histories: variant -> per-epoch metric rows.
        completed: ``False`` when ``max_steps`` stopped training before the last epoch.
        plot: the loss/accuracy figure (only when both variants were trained).
        is_main: ``False`` on the ranks other than 0 under ``torchrun`` (which write nothing).
        init: a fine-tuning run's initial weights: source, SHA-256 and ``inserted`` (the
            walled model's validation figures before fine-tuning); ``None`` otherwise.
    """

    config: TrainConfig
    out_dir: Path
    checkpoints: dict[str, Path] = field(default_factory=dict)
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    completed: bool = True
    plot: Path | None = None
    is_main: bool = True
    init: dict[str, Any] | None = None

    def final(self, variant: str) -> dict[str, Any]:
        """The last metric row of ``variant``."""
        return self.histories[variant][-1]


def resolve_config(
    preset: str | TrainConfig | None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """The preset (by name or as a config) with ``overrides`` applied; with an ``init``
    override, the preset's fine-tuning defaults come first (:func:`finetune_config`;
    ``preset=None``: :data:`~camwall.train._config.FINETUNE_BASE`).

    Raises:
        CamwallError: ``preset=None`` without ``init``.
    """
    if (overrides or {}).get("init"):
        base = finetune_config(preset)
    elif preset is None:
        raise CamwallError("give a training preset (--preset NAME), or --init WEIGHTS.")
    else:
        base = get_preset(preset) if isinstance(preset, str) else preset
    return apply_overrides(base, overrides)


def _with_init(config: TrainConfig, variants: Sequence[str]) -> tuple[TrainConfig, list[str]]:
    """A fine-tuning config gets its init file's SHA-256 and trains the walled model only."""
    if config.init is None:
        return config, list(variants)
    if "walled" not in variants:
        raise CamwallError(
            "--init fine-tunes the walled model (the initial weights are its baseline); drop "
            "--baseline."
        )
    return replace(config, init_sha256=resolve_init(config.init).sha256), ["walled"]


@dataclass(frozen=True)
class TrainOptions:
    """How :func:`train` runs, beside the preset, its overrides and the output folder.

    Attributes:
        variants: which of ``"walled"``, ``"baseline"`` to train, in order.
        resume: continue each variant from its latest checkpoint.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        progress: tqdm bars (``None``: on a terminal only; never in parallel processes, which
            print one line per epoch instead).
        on_batch: ``on_batch(epoch, step, indices)`` hook, called with the variant's batches.
        on_epoch_end: ``on_epoch_end(epoch, row)`` hook.
        parallel: ``None``: both variants in parallel when possible (CPU, one process, >= 2
            cores, no hooks, not a tiny run); ``True``: in parallel whatever the core count and
            size; ``False``: one after the other.
    """

    variants: Sequence[str] = VARIANTS
    resume: bool = False
    device: str | torch.device = "auto"
    progress: bool | None = None
    on_batch: BatchHook | None = None
    on_epoch_end: EpochHook | None = None
    parallel: bool | None = None

    @property
    def hooks(self) -> bool:
        return self.on_batch is not None or self.on_epoch_end is not None


def train(
    preset: str | TrainConfig | None,
    overrides: Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
    options: TrainOptions | None = None,
    **changes: Any,
) -> TrainResult:
    """Train the walled model and/or its baseline of a preset.

    With ``overrides["init"]`` (or a config whose ``init`` is set) it fine-tunes instead: the
    walled model starts from those weights with its wall inserted (:mod:`camwall.train._init`)
    and is measured on the validation set before the first step (``TrainResult.init``).

    Both variants get the same config: same initialization seed (the baseline's weights equal
    the walled model's outside the wall), same batches in the same order, same augmentation
    draws. The wall is re-applied after every optimizer step
    (:func:`camwall.walls.enforce_walls`). Under ``torchrun`` only rank 0 writes files. On a
    CPU with two or more cores, outside ``torchrun``, the two variants train at the same time in
    two spawned processes, each with half the cores (:mod:`camwall.train._parallel`); the
    weights equal a sequential run's.

    Args:
        preset: a name in :data:`PRESETS` or a :class:`TrainConfig` (``None``: with
            ``overrides["init"]``, :data:`~camwall.train._config.FINETUNE_BASE`).
        overrides: field -> value replacements (``{"epochs": 2, "lr": 0.01}``).
        out_dir: output folder (default ``runs/<preset>``); see the module docstring.
        options: variants, resume, device, output, hooks, parallel (:class:`TrainOptions`).
        **changes: :class:`TrainOptions` fields that replace those of ``options``
            (``train("fashion-vgg", device="cpu", variants=("walled",))``).

    Returns:
        :class:`TrainResult` with the final checkpoint paths and metric histories.
    """
    opts = replace(options or TrainOptions(), **changes)
    _check_variants(opts.variants)
    config, variants = _with_init(resolve_config(preset, overrides), opts.variants)
    opts = replace(opts, variants=variants)
    check_arch(config, walled="walled" in variants)
    check_data(config)
    out = Path(out_dir) if out_dir is not None else Path("runs") / config.name
    with distributed(opts.device) as (info, dev):  # joins (and leaves) a torchrun group
        threads_before = torch.get_num_threads()
        if config.threads and dev.type == "cpu" and info.world == 1:
            torch.set_num_threads(config.threads)
        try:
            if use_parallel(opts.parallel, config, opts.variants, info, dev, opts.hooks):
                outcomes = train_in_parallel(config, opts.variants, out, dev, opts.resume)
            else:
                outcomes = _train_sequentially(config, out, info, dev, opts)
            return _finish(config, out, info, dev, outcomes)
        finally:
            torch.set_num_threads(threads_before)


def _check_variants(variants: Sequence[str]) -> None:
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise CamwallError(f"variants must be among {', '.join(VARIANTS)}; got {list(variants)}.")


def _train_sequentially(
    config: TrainConfig, out: Path, info: DistInfo, dev: torch.device, opts: TrainOptions
) -> list[VariantOutcome]:
    """Each variant in turn in this process (one data set, built once)."""
    datasets: dict[str, Any] = {}
    return [
        train_variant(
            config,
            variant,
            out,
            dev,
            info,
            resume=opts.resume,
            datasets=datasets,
            progress=opts.progress,
            on_batch=opts.on_batch,
            on_epoch_end=opts.on_epoch_end,
        )
        for variant in opts.variants
    ]


def train_variant(
    config: TrainConfig,
    variant: str,
    out: Path,
    dev: torch.device,
    info: DistInfo,
    *,
    resume: bool,
    datasets: dict[str, Any] | None = None,
    **fit_options: Any,
) -> VariantOutcome:
    """Build, :func:`fit` and (rank 0) save one variant as ``out/<variant>.safetensors``.

    ``datasets`` memoizes ``(train_set, val_set, class_names)`` across variants; ``fit_options``
    go to :func:`fit` (``progress``, hooks, ``log_epochs``). A fine-tuning config's walled
    model starts from ``config.init`` (:func:`~camwall.train._init.insert_init`).
    """
    from camwall.walls import describe, enforce_walls

    model = build_model(config, walled=variant == "walled").to(dev)
    memo = datasets if datasets is not None else {}
    if "train" not in memo:
        shape = describe(model).input_shape
        memo["train"], memo["val"], memo["classes"] = training_datasets(config, shape)
    init = None
    if config.init is not None and variant == "walled":
        init = insert_init(model, config, memo["val"], dev, memo["train"])
        _log_insertion(config, init, info)
    result = fit(
        model,
        memo["train"],
        memo["val"],
        config,
        out / variant,
        device=dev,
        enforce_wall=enforce_walls,
        resume=resume,
        label=variant,
        **fit_options,
    )
    path = out / f"{variant}.safetensors"
    if info.is_main:
        path = _save_variant(model, path, config, variant, memo["classes"], result, init)
    return VariantOutcome(variant, path, result.history, result.steps, result.completed, init)


def _log_insertion(config: TrainConfig, init: Mapping[str, Any], info: DistInfo) -> None:
    """One line on stderr (rank 0): the walled model's accuracy before fine-tuning."""
    inserted = init.get("inserted")
    if not info.is_main or inserted is None:
        return
    print(
        f"train {config.name} walled: wall inserted into {config.init}, before fine-tuning: "
        f"val top-1 {100 * inserted['val_top1']:.2f}% ({inserted['n']} images)",
        file=sys.stderr,
        flush=True,
    )
    refitted = (init.get("refit") or {}).get("refitted")
    if refitted is not None:
        print(
            f"train {config.name} walled: head refit on {init['refit']['examples']} examples: "
            f"val top-1 {100 * refitted['val_top1']:.2f}%",
            file=sys.stderr,
            flush=True,
        )


def _save_variant(
    model: nn.Module,
    path: Path,
    config: TrainConfig,
    variant: str,
    class_names: Sequence[str],
    result: FitResult,
    init: Mapping[str, Any] | None = None,
) -> Path:
    """``camwall.walls.save_model`` of the trained variant (eval mode) with its class names and
    the training record (preset, variant, config, steps, completion, last row, versions and,
    fine-tuned, the initial weights' record)."""
    from camwall.walls import save_model

    meta = {
        "class_names": class_names,
        "training": {
            "preset": config.name,
            "variant": variant,
            "config": config.to_dict(),
            "steps": result.steps,
            "completed": result.completed,
            "final": result.history[-1] if result.history else None,
            "versions": versions(),
            **({} if init is None else {"init": dict(init)}),
        },
    }
    return Path(save_model(model.eval(), path, meta))


def _finish(
    config: TrainConfig,
    out: Path,
    info: DistInfo,
    dev: torch.device,
    outcomes: Sequence[VariantOutcome],
) -> TrainResult:
    """Plot both curves and write ``manifest.json`` (rank 0); the :class:`TrainResult`."""
    checkpoints = {o.variant: o.path for o in outcomes}
    histories = {o.variant: o.history for o in outcomes}
    completed = all(o.completed for o in outcomes)
    init = next((o.init for o in outcomes if o.init is not None), None)
    plot = None
    if info.is_main:
        if set(histories) == set(VARIANTS) and all(histories.values()):
            plot = plot_curves(histories, out / "curves.png", title=config.name)
        manifest = {
            "config": config.to_dict(),
            "versions": versions(),
            "device": str(dev),
            "world_size": info.world,
            "threads": torch.get_num_threads(),
            "completed": completed,
            "checkpoints": {k: str(v) for k, v in checkpoints.items()},
            "final": {k: (v[-1] if v else None) for k, v in histories.items()},
            **({} if init is None else {"init": init}),
        }
        atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    return TrainResult(
        config=config,
        out_dir=out,
        checkpoints=checkpoints,
        histories=histories,
        completed=completed,
        plot=plot,
        is_main=info.is_main,
        init=init,
    )
