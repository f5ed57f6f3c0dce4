"""Finer-CAM: Grad-CAM of the target's margin over its most similar classes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod, Needs, base_method_check
from camwall.cams._checks import Check, as_given, number
from camwall.cams._eigen import first_component
from camwall.cams._outputs import class_logits
from camwall.cams._smooth import eigen_raw
from camwall.cams._targets import Target, score_rows
from camwall.errors import CamwallError

__all__ = ["FinerCAM", "FinerTarget", "finer_targets"]


@dataclass(frozen=True)
class FinerTarget:
    """``f(y) = sum_j p_j (y_main - alpha y_cj) / (sum_j p_j + 1e-9)`` with ``p = softmax(y)``.

    Attributes:
        main: the explained class.
        comparisons: the comparison classes ``c_j``.
        alpha: the comparison strength.
    """

    main: int
    comparisons: tuple[int, ...]
    alpha: float

    def __call__(self, row: Tensor) -> Tensor:
        p = torch.softmax(row, dim=-1)
        idx = torch.tensor(self.comparisons, device=row.device)
        pj = p[idx]
        num = (pj * (row[self.main] - self.alpha * row[idx])).sum()
        return num / (pj.sum() + 1e-9)


def finer_targets(
    logits: Tensor,
    ranks: Sequence[int] | None,
    alpha: float,
    target_idx: int | Sequence[int] | None,
) -> list[Target]:
    """One :class:`FinerTarget` per image, as pytorch-grad-cam 1.5.7's ``FinerCAM.forward``.

    Classes are ranked by ``|y_c - t|`` ascending, where ``t`` is the top logit (or the logit of
    ``target_idx``, one class for the batch or a list of one class per image, as grad-cam's
    ``target_idx`` applied image by image); rank 0 is the main class, ``ranks`` (default
    ``(1, 2, 3)``, limited to the number of classes) pick the comparison classes.
    """
    classes = logits.shape[1]
    if ranks is None:
        ranks = [1, 2, 3][: max(classes - 1, 0)]
    else:
        ranks = [int(r) for r in ranks if int(r) < classes]
    if not ranks:
        raise CamwallError(
            f"finercam needs at least one comparison class; the model has {classes} output(s) "
            f"(set finercam_comparison to ranks below {classes})."
        )
    per_image = target_idx if isinstance(target_idx, (list, tuple)) else None
    wanted = [target_idx] if per_image is None else list(per_image)
    if target_idx is not None and (
        (per_image is not None and len(per_image) != logits.shape[0])
        or any(
            isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < classes for i in wanted
        )
    ):
        raise CamwallError(
            f"option finercam_target_idx must be a class index 0 to {classes - 1} (or one per "
            f"image), got {target_idx!r}."
        )
    y = logits.float()
    if target_idx is None:
        t = y.amax(dim=1)
    else:
        t = y[:, target_idx] if per_image is None else y[torch.arange(len(y)), list(per_image)]
    order = torch.argsort((y - t[:, None]).abs(), dim=1, stable=True).tolist()
    return [FinerTarget(row[0], tuple(row[r] for r in ranks), alpha) for row in order]


@METHODS.add
class FinerCAM(CamMethod, name="finercam"):
    """Finer-CAM (Zhang et al., 2025, https://arxiv.org/abs/2501.11309), as pytorch-grad-cam.

    Grad-CAM of the score :class:`FinerTarget` (the main class's logit minus ``alpha`` times
    the logits of its most similar classes, weighted by their softmax probabilities):
    ``w_bk = mean_ij dF_b/dA_bkij``, map ``= sum_k w_bk A_bk``. Options ``finercam_alpha``
    (1.0), ``finercam_comparison`` (ranks, default ``(1, 2, 3)``), ``finercam_target_idx``.
    With explicit ``targets`` and no ``finercam_target_idx`` the reference (and camwall)
    explains those targets: gradcam. ``finercam_target_idx`` may list one class per image (the
    bench passes its targets so: FinerCAM's comparison for each image's explained class).
    The finer score's gradient costs one extra pass through the model's tail.
    ``finercam_base`` (default ``gradcam``): another method's map of the finer targets (a new
    recorded pass on the same inputs, as grad-cam's ``FinerCAM(base_method=...)``).
    """

    needs_gradient = True
    default = True  # in the default bench: ~0.6 s per 200 images on the shipped pair
    reruns_tail = True
    options: ClassVar[dict[str, Any]] = {
        "finercam_alpha": 1.0,
        "finercam_comparison": None,
        "finercam_target_idx": None,
        "finercam_base": "gradcam",
    }
    checks: ClassVar[dict[str, Check]] = {
        "finercam_alpha": number,
        "finercam_comparison": as_given,  # ranks, checked against the classes
        "finercam_target_idx": as_given,  # checked against the classes
        "finercam_base": base_method_check(exclude=("finercam",)),
    }

    def weights(self, ctx: CamContext) -> Tensor:
        if ctx.extras.explicit_targets and self.opts["finercam_target_idx"] is None:
            assert ctx.gradients is not None
            return ctx.gradients.mean(dim=(2, 3))
        return _tail_gradient(ctx, self._targets(ctx)).mean(dim=(2, 3))

    def raw_map(self, ctx: CamContext) -> Tensor:
        if self.opts["finercam_base"] == "gradcam":
            return super().raw_map(ctx)
        base, sub = self._base_pass(ctx)
        return base.raw_map(sub)

    def eigen_raw(self, ctx: CamContext) -> Tensor:
        """``eigen_smooth``: gradcam's (first component of ``w A``), else the base's own."""
        if self.opts["finercam_base"] == "gradcam":
            return first_component(self.weighted(ctx))
        base, sub = self._base_pass(ctx)
        return eigen_raw(base, sub)

    def _targets(self, ctx: CamContext) -> Sequence[Target]:
        """The finer targets (:func:`finer_targets`), or the caller's explicit ones."""
        if ctx.extras.explicit_targets and self.opts["finercam_target_idx"] is None:
            return ctx.targets
        return finer_targets(
            class_logits(ctx.logits, "finercam"),
            self.opts["finercam_comparison"],
            float(self.opts["finercam_alpha"]),
            self.opts["finercam_target_idx"],
        )

    def _base_pass(self, ctx: CamContext) -> tuple[CamMethod, CamContext]:
        """The base method and a new recorded pass on the same inputs with the finer targets
        (as grad-cam's FinerCAM runs its base with them)."""
        base = METHODS.get(self.opts["finercam_base"])()
        sub = ctx.runner.capture(ctx.x, list(self._targets(ctx)), Needs.of([type(base)]))
        return base, sub


def _tail_gradient(ctx: CamContext, fns: Sequence[Target]) -> Tensor:
    """``d f_b / dA_b`` for new targets, from one pass through the tail (float32)."""
    a = ctx.raw_activations.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = ctx.run_tail(a)
        scores = score_rows(logits, range(a.shape[0]), fns)
        (g,) = torch.autograd.grad(scores.sum(), a, allow_unused=True)
    return torch.zeros_like(ctx.activations) if g is None else g.float()
