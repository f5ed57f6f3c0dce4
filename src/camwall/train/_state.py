"""Training state on disk without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder ``checkpoints/step-00001234/`` holding

* ``model.safetensors``: the model's ``state_dict``;
* ``state.safetensors``: every tensor of the optimizer state (``optimizer.<param>.<key>``) and
  the RNG states (``rng.torch``, ``rng.cuda.<i>``; uint8 tensors);
* ``state.json``: optimizer param groups and non-tensor state, scheduler and GradScaler state,
  Python and NumPy RNG states, epoch / step counters, running sums of the current epoch and the
  metric history.

The folder is written under a temporary name and renamed into place (``os.replace``), then
``checkpoints/latest.json`` (also replaced atomically) is pointed at it. A run killed at any
moment therefore leaves the previous complete checkpoint readable.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from camwall.errors import CamwallError
from camwall.train._config import TrainConfig

__all__ = [
    "METRIC_FIELDS",
    "atomic_write_text",
    "capture_rng",
    "check_resume_config",
    "latest_checkpoint",
    "read_checkpoint",
    "restore_rng",
    "write_checkpoint",
    "write_metrics",
]

_TENSOR = "__tensor__"
_KEEP = 2  # checkpoint folders kept per run


METRIC_FIELDS = (
    "epoch",
    "step",
    "partial",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_top1",
    "val_top5",
    "seconds",
    "images_per_second",
)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_metrics(run_dir: Path, history: Sequence[dict[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` and ``metrics.jsonl`` from the whole history (atomically)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k) for k in METRIC_FIELDS})
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))


# Options that may change when resuming; every other field must match the checkpoint's.
_RESUME_FREE = frozenset(
    {
        "epochs",
        "max_steps",
        "checkpoint_every",
        "num_workers",
        "threads",
        "val_limit",
        "val_batch_size",
        "data",
    }
)


def check_resume_config(saved: dict[str, Any], config: TrainConfig, where: Path) -> None:
    """Refuse to resume from ``where`` when a field outside :data:`_RESUME_FREE` (or, under
    ``onecycle``, the epoch count) differs between the checkpoint's config and ``config``."""
    now = json.loads(json.dumps(config.to_dict()))
    diff = [
        f"{k}={saved.get(k)!r} (now {now[k]!r})"
        for k in now
        if k not in _RESUME_FREE and k in saved and saved[k] != now[k]
    ]
    if config.scheduler == "onecycle" and saved.get("epochs", config.epochs) != config.epochs:
        diff.append(f"epochs={saved.get('epochs')!r} (now {config.epochs}; fixed by onecycle)")
    if diff:
        raise CamwallError(
            f"cannot resume from {where}: it was trained with {', '.join(diff)}. Resume with the "
            "same options (only --epochs, --max-steps and loader options may change), or train "
            "into a new --out folder."
        )


def _flatten(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """Replace every tensor in a nested dict/list by ``{"__tensor__": key}``."""
    if isinstance(obj, Tensor):
        key = prefix
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {_TENSOR: key}
    if isinstance(obj, Mapping):
        return {str(k): _flatten(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a checkpoint")


def _unflatten(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            return tensors[obj[_TENSOR]]
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def capture_rng() -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The torch (CPU and CUDA), Python and NumPy RNG states as (JSON part, tensors)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=True)  # noqa: NPY002 (saving the global state)
    assert isinstance(np_state, tuple)
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *(x for x in np_state[2:])],
    }
    return meta, tensors


def restore_rng(meta: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np_keys = np.asarray(keys, dtype=np.uint32)
    np.random.set_state((name, np_keys, pos, has_gauss, cached))  # noqa: NPY002


def write_checkpoint(
    run_dir: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    meta: Mapping[str, Any],
) -> Path:
    """Write a complete checkpoint of the run in ``run_dir/checkpoints`` and return its folder.

    ``meta`` (JSON-ready) holds the counters, running sums and history. RNG states are taken
    now, so call this at the exact point where training will continue.
    """
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step-{int(meta['step']):08d}"
    final = ckpt_root / name
    tmp = ckpt_root / f".{name}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    weights = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    tensors: dict[str, Tensor] = {}
    rng_meta, rng_tensors = capture_rng()
    tensors.update(rng_tensors)
    state = {
        "format": "camwall-train-state/1",
        "optimizer": _flatten(optimizer.state_dict(), "optimizer", tensors),
        "scheduler": _flatten(scheduler.state_dict(), "scheduler", tensors),
        "scaler": _flatten(scaler.state_dict(), "scaler", tensors),
        "rng": rng_meta,
        **meta,
    }
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(ckpt_root / "latest.json", json.dumps({"checkpoint": name}))
    old = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (_KEEP - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The folder that ``run_dir/checkpoints/latest.json`` points to, or ``None``."""
    pointer = run_dir / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
    except (ValueError, KeyError, TypeError) as err:
        raise CamwallError(
            f"{pointer}: unreadable checkpoint pointer ({err}); delete {run_dir / 'checkpoints'} "
            "to start over, or remove --resume."
        ) from None
    folder = run_dir / "checkpoints" / str(name)
    if not folder.is_dir():
        raise CamwallError(
            f"{pointer} points to {folder}, which does not exist; delete "
            f"{run_dir / 'checkpoints'} to start over, or remove --resume."
        )
    return folder


def read_checkpoint(
    folder: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`write_checkpoint` into the given objects.

    RNG states are restored too. Returns the JSON metadata (counters, sums, history).

    Raises:
        CamwallError: when a file is missing or corrupt, naming it.
    """
    try:
        weights = load_file(str(folder / "model.safetensors"))
        tensors = load_file(str(folder / "state.safetensors"))
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError, SafetensorError) as err:
        raise CamwallError(
            f"checkpoint {folder} is unreadable ({err}); delete it (or the whole checkpoints "
            "folder) and resume again, or train without --resume."
        ) from None
    if state.get("format") != "camwall-train-state/1":
        raise CamwallError(f"{folder / 'state.json'}: not a camwall training state.")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CamwallError(
            f"checkpoint {folder} does not fit the model being trained ({err}); "
            "resume with the same preset and architecture options."
        ) from None
    opt_state = _unflatten(state["optimizer"], tensors)
    opt_state["state"] = {int(k): v for k, v in opt_state["state"].items()}
    optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(_unflatten(state["scheduler"], tensors))
    scaler.load_state_dict(_unflatten(state["scaler"], tensors))
    restore_rng(state["rng"], tensors)
    return state
