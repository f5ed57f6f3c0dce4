"""Turn a command-line model name into a model: checkpoint, registry name or torchvision name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from camwall.errors import CamwallError, did_you_mean
from camwall.walls._checkpoint import checkpoint_paths, load_model
from camwall.walls._models import MODELS, create_model, default_target_layer, model_config
from camwall.walls._modules import walls_of
from camwall.walls._parse import format_wall, parse_wall
from camwall.walls._spec import WallSpec
from camwall.walls._torchvision import load_weights, torchvision_names, walled_torchvision

__all__ = ["is_checkpoint", "resolve_model"]


def is_checkpoint(spec: str) -> bool:
    """Whether ``spec`` names a checkpoint: it ends in ``.safetensors`` / ``.json``, contains a
    path separator, or ``spec.json`` exists (so a plain ``resnet18.safetensors`` export next to
    the working directory does not hide the torchvision name ``resnet18``)."""
    if spec.endswith((".safetensors", ".json")) or os.sep in spec or "/" in spec:
        return True
    return checkpoint_paths(spec)[1].is_file()


def resolve_model(
    spec: str,
    walls: Sequence[str | tuple[str, WallSpec]] = (),
    weights: str | os.PathLike[str] | None = None,
    *,
    baseline: bool = False,
    num_classes: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build or load the model that ``spec`` names, in this order:

    1. a checkpoint (``NAME``, ``NAME.safetensors`` or ``NAME.json``;
       :func:`~camwall.walls.load_model`, which refuses a tampered wall);
    2. a camwall registry name (:data:`~camwall.walls.MODELS`; ``baseline`` builds it with
       ``walled=False``);
    3. a torchvision classifier name, walled with ``walls``
       (:func:`~camwall.walls.walled_torchvision`, random weights unless ``weights``).

    Args:
        spec: the name or path.
        walls: ``"LAYER:rows=4:"`` strings (:func:`~camwall.walls.parse_wall`) or
            ``(layer, WallSpec)`` pairs; torchvision names only.
        weights: a state-dict file for a registry or torchvision model
            (:func:`~camwall.walls.load_weights`; the unwalled network's names are accepted).
        baseline: the registry model without its wall.
        num_classes: outputs of a registry or torchvision model (default: the builder's).

    Returns:
        ``(model in eval mode, meta)``; ``meta`` has ``label`` (for printing), ``source``
        (``checkpoint``, ``registry`` or ``torchvision``), ``weights`` (the file or None),
        the :func:`~camwall.walls.model_config` keys (``arch``, ``arch_kwargs``, ``wall``,
        ``input_shape``, ``target_layer``; for checkpoints, the checkpoint's metadata), and
        ``target_layer`` falls back to :func:`~camwall.walls.default_target_layer` (None when
        the model has none).

    Raises:
        CamwallError: for an unknown name (suggesting registry and torchvision names) or an
        option that does not apply to what ``spec`` names.
    """
    parsed = [parse_wall(w) if isinstance(w, str) else (w[0], w[1]) for w in walls]
    if is_checkpoint(spec):
        _refuse_options(spec, parsed, weights, baseline, num_classes)
        model, meta = _from_checkpoint(spec)
    else:
        extra: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
        model, label = _from_name(spec, parsed, baseline, extra)
        if weights is not None:
            load_weights(model, weights)
            label += f", weights {Path(weights).name}"
        source = "registry" if spec in MODELS else "torchvision"
        meta = {**model_config(model), "label": f"{spec} ({label})", "source": source}
        meta["weights"] = None if weights is None else str(weights)
    if not meta.get("target_layer"):
        try:
            meta["target_layer"] = default_target_layer(model)
        except CamwallError:
            meta["target_layer"] = None
    model.eval()
    return model, meta


def _refuse_options(
    spec: str,
    parsed: Sequence[tuple[str, WallSpec]],
    weights: object,
    baseline: bool,
    num_classes: int | None,
) -> None:
    """A checkpoint has its own walls and weights: the options for names do not apply."""
    for flag, given in (
        ("--wall", bool(parsed)),
        ("--weights", weights is not None),
        ("--baseline", baseline),
        ("--num-classes", num_classes is not None),
    ):
        if given:
            raise CamwallError(
                f"{flag} applies to model names, not to the checkpoint {spec!r} (it has "
                f"its own walls and weights); drop {flag}."
            )


def _from_checkpoint(spec: str) -> tuple[nn.Module, dict[str, Any]]:
    model, meta = load_model(spec)
    walled = meta.get("arch_kwargs", {}).get("walled")
    kind = "walled" if walled else "baseline" if walled is False else "custom"
    if meta.get("arch") in ("torchvision", "timm"):
        kind = _wall_label(meta.get("wall", []))
    label = f"{checkpoint_paths(spec)[0]} ({meta['arch']}, {kind})"
    return model, {**meta, "label": label, "source": "checkpoint", "weights": None}


def _from_name(
    spec: str, parsed: Sequence[tuple[str, WallSpec]], baseline: bool, extra: dict[str, Any]
) -> tuple[nn.Module, str]:
    """A registry or torchvision model by name, with the label part saying which."""
    if spec in MODELS:
        if parsed:
            raise CamwallError(
                f"--wall applies to torchvision names; the registry model {spec!r} has its wall "
                "built in (use --baseline for the same network without it)."
            )
        return create_model(spec, walled=not baseline, **extra), (
            "baseline" if baseline else "walled"
        )
    tv_names = torchvision_names()
    if spec in tv_names:
        if baseline and parsed:
            raise CamwallError("--baseline with --wall: leave out --wall for the unwalled network.")
        model = walled_torchvision(spec, parsed, **extra)
        return model, f"torchvision, {_wall_label(walls_of(model))}"
    names = [*MODELS.names(), *tv_names]
    raise CamwallError(
        f"--model {spec!r} is neither a checkpoint, a camwall model nor a torchvision "
        f"classifier.{did_you_mean(spec, names)} camwall models: "
        f"{', '.join(MODELS.names())}; torchvision: resnet18, vgg16, ... (see "
        "torchvision.models.list_models()); a checkpoint is NAME.safetensors + NAME.json."
    )


def _wall_label(walls: Sequence[dict[str, Any]]) -> str:
    if not walls:
        return "no wall"
    parts = [format_wall(e["layer"], WallSpec.from_dict(e["region"])) for e in walls]
    return f"wall {' '.join(parts)}"
