"""Checkpoints: ``NAME.safetensors`` (weights) + ``NAME.json`` (architecture and metadata).

No pickle: weights are read with ``safetensors`` and the architecture is rebuilt from the
:data:`~camwall.walls.MODELS` registry, or (``arch="torchvision"`` / ``"timm"``) by
:func:`~camwall.walls.walled_torchvision` / :func:`~camwall.walls.walled_timm` from the
recorded name and walls. The wall is part
of the architecture (its masks are not stored), and loading refuses a file whose walled
weights are not exactly 0.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import camwall
from camwall.errors import CamwallError, did_you_mean
from camwall.walls._checks import check_finite_state, check_wall_zeros, input_shape_of
from camwall.walls._deadzone import dead_zone, dead_zone_summary, dead_zones
from camwall.walls._grid import output_groups
from camwall.walls._info import declare, describe
from camwall.walls._models import MODELS, create_model, model_config, unwrap
from camwall.walls._modules import WalledLinear, walls_of
from camwall.walls._timm import TIMM_ARCH, rebuild_timm
from camwall.walls._torchvision import TORCHVISION_ARCH, check_inserted_walls, rebuild_torchvision

__all__ = ["checkpoint_paths", "load_model", "save_model"]

FORMAT = "camwall-checkpoint"
VERSION = 1

#: Architectures rebuilt from a library name and walls (not from the registry).
_EXTERNAL = {TORCHVISION_ARCH: rebuild_torchvision, TIMM_ARCH: rebuild_timm}


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(NAME.safetensors, NAME.json)`` for ``NAME``, ``NAME.safetensors`` or ``NAME.json``."""
    p = Path(path)
    if p.name.endswith(".safetensors"):
        stem = p.name[: -len(".safetensors")]
    elif p.name.endswith(".json"):
        stem = p.name[: -len(".json")]
    else:
        stem = p.name
    if not stem:
        raise CamwallError(f"checkpoint path {str(path)!r} has no name; give e.g. out/model.")
    return p.with_name(stem + ".safetensors"), p.with_name(stem + ".json")


