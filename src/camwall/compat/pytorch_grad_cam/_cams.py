"""The CAM classes of pytorch-grad-cam 1.5.7 whose method camwall's engine computes natively.

Each class names its engine method and maps its own constructor arguments to engine options
(``docs/cams.md``); the formulas and the measured agreement with grad-cam are in
``docs/cam-methods.md``. Arguments left at ``None`` take the engine's default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from camwall.compat.pytorch_grad_cam._base import (
    BaseCAM,
    engine_default,
    require_engine,
)
from camwall.compat.pytorch_grad_cam.ablation_layer import (
    AblationLayer,
    AblationLayerFasterRCNN,
    AblationLayerVit,
    engine_ablation_options,
)

__all__ = [
    "FEM",
    "KPCA_CAM",
    "AblationCAM",
    "EigenCAM",
    "EigenGradCAM",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "RandomCAM",
    "ScoreCAM",
    "ShapleyCAM",
    "XGradCAM",
]

Reshape = Callable[[Any], Tensor] | None


def _given(**options: Any) -> dict[str, Any]:
    """The options that were given (not ``None``): the others keep the engine's default."""
    return {k: v for k, v in options.items() if v is not None}


class GradCAM(BaseCAM):
    """Grad-CAM: ``sum_k mean_ij(G_k) A_k``. Same maps as grad-cam (1e-5)."""

    method = "gradcam"


class HiResCAM(BaseCAM):
    """HiResCAM: ``sum_k G_k * A_k``. Same maps as grad-cam (1e-5); with ``eigen_smooth`` the
    SVD sign is fixed (grad-cam leaves it to LAPACK) and no warning is printed."""

    method = "hirescam"


