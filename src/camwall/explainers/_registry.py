"""The one registry of explainers, the bound :class:`BoundExplainer`, and name resolution.

Names: camwall's CAMs and the controls keep their names (``gradcam``, ``uniform``);
``captum:NAME``, ``gradcam:NAME`` (pytorch-grad-cam) and ``torchcam:NAME`` name a peer
library's class; ``py:package.module:function`` names a user's callable (imported, never
registered). Registering never imports a peer library; using an entry does.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from camwall._outputs import logits_of
from camwall.cams import resolve_layer
from camwall.errors import CamwallError
from camwall.explainers._protocol import Call, ExplainerSpec, finish_maps
from camwall.explainers._state import preserved
from camwall.registry import Registry

__all__ = [
    "EXPLAINERS",
    "BoundExplainer",
    "ExplainerInfo",
    "explain",
    "get_explainer",
    "get_spec",
    "list_explainers",
    "require",
]

EXPLAINERS: Registry[ExplainerSpec] = Registry("explainer")

OutputFn = Callable[[Any], Tensor]

_PIP = {
    "captum": "pip install 'camwall[captum]'",
    "pytorch_grad_cam": "pip install 'camwall[gradcam]'",
    "torchcam": "pip install 'camwall[torchcam]'",
    "quantus": "pip install 'camwall[quantus]'",
}


def require(module: str, name: str) -> Any:
    """Import ``module`` for explainer ``name``, or raise a one-line CamwallError with the fix."""
    try:
        return importlib.import_module(module)
    except ImportError:
        fix = _PIP.get(module.split(".")[0], f"pip install {module.split('.')[0]}")
        raise CamwallError(
            f"{name} needs the {module.split('.')[0]} package, which is not installed: {fix}"
        ) from None


def _available(module: str) -> bool:
    if not module:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class ExplainerInfo:
    """One row of :func:`list_explainers`."""

    name: str
    family: str
    source: str
    available: bool
    description: str


def list_explainers(pattern: str = "*") -> list[ExplainerInfo]:
    """Every registered explainer (fnmatch ``pattern``), with whether its package is installed."""
    return [
        ExplainerInfo(s.name, s.family, s.source, _available(s.module), s.description)
        for s in (EXPLAINERS.get(n) for n in EXPLAINERS.names(pattern))
    ]


def get_spec(name: str) -> ExplainerSpec:
    """The registry entry for ``name``; ``py:module:function`` names are imported on the fly."""
    if not isinstance(name, str):
        raise CamwallError(f"explainer names are strings, got {type(name).__name__}.")
    if name.startswith("py:"):
        from camwall.explainers._user import user_spec

        return user_spec(name)
    return EXPLAINERS.get(name)


class _Logits(nn.Module):
    """``output_fn(model(x))`` as a module, for libraries that call the model themselves."""

    def __init__(self, model: nn.Module, output_fn: OutputFn) -> None:
        super().__init__()
        self.inner = model
        self.output_fn = output_fn

    def forward(self, x: Tensor) -> Tensor:
        return self.output_fn(self.inner(x))


def _check_input(name: str, model: Any, x: Any) -> None:
    if not isinstance(model, nn.Module):
        raise CamwallError(f"{name}: model must be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise CamwallError(f"{name}: x must be a float B x C x H x W tensor, got {shape}.")
    param = next(model.parameters(), None)
    if param is not None and param.device != x.device:
        raise CamwallError(
            f"{name}: x is on {x.device} but the model is on {param.device}; move one of them "
            f"(e.g. x.to({str(param.device)!r}))."
        )


def _class_targets(name: str, forward: nn.Module, x: Tensor, targets: Any) -> list[int]:
    """``None`` -> argmax of the logits (one no-grad forward); else one int per image."""
    if targets is None:
        with torch.no_grad():
            logits = forward(x)
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise CamwallError(
                f"{name}: the model output is {got}, not B x num_classes logits; pass output_fn="
                f"lambda out: out[0] (or out['logits'])."
            )
        return [int(i) for i in logits.argmax(dim=1).tolist()]
    if isinstance(targets, Tensor):
        targets = targets.tolist()
    items = list(targets)
    if len(items) != x.shape[0] or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in items
    ):
        raise CamwallError(
            f"{name}: targets must be None or a list of {x.shape[0]} class indices, got {items!r}."
        )
    return items


class BoundExplainer:
    """An explainer with its options bound: ``explainer(model, x, targets=None) -> B x H x W``.

    Args:
        spec: the registry entry.
        target_layer: module or dotted name, for explainers at a layer; None: the model's
            :func:`camwall.walls.default_target_layer`.
        output_fn: maps the model's raw output (tuple, dict) to B x K logits.
        **options: keyword arguments of the source (constructor and call arguments alike),
            plus ``seed`` for stochastic explainers.
    """

    def __init__(
        self,
        spec: ExplainerSpec,
        *,
        target_layer: nn.Module | str | None = None,
        output_fn: OutputFn | None = None,
        **options: Any,
    ) -> None:
        self.spec = spec
        self.target_layer = target_layer
        self.output_fn = output_fn
        self.options = options

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def source(self) -> str:
        return self.spec.source

    def __repr__(self) -> str:
        return f"BoundExplainer({self.name!r}, options={self.options!r})"

    def _layer(self, model: nn.Module) -> tuple[str, nn.Module | None]:
        if not self.spec.needs_layer:
            return "", None
        layer = self.target_layer
        if layer is None:
            from camwall.walls import default_target_layer

            layer = default_target_layer(model)
        return resolve_layer(model, layer)

    def __call__(
        self, model: nn.Module, x: Tensor, targets: Sequence[int] | Tensor | None = None
    ) -> Tensor:
        """Maps for a batch.

        Args:
            model: the classifier (left exactly as found: modes, flags, ``.grad``, hooks).
            x: B x C x H x W float input on the model's device.
            targets: None (argmax of the logits) or one class index per image.

        Returns:
            B x H x W float32 maps in [0, 1] on ``x.device``.
        """
        _check_input(self.name, model, x)
        if self.spec.module:
            require(self.spec.module, self.name)
        with preserved(model):
            forward = _Logits(model, self.output_fn or logits_of)  # HF-style outputs too
            layer_name, layer = self._layer(model)
            classes = _class_targets(self.name, forward, x.detach(), targets)
            call = Call(
                name=self.name,
                model=model,
                forward=forward,
                x=x.detach().clone().requires_grad_(self.spec.input_grad),
                targets=classes,
                layer_name=layer_name,
                layer=layer,
                output_fn=self.output_fn,
                options=dict(self.options),
            )
            try:
                raw = self.spec.fn(call)
            except CamwallError:
                raise
            except ValueError as err:  # the library rejected the model or an option value
                msg = " ".join(str(err).split())
                raise CamwallError(f"{self.name}: {msg}") from err
            return finish_maps(self.name, raw, x, self.spec.output)


def get_explainer(
    name: str,
    *,
    target_layer: nn.Module | str | None = None,
    output_fn: OutputFn | None = None,
    **options: Any,
) -> BoundExplainer:
    """The explainer called ``name`` with its options bound (nothing is imported or run yet)."""
    return BoundExplainer(get_spec(name), target_layer=target_layer, output_fn=output_fn, **options)


def explain(
    model: nn.Module,
    x: Tensor,
    name: str,
    targets: Sequence[int] | Tensor | None = None,
    *,
    target_layer: nn.Module | str | None = None,
    output_fn: OutputFn | None = None,
    **options: Any,
) -> Tensor:
    """One call: ``get_explainer(name, ...)(model, x, targets)`` -> B x H x W in [0, 1]."""
    return get_explainer(name, target_layer=target_layer, output_fn=output_fn, **options)(
        model, x, targets
    )
