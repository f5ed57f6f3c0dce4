"""pytorch-grad-cam 1.5.7 adapters: ``gradcam:NAME`` for every exported CAM class.

A CAM class is built with ``target_layers=[layer]`` and called on the whole batch with one
``ClassifierOutputTarget`` per image; its B x H x W output (already resized and scaled by the
library) is min-max normalized again (``"map"`` kind, a no-op up to 1e-7). Hooks are released
in ``finally``. ``FinerCAM`` picks its comparison classes itself from one target index, so the
batch is split by target class. ``FullGrad`` ignores the layer (it uses every biased conv).
``GuidedBackpropReLUModel`` explains one image at a time and returns an input attribution
(``"input"`` kind); it swaps the model's ReLUs, which :func:`preserved` puts back.
``DeepFeatureFactorization`` is left out: it returns concepts, not one map per target.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from camwall.errors import CamwallError
from camwall.explainers._options import seeded, split_options
from camwall.explainers._protocol import Call, ExplainerSpec, ExplainFn
from camwall.explainers._registry import EXPLAINERS, require

__all__ = ["GRADCAM_CLASSES"]

#: every CAM class exported by pytorch_grad_cam 1.5.7 (GuidedBackpropReLUModel apart).
GRADCAM_CLASSES = (
    "GradCAM",
    "HiResCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "XGradCAM",
    "LayerCAM",
    "EigenCAM",
    "EigenGradCAM",
    "KPCA_CAM",
    "ScoreCAM",
    "AblationCAM",
    "FullGrad",
    "ShapleyCAM",
    "FEM",
    "FinerCAM",
    "RefineCAM",
    "SESS",
    "SegEigenCAM",
    "RandomCAM",
)
_STOCHASTIC = {"RandomCAM"}
_INIT_SKIP = ("self", "model", "target_layers", "reshape_transform")
_CALL_SKIP = ("self", "input_tensor", "targets", "target_idx")


def _quiet() -> contextlib.ExitStack:
    """Silence the library's prints (FullGrad) and its progress bars' warnings."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pytorch_grad_cam\.")
    return stack


def _cam(call: Call, cls_name: str) -> np.ndarray:
    lib = require("pytorch_grad_cam", call.name)
    targets_mod = require("pytorch_grad_cam.utils.model_targets", call.name)
    cls = getattr(lib, cls_name)
    opts = dict(call.options)
    seed = opts.pop("seed", None)
    ctor, kw = split_options(call.name, opts, cls.__init__, _merge(cls), _INIT_SKIP, _CALL_SKIP)
    # The library backpropagates into the parameters (SESS feeds new patch tensors, so the
    # input's gradient alone is not enough); preserved() restores their flags and .grad.
    for p in call.model.parameters():
        p.requires_grad_(True)
    with _quiet(), seeded(seed):
        cam = cls(call.forward, [call.layer], **ctor)
        try:
            if cls_name == "FinerCAM":
                return _finer(cam, call, kw)
            targets = [targets_mod.ClassifierOutputTarget(t) for t in call.targets]
            # the parameters carry the graph; an input that needs no gradient saves a backward
            # step (ShapleyCAM and FullGrad ask for it themselves)
            return cam(call.x.detach(), targets, **kw)
        finally:
            _release(cam)


def _merge(cls: Any) -> Any:
    """A callable whose signature is the union of ``__call__`` and ``forward`` arguments."""
    params: dict[str, inspect.Parameter] = {}
    for fn in (cls.__call__, cls.forward):
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                params.setdefault(p.name, p.replace(kind=p.KEYWORD_ONLY))

    def merged(**kwargs: Any) -> None: ...

    merged.__signature__ = inspect.Signature(list(params.values()))  # type: ignore[attr-defined]
    return merged


def _finer(cam: Any, call: Call, kw: dict[str, Any]) -> np.ndarray:
    out = np.zeros((call.x.shape[0], *call.size), dtype=np.float32)
    for cls in sorted(set(call.targets)):
        rows = [i for i, t in enumerate(call.targets) if t == cls]
        out[rows] = cam(call.x[rows].detach(), None, target_idx=cls, **kw)
    return out


def _release(cam: Any) -> None:
    for owner in (cam, getattr(cam, "base_cam", None), *getattr(cam, "base_cam_per_layer", [])):
        aag = getattr(owner, "activations_and_grads", None)
        if aag is not None:
            # clear() would detach_() the stored tensors in place, which fails for views
            # (ShapleyCAM's second-order graph); dropping the references is enough.
            aag.activations, aag.gradients = [], []
            aag.release()


def _guided(call: Call) -> Tensor:
    lib = require("pytorch_grad_cam", call.name)
    opts = dict(call.options)
    if opts:
        raise CamwallError(
            f"{call.name} takes no options (got {', '.join(opts)}); it explains each image's "
            f"target class."
        )
    with _quiet():
        gb = lib.GuidedBackpropReLUModel(call.forward, call.x.device)
        # one image at a time: H x W x C numpy per call
        hwc = [gb(call.x[i : i + 1].detach(), t) for i, t in enumerate(call.targets)]
        rows = [torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1) for a in hwc]
    return torch.stack(rows).to(call.x.device)


def _adapter(cls_name: str) -> ExplainFn:
    def fn(call: Call) -> np.ndarray:
        return _cam(call, cls_name)

    return fn


for _cls in GRADCAM_CLASSES:
    EXPLAINERS.add(
        f"gradcam:{_cls}",
        ExplainerSpec(
            f"gradcam:{_cls}",
            "cam",
            "pytorch-grad-cam",
            _adapter(_cls),
            "map",
            needs_layer=True,
            module="pytorch_grad_cam",
            stochastic=_cls in _STOCHASTIC,
            description=f"pytorch_grad_cam.{_cls}",
        ),
    )

EXPLAINERS.add(
    "gradcam:GuidedBackpropReLUModel",
    ExplainerSpec(
        "gradcam:GuidedBackpropReLUModel",
        "gradient",
        "pytorch-grad-cam",
        _guided,
        "input",
        module="pytorch_grad_cam",
        description="pytorch_grad_cam.GuidedBackpropReLUModel (guided backprop)",
    ),
)
