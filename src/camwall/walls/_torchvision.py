"""Walled torchvision classifiers that can be saved, rebuilt and given external weights.

:func:`walled_torchvision` builds ``torchvision.models.get_model(name, weights=None, ...)``
(never a download) and inserts a :class:`~camwall.walls.Wall` after each named layer. The
model records ``arch="torchvision"`` and ``arch_kwargs={"name", "walls", "num_classes",
"input_shape", ...}``, so :func:`~camwall.walls.save_model` / :func:`~camwall.walls.load_model`
round-trip it. :func:`load_weights` loads a plain state dict (``.safetensors``, or
``.pt``/``.pth`` through ``torch.load(weights_only=True)``) written from the *unwalled*
network: the names shift that :func:`~camwall.walls.insert_wall` causes (``layer2.x`` ->
``layer2.0.x``) are applied automatically.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from camwall.errors import CamwallError, did_you_mean
from camwall.walls._checks import (
    check_finite_state,
    check_wall_zeros,
    class_count,
    input_shape_of,
)
from camwall.walls._models import _tag, default_target_layer
from camwall.walls._modules import Wall, insert_wall, walls_of
from camwall.walls._parse import parse_wall
from camwall.walls._spec import WallSpec
from camwall.walls._swin import is_swin, wall_named_swin
from camwall.walls._vit_any import (
    is_vision_transformer,
    refuse_windowed,
    vit_input_shape,
    wall_named_vit,
)

__all__ = [
    "TORCHVISION_ARCH",
    "check_inserted_walls",
    "load_weights",
    "plain_to_walled_names",
    "rebuild_torchvision",
    "torchvision_names",
    "walled_torchvision",
]

#: The ``arch`` recorded by :func:`walled_torchvision` (and read by ``load_model``).
TORCHVISION_ARCH = "torchvision"

WallsArg = (
    Mapping[str, "WallSpec | Mapping[str, Any] | str"]
    | Iterable["tuple[str, WallSpec | Mapping[str, Any] | str] | Mapping[str, Any] | str"]
    | None
)


def torchvision_names() -> list[str]:
    """Names of torchvision's image classifiers (``torchvision.models.list_models``)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _spec(value: Any, layer: str) -> WallSpec:
    if isinstance(value, WallSpec):
        return value
    if isinstance(value, Mapping):
        return WallSpec.from_dict(value)
    if isinstance(value, str):
        return parse_wall(f"{layer}:{value}")[1]
    raise CamwallError(
        f"wall for layer {layer!r}: {value!r} is not a WallSpec, a {{'rows', 'cols'}} dict or "
        "a region string such as 'rows=4:'."
    )


def _walls(walls: WallsArg) -> list[tuple[str, WallSpec]]:
    """Normalise every accepted form of ``walls`` to ``[(layer, WallSpec)]``."""
    if walls is None:
        return []
    if isinstance(walls, str):
        walls = [walls]
    items: Iterable[Any] = walls.items() if isinstance(walls, Mapping) else walls
    out: list[tuple[str, WallSpec]] = []
    for item in items:
        if isinstance(item, str):
            out.append(parse_wall(item))
        elif isinstance(item, Mapping):
            extra = set(item) - {"layer", "region", "kind"}
            if "layer" not in item or "region" not in item or extra:
                raise CamwallError(
                    f"wall {dict(item)!r}: a wall dict has keys 'layer' and 'region' (as written "
                    "in a checkpoint's arch_kwargs), e.g. {'layer': 'layer3', 'region': "
                    "{'rows': [4, None], 'cols': None}}."
                )
            if item.get("kind", "wall") != "wall":
                raise CamwallError(
                    f"wall {dict(item)!r}: walled_torchvision inserts Wall modules only "
                    "(kind 'wall')."
                )
            out.append((str(item["layer"]), _spec(item["region"], str(item["layer"]))))
        elif isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str):
            out.append((item[0], _spec(item[1], item[0])))
        else:
            raise CamwallError(
                f"wall {item!r}: give (layer, WallSpec) pairs, a {{layer: WallSpec}} dict or "
                "strings such as 'layer3:rows=4:'."
            )
    return out


