"""The method protocol and the registry.

As in torch-cam, one base class owns the weighted sum, the ReLU and the normalization; each
method only supplies its channel weights (``weights``), or its whole low-resolution map
(``raw_map``), or, for methods whose output is already final, the final map (``final_map``).
The engine (:class:`camwall.cams.CamEngine`) owns capture, gradients and hygiene.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from camwall.cams._post import finalize_maps
from camwall.cams._targets import Target
from camwall.registry import Registry

if TYPE_CHECKING:
    from camwall.cams._engine import CamEngine

__all__ = ["METHODS", "CamContext", "CamMethod"]


@dataclass(frozen=True)
class CamContext:
    """Everything one forward (and, if needed, one backward) pass produced.

    Attributes:
        x: B x C x H x W input (detached).
        activations: B x K x h x w target-layer output, float32, detached.
        raw_activations: the same in the model's dtype (what the model's tail consumes).
        gradients: B x K x h x w float32 ``dy_b / dA_b``, or ``None`` if no method needs it.
        hvp: B x K x h x w float32 Hessian-vector product ``(d^2 y_b / dA_b^2) A_b``, or ``None``
            if no method needs it (only shapleycam does).
        logits: the model output (after ``output_fn``), detached.
        scores: B float32 target scores ``y_b``.
        targets: one callable per image.
        engine: the running engine (for methods that re-run the model or its tail).
        explicit_targets: whether the caller passed ``targets`` (``False``: the argmax default).
        input_gradient: ``dy/dx`` (B x C x H x W), only if a method needs bias gradients.
        bias_gradients: ``(layer, dy/dz)`` for every biased Conv2d / BatchNorm2d (output ``z``),
            same pass, only if a method needs them (fullgrad); ``None`` where unused.
        layer_output: the target layer's raw output before ``reshape_transform`` (detached),
            only when the engine has a reshape transform (for :meth:`run_tail`).
        volume: ``(d, h, w)`` for a 3-D convolutional layer (B x K x d x h x w); the engine
            then hands methods ``activations`` (and gradients) viewed as B x K x d x (h*w), so
            that every per-position formula applies unchanged; ``None`` for 2-D layers.
    """

    x: Tensor
    activations: Tensor
    raw_activations: Tensor
    gradients: Tensor | None
    logits: Tensor
    scores: Tensor
    targets: Sequence[Target]
    engine: CamEngine
    hvp: Tensor | None = None
    explicit_targets: bool = False
    input_gradient: Tensor | None = None
    bias_gradients: tuple[tuple[nn.Module, Tensor | None], ...] = ()
    layer_output: Tensor | None = None
    volume: tuple[int, ...] | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        return (int(self.x.shape[-2]), int(self.x.shape[-1]))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """All spatial sizes of the input: ``(H, W)``, or ``(D, H, W)`` for volumes."""
        return tuple(int(n) for n in self.x.shape[2:])

    def run_tail(self, a: Tensor, rows: Sequence[int] | Tensor | None = None) -> Tensor:
        """Logits for modified feature maps ``a`` of the images ``rows`` (default: all).

        Re-runs the model's part after the target layer (see :meth:`CamEngine.run_tail`); with
        a ``reshape_transform`` the maps go back to raw outputs through its ``inverse``.
        """
        idx = list(range(self.x.shape[0])) if rows is None else rows
        original = None if self.layer_output is None else self.layer_output[idx]
        return self.engine.run_tail(a, self.x[idx], original)


class CamMethod:
    """Base of all CAM methods.

    The final map is ``finalize(raw_map)`` where, by default,
    ``raw_map = sum_k w_bk * A_bk`` with ``w = weights(ctx)`` of shape B x K (one weight per
    channel) or B x K x h x w (elementwise weights). ``finalize`` is ReLU, per-image min-max
    normalization, bilinear resize to the input size, and normalization again.

    Subclasses set ``needs_gradient`` (``needs_hvp`` for a Hessian-vector product) and declare
    their options in ``options`` (name -> default);
    option names carry the method name as prefix (``scorecam_chunk``), except shared ones.
    """

    name: ClassVar[str] = ""  # the registry name, given as ``class X(CamMethod, name="x")``
    needs_gradient: ClassVar[bool] = False
    needs_hvp: ClassVar[bool] = False
    needs_bias_gradients: ClassVar[bool] = False
    #: ``False``: the call runs the model on plain (not channels-last) inputs, for methods whose
    #: map amplifies the ~1e-7 rounding of channels-last convolutions (fullgrad, randomcam).
    channels_last_ok: ClassVar[bool] = True
    #: Whether the method is in the wall benchmark's default run
    #: (:data:`camwall.cams.DEFAULT_METHODS`); slow methods set it to ``False``.
    default: ClassVar[bool] = True
    #: ``True``: the method re-runs the model from modified target-layer activations
    #: (:meth:`CamContext.run_tail`); it then needs ``reshape_transform.inverse`` and one layer.
    reruns_tail: ClassVar[bool] = False
    #: ``True``: the method treats positions as a set (sums, means, per-position products,
    #: decompositions), so it also applies to 3-D layers (:attr:`CamContext.volume`).
    volumetric: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, name: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name:
            cls.name = name

    def __init__(self, **options: Any) -> None:
        self.opts = {**self.options, **{k: v for k, v in options.items() if k in self.options}}

    def weights(self, ctx: CamContext) -> Tensor:
        """Channel weights, B x K or B x K x h x w."""
        raise NotImplementedError(f"{type(self).__name__} must define weights() or raw_map()")

    def weighted(self, ctx: CamContext) -> Tensor:
        """The per-channel terms ``w_bk A_bk`` (B x K x h x w) whose channel sum is the raw map;
        ``eigen_smooth`` replaces that sum by their first principal component."""
        w = self.weights(ctx)
        if w.dim() == 2:
            w = w[:, :, None, None]
        return w * ctx.activations

    def raw_map(self, ctx: CamContext) -> Tensor:
        """The map before the ReLU, B x h x w float32: ``sum_k w_bk A_bk``."""
        return self.weighted(ctx).sum(dim=1)

    def final_map(self, ctx: CamContext) -> Tensor:
        """The final map, B x H x W float32 in [0, 1]."""
        return finalize_maps(self.raw_map(ctx), ctx.input_size)


#: Registry of CAM methods by name; values are :class:`CamMethod` subclasses.
METHODS: Registry[type[CamMethod]] = Registry("CAM method")