class GradCAMElementWise(BaseCAM):
    """Grad-CAM element-wise: ``sum_k max(G_k * A_k, 0)``. Same maps as grad-cam (1e-5)."""

    method = "gradcamelementwise"


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ (closed form). Same maps as grad-cam (1e-5)."""

    method = "gradcampp"


class XGradCAM(BaseCAM):
    """XGrad-CAM: ``w_k = sum_ij(G A) / (sum_ij A + 1e-7)``. Same maps as grad-cam (1e-5)."""

    method = "xgradcam"


class LayerCAM(BaseCAM):
    """LayerCAM: ``sum_k max(G_k, 0) * A_k``. Same maps as grad-cam (1e-5)."""

    method = "layercam"


class ShapleyCAM(BaseCAM):
    """ShapleyCAM: ``sum_k mean_ij(G - H A / 2)_k A_k``. Same maps as grad-cam (1e-5); the
    Hessian-vector product comes from one batched double-backward (no parameter gradients)."""

    method = "shapleycam"


class EigenCAM(BaseCAM):
    """EigenCAM: first principal component of the activations.

    Deliberate difference: the SVD sign is fixed so that the map correlates positively with the
    channel-mean activation map (grad-cam leaves the sign to LAPACK, which can highlight the
    complement of the object); equal to grad-cam up to that sign. ``eigen_smooth`` is ignored,
    as in grad-cam.
    """

    method = "eigencam"


class EigenGradCAM(BaseCAM):
    """EigenGradCAM: first principal component of ``G * A``; sign fixed as :class:`EigenCAM`
    (equal to grad-cam up to sign), computed in float64."""

    method = "eigengradcam"


class KPCA_CAM(BaseCAM):
    """Kernel-PCA CAM of the activations (kernels ``"sigmoid"``, ``"rbf"``).

    Dense float64 eigendecomposition with scikit-learn's sign rule; grad-cam's float32
    ``KernelPCA`` is up to ~2e-5 from its own float64 result, so parity holds to that.

    Args:
        kernel: ``"sigmoid"`` or ``"rbf"`` (``None``: the engine's default, ``"sigmoid"``).
        gamma: kernel coefficient (``None``: ``1 / K``).
    """

    method = "kpcacam"

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Reshape = None,
        kernel: str | None = None,
        gamma: float | None = None,
    ) -> None:
        self.kernel = kernel if kernel is not None else engine_default("kpcacam", "kpcacam_kernel")
        self.gamma = gamma
        super().__init__(
            model,
            target_layers,
            reshape_transform,
            **_given(kpcacam_kernel=kernel, kpcacam_gamma=gamma),
        )


class FEM(BaseCAM):
    """Feature Explanation Method: ``w_k`` = share of ``A_k`` above ``mean + k std``.

    Same maps as grad-cam (1e-5). grad-cam ignores ``eigen_smooth`` for FEM; camwall applies it.

    Args:
        k: the number of standard deviations (``None``: the engine's default, 2).
    """

    method = "fem"

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Reshape = None,
        k: float | None = None,
    ) -> None:
        self.k = k if k is not None else engine_default("fem", "fem_k")
        super().__init__(model, target_layers, reshape_transform, fem_k=self.k)


class ScoreCAM(BaseCAM):
    """Score-CAM: softmax over channels of the masked-input scores. Same maps as grad-cam
    (1e-5); channels with identical masks are scored once. ``batch_size`` (default: the
    engine's chunk, 16, as grad-cam) is the number of masked inputs per forward pass."""

    method = "scorecam"
    batch_option = "scorecam_chunk"

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Reshape = None,
    ) -> None:
        self.batch_size = engine_default("scorecam", "scorecam_chunk")
        super().__init__(model, target_layers, reshape_transform)


class AblationCAM(BaseCAM):
    """Ablation-CAM: ``w_k = (s0 - s_k) / s0`` with channel k of the target layer set to 0.

    Only the part of the model after the target layer is re-run (for Sequential models and
    torch.fx-traceable ones; else the whole model with the layer's output replaced); several
    target layers are ablated one after the other and aggregated as grad-cam. Deliberate
    differences: channels are ablated to 0, never grad-cam's ``min - 1e7`` (which grad-cam uses
    on layers without an exact zero, e.g. ViT tokens), so maps equal grad-cam's on non-negative
    layers containing a zero (a ReLU's output); where the target score ``s0`` is 0 the weights
    are the drops ``s0 - s_k`` (grad-cam's maps are NaN there). With :class:`AblationLayerVit`
    (or any ``reshape_transform``) the tokens are ablated through
    ``reshape_transform.inverse`` (the prefix tokens are kept; grad-cam also ablates the class
    token). ``batch_size`` is the number of ablated copies per forward pass.

    Args:
        ablation_layer: :class:`AblationLayer` (default), :class:`AblationLayerVit` (the
            engine ablates to 0 itself), :class:`AblationLayerFasterRCNN` (an FPN's dict of levels
            with ``fasterrcnn_reshape_transform``: channels set to -1000 in the levels, as
            grad-cam); any other ablation layer with grad-cam's protocol (``set_next_batch``,
            ``indices``, a call returning the ablated outputs, e.g. a subclass of
            :class:`AblationLayer` that ablates to another value) makes the ablated copies
            itself, image by image, as in grad-cam: ``set_next_batch`` gets the layer's raw
            outputs (tokens, with a ``reshape_transform``; no ``inverse`` needed), and its own
            ``activations_to_be_ablated`` picks the channels.
        batch_size: ablated copies per forward pass (``None``: the engine's default, 32).
        ratio_channels_to_ablate: the share of channels to ablate, in (0, 1], picked as
            grad-cam's ``AblationLayer.activations_to_be_ablated`` (the rest get weight 0).
    """

    method = "ablationcam"
    batch_option = "ablationcam_chunk"

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Reshape = None,
        ablation_layer: nn.Module | None = None,
        batch_size: int | None = None,
        ratio_channels_to_ablate: float = 1.0,
    ) -> None:
        own = ablation_layer is None or type(ablation_layer) in (
            AblationLayer,
            AblationLayerVit,
            AblationLayerFasterRCNN,
        )
        self.ablation_layer = ablation_layer if ablation_layer is not None else AblationLayer()
        self.ratio_channels_to_ablate = ratio_channels_to_ablate
        chunk = engine_default("ablationcam", "ablationcam_chunk")
        self.batch_size = batch_size if batch_size is not None else chunk
        options: dict[str, Any] = {"ablationcam_ratio": ratio_channels_to_ablate}
        options.update(engine_ablation_options(self.ablation_layer, reshape_transform))
        if not own:
            options["ablationcam_layer"] = ablation_layer
        super().__init__(model, target_layers, reshape_transform, **options)


class FullGrad(BaseCAM):
    """FullGrad: input-gradient and bias-gradient maps of every biased Conv2d / BatchNorm2d.

    ``target_layers`` is ignored, as in grad-cam (camwall records its first layer, or the
    model's first convolution, only to run the shared pass). Same maps as grad-cam (1e-5);
    one backward pass gives every bias gradient. ``eigen_smooth`` decomposes the input- and
    bias-gradient maps at H/8 x W/8 as grad-cam (its SVD sign fixed, as EigenCAM's).
    """

    method = "fullgrad"

    def engine_layers(self) -> list[nn.Module]:
        if self.target_layers:
            return self.target_layers[:1]
        convs: list[nn.Module] = [m for m in self.model.modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise require_engine("FullGrad without Conv2d layers", "explain a CNN.")
        return convs[:1]


class RandomCAM(BaseCAM):
    """Random channel weights ``w_k ~ U[-1, 1)`` (a control).

    grad-cam draws from NumPy's global RNG on every call; camwall's engine takes explicit
    randomness. Without ``seed`` / ``generator`` each call draws its seed from NumPy's global
    RNG (so ``np.random.seed`` makes runs reproducible and successive calls differ, as in
    grad-cam); the weights themselves come from a ``torch.Generator`` seeded with it, so they
    are not grad-cam's draws (given the same draws the maps are equal).

    Args:
        seed: a fixed seed (every call then gives the same map).
        generator: a CPU ``torch.Generator`` (one integer drawn per call).
    """

    method = "randomcam"

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Reshape = None,
        seed: int | None = None,
        generator: Any = None,
    ) -> None:
        super().__init__(
            model, target_layers, reshape_transform, **_given(seed=seed, generator=generator)
        )
        self._draw_seed = seed is None and generator is None

    def compute(
        self,
        input_tensor: Tensor,
        targets: Sequence[Callable[[Tensor], Tensor]] | None,
        **options: Any,
    ) -> np.ndarray:
        if self._draw_seed:
            options["seed"] = int(np.random.randint(0, 2**31 - 1))  # noqa: NPY002 (as grad-cam)
        return super().compute(input_tensor, targets, **options)
