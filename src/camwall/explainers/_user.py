"""User explainers: ``py:package.module:function``.

The module is imported with :func:`importlib.import_module` (it must be importable, e.g. on
``PYTHONPATH``); strings are never executed, and only dotted names of Python identifiers are
taken (no paths, no relative ``.module``). The function is called as
``fn(model, x, targets, **options)`` with ``targets`` one class index per image and must return
a tensor on ``x.device``: ``B x H x W`` (a map, min-max normalized) or ``B x C x H x W`` (an
input attribution, reduced like captum's: ``N(sum_c |A_c|)``). Anything else (a non-tensor, a
wrong shape, NaN/Inf, another device) is a :class:`CamwallError` naming the explainer, and so
is a call of ``sys.exit`` inside it.

A function may declare its family with an attribute, ``fn.camwall_family = "gradient"``
(a key of :data:`camwall.explainers.FAMILIES`); otherwise it is ``"other"``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import Tensor

from camwall.errors import CamwallError
from camwall.explainers._protocol import FAMILIES, Call, ExplainerSpec, OutputKind, finish_maps

__all__ = ["call_user_function", "load_user_function", "user_spec"]


def _dotted(name: str, what: str, text: str) -> None:
    """Refuse ``text`` unless it is ``a.b.c`` with every part a Python identifier."""
    if not all(part.isidentifier() for part in text.split(".")):
        raise CamwallError(
            f"explainer {name!r}: {what} {text!r} is not a dotted name of Python identifiers "
            f"(no paths, no relative '.module'); use py:package.module:function."
        )


def load_user_function(name: str) -> Callable[..., Any]:
    """Import the callable named by ``py:package.module:function``."""
    path = name[3:]
    module_name, colon, attr = path.partition(":")
    if not colon or not module_name or not attr:
        raise CamwallError(
            f"explainer {name!r} is not py:package.module:function (e.g. py:mypkg.saliency:grad)."
        )
    _dotted(name, "module", module_name)
    _dotted(name, "function", attr)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise CamwallError(
            f"explainer {name!r}: cannot import module {module_name!r} ({err}); make it "
            f"importable (install it or add its folder to PYTHONPATH)."
        ) from None
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise CamwallError(
                f"explainer {name!r}: module {module_name!r} has no attribute {attr!r}."
            )
    if not callable(fn):
        raise CamwallError(f"explainer {name!r}: {attr!r} is a {type(fn).__name__}, not callable.")
    return fn


def user_spec(name: str) -> ExplainerSpec:
    """An unregistered :class:`ExplainerSpec` for a ``py:`` name (imports the module now)."""
    fn = load_user_function(name)
    family = getattr(fn, "camwall_family", "other")
    if family not in FAMILIES:
        raise CamwallError(
            f"explainer {name!r} declares camwall_family={family!r}; use one of "
            f"{', '.join(FAMILIES)}."
        )

    def adapter(call: Call) -> Tensor:
        model = call.model if call.output_fn is None else call.forward
        return call_user_function(name, fn, model, call)

    return ExplainerSpec(
        name, family, "user", adapter, "final", description=f"user callable {name[3:]}"
    )


def call_user_function(name: str, fn: Callable[..., Any], model: Any, call: Call) -> Tensor:
    """``fn(model, x, targets, **options)`` checked: a tensor (``B x H x W`` map or
    ``B x C x H x W`` attributions, see :func:`finish_maps`) and no ``sys.exit``.

    Raises:
        CamwallError: ``fn`` returned a non-tensor (numpy included) or called ``sys.exit``.
    """
    try:
        raw = fn(model, call.x.detach(), list(call.targets), **call.options)
    except SystemExit as err:
        raise CamwallError(
            f"explainer {name!r} called sys.exit({err.code!r}); it must return a tensor "
            f"(raise an exception to report a failure)."
        ) from None
    if not isinstance(raw, Tensor):
        raise CamwallError(
            f"explainer {name!r} returned a {type(raw).__name__}, not a tensor; it must return a "
            f"B x H x W (or B x C x H x W) torch.Tensor on the input's device."
        )
    kind: OutputKind = "input" if raw.dim() == 4 else "map"
    return finish_maps(name, raw, call.x, kind)
