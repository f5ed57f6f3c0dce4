"""The wall test as a Quantus 0.6 metric: :class:`WallLeakage`.

Pass the dead zone (``camwall.walls.dead_zone``) as Quantus' segmentation ``s_batch``; the score
is the paper's mu per sample, computed by :func:`camwall.metrics.wall_leakage` after camwall's
reduction rule (:func:`camwall.explainers.reduce_attributions`)::

    mu_b = ||L_b on D||_2 / ||L_b||_2,   L_b = N(sum_c |A_bc|)

Lower is better; a faithful explainer scores 0. Example::

    import numpy as np, quantus
    from camwall.quantus import WallLeakage, explain_func

    dead = dead_zone(model, (1, 64, 64)).numpy()
    s = np.broadcast_to(dead, (len(x), 1, 64, 64))
    metric = WallLeakage()
    mu = metric(model=model, x_batch=x, y_batch=y, a_batch=a, s_batch=s)        # list of B
    # or let Quantus call any camwall explainer:
    mu = metric(model=model, x_batch=x, y_batch=y, s_batch=s, explain_func=explain_func,
                explain_func_kwargs={"explainer": "captum:Saliency"})

**All-zero attributions.** Quantus' ``assert_attributions`` rejects a batch whose
attributions are all zero (or all one, or constant). Yet an all-zero map is exactly what a
faithful gradient explainer returns for an input whose target does not depend on it at all
(e.g. a fully dead input), and a constant map is camwall's ``uniform`` control. WallLeakage
therefore scores such batches itself, without Quantus' assertion: an all-zero map carries no
attribution, so mu is 0/0 and the sample scores ``empty_score`` (NaN by default, as in
:mod:`camwall.metrics`, where empty maps are counted apart); ``aggregate_func`` defaults to
``np.nanmean`` so that such samples drop out of the mean. A constant map is empty too: the
min-max normalization ``N`` of the rule maps it to zeros (camwall's ``uniform`` control, which
skips ``N`` in the bench, scores ``sqrt(|D| / (H W))`` there instead).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from camwall.errors import CamwallError

try:
    import quantus as _quantus
    from quantus.helpers.enums import DataType, EvaluationCategory, ModelType, ScoreDirection
except ImportError:
    raise CamwallError(
        "camwall.quantus needs the quantus package, which is not installed: "
        "pip install 'camwall[quantus]'"
    ) from None

from camwall.cams import normalize_maps
from camwall.explainers import explain, reduce_attributions
from camwall.metrics import wall_leakage

__all__ = ["WallLeakage", "explain_func", "wall_leakage_scores"]


def wall_leakage_scores(
    a_batch: np.ndarray, s_batch: np.ndarray, empty_score: float = math.nan
) -> list[float]:
    """mu per sample from raw attributions and dead-zone masks.

    Args:
        a_batch: B x C x H x W (or B x H x W) attributions, any sign.
        s_batch: the dead zone, B x 1 x H x W, B x H x W or H x W (truthy = dead).
        empty_score: the score of an all-zero map (mu is 0/0 there).

    Returns:
        B floats in [0, 1].

    Raises:
        CamwallError: an empty batch, a non-finite attribution, or a dead zone of another shape.
    """
    a = _checked_attributions(a_batch)
    maps = reduce_attributions(a) if a.dim() == 4 else normalize_maps(a.abs())
    b = maps.shape[0]
    s = torch.from_numpy(np.array(dead_zone_masks(s_batch, a.shape))).bool()[:, 0]
    if bool((s == s[0]).all()):
        mu = wall_leakage(maps, s[0])
    else:
        mu = torch.cat([wall_leakage(maps[i : i + 1], s[i]) for i in range(b)])
    return [empty_score if math.isnan(v) else v for v in mu.tolist()]


def _checked_attributions(a_batch: Any) -> torch.Tensor:
    """``a_batch`` as float32, refused when empty, not B x [C x] H x W, or not finite (an Inf
    would become NaN after the min-max normalization)."""
    a = torch.from_numpy(np.array(a_batch, dtype=np.float32))  # a copy: Quantus' may be read-only
    if a.dim() not in (3, 4):
        raise CamwallError(
            f"a_batch (the attributions) has shape {tuple(a.shape)}; expected B x C x H x W or "
            "B x H x W."
        )
    if a.shape[0] == 0:
        raise CamwallError("a_batch (the attributions) is empty (B = 0); pass at least one sample.")
    bad = (~torch.isfinite(a)).flatten(1).any(dim=1)
    if bad.any():
        i = int(bad.nonzero()[0])
        what = "NaN" if torch.isnan(a[i]).any() else "Inf"
        raise CamwallError(
            f"a_batch (the attributions) holds {what} in sample {i} ({int(bad.sum())} of "
            f"{len(a)} samples); mu is undefined there: fix the explainer's output."
        )
    return a


def dead_zone_masks(s_batch: Any, shape: tuple[int, ...]) -> np.ndarray:
    """The dead zone as Quantus' ``s_batch``: ``B x 1 x H x W`` for attributions of ``shape``
    (``B x C x H x W`` or ``B x H x W``), from ``H x W``, ``B x H x W`` or ``B x 1 x H x W``
    (a ``B x C x H x W`` mask is dead where any channel is)."""
    b, h, w = int(shape[0]), int(shape[-2]), int(shape[-1])
    s = np.asarray(s_batch)
    if s.ndim == 2:
        s = s[None, None]
    elif s.ndim == 3:
        s = s[:, None]
    elif s.ndim == 4 and s.shape[1] != 1:
        s = np.asarray(s.any(axis=1, keepdims=True))
    if s.ndim != 4 or s.shape[0] not in (1, b) or tuple(s.shape[2:]) != (h, w):
        raise CamwallError(
            f"s_batch (the dead zone) has shape {tuple(np.shape(s_batch))}; expected "
            f"{(b, 1, h, w)}, {(b, h, w)} or {(h, w)} to match the attributions."
        )
    return np.broadcast_to(s, (b, 1, h, w))


def _degenerate(a_batch: np.ndarray) -> bool:
    """What Quantus' ``assert_attributions`` rejects: all 0, all 1, or a single value."""
    a = np.asarray(a_batch)
    return bool(np.all(a == 0) or np.all(a == 1.0) or np.unique(a).size <= 1 or np.all(a < 0))


