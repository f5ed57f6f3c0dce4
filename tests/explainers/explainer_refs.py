"""Test helpers: walled models and direct calls of the peer libraries (the parity oracles).

Each ``direct_*`` calls its library the documented way, on a deep copy of the model, and applies
the same post-processing as the adapter (the rule of ``camwall.explainers``); the adapters must
match them to 1e-5, or exactly when seeded.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from camwall.cams import finalize_maps, normalize_maps
from camwall.explainers import reduce_attributions
from camwall.walls import Wall, WallSpec, declare


def tiny_walled(seed: int = 0, classes: int = 5) -> nn.Sequential:
    """1 x 16 x 16 input; ``"3"`` is the CAM layer; feature rows 5.. walled before a GAP head.

    Two 3 x 3 convs reach 2 rows, so the dead zone is input rows 7..15.
    """
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        Wall(WallSpec(rows=(5, None))),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, classes),
    )
    declare(model, target_layer="3")
    return model


def patch_mask(h: int, w: int, patch: int) -> torch.Tensor:
    """1 x 1 x H x W feature mask of ``patch x patch`` squares (for perturbation methods)."""
    rows = torch.arange(h)[:, None] // patch
    cols = torch.arange(w)[None, :] // patch
    return (rows * ((w + patch - 1) // patch) + cols)[None, None]


MASK = patch_mask(16, 16, 4)

# options of each adapter in the tests on the 16 x 16 tiny model (small, so they stay fast)
CAPTUM_OPTIONS: dict[str, dict] = {
    "IntegratedGradients": {"n_steps": 8},
    "GradientShap": {"n_samples": 4, "stdevs": 0.1, "seed": 3},
    "NoiseTunnel": {"nt_samples": 4, "stdevs": 0.1, "seed": 3},
    "Occlusion": {"sliding_window_shapes": (1, 4, 4), "strides": (1, 2, 2)},
    "FeatureAblation": {"feature_mask": MASK},
    "ShapleyValueSampling": {"feature_mask": MASK, "n_samples": 3, "seed": 3},
    "Lime": {"feature_mask": MASK, "n_samples": 20, "seed": 3},
    "KernelShap": {"feature_mask": MASK, "n_samples": 20, "seed": 3},
}
GRADCAM_OPTIONS: dict[str, dict] = {
    "SESS": {"num_scales": 2},
    "RandomCAM": {"seed": 3},
}
TORCHCAM_OPTIONS: dict[str, dict] = {
    "SmoothGradCAMpp": {"num_samples": 3, "seed": 3},
    "SSCAM": {"num_samples": 3, "seed": 3},
    "ISCAM": {"num_samples": 3},
}


def options_for(name: str) -> dict[str, Any]:
    """The test options of an explainer by its full name (``captum:Lime``, ...)."""
    source, _, cls = name.partition(":")
    table = {"captum": CAPTUM_OPTIONS, "gradcam": GRADCAM_OPTIONS, "torchcam": TORCHCAM_OPTIONS}
    return dict(table.get(source, {}).get(cls, {})) if cls else {}


def _seed(seed: int | None) -> None:
    if seed is not None:
        torch.manual_seed(seed)
        np.random.seed(seed)  # noqa: NPY002 (the libraries draw from the global stream)


def _copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).eval()


def direct_captum(cls_name, model, x, targets, layer="", seed=None, **kw) -> torch.Tensor:
    """captum called directly: ``cls(model[, layer]).attribute(x, target=targets, **kw)``."""
    import captum.attr as ca

    m = _copy(model)
    cls = getattr(ca, cls_name)
    if cls_name == "NoiseTunnel":
        obj = cls(ca.Saliency(m))
    elif layer:
        obj = cls(m, m.get_submodule(layer))
    else:
        obj = cls(m)
    inp = x.detach().clone().requires_grad_(True)
    if cls_name == "GradientShap":
        kw.setdefault("baselines", torch.zeros_like(x[:1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _seed(seed)
        if cls_name in ("Lime", "KernelShap"):
            out = torch.cat(
                [obj.attribute(inp[i : i + 1], target=t, **kw) for i, t in enumerate(targets)]
            )
        else:
            out = obj.attribute(inp, target=targets, **kw)
    if cls_name == "LayerGradCam":
        return finalize_maps(out[:, 0].detach(), tuple(x.shape[-2:]))
    return reduce_attributions(out.detach())


def direct_gradcam(cls_name, model, x, targets, layer, seed=None, init=None, **kw):
    """pytorch-grad-cam called directly, ``ClassifierOutputTarget`` per image.

    ``init``: constructor options; ``kw``: call options.
    """
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    m = _copy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cls_name == "GuidedBackpropReLUModel":
            gb = pgc.GuidedBackpropReLUModel(m, x.device)
            rows = [
                torch.from_numpy(gb(x[i : i + 1].clone(), t)).permute(2, 0, 1)
                for i, t in enumerate(targets)
            ]
            return reduce_attributions(torch.stack(rows))
        _seed(seed)
        cam = getattr(pgc, cls_name)(m, [m.get_submodule(layer)], **(init or {}))
        tg: Any = None if cls_name == "FinerCAM" else [ClassifierOutputTarget(t) for t in targets]
        out = cam(x.clone(), tg, **kw)
    return normalize_maps(torch.from_numpy(out).float())


def direct_torchcam(cls_name, model, x, targets, layer, seed=None, **kw) -> torch.Tensor:
    """torchcam called directly: extractor on ``layer``, ``extractor(targets, model(x))``."""
    import torchcam.methods as tm

    m = _copy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _seed(seed)
        ext = getattr(tm, cls_name)(m, layer, input_shape=tuple(x.shape[1:]), **kw)
        try:
            scores = m(x.clone())
            cams = ext(targets, scores)
        finally:
            ext.remove_hooks()
    return finalize_maps(cams[0].detach(), tuple(x.shape[-2:]))
