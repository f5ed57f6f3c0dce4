"""Turn command-line names into models and datasets: checkpoints, registry names, folders.

- A model is a camwall checkpoint (``NAME``, ``NAME.safetensors`` or ``NAME.json``, loaded
  with :func:`camwall.walls.load_model`, which refuses a tampered wall), or a registry name
  (:data:`camwall.walls.MODELS`) with optional ``--weights FILE.safetensors``.
- A dataset is a registry name (:data:`camwall.data.DATASETS`, built with ``--images`` and
  ``--seed``) or a folder written by ``camwall stackmix`` / ``camwall stackgen`` or a plain
  ImageFolder tree (read with :func:`camwall.data.read_image_dataset`; the first ``--images``
  images are used).

A model with no dead zone is refused: the wall test would be meaningless for it (baselines
passed with ``--baseline`` are the exception; they only get predictions and accuracy).
"""

from __future__ import annotations

import math
import operator
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from camwall.bench._plan import BenchDataset, BenchModel
from camwall.errors import CamwallError
from camwall.walls import WallCheck, is_checkpoint

__all__ = [
    "DEFAULT_DATASETS",
    "DEFAULT_PRESET",
    "MAX_IMAGES",
    "bench_model",
    "check_dataset_spec",
    "check_images",
    "input_normalization",
    "model_facts",
    "reading_size",
    "resolve_dataset",
    "resolve_model",
]

DEFAULT_PRESET = "fashion-vgg"
DEFAULT_DATASETS = ("fashion-stackmix", "fashion-stackpair")
MAX_IMAGES = 1_000_000
"""The most images per dataset ``--images`` accepts (a folder is capped at its size too)."""


def _load(
    spec: str, weights: str | None, walls: Sequence[str], baseline: bool
) -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint, a camwall registry name or a torchvision name (``walls.resolve_model``)."""
    from camwall.walls import model_config
    from camwall.walls import resolve_model as build

    if weights is not None and not str(weights).endswith(".safetensors"):
        raise CamwallError(
            f"--weights {weights}: only .safetensors files are read (never pickles); convert "
            "the state dict with safetensors.torch.save_file."
        )
    baseline = baseline and not is_checkpoint(spec)  # a checkpoint carries its own wall
    model, meta = build(spec, walls=list(walls), weights=weights, baseline=baseline)
    if meta.get("source") != "checkpoint":
        if weights is None:
            print(
                f"camwall bench: model {spec!r} has random (untrained) weights; pass --weights "
                "FILE.safetensors or a checkpoint to test a trained model.",
                file=sys.stderr,
            )
        try:
            config = model_config(model)
        except CamwallError:
            config = {}
        meta = {**config, **meta, "arch": config.get("arch", spec)}
    return model, meta


def model_facts(model: nn.Module, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a model says about itself (the one place the bench reads it): ``input_shape``
    (``C, H, W`` or None), ``task`` (``"single"`` or ``"grid"``), ``classes`` (per cell, for a
    grid model; else None) and ``kind`` (``CNN``, ``grid``, ``ViT``); ``meta`` is a checkpoint's
    metadata, read first for the input shape and after the model for the rest."""
    from camwall.walls import describe, model_kind, model_task

    task = model_task(model, meta)
    return {
        "input_shape": (meta or {}).get("input_shape") or describe(model).input_shape,
        "task": str(task["name"]),
        "classes": task.get("classes"),
        "kind": model_kind(model, meta),
    }


def _input_shape(facts: dict[str, Any], spec: str) -> tuple[int, int, int]:
    shape = facts["input_shape"]
    if not shape or len(shape) != 3:
        raise CamwallError(
            f"model {spec!r}: its input shape is unknown; build or wall it with camwall.walls "
            "(which records it; camwall.walls.declare(model, input_shape=...) for your own), "
            "and save it with camwall.walls.save_model so that the checkpoint records it."
        )
    return int(shape[0]), int(shape[1]), int(shape[2])


