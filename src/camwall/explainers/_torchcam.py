"""torchcam 0.5 adapters: ``torchcam:NAME`` for every CNN method.

The extractor is built on the target layer (by name, so no dummy forward pass is needed), the
model is run once on the batch, and ``extractor(class_idx=targets, scores=logits)`` gives the
B x h x w map at the layer (``"layer"`` kind: upsampled like camwall's CAMs). Hooks are
removed in ``finally``. ``torchcam:CAM`` needs a global-average-pooling head with exactly one
Linear layer after the target (pass ``fc_layer`` otherwise).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from camwall.explainers._options import seeded, split_options
from camwall.explainers._protocol import Call, ExplainerSpec, ExplainFn
from camwall.explainers._registry import EXPLAINERS, require

__all__ = ["TORCHCAM_CLASSES"]

TORCHCAM_CLASSES = (
    "CAM",
    "GradCAM",
    "GradCAMpp",
    "SmoothGradCAMpp",
    "XGradCAM",
    "LayerCAM",
    "ScoreCAM",
    "SSCAM",
    "ISCAM",
)
_STOCHASTIC = {"SmoothGradCAMpp", "SSCAM"}
_INIT_SKIP = ("self", "model", "target_layer", "input_shape")
_CALL_SKIP = ("self", "class_idx", "scores")


def _run(call: Call, cls_name: str) -> Tensor:
    methods = require("torchcam.methods", call.name)
    cls = getattr(methods, cls_name)
    opts = dict(call.options)
    seed = opts.pop("seed", None)
    ctor, kw = split_options(call.name, opts, cls.__init__, cls.__call__, _INIT_SKIP, _CALL_SKIP)
    layer = call.layer_name if call.forward is call.model else f"inner.{call.layer_name}"
    with warnings.catch_warnings(), seeded(seed):
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchcam\.")
        extractor = cls(call.forward, layer, input_shape=tuple(call.x.shape[1:]), **ctor)
        try:
            with torch.set_grad_enabled(not isinstance(extractor, _activation_classes())):
                scores = call.forward(call.x)
            cams = extractor(class_idx=call.targets, scores=scores, **kw)
        finally:
            extractor.remove_hooks()
    return cams[0]


def _activation_classes() -> tuple[type, ...]:
    activation = require("torchcam.methods.activation", "torchcam")
    return (activation.CAM, activation.ScoreCAM)


def _adapter(cls_name: str) -> ExplainFn:
    def fn(call: Call) -> Any:
        return _run(call, cls_name)

    return fn


for _cls in TORCHCAM_CLASSES:
    EXPLAINERS.add(
        f"torchcam:{_cls}",
        ExplainerSpec(
            f"torchcam:{_cls}",
            "cam",
            "torchcam",
            _adapter(_cls),
            "layer",
            needs_layer=True,
            module="torchcam",
            stochastic=_cls in _STOCHASTIC,
            description=f"torchcam.methods.{_cls}",
        ),
    )
