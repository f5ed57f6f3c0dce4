"""Checkpoints: ``NAME.safetensors`` (weights) + ``NAME.json`` (architecture and metadata).

No pickle: weights are read with ``safetensors`` and the architecture is rebuilt from the
:data:`~camwall.walls.MODELS` registry, or (``arch="torchvision"``) by
:func:`~camwall.walls.walled_torchvision` from the recorded name and walls. The wall is part
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
from camwall.errors import CamwallError
from camwall.walls._deadzone import dead_zone, dead_zone_summary
from camwall.walls._models import MODELS, create_model, model_config, unwrap
from camwall.walls._modules import WalledLinear, walls_of
from camwall.walls._torchvision import TORCHVISION_ARCH, check_inserted_walls, rebuild_torchvision

__all__ = ["checkpoint_paths", "load_model", "save_model"]

FORMAT = "camwall-checkpoint"
VERSION = 1


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
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CamwallError(f'{json_path} is not a camwall checkpoint (no "format": "{FORMAT}").')
    arch = record.get("arch")
    if not isinstance(arch, str) or (arch not in MODELS and arch != TORCHVISION_ARCH):
        raise CamwallError(
            f"{json_path}: unknown architecture {arch!r}; known: "
            f"{', '.join([*MODELS.names(), TORCHVISION_ARCH])}."
        )
    if not isinstance(record.get("arch_kwargs", {}), dict):
        raise CamwallError(f"{json_path}: arch_kwargs must be a JSON object.")
    return record


def _check_walls(model: nn.Module, tensors: dict[str, torch.Tensor], weights_path: Path) -> None:
    for name, m in model.named_modules():
        if not isinstance(m, WalledLinear):
            continue
        key = f"{name}.weight" if name else "weight"
        w = tensors.get(key)
        if w is None or tuple(w.shape) != tuple(m.weight.shape):
            continue  # reported by the strict load
        c, h, wd = m.feature_shape
        rows = slice(*m.wall.rows) if m.wall.rows is not None else slice(None)
        cols = slice(*m.wall.cols) if m.wall.cols is not None else slice(None)
        walled = w.view(m.out_features, c, h, wd)[:, :, rows, cols]
        bad = int(torch.count_nonzero(walled))
        if bad:
            worst = float(walled.abs().max())
            raise CamwallError(
                f"{weights_path}: the wall of layer {name!r} is broken: {bad} weights that must "
                f"be exactly 0 are not (max |w| = {worst:.3g}). The file was modified or trained "
                "without enforce_walls; refusing to load it."
            )


def load_model(
    path: str | os.PathLike[str], device: str | torch.device | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_model`.

    Rebuilds the architecture from the registry (``arch``, ``arch_kwargs``; ``arch ==
    "torchvision"``: :func:`~camwall.walls.walled_torchvision`), checks that the walls
    recorded in the JSON are the architecture's and present as modules, checks that every
    walled weight in the file is exactly 0, then loads the weights strictly with
    ``safetensors``.

    Args:
        path: ``NAME``, ``NAME.safetensors`` or ``NAME.json``.
        device: where to put the model (default: CPU).

    Returns:
        ``(model in eval mode, metadata dict)``.

    Raises:
        CamwallError: naming the file, when a file is missing or corrupt, the architecture is
        unknown, the weights do not fit it, or a wall was tampered with.
    """
    weights_path, json_path = checkpoint_paths(path)
    record = _read_json(json_path)
    if not weights_path.is_file():
        raise CamwallError(
            f"checkpoint weights {weights_path} not found (next to {json_path.name})."
        )
    try:
        if record["arch"] == TORCHVISION_ARCH:
            model = rebuild_torchvision(record.get("arch_kwargs", {}))
        else:
            model = create_model(record["arch"], **record.get("arch_kwargs", {}))
    except (CamwallError, TypeError, ValueError) as err:
        raise CamwallError(f"{json_path}: cannot rebuild {record['arch']}: {err}") from None
    if record.get("wall", []) != walls_of(model):
        raise CamwallError(
            f"{json_path}: the recorded wall {record.get('wall')} is not the wall of "
            f"{record['arch']} {record.get('arch_kwargs')} ({walls_of(model)}); the metadata was "
            "modified; refusing to load it."
        )
    check_inserted_walls(model, str(json_path))
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CamwallError(
            f"checkpoint weights {weights_path} cannot be read ({err}); the file is corrupt or "
            "not a safetensors file."
        ) from None
    _check_walls(model, tensors, weights_path)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        msg = str(err).splitlines()
        raise CamwallError(
            f"checkpoint weights {weights_path} do not fit {record['arch']} "
            f"{record.get('arch_kwargs')}: {' '.join(m.strip() for m in msg[:4])}"
        ) from None
    if device is not None:
        model.to(device)
    model.eval()
    return model, record