def resolve_model(
    spec: str,
    *,
    name: str | None = None,
    weights: str | None = None,
    target_layer: str | None = None,
    walled: bool = True,
    walls: Sequence[str] = (),
) -> BenchModel:
    """Load a model by checkpoint path or name and find its dead zone and target layer.

    Loading is :func:`camwall.walls.resolve_model` (checkpoint, registry or torchvision name);
    a model under test (``walled``) must have a non-empty dead zone that passes
    :func:`camwall.walls.verify_wall` (2 trials).

    Raises:
        CamwallError: unknown name, unreadable checkpoint, no such target layer, or (for a
        model under test) no dead zone at all or a wall that fails the check.
    """
    model, meta = _load(spec, weights, walls, baseline=not walled)
    return bench_model(model, meta, spec, name=name, target_layer=target_layer, walled=walled)


def bench_model(
    model: nn.Module,
    meta: dict[str, Any],
    spec: str,
    *,
    name: str | None = None,
    target_layer: str | None = None,
    walled: bool = True,
) -> BenchModel:
    """A loaded model (``meta``: its checkpoint's metadata, or ``{}``) as a :class:`BenchModel`:
    its input shape, normalization (:func:`input_normalization`), task and kind, and, for a
    model under test, its checked dead zone and target layer (see :func:`resolve_model`)."""
    model.eval()
    facts = model_facts(model, meta)
    c, h, w = _input_shape(facts, spec)
    info: dict[str, Any] = {"spec": spec, "arch": meta.get("arch"), "input_shape": [c, h, w]}
    norm = input_normalization(meta, c, spec)
    layer, zone, cells = "", torch.zeros(h, w, dtype=torch.bool), None
    if walled:
        layer, cells, check = _checked_wall(
            model, spec, (c, h, w), target_layer or meta.get("target_layer")
        )
        zone = cells[0]
        cells = cells if len(cells) > 1 else None
        info = {
            "spec": spec,
            "arch": meta.get("arch"),
            "arch_kwargs": meta.get("arch_kwargs"),
            "input_shape": [c, h, w],
            "training": meta.get("training"),
            "wall": meta.get("wall"),
            "normalize": None if norm is None else {"mean": norm[0], "std": norm[1]},
            "wall_check": {
                "ok": check.ok,
                "trials": check.trials,
                "max_logit_change": check.max_logit_change,
                "dead_pixels": check.dead_pixels,
            },
        }
    return BenchModel(
        name=name or _default_name(spec, meta, walled),
        model=model,
        target_layer=layer,
        dead_zone=zone,
        class_names=list(meta.get("class_names") or []),
        info=info,
        walled=walled,
        channels=c,
        task=facts["task"],
        kind=facts["kind"],
        cell_zones=cells,
        normalize=norm,
    )


