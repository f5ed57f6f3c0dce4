"""grad-cam's meta-methods over a base CAM (FinerCAM, SESS, RefineCAM) and SegEigenCAM, all
engine-native."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from camwall.compat.pytorch_grad_cam._base import BaseCAM, require_engine
from camwall.compat.pytorch_grad_cam._cams import GradCAM, GradCAMPlusPlus
from camwall.errors import CamwallError

__all__ = ["SESS", "FinerCAM", "RefineCAM", "SegEigenCAM"]

Reshape = Callable[[Any], Tensor] | None
Targets = Sequence[Callable[[Tensor], Tensor]] | None


class _ForwardCAM(BaseCAM):
    """A meta-method called as grad-cam calls it: ``cam(...)`` is ``cam.forward(...)``, which
    takes no ``aug_smooth`` (``forward(input_tensor, targets=None, eigen_smooth=False)`` unless a
    class says otherwise)."""

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return self.forward(*args, **kwargs)

    def forward(
        self, input_tensor: Tensor, targets: Targets = None, eigen_smooth: bool = False
    ) -> np.ndarray:
        return self.compute(input_tensor, targets, eigen_smooth=eigen_smooth)


def _base_options(
    base_method: type, model: nn.Module, layers: Sequence[nn.Module], reshape: Reshape, kwargs: Any
) -> dict[str, Any]:
    """The engine options of ``base_method`` built as grad-cam builds its base (its
    constructor's ``**kwargs``), on the first target layer."""
    probe = base_method(model, list(layers)[:1], reshape, **kwargs)
    return {**probe._options, **probe.batch_options()}


class FinerCAM(_ForwardCAM):
    """Finer-CAM: Grad-CAM of ``sum_j p_j (y_m - alpha y_j) / (sum_j p_j + 1e-9)`` over the
    classes most similar to the main one (targets ``None``), else of the given targets.

    Same maps as grad-cam (1e-5). The call is grad-cam's ``forward(input_tensor, targets=None,
    eigen_smooth=False, alpha=1, comparison_categories=None, target_idx=None)`` (no
    ``aug_smooth``). Several target layers are aggregated as grad-cam; ``base_method`` is one of
    this package's CAM classes (default :class:`GradCAM`; others run a second recorded pass
    with the finer targets, as grad-cam runs its base with them).
    """

    method = "finercam"

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Reshape = None,
        base_method: type = GradCAM,
    ) -> None:
        base = getattr(base_method, "method", None)
        if not isinstance(base, str) or not base:
            raise CamwallError(
                f"FinerCAM: base_method must be one of the CAM classes of "
                f"camwall.compat.pytorch_grad_cam, got "
                f"{getattr(base_method, '__name__', base_method)!r}."
            )
        self.base_method = base_method
        super().__init__(model, target_layers, reshape_transform, finercam_base=base)

    def forward(
        self,
        input_tensor: Tensor,
        targets: Targets = None,
        eigen_smooth: bool = False,
        alpha: float = 1,
        comparison_categories: Sequence[int] | None = None,
        target_idx: int | None = None,
    ) -> np.ndarray:
        options: dict[str, Any] = {"finercam_alpha": alpha, "eigen_smooth": eigen_smooth}
        if comparison_categories is not None:
            options["finercam_comparison"] = tuple(comparison_categories)
        if target_idx is not None:
            options["finercam_target_idx"] = target_idx
        return self.compute(input_tensor, targets, **options)


class SESS(_ForwardCAM):
    """SESS: the base method's maps over scaled, sliding-window patches, weighted and fused.

    Same maps as grad-cam (1e-5 on most inputs; the ``theta`` count is a knife edge, see
    ``docs/cam-methods.md``). Patches of all images share forward chunks of ``batch_size``.
    The call is ``forward(input_tensor, targets=None, eigen_smooth=False)`` (``eigen_smooth``
    smooths each patch's base map); ``**kwargs`` go to the base method's constructor, as in
    grad-cam. With several target layers each patch's base map is over all of them.
    """

    method = "sess"
    batch_option = "sess_chunk"

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Reshape = None,
        base_method: type = GradCAM,
        scales: Sequence[int] | None = None,
        num_scales: int = 12,
        scale_step_ratio: float = 2.0 / 7.0,
        window_size: int | None = None,
        step_size: int | None = None,
        pre_filter_ratio: float = 0.0,
        theta: float = 0.0,
        pool: str = "mean",
        smooth: bool = True,
        use_softmax_scores: bool = True,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        base = getattr(base_method, "method", None)
        if not isinstance(base, str) or base in ("", "sess"):
            raise require_engine(
                f"SESS with base_method={getattr(base_method, '__name__', base_method)}",
                "use one of the CAM classes of camwall.compat.pytorch_grad_cam.",
            )
        base_options = _base_options(base_method, model, target_layers, reshape_transform, kwargs)
        self.base_method = base_method
        self.batch_size = batch_size
        options = {
            "sess_base": base,
            "sess_scales": None if scales is None else [int(s) for s in scales],
            "sess_num_scales": num_scales,
            "sess_scale_step_ratio": scale_step_ratio,
            "sess_window": window_size,
            "sess_step": step_size,
            "sess_pre_filter": pre_filter_ratio,
            "sess_theta": theta,
            "sess_pool": pool,
            "sess_smooth": smooth,
            "sess_softmax": use_softmax_scores,
            "sess_base_options": base_options,
        }
        super().__init__(model, target_layers, reshape_transform, **options)


class RefineCAM(_ForwardCAM):
    """RefineCAM: the product over target layers of the base method's map for each layer
    alone, min-max normalized (engine method ``refinecam``). Same maps as grad-cam (1e-5).

    ``base_method`` is one of this package's CAM classes (default :class:`GradCAMPlusPlus`);
    ``**kwargs`` go to its constructor, as in grad-cam (e.g. ``kernel="rbf"`` for
    :class:`KPCA_CAM`). The call is grad-cam's ``forward(input_tensor, targets=None,
    eigen_smooth=False)``. Deliberate difference: ``eigen_smooth=True`` smooths each base map;
    grad-cam 1.5.7 hands it to each base's ``__call__`` as its third positional argument,
    ``aug_smooth``, so its maps are then test-time-augmented instead.
    """

    method = "refinecam"

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Reshape = None,
        base_method: type = GradCAMPlusPlus,
        **kwargs: Any,
    ) -> None:
        base = getattr(base_method, "method", None)
        if not isinstance(base, str) or not base or not issubclass(base_method, BaseCAM):
            raise CamwallError(
                f"RefineCAM: base_method must be one of the CAM classes of "
                f"camwall.compat.pytorch_grad_cam (e.g. GradCAMPlusPlus), got "
                f"{getattr(base_method, '__name__', base_method)!r}."
            )
        layers = list(target_layers)
        self.base_method = base_method
        self.base_cam_options = _base_options(base_method, model, layers, reshape_transform, kwargs)
        super().__init__(
            model,
            layers,
            reshape_transform,
            refinecam_base=base,
            refinecam_base_options=self.base_cam_options,
        )


class SegEigenCAM(BaseCAM):
    """Seg-Eigen-CAM (Chung & Ying 2025): first principal component of ``|G| * A``, negated
    when ``|min| > |max|`` (engine method ``segeigencam``). Same maps as grad-cam (1e-5): the
    sign rule does not depend on LAPACK's sign. ``eigen_smooth`` is ignored, as in grad-cam."""

    method = "segeigencam"