def _shift(name: str, layers: Sequence[str]) -> str:
    """Where ``name`` of the unwalled model lives after walls were inserted after ``layers``
    (in that order): each insertion after ``L`` turns ``L`` into ``L.0`` and ``L.x`` into
    ``L.0.x``."""
    for layer in layers:
        if name == layer:
            name = f"{layer}.0"
        elif name.startswith(layer + "."):
            name = f"{layer}.0.{name[len(layer) + 1 :]}"
    return name


def plain_to_walled_names(model: nn.Module, names: Iterable[str]) -> dict[str, str]:
    """Map state-dict (or module) names of the unwalled network to ``model``'s names.

    Uses the walls recorded on ``model`` (:func:`~camwall.walls.walls_of`): a wall inserted
    after ``layer2`` turns ``layer2.x`` into ``layer2.0.x``. Names of walls of kind
    ``linear`` (:func:`~camwall.walls.wall_head`) do not move.
    """
    layers = [e["layer"] for e in walls_of(model) if e.get("kind") == "wall"]
    return {n: _shift(n, layers) for n in names}


def check_inserted_walls(model: nn.Module, where: str = "model") -> None:
    """Check that every wall of kind ``wall`` recorded on ``model`` is a :class:`Wall` module
    with the recorded region at ``f"{layer}.1"`` (inserted by :func:`insert_wall`; names as
    they were at insertion time) or at ``layer`` (a builder's own wall module).

    Raises:
        CamwallError: naming ``where`` when a recorded wall is missing or different.
    """
    entries = [e for e in walls_of(model) if e.get("kind") == "wall"]
    for i, entry in enumerate(entries):
        layer = str(entry["layer"])
        # Later insertions after an ancestor of ``layer`` moved it.
        later = [str(e["layer"]) for e in entries[i + 1 :]]
        region = WallSpec.from_dict(entry["region"])
        found: list[str] = []
        # Inserted by insert_wall (``layer.1``), or a builder's own Wall module (``layer``).
        for name in (_shift(f"{layer}.1", later), _shift(layer, later)):
            try:
                module = model.get_submodule(name)
            except AttributeError:
                continue
            if isinstance(module, Wall) and module.spec == region:
                break
            found.append(f"{name!r} is {type(module).__name__}")
        else:
            raise CamwallError(
                f"{where}: the wall recorded after layer {layer!r} ({region.describe()}) is not "
                f"in the model ({', '.join(found) or 'no such module'}); refusing it."
            )


def walled_torchvision(
    arch: str,
    walls: WallsArg = None,
    num_classes: int = 1000,
    *,
    input_shape: Sequence[int] | None = None,
    seed: int | None = None,
    **arch_kwargs: Any,
) -> nn.Module:
    """A torchvision classifier with a :class:`Wall` inserted after each named layer.

    ``torchvision.models.get_model(arch, weights=None, num_classes=num_classes,
    **arch_kwargs)`` (randomly initialised; weights are never downloaded: load them with
    :func:`load_weights`), then :func:`~camwall.walls.insert_wall` for each ``(layer, spec)``
    in order. The CAM target layer is the network's last feature layer
    (:func:`~camwall.walls.default_target_layer` of the unwalled network, e.g. ``layer4`` of a
    ResNet), read *before* a wall placed right after it (``layer4.0``).

    Args:
        arch: a torchvision classifier name (see :func:`torchvision_names`), e.g. ``resnet18``.
        walls: ``[(layer, WallSpec)]``, ``{layer: WallSpec}``, or strings ``"layer3:rows=4:"``
            (:func:`~camwall.walls.parse_wall`); a spec may also be a ``{"rows", "cols"}`` dict
            or a region string ``"rows=4:"``. Layer names are those of the model as it is when
            that wall is inserted.
        num_classes: classifier outputs.
        input_shape: ``(C, H, W)`` recorded for the dead zone in checkpoints (the network
            itself usually takes other sizes too); default ``(3, 224, 224)``, for a Vision
            Transformer its own input size (``image_size``).
        seed: seeds the initialisation (without touching the global RNG); None uses the
            global RNG.
        **arch_kwargs: other JSON-ready keyword arguments of the torchvision builder (e.g.
            ``dropout=0.2``, ``aux_logits=False``).

    Returns:
        The walled model, recording ``arch="torchvision"`` and ``arch_kwargs`` for
        :func:`~camwall.walls.model_config` / :func:`~camwall.walls.save_model`.

    Raises:
        CamwallError: for an unknown name (with a suggestion), a ``weights`` argument, bad
        builder arguments, or a layer that does not exist.
    """
    _check_builder_args(arch, arch_kwargs)
    class_count(num_classes, f"walled_torchvision({arch!r}): num_classes")
    where = f"walled_torchvision({arch!r})"
    shape = input_shape_of(input_shape or (3, 224, 224), f"{where}: input_shape")
    parsed = _walls(walls)
    model = _build_plain(arch, num_classes, seed, arch_kwargs)
    target, placed = _place_walls(model, parsed, input_shape, shape, where)
    record = {
        "name": arch,
        "walls": [{"layer": layer, "region": spec.to_dict()} for layer, spec in parsed],
        "num_classes": num_classes,
        "input_shape": list(placed),
        **arch_kwargs,
    }
    _tag(model, TORCHVISION_ARCH, record, placed, target)
    return model


