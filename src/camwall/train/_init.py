"""Initial weights of a fine-tuning run: ``camwall train --init WEIGHTS``.

``WEIGHTS`` is one of

* ``shipped:PRESET-VARIANT``: a checkpoint that ships with camwall
  (:data:`camwall.weights.SHIPPED_MODELS`, e.g. ``shipped:fashion-vgg-baseline``);
* a camwall checkpoint (``NAME.safetensors`` + ``NAME.json``, read by
  :func:`camwall.walls.load_model`, which checks it);
* a plain state dict: ``.safetensors``, or ``.pt``/``.pth`` read with
  ``torch.load(weights_only=True)`` (never unpickled), with the names of the network *without*
  its walls (or of the walled one).

:func:`load_init` puts those weights into the freshly built walled model: names moved by an
inserted wall (``layer3.x`` -> ``layer3.0.x``) are mapped
(:func:`camwall.walls._torchvision.plain_to_walled_names`), the buffers that define a wall (a
walled ViT's attention masks) stay the model's own, and the walled weights of every
:class:`~camwall.walls.WalledLinear` are then set to exactly 0
(:func:`camwall.walls.enforce_walls`). Every other tensor equals the file's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from camwall.errors import CamwallError, did_you_mean
from camwall.train._config import TrainConfig

__all__ = [
    "SHIPPED_PREFIX",
    "InitSource",
    "file_sha256",
    "insert_init",
    "load_init",
    "load_unwalled",
    "read_init",
    "resolve_init",
    "shipped_names",
]

SHIPPED_PREFIX = "shipped:"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class InitSource:
    """Where the initial weights come from.

    Attributes:
        spec: as given (``--init``).
        path: the weights file (``.safetensors`` of a checkpoint).
        kind: ``"checkpoint"`` (a camwall checkpoint, shipped ones included) or
            ``"state-dict"``.
        sha256: SHA-256 (hex) of the weights file.
    """

    spec: str
    path: Path
    kind: str
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"source": self.spec, "path": str(self.path), "kind": self.kind,
                "sha256": self.sha256}  # fmt: skip


def shipped_names() -> list[str]:
    """``PRESET-VARIANT`` of every shipped checkpoint (``fashion-vgg-baseline``, ...)."""
    from camwall.weights import SHIPPED_MODELS

    return [f"{p}-{v}" for p, variants in SHIPPED_MODELS.items() for v in variants]


def _shipped_path(name: str) -> Path:
    from camwall.weights import shipped_model

    preset, _, variant = name.rpartition("-")
    names = shipped_names()
    if name not in names:
        raise CamwallError(
            f"--init {SHIPPED_PREFIX}{name}: no such shipped model.{did_you_mean(name, names)} "
            f"Shipped: {', '.join(SHIPPED_PREFIX + n for n in names)}."
        )
    return shipped_model(preset, variant)


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of the bytes of ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_checkpoint(path: Path) -> bool:
    """Whether ``path`` (``NAME``, ``.safetensors`` or ``.json``) has a camwall checkpoint's
    JSON next to it."""
    from camwall.walls import checkpoint_paths
    from camwall.walls._checkpoint import FORMAT

    json_path = checkpoint_paths(path)[1]
    try:
        record = json.loads(json_path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(record, dict) and record.get("format") == FORMAT


def resolve_init(spec: str) -> InitSource:
    """The :class:`InitSource` that ``spec`` names, its file hashed.

    Raises:
        CamwallError: an unknown shipped name (with the list), or no such file.
    """
    from camwall.walls import checkpoint_paths

    if spec.startswith(SHIPPED_PREFIX):
        path, kind = _shipped_path(spec[len(SHIPPED_PREFIX) :]), "checkpoint"
    else:
        path, kind = Path(spec), "state-dict"
        if _is_checkpoint(path):
            path, kind = checkpoint_paths(path)[0], "checkpoint"
        if not path.is_file():
            raise CamwallError(
                f"--init {spec}: no such file. Give a camwall checkpoint (NAME.safetensors + "
                "NAME.json), a state dict (.safetensors, or .pt/.pth holding only tensors) or "
                f"one of {', '.join(SHIPPED_PREFIX + n for n in shipped_names())}."
            )
    return InitSource(spec, path, kind, file_sha256(path))


def read_init(source: InitSource) -> tuple[dict[str, Tensor], str]:
    """``(state dict, what it is)`` of ``source``: a checkpoint through
    :func:`camwall.walls.load_model` (all its checks), a state dict file through the walls'
    reader (safetensors, or ``torch.load(weights_only=True)``)."""
    from camwall.walls import load_model
    from camwall.walls._torchvision import _read_state

    if source.kind == "checkpoint":
        model, record = load_model(source.path)
        return dict(model.state_dict()), f"a {record['arch']} checkpoint"
    return _read_state(source.path), "a state dict"


def _wall_buffers(model: nn.Module) -> set[str]:
    """State-dict keys of the buffers that define a wall: those of the layers that check
    their own wall state (``camwall_check_state``, e.g. a ViT's attention mask)."""
    own = set(model.state_dict())
    keys: set[str] = set()
    for name, module in model.named_modules():
        if callable(getattr(module, "camwall_check_state", None)):
            prefix = f"{name}." if name else ""
            keys |= {prefix + b for b, _ in module.named_buffers(recurse=False)} & own
    return keys


def _to_model_names(
    model: nn.Module, state: dict[str, Tensor], keep: set[str], where: str
) -> dict[str, Tensor]:
    """``state`` under ``model``'s names (those of the unwalled network mapped), without the
    wall buffers ``keep``; a CamwallError naming the missing and unexpected keys otherwise."""
    from camwall.walls._torchvision import plain_to_walled_names

    if state and all(k.startswith("module.") for k in state):  # saved from DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    own = set(model.state_dict()) - keep
    mapping = plain_to_walled_names(model, state)
    for names in ({k: k for k in state}, mapping):
        moved = {names[k]: v for k, v in state.items() if names[k] not in keep}
        if set(moved) == own and len(set(names.values())) == len(names):
            return moved
    missing = sorted(own - set(state) - set(mapping.values()))
    unexpected = sorted(k for k in state if k not in own and mapping[k] not in own | keep)
    raise CamwallError(
        f"{where} does not fit {describe_arch(model)}: missing {len(missing)} keys "
        f"{missing[:4]}, unexpected {len(unexpected)} keys {unexpected[:4]}. Give the weights "
        "of the same architecture (--arch, --arch-kwarg) and number of classes (--num-classes)."
    )


def describe_arch(model: nn.Module) -> str:
    """``arch`` and its keyword arguments, as recorded on ``model``."""
    from camwall.walls import model_config

    config = model_config(model)
    return f"{config['arch']} {config['arch_kwargs']}"


def _new_classifier(model: nn.Module, state: dict[str, Tensor]) -> list[str]:
    """The keys of ``model``'s classifier (its last ``nn.Linear``) that keep the model's fresh
    initialization: those whose shape in the file differs from the model's in the number of
    classes only (a 1000-class ImageNet head fine-tuned onto K classes). Any other mismatch is
    left to ``load_state_dict``'s error. ``state`` is updated in place."""
    own = model.state_dict()
    diff = {k for k, v in state.items() if k in own and own[k].shape != v.shape}
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not diff or not linears:
        return []
    head = {f"{linears[-1]}.weight", f"{linears[-1]}.bias"} & state.keys()
    if not diff <= head or any(own[k].shape[1:] != state[k].shape[1:] for k in diff):
        return []
    state.update({k: own[k] for k in head})
    return sorted(head)


def load_unwalled(model: nn.Module, source: InitSource) -> list[str]:
    """Load ``source``'s tensors into the walled ``model`` as they are (the walled weights
    not yet zeroed; the wall buffers stay the model's): :func:`load_init` before
    :func:`camwall.walls.enforce_walls`.

    Returns:
        The classifier keys that kept the model's fresh initialization because the file has
        another number of classes (:func:`_new_classifier`), else ``[]``.

    Raises:
        CamwallError: as :func:`load_init`.
    """
    from camwall.walls._checks import check_finite_state

    state, what = read_init(source)
    where = f"--init {source.spec} ({what})"
    keep = _wall_buffers(model)
    state = _to_model_names(model, state, keep, where)
    own = model.state_dict()
    state.update({k: own[k] for k in keep})
    check_finite_state(state, where)
    new_head = _new_classifier(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        msg = " ".join(line.strip() for line in str(err).splitlines()[:4])
        raise CamwallError(f"{where} does not fit {describe_arch(model)}: {msg}") from None
    return new_head


def load_init(model: nn.Module, source: InitSource) -> int:
    """Load ``source``'s weights into the walled ``model`` (see the module docstring).

    Returns:
        The number of walled weights that were not 0 in the file and are 0 now.

    Raises:
        CamwallError: naming the file, when it cannot be read or does not fit ``model``
        (missing or unexpected keys, shapes), or holds NaN/Inf.
    """
    from camwall.walls import enforce_walls

    load_unwalled(model, source)
    return enforce_walls(model)


def _evaluate(
    model: nn.Module, config: TrainConfig, val_set: Dataset[Any] | None, device: torch.device
) -> dict[str, Any] | None:
    """``{"val_top1", "val_top5", "val_loss", "n"}`` of ``model`` on the first
    ``config.val_limit`` examples of ``val_set`` (``None`` without validation data)."""
    from camwall.train._accuracy import evaluate_model
    from camwall.train._loop import limit_dataset

    if val_set is None:
        return None
    result = evaluate_model(
        model,
        limit_dataset(val_set, config.val_limit),
        batch_size=config.val_batch_size,
        device=device,
        amp=config.amp and device.type == "cuda",
    )
    return {"val_top1": result.top1, "val_top5": result.top5, "val_loss": result.loss,
            "n": result.n}  # fmt: skip


def _refit(
    model: nn.Module,
    originals: dict[str, tuple[Tensor, Tensor]],
    config: TrainConfig,
    train_set: Dataset[Any],
    device: torch.device,
) -> dict[str, Any]:
    """Refit the walled layers on the first ``config.refit`` training examples (epoch 0's
    draws; :func:`camwall.train._refit.refit_walled_layers`); the manifest's record."""
    from camwall.train._loop import _set_epoch, limit_dataset
    from camwall.train._refit import refit_walled_layers

    data = limit_dataset(limit_dataset(train_set, config.train_limit), config.refit)
    _set_epoch(data, 0)
    layers = refit_walled_layers(
        model, originals, data, config.refit_ridge, config.val_batch_size, device
    )
    return {"examples": len(data), "ridge": config.refit_ridge, "layers": layers}  # type: ignore[arg-type]


def insert_init(
    model: nn.Module,
    config: TrainConfig,
    val_set: Dataset[Any] | None,
    device: torch.device,
    train_set: Dataset[Any] | None = None,
) -> dict[str, Any]:
    """Load ``config.init`` into the walled ``model`` and measure it before any fine-tuning.

    Returns the record kept in the manifest and the checkpoint: :meth:`InitSource.to_json`,
    ``walled_weights_zeroed`` (:func:`load_init`) and ``inserted``: ``{"val_top1", "val_top5",
    "val_loss", "n"}`` of the walled model on ``val_set`` (its first ``config.val_limit``
    examples; ``None`` without validation data), the figures "right after the wall is
    inserted". With ``config.refit`` (and ``train_set``) the walled layers are then refitted
    (:mod:`camwall.train._refit`): ``refit`` records the examples, the ridge, the layers and,
    as ``refitted``, the same figures after the refit.

    Raises:
        CamwallError: the file's SHA-256 is no longer ``config.init_sha256`` (it changed since
        the run started), or :func:`load_init`'s errors.
    """
    from camwall.train._refit import walled_layers
    from camwall.walls import enforce_walls

    assert config.init is not None
    source = resolve_init(config.init)
    if config.init_sha256 is not None and source.sha256 != config.init_sha256:
        raise CamwallError(
            f"--init {config.init}: the file changed (SHA-256 {source.sha256[:16]}..., the run "
            f"was started from {config.init_sha256[:16]}...); fine-tune it into a new --out "
            "folder, or restore the file."
        )
    new_head = load_unwalled(model, source)
    originals = {n: (m.weight.detach().clone(), m.bias.detach().clone())
                 for n, m in walled_layers(model).items() if m.bias is not None}  # fmt: skip
    record: dict[str, Any] = {**source.to_json(), "walled_weights_zeroed": enforce_walls(model)}
    record["new_classifier"] = new_head  # fresh: the file has another number of classes
    record["inserted"] = _evaluate(model, config, val_set, device)
    if config.refit and train_set is not None and not new_head:  # nothing to refit to
        record["refit"] = _refit(model, originals, config, train_set, device)
        record["refit"]["refitted"] = _evaluate(model, config, val_set, device)
    return record
