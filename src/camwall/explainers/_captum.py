"""captum adapters: ``captum:NAME`` for the attribution classes listed in :data:`CAPTUM`.

Each adapter builds the captum object on the model (``output_fn`` applied), calls
``attribute(x, target=targets, **options)`` on the whole batch, and returns the B x C x H x W
attribution (``"input"`` kind: ``N(sum_c |A_c|)``) or, for LayerGradCam, the B x 1 x h x w
layer map (``"layer"`` kind: upsampled like camwall's CAMs). Lime and KernelShap train one
surrogate per image, so they loop over the batch as captum recommends.

Defaults added where captum has none: IntegratedGradients on CPU ``internal_batch_size=64``
(same values, about 2x faster than captum's one big batch); GradientShap ``baselines`` = one
all-zero image;
Occlusion ``sliding_window_shapes`` = ``(C, ceil(H/8), ceil(W/8))`` and ``strides`` = half a
window; NoiseTunnel wraps ``base="Saliency"`` with captum's ``nt_type="smoothgrad"``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from camwall.explainers._options import seeded, split_options
from camwall.explainers._protocol import Call, ExplainerSpec, ExplainFn, OutputKind
from camwall.explainers._registry import EXPLAINERS, require

__all__ = ["CAPTUM"]

# name -> (family, output kind, per-image loop, stochastic)
CAPTUM: dict[str, tuple[str, OutputKind, bool, bool]] = {
    "Saliency": ("gradient", "input", False, False),
    "InputXGradient": ("gradient", "input", False, False),
    "IntegratedGradients": ("gradient", "input", False, False),
    "GuidedBackprop": ("gradient", "input", False, False),
    "Deconvolution": ("gradient", "input", False, False),
    "DeepLift": ("gradient", "input", False, False),
    "GradientShap": ("gradient", "input", False, True),
    "NoiseTunnel": ("gradient", "input", False, True),
    "Occlusion": ("perturbation", "input", False, False),
    "FeatureAblation": ("perturbation", "input", False, False),
    "ShapleyValueSampling": ("perturbation", "input", False, True),
    "Lime": ("perturbation", "input", True, True),
    "KernelShap": ("perturbation", "input", True, True),
    "LayerGradCam": ("cam", "layer", False, False),
    "GuidedGradCam": ("gradient", "input", False, False),
}
_LAYER = {"LayerGradCam", "GuidedGradCam"}
_CALL_SKIP = ("inputs", "target", "self")


#: IntegratedGradients expands the batch n_steps times; on CPU, chunks of 64 inputs run about 2x
#: faster than one B * n_steps batch (16 x 16 steps at 64 x 64: 62 vs 125 ms per image).
IG_CPU_CHUNK = 64


def _defaults(cls_name: str, x: Tensor, kw: dict[str, Any]) -> dict[str, Any]:
    c, h, w = x.shape[1:]
    if cls_name == "IntegratedGradients" and x.device.type == "cpu":
        kw.setdefault("internal_batch_size", IG_CPU_CHUNK)
    if cls_name == "GradientShap":
        kw.setdefault("baselines", torch.zeros_like(x[:1]).detach())
    if cls_name == "Occlusion":
        window = kw.setdefault("sliding_window_shapes", (c, math.ceil(h / 8), math.ceil(w / 8)))
        kw.setdefault("strides", tuple(max(1, s // 2) for s in window))
    return kw


def build(call: Call, cls_name: str) -> tuple[Any, dict[str, Any]]:
    """The captum object and the ``attribute`` keyword arguments for ``call`` (no target)."""
    attr = require("captum.attr", call.name)
    cls = getattr(attr, cls_name)
    opts = dict(call.options)
    opts.pop("seed", None)
    base_name = opts.pop("base", "Saliency") if cls_name == "NoiseTunnel" else None
    skip = ("self", "forward_func", "model", "layer", "attribution_method")
    ctor, kw = split_options(call.name, opts, cls.__init__, cls.attribute, skip, _CALL_SKIP)
    if base_name is not None:
        obj = cls(getattr(attr, base_name)(call.forward), **ctor)
    elif cls_name in _LAYER:
        obj = cls(call.forward, call.layer, **ctor)
    else:
        obj = cls(call.forward, **ctor)
    return obj, _defaults(cls_name, call.x, kw)


def _slice(value: Any, i: int, batch: int) -> Any:
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch and batch > 1:
        return value[i : i + 1]
    return value


def _run(call: Call, cls_name: str, per_image: bool) -> Tensor:
    obj, kw = build(call, cls_name)
    with warnings.catch_warnings(), seeded(call.options.get("seed")):
        warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\.")
        if not per_image:
            out = obj.attribute(call.x, target=call.targets, **kw)
            return out[:, 0] if cls_name == "LayerGradCam" else out
        b = call.x.shape[0]
        rows = [
            obj.attribute(
                call.x[i : i + 1],
                target=call.targets[i],
                **{k: _slice(v, i, b) for k, v in kw.items()},
            )
            for i in range(b)
        ]
        return torch.cat(rows)


def _adapter(cls_name: str, per_image: bool) -> ExplainFn:
    def fn(call: Call) -> Tensor:
        return _run(call, cls_name, per_image)

    return fn


for _cls, (_family, _kind, _per_image, _random) in CAPTUM.items():
    EXPLAINERS.add(
        f"captum:{_cls}",
        ExplainerSpec(
            f"captum:{_cls}",
            _family,
            "captum",
            _adapter(_cls, _per_image),
            _kind,
            needs_layer=_cls in _LAYER,
            module="captum",
            stochastic=_random,
            description=f"captum.attr.{_cls}",
            input_grad=_family != "perturbation",
        ),
    )
