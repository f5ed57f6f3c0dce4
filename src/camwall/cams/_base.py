"""The method protocol and the registry.

As in torch-cam, one base class owns the weighted sum, the ReLU and the normalization; each
method only supplies its channel weights (``weights``), or its whole low-resolution map
(``raw_map``), or, for methods whose output is already final, the final map (``final_map``).
The engine (:class:`camwall.cams.CamEngine`) owns capture, gradients and hygiene.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from torch import Tensor, nn

from camwall.cams._checks import Check
from camwall.cams._outputs import Outputs, take_rows
from camwall.cams._post import finalize_maps
from camwall.cams._targets import Target, TargetsArg
from camwall.errors import CamwallError
from camwall.registry import Registry

__all__ = ["METHODS", "CamContext", "CamMethod", "CamRunner", "Needs", "PassExtras"]


@dataclass(frozen=True)
class Needs:
    """What a pass must compute beyond the activations (see :meth:`CamRunner.capture`).

    Attributes:
        grad: gradients ``dy/dA``.
        hvp: the Hessian-vector product ``(d^2 y / dA^2) A`` (shapleycam).
        biases: ``dy/dx`` and ``dy/dz`` at every biased Conv2d / BatchNorm2d output (fullgrad).
        plain: plain (not channels-last) inputs, for methods that amplify float rounding.
    """

    grad: bool = False
    hvp: bool = False
    biases: bool = False
    plain: bool = False

    @classmethod
    def of(cls, classes: Sequence[type[CamMethod]]) -> Needs:
        """What one shared pass must compute for all of ``classes``."""
        return cls(
            grad=any(c.needs_gradient or c.needs_hvp for c in classes),
            hvp=any(c.needs_hvp for c in classes),
            biases=any(c.needs_bias_gradients for c in classes),
            plain=not all(c.channels_last_ok for c in classes),
        )


class CamRunner(Protocol):
    """What a method may ask of the model beyond its context: run it, capture it, run its tail.

    :class:`camwall.cams.CamEngine` hands one to every method as :attr:`CamContext.runner`.
    """

    @property
    def model(self) -> nn.Module: ...

    @property
    def layer_name(self) -> str: ...

    def run_model(self, x: Tensor) -> Outputs:
        """Logits of ``model(x)`` (N x ..., or N per-image dicts), the target layer not
        recorded."""
        ...

    def capture(self, x: Tensor, targets: TargetsArg, need: Needs | bool = False) -> CamContext:
        """A new pass on ``x`` recorded at the target layer (``need=True``: with gradients)."""
        ...

    def capture_layers(
        self, x: Tensor, targets: TargetsArg, need: Needs | bool = False
    ) -> list[CamContext]:
        """A new pass on ``x`` recorded at every target layer of the call: one context per
        layer (bind them with :func:`camwall.cams._perlayer.per_layer` to re-run a tail)."""
        ...

    @property
    def ablates_raw(self) -> bool:
        """Whether :meth:`run_ablated` sets channels in the raw layer output (a
        ``reshape_transform`` with ``ablate``) rather than in the feature maps."""
        ...

    def run_tail(
        self, a: Tensor, x: Tensor, original: Any = None, rows: Sequence[int] | Tensor | None = None
    ) -> Outputs:
        """Logits for target-layer feature maps ``a`` of the images ``rows`` of inputs ``x``
        (``rows=None``: ``x`` holds one image per row of ``a``; one target layer)."""
        ...

    def run_ablated(
        self,
        a: Tensor,
        x: Tensor,
        original: Any,
        channels: Tensor,
        value: float,
        rows: Sequence[int] | Tensor | None = None,
    ) -> Outputs:
        """Logits with channel ``channels[i]`` of row i of ``a`` set to ``value`` (one target
        layer; in the raw output when ``reshape_transform`` has ``ablate``)."""
        ...

    def run_raw(self, raw: Any, x: Tensor, rows: Sequence[int] | Tensor | None = None) -> Outputs:
        """Logits for the target layer's raw outputs ``raw`` (before any
        ``reshape_transform``) of the images ``rows`` of ``x`` (one target layer)."""
        ...


@dataclass(frozen=True)
class PassExtras:
    """What single methods ask of the shared pass, ``None`` / empty where no method asked.

    Attributes:
        hvp: B x K x h x w float32 ``(d^2 y_b / dA_b^2) A_b`` (shapleycam, ``needs_hvp``).
        input_gradient: ``dy/dx``, B x C x H x W (fullgrad, ``needs_bias_gradients``).
        bias_gradients: ``(layer, dy/dz)`` for every biased Conv2d / BatchNorm2d (output ``z``),
            same pass (fullgrad).
        explicit_targets: whether the caller passed ``targets`` (``False``: the argmax default;
            finercam then picks its comparison classes).
    """

    hvp: Tensor | None = None
    input_gradient: Tensor | None = None
    bias_gradients: tuple[tuple[nn.Module, Tensor | None], ...] = ()
    explicit_targets: bool = False


@dataclass(frozen=True)
class CamContext:
    """Everything one forward (and, if needed, one backward) pass produced.

    Attributes:
        x: B x C x H x W input (detached).
        activations: B x K x h x w target-layer output, float32, detached.
        raw_activations: the same in the model's dtype (what the model's tail consumes).
        gradients: B x K x h x w float32 ``dy_b / dA_b``, or ``None`` if no method needs it.
        logits: the model output (after ``output_fn``), detached: a B x ... tensor, or a list
            of B per-image dicts for detection models (:mod:`camwall.cams._outputs`).
        scores: B float32 target scores ``y_b``.
        targets: one callable per image.
        runner: runs the model, a new capture or the tail (:class:`CamRunner`).
        extras: what single methods asked of the same pass (:class:`PassExtras`).
        layer_output: the target layer's raw output before ``reshape_transform`` (detached;
            a tensor or a dict of tensors),
            only when the engine has a reshape transform (for :meth:`run_tail`).
        volume: ``(d, h, w)`` for a 3-D convolutional layer (B x K x d x h x w); the engine
            then hands methods ``activations`` (and gradients) viewed as B x K x d x (h*w), so
            that every per-position formula applies unchanged; ``None`` for 2-D layers.
    """

    x: Tensor
    activations: Tensor
    raw_activations: Tensor
    gradients: Tensor | None
    logits: Outputs
    scores: Tensor
    targets: Sequence[Target]
    runner: CamRunner
    extras: PassExtras = PassExtras()
    layer_output: Any = None
    volume: tuple[int, ...] | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        return (int(self.x.shape[-2]), int(self.x.shape[-1]))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """All spatial sizes of the input: ``(H, W)``, or ``(D, H, W)`` for volumes."""
        return tuple(int(n) for n in self.x.shape[2:])

    def run_tail(self, a: Tensor, rows: Sequence[int] | Tensor | None = None) -> Outputs:
        """Logits for modified feature maps ``a`` of the images ``rows`` (default: all).

        Re-runs the model's part after the target layer (see :meth:`CamRunner.run_tail`); with
        a ``reshape_transform`` the maps go back to raw outputs through its ``inverse``.
        """
        idx = list(range(self.x.shape[0])) if rows is None else rows
        original = None if self.layer_output is None else take_rows(self.layer_output, idx)
        return self.runner.run_tail(a, self.x, original, rows=rows)

    def run_raw(self, raw: Any, rows: Sequence[int] | Tensor) -> Outputs:
        """Logits for raw target-layer outputs ``raw`` (before ``reshape_transform``, e.g.
        made by a caller's ablation layer) of the images ``rows``."""
        return self.runner.run_raw(raw, self.x, rows=rows)

    def run_ablated(self, rows: Tensor, channels: Tensor, value: float) -> Outputs:
        """Logits for the images ``rows`` with channel ``channels[i]`` of row i ablated to
        ``value`` (:meth:`CamRunner.run_ablated`: in the feature map, or in the raw layer
        output when the ``reshape_transform`` has ``ablate``)."""
        original = None if self.layer_output is None else take_rows(self.layer_output, rows)
        return self.runner.run_ablated(
            self.raw_activations[rows], self.x, original, channels, value, rows=rows
        )


class CamMethod:
    """Base of all CAM methods; what a method is (its facts) lives on its class.

    The final map is ``finalize(raw_map)`` where, by default,
    ``raw_map = sum_k w_bk * A_bk`` with ``w = weights(ctx)`` of shape B x K (one weight per
    channel) or B x K x h x w (elementwise weights). ``finalize`` is ReLU, per-image min-max
    normalization, bilinear resize to the input size, and normalization again.

    Subclasses set ``needs_gradient`` (``needs_hvp`` for a Hessian-vector product), declare
    their options in ``options`` (name -> default) and a check per option in ``checks``
    (:mod:`camwall.cams._checks`, run once when the method is built for a call); option names
    carry the method name as prefix (``scorecam_chunk``), except shared ones (``seed``).
    """

    name: ClassVar[str] = ""  # the registry name, given as ``class X(CamMethod, name="x")``
    needs_gradient: ClassVar[bool] = False
    needs_hvp: ClassVar[bool] = False
    needs_bias_gradients: ClassVar[bool] = False
    #: ``False``: the call runs the model on plain (not channels-last) inputs, for methods whose
    #: map amplifies the ~1e-7 rounding of channels-last convolutions (fullgrad, randomcam,
    #: ablationcam).
    channels_last_ok: ClassVar[bool] = True
    #: Whether the method is in the wall benchmark's default run
    #: (:data:`camwall.cams.DEFAULT_METHODS`); slow methods set it to ``False``.
    default: ClassVar[bool] = True
    #: ``True``: the method re-runs the model from modified target-layer activations
    #: (:meth:`CamContext.run_tail`); it then needs ``reshape_transform.inverse`` and one layer.
    reruns_tail: ClassVar[bool] = False
    #: ``True``: it re-runs the tail only through :meth:`CamContext.run_ablated`, so a
    #: ``reshape_transform`` with ``ablate`` (and no ``inverse``) is enough.
    ablates: ClassVar[bool] = False
    #: ``True``: the method treats positions as a set (sums, means, per-position products,
    #: decompositions), so it also applies to 3-D layers (:attr:`CamContext.volume`).
    volumetric: ClassVar[bool] = False
    #: ``True``: the map depends on random draws, seeded by the option ``seed_option``.
    stochastic: ClassVar[bool] = False
    seed_option: ClassVar[str] = "seed"
    #: The option that sets how many model inputs go through the model at once (``None``: the
    #: method forwards the batch as it is) and the input elements a chunk may hold: callers with
    #: small inputs may use ``max(default, chunk_budget // (C * H * W))`` rows
    #: (:func:`camwall.cams.chunk_options`). Rows do not interact: only float rounding changes.
    chunk_option: ClassVar[str | None] = None
    chunk_budget: ClassVar[int] = 0
    #: Whether the method makes its final map itself (overrides ``final_map``); derived.
    whole_map: ClassVar[bool] = False
    #: Whether the method applies with several target layers; derived (no map of its own:
    #: methods that re-run the tail do so once per layer, from that layer).
    several_layers: ClassVar[bool] = True
    #: ``True``: the method makes its final map from every target layer's context at once
    #: (:meth:`layers_map`, e.g. refinecam's product of per-layer maps) instead of the
    #: per-layer raw maps that the engine aggregates.
    spans_layers: ClassVar[bool] = False
    #: Whether ``eigen_smooth`` applies (the map is a channel sum, or the method makes its own
    #: smoothed map, :meth:`eigen_map`); derived.
    eigen_smooth: ClassVar[bool] = True
    options: ClassVar[dict[str, Any]] = {}
    checks: ClassVar[dict[str, Check]] = {}

    def __init_subclass__(cls, name: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name:
            cls.name = name
        cls.whole_map = cls.final_map is not CamMethod.final_map
        cls.several_layers = not cls.whole_map
        cls.eigen_smooth = not cls.whole_map or cls.eigen_map is not CamMethod.eigen_map
        missing = set(cls.options) ^ set(cls.checks)
        if cls.options and missing:
            raise TypeError(f"{cls.__name__}: options and checks differ on {sorted(missing)}")
        if cls.stochastic != (cls.seed_option in cls.options):
            raise TypeError(f"{cls.__name__}: stochastic iff it takes {cls.seed_option!r}")
        if cls.chunk_option is not None and cls.chunk_option not in cls.options:
            raise TypeError(f"{cls.__name__}: chunk option {cls.chunk_option!r} is not an option")

    def needs_inverse(self, reshape_transform: Any) -> bool:
        """Whether this method (with its options) re-runs the model from modified feature maps,
        so that ``reshape_transform`` needs an ``inverse``: :attr:`reruns_tail`, unless it
        only ablates (:attr:`ablates`) and the transform has ``ablate``."""
        ablate = type(self).ablates and callable(getattr(reshape_transform, "ablate", None))
        return type(self).reruns_tail and not ablate

    def __init__(self, **options: Any) -> None:
        unknown = [k for k in options if k not in self.options]
        if unknown:
            raise CamwallError(
                f"{self.name} takes no option {unknown[0]!r}; its options: "
                f"{', '.join(self.options) or 'none'}."
            )
        opts = {**self.options, **options}
        self.opts = {k: self.checks[k](k, v) if k in options else v for k, v in opts.items()}

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

    def eigen_map(self, ctx: CamContext) -> Tensor:
        """The final map with ``eigen_smooth``, for methods that make their map themselves
        (``final_map``) and define how it is smoothed (fullgrad, sess)."""
        raise NotImplementedError(f"{type(self).__name__} has no eigen_smooth map")

    def layers_map(self, ctxs: Sequence[CamContext], eigen_smooth: bool = False) -> Tensor:
        """The final map from all target layers' contexts (methods with ``spans_layers``)."""
        raise NotImplementedError(f"{type(self).__name__} sets spans_layers without layers_map()")


#: Registry of CAM methods by name; values are :class:`CamMethod` subclasses.
METHODS: Registry[type[CamMethod]] = Registry("CAM method")


def base_method_check(exclude: Sequence[str] = ()) -> Check:
    """The check of a ``*_base`` option (finercam, refinecam): a registered method whose map
    comes from one layer's pass (no map of its own, no Hessian or bias gradients), not one of
    ``exclude``."""

    def check(name: str, value: Any) -> str:
        ok = [
            n
            for n, c in METHODS.items()
            if n not in exclude
            and not (c.whole_map or c.spans_layers or c.needs_hvp or c.needs_bias_gradients)
        ]
        if value not in ok:
            raise CamwallError(f"option {name} must be one of {', '.join(ok)}; got {value!r}.")
        return str(value)

    return check
