"""Model outputs and layer outputs that are not one tensor.

A model's output (after ``output_fn``) is what the targets score, row by row
(:func:`camwall.cams._targets.score_rows` calls target b on row b):

- a tensor, B x ... (classifier logits B x num_classes, segmentation B x C x H x W);
- a list of B per-image dicts of tensors (torchvision detection models:
  ``[{"boxes": n x 4, "labels": n, "scores": n}, ...]``), scored by callables such as
  grad-cam's ``FasterRCNNBoxScoreTarget``;
- a dict of batched tensors: its ``"logits"`` entry (Hugging Face outputs) or ``"out"`` entry
  (torchvision segmentation models), the first of :data:`OUTPUT_KEYS` that holds a tensor.

A target layer's raw output is a tensor or a dict of tensors (a feature pyramid: torchvision's
FPN backbones return an ``OrderedDict`` of levels), mapped to one B x K x h x w feature map by
``reshape_transform``. The helpers here treat both alike through their tensor leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import torch
from torch import Tensor

from camwall._outputs import logits_of
from camwall.errors import CamwallError

__all__ = [
    "OUTPUT_KEYS",
    "Outputs",
    "as_outputs",
    "detach_tree",
    "leaves",
    "map_leaves",
    "output_rows",
    "rebuild",
    "take_rows",
    "tree_finite",
]

#: The dict entries taken as the model output, in order (Hugging Face, torchvision).
OUTPUT_KEYS = ("logits", "out")

#: What the targets score: a B x ... tensor or a list of B per-image dicts of tensors
#: (typed loosely: methods that need a tensor check for one).
Outputs: TypeAlias = Any


def leaves(tree: Any) -> list[Tensor]:
    """The tensors of a tensor, a dict of tensors or a list / tuple of them, in order."""
    if isinstance(tree, Tensor):
        return [tree]
    if isinstance(tree, Mapping):
        return [t for v in tree.values() for t in leaves(v)]
    if isinstance(tree, list | tuple):
        return [t for v in tree for t in leaves(v)]
    return []


def map_leaves(fn: Callable[[Tensor], Any], tree: Any) -> Any:
    """``tree`` with every tensor ``t`` replaced by ``fn(t)``, same containers (an
    ``OrderedDict`` stays one); other values are kept."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        return type(tree)((k, map_leaves(fn, v)) for k, v in tree.items())  # type: ignore[call-arg]
    if isinstance(tree, list | tuple):
        return type(tree)(map_leaves(fn, v) for v in tree)
    return tree


def rebuild(tree: Any, new: Sequence[Tensor]) -> Any:
    """``tree`` with its tensors replaced, in :func:`leaves` order, by ``new``."""
    it = iter(new)
    return map_leaves(lambda _: next(it), tree)


def detach_tree(tree: Any) -> Any:
    """Every tensor of ``tree`` detached."""
    return map_leaves(Tensor.detach, tree)


def take_rows(tree: Any, rows: Sequence[int] | Tensor) -> Any:
    """Rows ``rows`` (dimension 0) of every tensor of a layer output."""
    return map_leaves(lambda t: t[rows], tree)


def tree_finite(tree: Any) -> Tensor:
    """A 0-d bool tensor: whether every floating-point value of ``tree`` is finite."""
    ok = torch.tensor(True)
    for t in leaves(tree):
        if t.is_floating_point():
            ok = ok.to(t.device) & torch.isfinite(t).all()
    return ok


def as_outputs(output: Any, batch: int) -> Outputs:
    """The model output as scored rows (see the module docstring); a CamwallError names the
    fix for anything else. An object with a ``logits`` tensor (Hugging Face outputs) or a tuple
    whose first item is a tensor gives that tensor (:func:`camwall._outputs.logits_of`)."""
    output = logits_of(output)
    if isinstance(output, Mapping):
        output = _pick(output)
    if isinstance(output, Tensor):
        if output.dim() == 0 or output.shape[0] != batch:
            raise CamwallError(
                f"the model output has shape {tuple(output.shape)} for a batch of {batch}; "
                f"expected B x num_classes logits (use output_fn to select them)."
            )
        return output
    if isinstance(output, list) and output and all(isinstance(o, Mapping) for o in output):
        if len(output) != batch:
            raise CamwallError(
                f"the model returned {len(output)} per-image outputs for a batch of {batch}; "
                f"a list output needs one dict per image (as torchvision detection models)."
            )
        return output
    raise CamwallError(
        f"the model returned a {type(output).__name__}, not a logits tensor. Wrap the "
        f"model so that it returns the logits (e.g. nn.Sequential(model, PickLogits())) or "
        f"pass output_fn=lambda out: out[0] (or out['logits'])."
    )


def _pick(output: Mapping[Any, Any]) -> Any:
    for key in OUTPUT_KEYS:
        if isinstance(output.get(key), Tensor):
            return output[key]
    raise CamwallError(
        f"the model returned a dict with keys {list(output)[:6]}, none of them "
        f"{' or '.join(map(repr, OUTPUT_KEYS))}; pass output_fn=lambda out: out[KEY] (or wrap the "
        f"model so that it returns that tensor) to choose what the targets score."
    )


def output_rows(outputs: Outputs) -> int:
    """The number of images of a scored output."""
    return len(outputs) if isinstance(outputs, list) else int(outputs.shape[0])


def repeat_rows(outputs: Outputs, n: int) -> Outputs:
    """Row 0 of a scored output repeated ``n`` times: a tensor expanded (no copy), a list of
    per-image dicts as a list of ``n`` references to its first dict."""
    if isinstance(outputs, list):
        return [outputs[0]] * n
    return outputs[:1].expand(n, *outputs.shape[1:])


def class_logits(outputs: Outputs, method: str) -> Tensor:
    """``outputs`` as B x num_classes logits, for methods that read classes (finercam, cam);
    a detection model's list of dicts, or any other shape, raises one CamwallError."""
    if isinstance(outputs, Tensor) and outputs.dim() == 2:
        return outputs
    got = (
        f"shape {tuple(outputs.shape)}"
        if isinstance(outputs, Tensor)
        else f"a {type(outputs).__name__} (e.g. a detection model's per-image dicts)"
    )
    raise CamwallError(
        f"{method} needs B x num_classes logits, the model gave {got}; use a method that scores "
        f"through targets only (gradcam, eigencam, ablationcam, ...)."
    )
