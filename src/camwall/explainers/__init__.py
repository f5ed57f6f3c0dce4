"""Explainers: any saliency method behind one protocol, so that any of them can face the wall.

An explainer maps ``(model, x B x C x H x W, targets) -> B x H x W`` float32 maps in [0, 1].
One registry, :data:`EXPLAINERS`, holds camwall's CAMs (``gradcam``, ...), the controls
(``uniform``, ``random``), captum (``captum:Saliency``, ...), pytorch-grad-cam 1.5.7
(``gradcam:GradCAM``, ...) and torchcam 0.5 (``torchcam:SSCAM``, ...); ``py:pkg.mod:fn``
names a user's callable. Peer libraries are optional extras, imported only when used.

Public API::

    from camwall.explainers import explain, get_explainer, list_explainers

    maps = explain(model, x, "captum:IntegratedGradients", n_steps=32)   # B x H x W
    ig = get_explainer("captum:Occlusion", sliding_window_shapes=(1, 8, 8))
    maps = ig(model, x, targets=[3, 1])
    ig.family, ig.source                    # "perturbation", "captum"

Reduction rule (``mu`` depends on it, see ``docs/explainers.md``): input attributions become
``N(sum_c |A_c|)``; layer maps are upsampled like camwall's CAMs; ``N`` is the per-image
min-max normalization of :func:`camwall.cams.normalize_maps`.
"""

from __future__ import annotations

# isort: off
# Importing the adapter modules registers them, in this order.
from camwall.explainers import _native, _captum, _gradcam, _torchcam  # noqa: F401

# isort: on
from camwall.explainers._options import (
    parse_explainer_option,
    parse_explainer_options,
    split_options,
)
from camwall.explainers._protocol import (
    FAMILIES,
    SOURCES,
    Call,
    Explainer,
    ExplainerSpec,
    finish_maps,
    reduce_attributions,
)
from camwall.explainers._registry import (
    EXPLAINERS,
    BoundExplainer,
    ExplainerInfo,
    explain,
    get_explainer,
    get_spec,
    list_explainers,
)
from camwall.explainers._state import hook_count, preserved

__all__ = [
    "EXPLAINERS",
    "FAMILIES",
    "SOURCES",
    "BoundExplainer",
    "Call",
    "Explainer",
    "ExplainerInfo",
    "ExplainerSpec",
    "explain",
    "finish_maps",
    "get_explainer",
    "get_spec",
    "hook_count",
    "list_explainers",
    "parse_explainer_option",
    "parse_explainer_options",
    "preserved",
    "reduce_attributions",
    "split_options",
]
