"""Train a walled/baseline pair once and reuse it: ``cached_pair(preset)``.

Cache layout: ``<cache>/train/<preset>-<hash16>/{walled,baseline}.safetensors|.json``, where
``<cache>`` is ``cache_dir``, else ``$CAMWALL_CACHE``, else ``~/.cache/camwall``, and ``hash16``
is the first 16 hex digits of :func:`camwall.train.config_hash` of the final config and the
camwall version. An entry is used only if both models load with
:func:`camwall.walls.load_model` (which checks the safetensors, the JSON and that the wall is
intact) and their metadata names the same config; otherwise it is retrained in a temporary folder
and moved into place.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import camwall
from camwall.errors import CamwallError
from camwall.train._config import TrainConfig, config_hash
from camwall.train._run import resolve_config, train

__all__ = ["cache_root", "cached_pair"]


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$CAMWALL_CACHE``, else ``~/.cache/camwall``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("CAMWALL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "camwall"


def _entry_ok(folder: Path, config: TrainConfig) -> bool:
    from camwall.walls import load_model

    for variant in ("walled", "baseline"):
        try:
            _, meta = load_model(folder / f"{variant}.safetensors")
        except (CamwallError, OSError, ValueError, KeyError, RuntimeError):
            return False
        training = meta.get("training") or {}
        expected = json.loads(json.dumps(config.to_dict()))
        if training.get("config") != expected or training.get("variant") != variant:
            return False
        if not training.get("completed", False):
            return False
    return True


def cached_pair(
    preset: str | TrainConfig,
    cache_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    device: str = "auto",
    progress: bool | None = None,
) -> tuple[Path, Path]:
    """``(walled_path, baseline_path)`` of the preset's trained pair, training it if needed.

    A missing or corrupt entry (unreadable safetensors or JSON, tampered wall, other config) is
    retrained; nothing else in the cache is touched.
    """
    config = resolve_config(preset, overrides)
    key = f"{config.name}-{config_hash(config, camwall.__version__)[:16]}"
    root = cache_root(cache_dir) / "train"
    folder = root / key
    if folder.is_dir() and _entry_ok(folder, config):
        return folder / "walled.safetensors", folder / "baseline.safetensors"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        train(config, out_dir=tmp, device=device, progress=progress)
        for variant in ("walled", "baseline"):  # resumable state is not needed in the cache
            shutil.rmtree(tmp / variant / "checkpoints", ignore_errors=True)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not _entry_ok(folder, config):
        raise CamwallError(
            f"the freshly trained pair in {folder} does not load back; delete {folder} and retry."
        )
    return folder / "walled.safetensors", folder / "baseline.safetensors"