class WallLeakage(_quantus.Metric):
    """Wall leakage mu as a Quantus metric (localisation; lower is better; 0 = faithful).

    Args:
        empty_score: the score of an all-zero map (default NaN, see the module docstring).
        return_aggregate: return ``[aggregate_func(scores)]`` instead of one score per sample.
        aggregate_func: default ``np.nanmean``.
        **kwargs: the remaining Quantus ``Metric`` arguments (``display_progressbar``, ...).
            ``abs``/``normalise`` are fixed: camwall's reduction rule applies instead.
    """

    name = "Wall Leakage"
    data_applicability: ClassVar[set[Any]] = {DataType.IMAGE}
    model_applicability: ClassVar[set[Any]] = {ModelType.TORCH}
    score_direction = ScoreDirection.LOWER
    evaluation_category = EvaluationCategory.LOCALISATION

    def __init__(
        self,
        empty_score: float = math.nan,
        return_aggregate: bool = False,
        aggregate_func: Callable[..., Any] | None = None,
        default_plot_func: Callable[..., Any] | None = None,
        disable_warnings: bool = True,
        display_progressbar: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            abs=False,
            normalise=False,
            normalise_func=None,
            normalise_func_kwargs=None,
            return_aggregate=return_aggregate,
            aggregate_func=aggregate_func or np.nanmean,
            default_plot_func=default_plot_func,
            disable_warnings=disable_warnings,
            display_progressbar=display_progressbar,
            **kwargs,
        )
        self.empty_score = empty_score

    def __call__(
        self,
        model: Any,
        x_batch: np.ndarray,
        y_batch: np.ndarray,
        a_batch: np.ndarray | None = None,
        s_batch: np.ndarray | None = None,
        explain_func: Callable[..., Any] | None = None,
        explain_func_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        """Score a batch (Quantus' ``Metric.__call__``; ``s_batch`` is required: the dead zone
        as ``H x W``, ``B x H x W`` or ``B x 1 x H x W``).

        Raises:
            CamwallError: no ``s_batch``; an empty batch; a NaN/Inf attribution.
        """
        if s_batch is None:
            raise CamwallError(
                "WallLeakage needs the dead zone as s_batch (camwall.walls.dead_zone(model, "
                "input_shape), broadcast to B x 1 x H x W)."
            )
        if a_batch is None:
            if explain_func is None:
                raise CamwallError("WallLeakage needs a_batch or an explain_func.")
            a_batch = explain_func(
                model=model, inputs=x_batch, targets=y_batch, **(explain_func_kwargs or {})
            )
        a = _checked_attributions(a_batch)
        s_batch = np.ascontiguousarray(dead_zone_masks(s_batch, a.shape))  # H x W too
        if _degenerate(np.asarray(a_batch)):
            return self._score_directly(np.asarray(a_batch), s_batch)
        scores = super().__call__(
            model=model,
            x_batch=x_batch,
            y_batch=y_batch,
            a_batch=a_batch,
            s_batch=s_batch,
            channel_first=kwargs.pop("channel_first", True),
            explain_func=None,
            explain_func_kwargs=None,
            model_predict_kwargs=kwargs.pop("model_predict_kwargs", None),
            softmax=kwargs.pop("softmax", False),
            **kwargs,
        )
        return list(scores)

    def _score_directly(self, a_batch: np.ndarray, s_batch: np.ndarray) -> list[float]:
        """Score a batch Quantus would reject, keeping its bookkeeping (aggregate, history)."""
        scores = wall_leakage_scores(a_batch, s_batch, self.empty_score)
        if self.return_aggregate:
            scores = [float(self.aggregate_func(scores))]
        self.evaluation_scores = scores
        self.all_evaluation_scores.extend(scores)
        return scores

    def evaluate_batch(
        self, a_batch: np.ndarray, s_batch: np.ndarray, **kwargs: Any
    ) -> list[float]:
        """mu per sample of one batch (see :func:`wall_leakage_scores`)."""
        return wall_leakage_scores(a_batch, s_batch, self.empty_score)


def explain_func(
    model: torch.nn.Module,
    inputs: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor | list[int] | None,
    explainer: str | None = None,
    method: str | None = None,
    device: str | None = None,
    **options: Any,
) -> np.ndarray:
    """Any camwall explainer as a Quantus ``explain_func``: B x 1 x H x W float32 maps.

    Args:
        model, inputs, targets: as Quantus passes them (numpy or tensors).
        explainer: a camwall explainer name (``captum:Saliency``, ``gradcam``, ``py:...``).
        method: used when ``explainer`` is not given: ``quantus.evaluate`` passes the key of
            ``xai_methods`` here, so ``xai_methods={"captum:Saliency": explain_func, "gradcam":
            explain_func}`` evaluates both.
        device: where to run (default: the model's device).
        **options: the explainer's options.
    """
    name = explainer or method
    if not name:
        raise CamwallError("explain_func needs explainer='NAME' (e.g. 'captum:Saliency').")
    param = next(model.parameters(), None)
    dev = torch.device(device) if device else (param.device if param is not None else None)
    x = torch.as_tensor(np.asarray(inputs) if not torch.is_tensor(inputs) else inputs)
    x = x.float().to(dev) if dev is not None else x.float()
    t = None if targets is None else [int(v) for v in np.asarray(targets).reshape(-1)]
    maps = explain(model, x, name, t, **options)
    return maps[:, None].cpu().numpy()