def input_normalization(
    meta: dict[str, Any], channels: int, spec: str
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The ``(mean, std)`` a model's inputs are normalized with, per channel.

    The checkpoint's ``"normalize"`` entry when it has one: ``{"mean": [...], "std": [...]}``
    (``channels`` finite numbers each, std > 0) or ``"none"`` / null; else the rule of
    ``camwall train``'s image pipeline (:func:`camwall.train._data.folder_transforms`):
    ImageNet mean / std for 3-channel inputs, none for 1-channel ones.

    Raises:
        CamwallError: a malformed ``"normalize"`` entry, naming the checkpoint and the fix.
    """
    from camwall.runtime import IMAGENET_MEAN, IMAGENET_STD

    if "normalize" not in meta:
        return (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)) if channels == 3 else None
    entry = meta["normalize"]
    if entry is None or entry == "none":
        return None
    try:
        mean = tuple(float(v) for v in entry["mean"])
        std = tuple(float(v) for v in entry["std"])
    except (TypeError, KeyError, ValueError):
        mean = std = ()
    finite = all(math.isfinite(v) for v in (*mean, *std))
    if len(mean) != channels or len(std) != channels or not finite or min(std) <= 0:
        raise CamwallError(
            f'model {spec!r}: its checkpoint\'s "normalize" entry is {entry!r}; write '
            f'{{"mean": [{channels} numbers], "std": [{channels} numbers > 0]}} or "none".'
        )
    return mean, std


def _checked_wall(
    model: nn.Module, spec: str, shape: tuple[int, int, int], layer: str | None
) -> tuple[str, torch.Tensor, WallCheck]:
    """``(target layer name, dead zones on the CPU, wall check)`` of a model under test;
    ``layer``: ``--target-layer`` or the recorded one (None: the model's default). The dead
    zones are bool ``1 x H x W`` (all outputs), or ``cells x H x W`` for a grid model (the
    dead zone of each cell's outputs, each checked with :func:`camwall.walls.verify_wall`)."""
    from camwall.cams import resolve_layer
    from camwall.walls import (
        dead_zone,
        dead_zones,
        default_target_layer,
        output_groups,
        verify_wall,
    )

    try:
        name, _ = resolve_layer(model, layer or default_target_layer(model))
    except CamwallError as err:
        raise CamwallError(f"--target-layer: {err}") from None
    groups = output_groups(model)
    if groups:
        zones = dead_zones(model, shape, [range(a, b) for a, b in groups]).cpu()
        per_output = zones.repeat_interleave(groups[0][1] - groups[0][0], dim=0)
        check = verify_wall(model, per_output, trials=2)
        if not check.ok or not bool(zones.any((1, 2)).all()):
            raise CamwallError(
                f"model {spec!r}: a cell's dead zone is empty or changed the output in a check "
                f"(max logit change {check.max_logit_change:g}); refusing to test a broken wall."
            )
        return name, zones, check
    zone = dead_zone(model, shape).cpu()
    if not bool(zone.any()):
        raise CamwallError(
            f"model {spec!r} has no wall (its dead zone is empty), so every saliency map would "
            "pass the test and the benchmark would mean nothing. Pass a walled model, or give "
            "it with --baseline to record its accuracy only."
        )
    check = verify_wall(model, zone, trials=2)
    if not check.ok:
        raise CamwallError(
            f"model {spec!r}: the dead zone changed the output in a check "
            f"(max logit change {check.max_logit_change:g}); refusing to test a broken wall."
        )
    return name, zone.unsqueeze(0), check


def _default_name(spec: str, meta: dict[str, Any], walled: bool = True) -> str:
    if not is_checkpoint(spec):
        return spec if walled else f"{spec}-baseline"
    p = Path(spec)
    stem = p.name.removesuffix(".safetensors").removesuffix(".json")
    return f"{meta.get('arch', 'model')}-{stem}" if stem in ("walled", "baseline") else stem


def reading_size(models: Sequence[BenchModel]) -> tuple[int | None, tuple[int, int] | None]:
    """``(channels, (H, W))`` that folders are read at: the first walled model's inputs."""
    walled = next((m for m in models if m.walled), None)
    if walled is None:
        return None, None
    h, w = walled.dead_zone.shape
    return walled.channels, (int(h), int(w))


def check_dataset_spec(spec: str) -> None:
    """Fail early (before loading models) on a dataset that is neither a name nor a folder."""
    from camwall.data import DATASETS

    if spec in DATASETS or Path(spec).is_dir():
        return
    if "/" in spec or "\\" in spec or spec.startswith(".") or Path(spec).exists():
        raise CamwallError(
            f"--dataset {spec}: folder not found. Build one with `camwall stackmix` or "
            "`camwall stackgen`, or pass an ImageFolder tree."
        )
    DATASETS.get(spec)


def check_images(n: int) -> int:
    """``n`` if it is an int in ``[1, MAX_IMAGES]``, else a :class:`CamwallError`."""
    try:
        n = operator.index(n)
    except TypeError:
        raise CamwallError(f"--images must be an integer, got {n!r}.") from None
    if n < 1:
        raise CamwallError(f"--images must be at least 1, got {n}.")
    if n > MAX_IMAGES:
        raise CamwallError(
            f"--images {n} is too many: at most {MAX_IMAGES:,} images per dataset (a folder "
            "gives at most its own size)."
        )
    return n


def resolve_dataset(
    spec: str,
    n: int,
    seed: int,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
) -> BenchDataset:
    """Build a registry dataset or read a folder; keep the first ``n`` images of a folder.

    ``size`` is the model's input ``(H, W)``: a plain ImageFolder tree (no ``manifest.json``)
    is then read at that size (shorter side resized to ``S``, centre crop ``S x S``, as
    ``camwall train``'s validation pipeline) when ``H == W``; a folder written by
    ``camwall stackmix`` / ``stackgen`` is read as it is (its composites are placed for its
    own size), and so is every folder when ``size`` is None.

    Raises:
        CamwallError: ``n`` outside ``[1, MAX_IMAGES]``, ``seed`` outside ``[0, 2**63 - 1]``,
        unknown name, missing folder, unreadable images or images of mixed sizes.
    """
    from camwall._cliargs import check_seed
    from camwall.data import DATASETS

    check_images(n)
    check_seed(seed)
    path = Path(spec)
    if spec in DATASETS and not path.is_dir():
        built = DATASETS.get(spec).build(n=n, seed=seed)
        return BenchDataset(
            name=spec,
            images=built.images,
            labels=built.labels,
            class_names=built.class_names,
            info={"spec": spec, **{k: v for k, v in built.meta.items() if k != "class_names"}},
        )
    if not path.exists():
        if "/" in spec or "\\" in spec or spec.startswith("."):
            raise CamwallError(
                f"--dataset {spec}: folder not found. Build one with `camwall stackmix` or "
                "`camwall stackgen`, or pass an ImageFolder tree."
            )
        DATASETS.get(spec)  # unknown name: CamwallError with a suggestion
    if not path.is_dir():
        raise CamwallError(f"--dataset {spec}: not a folder.")
    return _read_folder(spec, path, n, channels, _folder_side(path, size))


def _folder_side(path: Path, size: tuple[int, int] | None) -> int | None:
    """The side a folder's images are resized and cropped to: a square model input's, for a
    plain ImageFolder tree; None (as they are) otherwise."""
    from camwall.data.folders import MANIFEST

    if size is None or size[0] != size[1] or (path / MANIFEST).is_file():
        return None
    return int(size[0])


def _read_folder(
    spec: str, path: Path, n: int, channels: int | None, side: int | None = None
) -> BenchDataset:
    """The first ``n`` images of a dataset folder, read as they are, or at ``side x side``."""
    from camwall.data import read_image_dataset

    try:
        data = read_image_dataset(path, size=side, channels=channels)
    except CamwallError as err:
        if "different sizes" not in str(err):
            raise
        sizes = str(err).split("(", 1)[1].split(")", 1)[0]
        raise CamwallError(
            f"--dataset {spec}: images have different sizes ({sizes}); camwall bench reads "
            "images as they are, so resize and centre-crop them all to the model's input size "
            "first (e.g. camwall.data.read_image_dataset(path, size=...) in Python)."
        ) from None
    from camwall.bench._session import data_fingerprint

    keep = min(n, len(data))
    images, labels = data.images[:keep], data.labels[:keep]
    return BenchDataset(
        name=path.resolve().name,
        images=images,
        labels=labels,
        class_names=list(data.class_names),
        info={
            "spec": spec,
            "folder": str(path.resolve()),
            "total_images": len(data),
            "read_at": "as stored" if side is None else f"resized + centre-cropped to {side}",
            "fingerprint": data_fingerprint(images, labels),  # --resume refuses other contents
            **{k: v for k, v in data.meta.items() if isinstance(v, (str, int, float, bool))},
        },
    )