def _place_walls(
    model: nn.Module,
    walls: Sequence[tuple[str, WallSpec]],
    input_shape: Sequence[int] | None,
    shape: tuple[int, int, int],
    where: str,
) -> tuple[str | None, tuple[int, int, int]]:
    """Wall ``model`` in place: a Vision Transformer on its patch grid (masked attention, its
    own input size unless ``input_shape`` is given), any other network after named layers
    (windowed transformers refused). Returns the target layer and the recorded input shape."""
    if is_vision_transformer(model):
        return wall_named_vit(model, walls, where), vit_input_shape(model, input_shape, where)
    if is_swin(model):  # on its patch grid, aligned to its coarsest grid
        return wall_named_swin(model, walls, shape, where)
    refuse_windowed(model, where)
    return _insert_walls(model, walls), shape


def _insert_walls(model: nn.Module, walls: Sequence[tuple[str, WallSpec]]) -> str | None:
    """Insert ``walls`` in order; returns the unwalled model's default target layer under its
    new name (None when it has none)."""
    try:
        target: str | None = default_target_layer(model)
    except CamwallError:
        target = None
    for layer, spec in walls:
        insert_wall(model, layer, spec)
    return None if target is None else _shift(target, [layer for layer, _ in walls])


def _check_builder_args(arch: str, arch_kwargs: Mapping[str, Any]) -> None:
    """A known classifier name, no weight download, JSON-ready builder arguments."""
    names = torchvision_names()
    if arch not in names:
        raise CamwallError(
            f"unknown torchvision classifier {arch!r}.{did_you_mean(arch, names)} Known: "
            f"{', '.join(names)}."
        )
    for key in ("weights", "pretrained", "progress"):
        if key in arch_kwargs:
            raise CamwallError(
                f"walled_torchvision({arch!r}, {key}=...): weights are never downloaded; build "
                "the model, then camwall.walls.load_weights(model, FILE.safetensors)."
            )
    try:
        json.dumps(arch_kwargs, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise CamwallError(
            f"walled_torchvision({arch!r}): builder arguments {sorted(arch_kwargs)} must be "
            f"JSON-ready (numbers, strings, lists, dicts) to be saved and rebuilt ({err})."
        ) from None


def _build_plain(
    arch: str, num_classes: int, seed: int | None, arch_kwargs: Mapping[str, Any]
) -> nn.Module:
    """``torchvision.models.get_model(arch, weights=None, ...)``, seeded without touching the
    global RNG when ``seed`` is given."""
    import torchvision

    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise CamwallError(f"walled_torchvision({arch!r}): seed must be an integer, got {seed!r}.")
    try:
        if seed is None:
            return torchvision.models.get_model(
                arch, weights=None, num_classes=num_classes, **arch_kwargs
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torchvision.models.get_model(
                arch, weights=None, num_classes=num_classes, **arch_kwargs
            )
    except (TypeError, ValueError, RuntimeError) as err:
        raise CamwallError(f"cannot build torchvision {arch!r} with {arch_kwargs}: {err}") from None


def rebuild_torchvision(kwargs: Mapping[str, Any]) -> nn.Module:
    """:func:`walled_torchvision` from a recorded ``arch_kwargs`` (``name`` is the arch)."""
    kw = dict(kwargs)
    if "name" not in kw:
        raise CamwallError("arch_kwargs of a torchvision model need 'name' (e.g. 'resnet18').")
    name = kw.pop("name")
    if not isinstance(name, str):
        raise CamwallError(f"arch_kwargs name {name!r} is not a string.")
    return walled_torchvision(name, **kw)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CamwallError(
                f"weights {path} cannot be read ({err}); the file is corrupt or not a "
                "safetensors file."
            ) from None
    if suffix in (".pt", ".pth"):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as err:
            raise CamwallError(
                f"weights {path} is not a plain state dict ({_load_failure(err)}); camwall "
                "never unpickles Python objects: save model.state_dict() (not the model "
                "object), or convert it with safetensors.torch.save_file."
            ) from None
        if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            hint = (
                f" (keys: {', '.join(map(str, list(state)[:6]))})"
                if isinstance(state, Mapping)
                else ""
            )
            raise CamwallError(
                f"weights {path} holds a {type(state).__name__}{hint}, not a state dict of "
                "named tensors; save model.state_dict() itself."
            )
        return dict(state)
    raise CamwallError(
        f"weights {path}: unknown format {suffix or '(no suffix)'!r}; give a .safetensors state "
        "dict (or .pt/.pth holding only a state dict)."
    )


def _load_failure(err: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in our words: never torch's
    advice to retry with ``weights_only=False`` (which would run the file's code)."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds the Python object {found.group(1)}, which only unpickling could build"
    if "Weights only load failed" in text or "operand" in text:
        return "it is not a file that torch.save wrote from tensors only"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return first[:200]


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a state dict file into ``model`` strictly, in place.

    The file may use ``model``'s own names, or the names of the same network *without* the
    walls inserted by :func:`~camwall.walls.insert_wall` (an ordinary torchvision export: a
    wall after ``layer2`` turns ``layer2.x`` into ``layer2.0.x``; see
    :func:`plain_to_walled_names`). A ``module.`` prefix on every key (DistributedDataParallel)
    is removed. Walled weights of :class:`~camwall.walls.WalledLinear` layers must be exactly 0.

    Args:
        model: the (walled) model.
        path: ``.safetensors`` (read with safetensors), or ``.pt``/``.pth`` read with
            ``torch.load(weights_only=True)``, which must hold a plain state dict.

    Returns:
        ``model``.

    Raises:
        CamwallError: naming the file, when it is missing, unreadable, not a state dict, does
        not fit the model (missing/unexpected keys, shapes), or breaks a wall.
    """
    p = Path(path)
    if not p.is_file():
        raise CamwallError(f"weights {p} not found.")
    state = _read_state(p)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    own = set(model.state_dict())
    if set(state) != own:
        mapping = plain_to_walled_names(model, state)
        if len(set(mapping.values())) == len(mapping) and set(mapping.values()) == own:
            state = {mapping[k]: v for k, v in state.items()}
        else:
            missing = sorted(own - set(state) - set(mapping.values()))
            unexpected = sorted(k for k in state if k not in own and mapping[k] not in own)
            raise CamwallError(
                f"weights {p} do not fit {type(model).__name__}: missing {len(missing)} keys "
                f"{missing[:4]}, unexpected {len(unexpected)} keys {unexpected[:4]} (also tried "
                "the names of the network without its walls). Pass weights of the same "
                "architecture and number of classes."
            )
    check_finite_state(state, f"weights {p}")
    check_wall_zeros(model, state, f"weights {p}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        msg = " ".join(line.strip() for line in str(err).splitlines()[:4])
        raise CamwallError(f"weights {p} do not fit {type(model).__name__}: {msg}") from None
    return model
