"""The explainer protocol: ``(model, x, targets) -> B x H x W`` maps, and its post-processing.

Every explainer, whatever its source, ends in one of three output kinds, each turned into the
final ``B x H x W`` float32 map in [0, 1] by one rule:

- ``"input"``: an input attribution ``A`` of shape ``B x C x H x W`` (captum, guided backprop).
  ``L = N(sum_c |A_c|)``: absolute value, summed over channels, then min-max normalized.
- ``"layer"``: a low-resolution map ``B x h x w`` at a layer (captum's LayerGradCam, torchcam).
  Upsampled exactly like camwall's CAMs: :func:`camwall.cams.finalize_maps` (ReLU, ``N``,
  bilinear resize, clamp, ``N``).
- ``"map"``: a map already at input resolution ``B x H x W`` (pytorch-grad-cam). ``L = N(M)``.
- ``"final"``: already final (camwall's own CAMs and controls): returned as is.

``N(c) = (c - min c) / (1e-7 + max(c - min c))`` per image (:func:`camwall.cams.normalize_maps`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from camwall.cams import finalize_maps, normalize_maps
from camwall.errors import CamwallError

__all__ = [
    "FAMILIES",
    "SOURCES",
    "Call",
    "ExplainFn",
    "Explainer",
    "ExplainerSpec",
    "OutputKind",
    "finish_maps",
    "reduce_attributions",
]

OutputKind = Literal["input", "layer", "map", "final"]

#: family -> description; the bench groups its rows by family.
FAMILIES: dict[str, str] = {
    "cam": "CAM at a layer",
    "gradient": "input gradient",
    "perturbation": "perturbation",
    "control": "control",
    "other": "user callable without a declared family",
}
#: where an explainer comes from, with the pip extra that installs it (None: always there).
SOURCES: dict[str, str | None] = {
    "camwall": None,
    "captum": "captum",
    "pytorch-grad-cam": "gradcam",
    "torchcam": "torchcam",
    "user": None,
}


@runtime_checkable
class Explainer(Protocol):
    """Anything that maps ``(model, x B x C x H x W, targets) -> B x H x W`` float maps."""

    def __call__(
        self, model: nn.Module, x: Tensor, targets: Sequence[int] | None = None
    ) -> Tensor: ...


@dataclass(frozen=True)
class Call:
    """One call of an adapter.

    Attributes:
        name: the explainer's name (for error messages).
        model: the user's model (eval mode, parameters frozen for the call).
        forward: ``model`` with ``output_fn`` applied (a module returning B x K logits).
        x: B x C x H x W input, a detached copy (``requires_grad=True`` when the spec's
            ``input_grad``).
        targets: one class index per image.
        layer_name: dotted name of the target layer in ``model`` ("" when not needed).
        layer: the target-layer module (in both ``model`` and ``forward``), or None.
        output_fn: the user's ``output_fn`` (for camwall's own CAMs), or None.
        options: the explainer's options (keyword arguments of its source).
    """

    name: str
    model: nn.Module
    forward: nn.Module
    x: Tensor
    targets: list[int]
    layer_name: str
    layer: nn.Module | None
    output_fn: Callable[[Any], Tensor] | None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.x.shape[-2]), int(self.x.shape[-1]))


ExplainFn = Callable[[Call], Any]


@dataclass(frozen=True)
class ExplainerSpec:
    """A registry entry.

    Attributes:
        name: registry name (``gradcam``, ``captum:Saliency``, ``torchcam:SSCAM``, ...).
        family: a key of :data:`FAMILIES`.
        source: a key of :data:`SOURCES`.
        fn: the adapter, ``fn(call) -> Tensor | ndarray`` of the kind ``output``.
        output: how the raw output becomes the final map (see the module docstring).
        needs_layer: whether it reads a target layer (``target_layer`` or the model's default).
        module: the Python package it imports ("" for none); ``available`` checks it.
        stochastic: whether it draws random numbers (then it takes ``seed``).
        description: one line for tables.
        input_grad: whether the adapter gets ``x`` with ``requires_grad=True`` (gradient and
            CAM methods). Perturbation methods get a plain ``x``: an input that requires grad
            would make every perturbed forward pass build a graph (Lime: 30% slower).
    """

    name: str
    family: str
    source: str
    fn: ExplainFn
    output: OutputKind
    needs_layer: bool = False
    module: str = ""
    stochastic: bool = False
    description: str = ""
    input_grad: bool = True

    @property
    def extra(self) -> str | None:
        """The pip extra that installs this explainer's source (``camwall[extra]``)."""
        return SOURCES.get(self.source)


def reduce_attributions(attributions: Tensor) -> Tensor:
    """One map per image from input attributions: ``N(sum_c |A_c|)``.

    Args:
        attributions: B x C x H x W (any float dtype).

    Returns:
        B x H x W float32 in [0, 1]; an all-zero attribution stays all zero.
    """
    return normalize_maps(attributions.float().abs().sum(dim=1))


def _as_tensor(name: str, raw: Any, device: torch.device) -> Tensor:
    if isinstance(raw, Tensor):
        return raw
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None  # type: ignore[assignment]
    if np is not None and isinstance(raw, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(raw)).to(device)
    raise CamwallError(
        f"explainer {name!r} returned a {type(raw).__name__}, not a tensor; it must return a "
        f"B x H x W (or B x C x H x W) torch.Tensor."
    )


def _check_output(name: str, out: Tensor, x: Tensor, kind: OutputKind) -> None:
    b, c, h, w = x.shape
    if out.device != x.device:
        raise CamwallError(
            f"explainer {name!r} returned a map on {out.device} for an input on {x.device}; "
            f"return it on the input's device (e.g. .to(x.device))."
        )
    wanted = {
        "input": [(b, c, h, w), (b, 1, h, w)],
        "layer": None,
        "map": [(b, h, w)],
        "final": [(b, h, w)],
    }[kind]
    shape = tuple(out.shape)
    bad = shape not in wanted if wanted is not None else (out.dim() != 3 or shape[0] != b)
    if bad:
        expected = " or ".join(str(s) for s in wanted) if wanted else f"({b}, h, w)"
        raise CamwallError(
            f"explainer {name!r} returned shape {shape} for an input of shape {(b, c, h, w)}; "
            f"expected {expected}."
        )
    if not out.is_floating_point():
        raise CamwallError(f"explainer {name!r} returned dtype {out.dtype}; expected floats.")
    if not bool(torch.isfinite(out).all()):
        raise CamwallError(
            f"explainer {name!r} returned NaN or Inf values; check the method and its options."
        )


def finish_maps(name: str, raw: Any, x: Tensor, kind: OutputKind) -> Tensor:
    """Validate an adapter's raw output and turn it into the final B x H x W map in [0, 1].

    Args:
        name: the explainer's name, for error messages.
        raw: the adapter's output (tensor or numpy array), of the shape of ``kind``.
        x: the B x C x H x W input.
        kind: ``"input"``, ``"layer"``, ``"map"`` or ``"final"`` (see the module docstring).

    Returns:
        B x H x W float32 on ``x.device``.
    """
    out = _as_tensor(name, raw, x.device)
    _check_output(name, out, x, kind)
    out = out.detach()
    if kind == "input":
        return reduce_attributions(out)
    if kind == "layer":
        return finalize_maps(out, (int(x.shape[-2]), int(x.shape[-1])))
    if kind == "map":
        return normalize_maps(out.float())
    return out.float()