def _jsonable(value: Any, where: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except RecursionError:
        raise CamwallError(
            f"metadata {where} is nested too deeply to be written as JSON; pass a flatter record."
        ) from None
    except (TypeError, ValueError) as err:
        raise CamwallError(
            f"metadata {where} cannot be written as JSON ({err}); pass plain numbers, strings, "
            "lists and dicts."
        ) from None


def save_model(
    model: nn.Module, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``NAME.safetensors`` and ``NAME.json`` for a model built by a registered builder
    or by :func:`~camwall.walls.walled_torchvision`.

    The JSON holds ``format``, ``version``, ``arch``, ``arch_kwargs``, ``wall`` (the recorded
    walls), ``input_shape``, ``target_layer``, ``dead_zone`` (:func:`dead_zone_summary` at
    ``input_shape``), ``class_names`` and ``training`` (from ``metadata``, else None), and every
    other key of ``metadata`` unchanged. The computed keys win over ``metadata``.

    Args:
        model: built by :func:`camwall.walls.create_model` (or a registered builder), or a
            ``DistributedDataParallel`` / ``DataParallel`` wrapper of one (saved unwrapped).
        path: ``NAME``, ``NAME.safetensors`` or ``NAME.json``; parent folders are created.
        metadata: extra JSON-ready keys (e.g. ``class_names``, ``training``).

    Returns:
        The ``.safetensors`` path.
    """
    model = unwrap(model)
    config = model_config(model)
    broken = [
        n for n, m in model.named_modules() if isinstance(m, WalledLinear) and not m.wall_intact()
    ]
    if broken:
        raise CamwallError(
            f"walled layers {broken} have non-zero walled weights; call "
            "camwall.walls.enforce_walls(model) after each optimizer step."
        )
    weights_path, json_path = checkpoint_paths(path)
    meta = _jsonable(dict(metadata or {}), "")
    shape = config["input_shape"]
    zone = dead_zone(model, tuple(shape)) if shape is not None else None
    record: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        **config,
        "class_names": meta.pop("class_names", None),
        "dead_zone": dead_zone_summary(zone) if zone is not None else None,
        "training": meta.pop("training", None),
        "camwall_version": camwall.__version__,
        "torch_version": torch.__version__,
    }
    record.update(_task_keys(model, shape))
    for key, value in meta.items():
        record.setdefault(key, value)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_w = weights_path.with_name(weights_path.name + ".tmp")
    tmp_j = json_path.with_name(json_path.name + ".tmp")
    save_file(tensors, str(tmp_w), metadata={"format": FORMAT, "arch": config["arch"]})
    tmp_j.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    os.replace(tmp_w, weights_path)
    os.replace(tmp_j, json_path)
    return weights_path


def _task_keys(model: nn.Module, shape: list[int] | None) -> dict[str, Any]:
    """``task`` and ``kind`` of a model that declares them, and for a grid task
    ``output_dead_zones``: ``[{"outputs": [start, stop], **dead_zone_summary}, ...]``, one per
    cell (absent for other models, so their JSON is unchanged)."""
    out: dict[str, Any] = {}
    info = describe(model)
    task = dict(info.task) if info.task is not None else None
    for key, value in (("task", task), ("kind", info.kind)):
        if value is not None:
            out[key] = _jsonable(value, key)
    groups = output_groups(model)
    if len(groups) > 1 and shape is not None:
        zones = dead_zones(model, tuple(shape), [range(a, b) for a, b in groups])
        out["output_dead_zones"] = [
            {"outputs": [a, b], **dead_zone_summary(zone)} for (a, b), zone in zip(groups, zones)
        ]
    return out


def _read_json(json_path: Path) -> dict[str, Any]:
    if not json_path.is_file():
        raise CamwallError(
            f"checkpoint metadata {json_path} not found; a checkpoint is NAME.safetensors + "
            "NAME.json written by camwall.walls.save_model (or `camwall train`)."
        )
    try:
        record = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CamwallError(f"checkpoint metadata {json_path} is not valid JSON: {err}") from None
    except RecursionError:
        raise CamwallError(
            f"checkpoint metadata {json_path} is nested too deeply to be a camwall checkpoint "
            "(save_model writes a few levels); the file was modified or is not one."
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CamwallError(f'{json_path} is not a camwall checkpoint (no "format": "{FORMAT}").')
    _check_version(record.get("version", VERSION), json_path)
    arch = record.get("arch")
    if not isinstance(arch, str) or (arch not in MODELS and arch not in _EXTERNAL):
        raise CamwallError(
            f"{json_path}: unknown architecture {arch!r}; known: "
            f"{', '.join([*MODELS.names(), *_EXTERNAL])}."
        )
    if not isinstance(record.get("arch_kwargs", {}), dict):
        raise CamwallError(f"{json_path}: arch_kwargs must be a JSON object.")
    return record


def _check_version(version: Any, json_path: Path) -> None:
    """Only format :data:`VERSION` is read (a file without ``version`` is taken as it): a
    newer file may mean something this camwall would misread, so it is refused."""
    if isinstance(version, bool) or not isinstance(version, int) or version != VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > VERSION
        advice = (
            "it was written by a newer camwall; upgrade camwall to load it"
            if newer
            else "the file was modified or is not a camwall checkpoint"
        )
        raise CamwallError(
            f"{json_path}: checkpoint version {str(version)[:40]!s} is not {VERSION}, the "
            f"version this camwall reads; {advice}."
        )


def _rebuild(record: dict[str, Any], json_path: Path) -> nn.Module:
    """The architecture that ``record`` names, with its walls checked against the record."""
    arch, kwargs = record["arch"], record.get("arch_kwargs", {})
    try:
        rebuild = _EXTERNAL.get(arch)
        model = rebuild(kwargs) if rebuild is not None else create_model(arch, **kwargs)
    except (CamwallError, TypeError, ValueError, RuntimeError) as err:
        raise CamwallError(f"{json_path}: cannot rebuild {arch}: {err}") from None
    if record.get("wall", []) != walls_of(model):
        raise CamwallError(
            f"{json_path}: the recorded wall {record.get('wall')} is not the wall of "
            f"{arch} {kwargs} ({walls_of(model)}); the metadata was modified; refusing to load it."
        )
    check_inserted_walls(model, str(json_path))
    return model


def _check_record(record: dict[str, Any], model: nn.Module, json_path: Path) -> None:
    """The keys that readers of the metadata use must agree with the rebuilt model:
    ``input_shape`` (its ``[C, H, W]``), ``target_layer`` (one of its layers) and
    ``class_names`` (strings, one per output); each may be null."""
    arch = record["arch"]
    shape = record.get("input_shape")
    if shape is not None:
        own = tuple(model_config(model)["input_shape"] or ())
        if input_shape_of(shape, f"{json_path}: input_shape") != own:
            raise CamwallError(
                f"{json_path}: input_shape {shape} is not the input shape of {arch} "
                f"({' x '.join(map(str, own))}); the metadata was modified. Fix the key or "
                "remove it."
            )
    layer = record.get("target_layer")
    if layer is not None and layer != "":
        names = {n for n, _ in model.named_modules()}
        if not isinstance(layer, str) or layer not in names:
            raise CamwallError(
                f"{json_path}: target_layer {layer!r} is not a layer of {arch}"
                f"{did_you_mean(str(layer), sorted(n for n in names if n))}"
            )
    names_ = record.get("class_names")
    classes = model_config(model)["arch_kwargs"].get("num_classes")
    if names_ is not None and (
        not isinstance(names_, list)
        or not all(isinstance(n, str) for n in names_)
        or (isinstance(classes, int) and len(names_) != classes)
    ):
        raise CamwallError(
            f"{json_path}: class_names must be a list of {classes or 'the model outputs'} "
            f"strings (or null), got {str(names_)[:80]}."
        )


def _load_tensors(model: nn.Module, weights_path: Path, record: dict[str, Any]) -> None:
    """Read the safetensors file, check it (finite values, intact walls), load it strictly."""
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CamwallError(
            f"checkpoint weights {weights_path} cannot be read ({err}); the file is corrupt or "
            "not a safetensors file."
        ) from None
    check_finite_state(tensors, str(weights_path))
    check_wall_zeros(model, tensors, str(weights_path))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        msg = str(err).splitlines()
        raise CamwallError(
            f"checkpoint weights {weights_path} do not fit {record['arch']} "
            f"{record.get('arch_kwargs')}: {' '.join(m.strip() for m in msg[:4])}"
        ) from None


def load_model(
    path: str | os.PathLike[str], device: str | torch.device | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_model`.

    Rebuilds the architecture from the registry (``arch``, ``arch_kwargs``; ``arch ==
    "torchvision"``: :func:`~camwall.walls.walled_torchvision`), checks that the walls
    recorded in the JSON are the architecture's and present as modules, that ``input_shape``,
    ``target_layer`` and ``class_names`` fit the model, that every weight is finite and every
    walled weight exactly 0, then loads the weights strictly with ``safetensors``.

    Args:
        path: ``NAME``, ``NAME.safetensors`` or ``NAME.json``.
        device: where to put the model (default: CPU).

    Returns:
        ``(model in eval mode, metadata dict)``; the model's description
        (:func:`~camwall.walls.describe`) also holds the ``class_names``.

    Raises:
        CamwallError: naming the file (and the key or parameter), when a file is missing or
        corrupt, the architecture is unknown, the metadata is malformed or does not fit the
        model, the weights do not fit it or hold NaN/Inf, or a wall was tampered with.
    """
    weights_path, json_path = checkpoint_paths(path)
    record = _read_json(json_path)
    if not weights_path.is_file():
        raise CamwallError(
            f"checkpoint weights {weights_path} not found (next to {json_path.name})."
        )
    model = _rebuild(record, json_path)
    _load_tensors(model, weights_path, record)
    _check_record(record, model, json_path)
    if record.get("class_names") is not None:
        declare(model, class_names=tuple(record["class_names"]))
    if device is not None:
        model.to(device)
    model.eval()
    return model, record
