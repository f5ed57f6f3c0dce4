"""Train a walled/baseline pair once and reuse it: ``cached_pair(preset)``.

Cache layout: ``<cache>/train/<preset>-<hash16>/{walled,baseline}.safetensors|.json``, where
``<cache>`` is ``cache_dir``, else ``$CAMWALL_CACHE``, else ``~/.cache/camwall``, and ``hash16``
is the first 16 hex digits of :func:`camwall.train.config_hash` of the final config and the
camwall version. An entry is used only if both models load with
:func:`camwall.walls.load_model` (which checks the safetensors, the JSON and that the wall is
intact) and their metadata names the same config; otherwise it is retrained in a temporary folder
and moved into place. One process fills an entry at a time (``fcntl.flock`` on
``<cache>/train/.<preset>-<hash16>.lock``); another one waits, then re-checks the entry and uses
it instead of training again.
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
from camwall.runtime import file_lock
from camwall.train._config import TrainConfig, pair_cache_key
from camwall.train._run import resolve_config, train

__all__ = ["cache_root", "cached_pair", "pair_cache_folder"]


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


def pair_cache_folder(
    preset: str | TrainConfig,
    cache_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """``<cache>/train/<preset>-<hash16>``: the cache entry of the preset's pair (which may not
    exist yet). ``hash16`` comes from :func:`camwall.runtime.cache_key` of the weight-relevant
    config fields and the camwall version."""
    config = resolve_config(preset, overrides)
    return cache_root(cache_dir) / "train" / pair_cache_key(config, camwall.__version__)


def _paths(folder: Path) -> tuple[Path, Path]:
    return folder / "walled.safetensors", folder / "baseline.safetensors"


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
    retrained; nothing else in the cache is touched. One process trains an entry at a time: the
    others wait on ``<cache>/train/.<key>.lock`` (saying so on stderr) and then use its result.
    """
    config = resolve_config(preset, overrides)
    folder = pair_cache_folder(config, cache_dir)
    if folder.is_dir() and _entry_ok(folder, config):
        return _paths(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.parent / f".{folder.name}.lock"
    with file_lock(lock, f"the training cache entry {folder}", wait=True):
        if not (folder.is_dir() and _entry_ok(folder, config)):  # another process filled it?
            _train_into(config, folder, device, progress)
    if not _entry_ok(folder, config):
        raise CamwallError(
            f"the freshly trained pair in {folder} does not load back; delete {folder} and retry."
        )
    return _paths(folder)


def _train_into(config: TrainConfig, folder: Path, device: str, progress: bool | None) -> None:
    """Train the pair in a temporary sibling folder and move it into place (under the lock)."""
    tmp = folder.parent / f".{folder.name}.tmp{os.getpid()}"
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
