"""Targets: what score a CAM explains for each image.

A target is a callable on one row of the model output (the logits of one image, or one image's
dict of a detection model's list output, :mod:`camwall.cams._outputs`) that returns a scalar
tensor. ``None`` means the argmax of the raw logits; an ``int`` is a class index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from camwall.cams._outputs import Outputs, output_rows
from camwall.errors import CamwallError

__all__ = [
    "ClassTarget",
    "MissingTarget",
    "Target",
    "TargetsArg",
    "first_scores",
    "resolve_targets",
    "score_rows",
]

Target = Callable[[Any], Tensor]
TargetsArg = None | int | Tensor | Sequence[int | Target]


@dataclass(frozen=True)
class ClassTarget:
    """The raw logit of class ``index``: ``f(row) = row[index]``."""

    index: int

    def __call__(self, row: Tensor) -> Tensor:
        return row[self.index]


@dataclass(frozen=True)
class MissingTarget:
    """``targets=None`` on an output without classes (a detection model's list of dicts):
    methods that use no score (eigencam) run; scoring raises a CamwallError naming the fix."""

    kind: str

    def __call__(self, row: Any) -> Tensor:
        raise CamwallError(
            f"targets=None takes the argmax of B x num_classes logits, but the model returns "
            f"{self.kind}; pass one target callable per image (e.g. grad-cam's "
            f"FasterRCNNBoxScoreTarget(labels, boxes) for detection models)."
        )


def resolve_targets(targets: TargetsArg, logits: Outputs) -> list[Target]:
    """One target callable per image.

    Args:
        targets: ``None`` (argmax of each logits row), an ``int`` (same class for all images),
            a 1-D integer tensor, or a sequence of class indices and/or callables.
        logits: B x ... model output, or a list of B per-image dicts (callables only;
            ``None`` gives :class:`MissingTarget`).

    Returns:
        A list of B callables.
    """
    batch = output_rows(logits)
    if isinstance(logits, list):
        if targets is None:
            return [MissingTarget("a list of per-image dicts")] * batch
        if isinstance(targets, int | Tensor) or any(isinstance(t, int) for t in targets):
            raise CamwallError(
                "class indices need B x num_classes logits, but the model returns a list of "
                "per-image dicts; pass one target callable per image (e.g. grad-cam's "
                "FasterRCNNBoxScoreTarget(labels, boxes))."
            )
    if targets is None:
        if logits.dim() != 2:
            raise CamwallError(
                f"targets=None takes the argmax of B x num_classes logits, but the model output "
                f"has shape {tuple(logits.shape)}. Pass `targets` as callables on one output row."
            )
        return [ClassTarget(int(i)) for i in logits.argmax(dim=1).tolist()]
    if isinstance(targets, bool):
        raise CamwallError("targets must be None, class indices or callables, not a bool.")
    if isinstance(targets, int):
        targets = [targets] * batch
    if isinstance(targets, Tensor):
        if targets.dim() != 1 or targets.is_floating_point():
            raise CamwallError(
                f"targets as a tensor must be 1-D integer class indices, got shape "
                f"{tuple(targets.shape)} and dtype {targets.dtype}."
            )
        targets = [int(t) for t in targets.tolist()]
    items = list(targets)
    if len(items) != batch:
        raise CamwallError(
            f"got {len(items)} targets for a batch of {batch} images: pass one target per image "
            f"(or None for the predicted class)."
        )
    num_classes = logits.shape[1] if isinstance(logits, Tensor) and logits.dim() == 2 else None
    return [_one_target(i, t, num_classes) for i, t in enumerate(items)]


def _one_target(i: int, t: int | Target, num_classes: int | None) -> Target:
    """Image ``i``'s target: a class index (checked against ``num_classes``) or a callable."""
    if isinstance(t, bool) or not (isinstance(t, int) or callable(t)):
        raise CamwallError(
            f"targets[{i}] = {t!r} is neither a class index nor a callable on a logits row."
        )
    if not isinstance(t, int):
        return t
    if t < 0 or (num_classes is not None and t >= num_classes):
        top = "" if num_classes is None else f" to {num_classes - 1}"
        raise CamwallError(
            f"targets[{i}] = {t} is out of range: a class index is 0{top} (the model has "
            f"{num_classes or 'these'} outputs; negative indices are not accepted)."
        )
    return ClassTarget(t)


def first_scores(
    logits: Outputs, targets: Sequence[Target], grad: bool, device: torch.device
) -> Tensor:
    """The B scores of the recorded pass (:func:`score_rows`); NaN (on ``device``) where the
    targets are :class:`MissingTarget` and no gradient is asked (methods that use no score
    still run)."""
    if not grad and targets and all(isinstance(f, MissingTarget) for f in targets):
        return torch.full((len(targets),), float("nan"), device=device)
    return score_rows(logits, range(output_rows(logits)), targets)


def score_rows(logits: Outputs, owners: Sequence[int], targets: Sequence[Target]) -> Tensor:
    """Score row ``i`` of ``logits`` with the target of image ``owners[i]``.

    Args:
        logits: N x ... model output, or a list of N per-image dicts.
        owners: N image indices into ``targets``.
        targets: one callable per image.

    Returns:
        N scores, float32, on ``logits.device`` (differentiable).
    """
    fns = [targets[o] for o in owners]
    classes = [f.index for f in fns if isinstance(f, ClassTarget)]
    if isinstance(logits, Tensor) and logits.dim() == 2 and len(classes) == len(fns):
        index = torch.tensor(classes, device=logits.device)
        return logits.gather(1, index[:, None])[:, 0].float()
    scores = []
    for i, f in enumerate(fns):
        s = f(logits[i])
        if not isinstance(s, Tensor) or s.numel() != 1:
            raise CamwallError(
                f"a target callable must return a scalar tensor; got {type(s).__name__}"
                + (f" of shape {tuple(s.shape)}" if isinstance(s, Tensor) else "")
                + "."
            )
        scores.append(s.reshape(()))
    out = torch.stack(scores).float()
    if not bool(torch.isfinite(out).all()):
        row = int((~torch.isfinite(out)).nonzero()[0, 0])
        raise CamwallError(
            f"the target callable of image {owners[row]} returned {float(out[row].detach())}; a "
            f"target must give a finite score for every image (check the callable)."
        )
    return out
