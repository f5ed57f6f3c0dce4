"""The capture engine: one forward (and one backward) pass, shared by all requested methods.

Hygiene: hooks exist only inside a call or a ``with`` block and are removed in ``finally``;
the model's train/eval mode and the parameters' ``requires_grad`` flags are restored
(:func:`camwall.modelstate.held`); no parameter ``.grad`` is ever written (gradients come from
``torch.autograd.grad`` on the captured activation). Gradients are enabled inside the engine, so
a call under ``torch.no_grad()`` gives the same maps (as in captum).

Threads: each model has one re-entrant lock (:func:`camwall.modelstate.model_lock`), held for a
whole call or ``with`` block, so concurrent calls on one model run one after the other and each
sees (and restores) the model's own modes and flags.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from camwall.cams._base import CamContext, CamMethod, Needs
from camwall.cams._layers import (
    LayerArg,
    check_methods,
    method_map,
    resolve_layer,
    resolve_layers,
)
from camwall.cams._options import build_methods, resolve_methods
from camwall.cams._pass import LayerRunner
from camwall.cams._perlayer import per_layer
from camwall.cams._reshape import ReshapeTransform, inverse_of
from camwall.cams._smooth import augmentations, smooth_options
from camwall.cams._targets import TargetsArg
from camwall.errors import CamwallError
from camwall.modelstate import held, model_lock

__all__ = ["CamEngine", "compute_cams", "model_lock", "resolve_layer"]

OutputFn = Callable[[Any], Tensor]
Head = Callable[[Tensor], Any]


class CamEngine:
    """Compute CAMs for one model and one target layer; reusable, optionally as a ``with`` block.

    Example::

        with CamEngine(model, "features.29") as cams:
            maps = cams(x, ["gradcam", "hirescam"])      # dict name -> B x H x W

    Inside a ``with`` block the hook stays registered and the model stays in eval mode with its
    parameters frozen; outside, each call sets these up and restores them itself. A call or a
    ``with`` block holds the model's lock (:func:`model_lock`): another thread using the same
    model waits until it ends (so do not wait for such a thread inside a ``with`` block).

    Args:
        model: a classifier; its output (after ``output_fn``) is B x num_classes logits, or
            what the targets score (:mod:`camwall.cams._outputs`): B x C x H x W segmentation
            scores, a detection model's list of B per-image dicts, or a dict whose
            ``"logits"`` / ``"out"`` entry is such a tensor.
        target_layer: a submodule or its dotted name, or a list of them: several layers are
            recorded in the same pass and their maps aggregated as pytorch-grad-cam
            (``docs/cam-methods.md``, "Options").
        output_fn: maps the model's raw output to the logits tensor (for models that return a
            tuple, a dict or an object).
        head: the part of the model after the target layer, ``head(A) -> model output``; used
            by the methods that re-run it (ablationcam, finercam). If omitted it is found: a
            chain of Sequentials, else a torch.fx split of the model's graph after the layer;
            where neither exists the whole model is re-run with the layer's output replaced,
            and :attr:`info` says why.
        channels_last: feed the model channels-last inputs (faster convolutions on CPU; same
            values to float rounding). ``None`` (default): on CPU, for batches of 2 or more and,
            where the convolutions run on AVX-512 kernels, for one image too
            (:func:`camwall.cams._pass.channels_last_default`). If the model rejects such
            an input (e.g. it calls ``.view`` on a feature map), the call falls back to plain
            contiguous inputs; the next call tries channels-last again.
        reshape_transform: ``f(raw_output) -> B x K x h x w`` for layers whose output is not a
            feature map (e.g. :func:`camwall.cams.token_grid` for ViT tokens, or
            :class:`camwall.cams.FpnGrid` for an FPN's dict of levels); gradients are
            reshaped the same way (as pytorch-grad-cam). Default: ``describe(model).reshape`` if
            the model declares one. ablationcam and finercam also need ``f.inverse``
            (ablationcam: or ``f.ablate``, :mod:`camwall.cams._reshape`).
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerArg,
        *,
        output_fn: OutputFn | None = None,
        head: Head | None = None,
        channels_last: bool | None = None,
        reshape_transform: ReshapeTransform | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise CamwallError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        self.model = model
        self.layers = resolve_layers(model, target_layer)
        self.layer_name, self.layer = self.layers[0]
        self.layer_names = tuple(name for name, _ in self.layers)
        self.head = head
        #: what methods see of the model (:class:`camwall.cams.CamRunner`).
        self.runner = LayerRunner(
            model,
            self.layers,
            output_fn,
            head,
            channels_last,
            _reshape_option(model, reshape_transform),
        )
        self._stack: contextlib.ExitStack | None = None
        self._depth = 0
        self._lock = model_lock(model)

    @property
    def output_fn(self) -> OutputFn | None:
        return self.runner.output_fn

    @property
    def channels_last(self) -> bool | None:
        """The ``channels_last`` setting (a fallback changes one call, not the setting)."""
        return self.runner.channels_last

    @property
    def reshape_transform(self) -> ReshapeTransform | None:
        return self.runner.reshape_transform

    @property
    def has_tail(self) -> bool:
        """Whether :meth:`run_tail` can skip the part of the model before the target layer."""
        return self.runner.tail.fn is not None

    @property
    def info(self) -> dict[str, str]:
        """How the engine runs this model, in words; ``"tail"``: how :meth:`run_tail` runs the
        part after the target layer (``"head"``, ``"sequential"``, ``"graph (N nodes after
        LAYER)"``, or ``"whole model: <why>"`` where the graph cannot be split)."""
        return {"tail": self.runner.tail.info}

    def run_model(self, x: Tensor) -> Tensor:
        """Full forward pass (hook disarmed), returning the logits."""
        return self.runner.run_model(x)

    def run_tail(self, a: Tensor, x: Tensor, original: Tensor | None = None) -> Tensor:
        """Logits for target-layer feature maps ``a`` of inputs ``x``
        (:meth:`LayerRunner.run_tail`)."""
        return self.runner.run_tail(a, x, original)

    # ----------------------------------------------------------------- hygiene
    def __enter__(self) -> CamEngine:
        self._open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    def _open(self) -> None:
        self._lock.acquire()
        self._depth += 1
        if self._depth > 1:
            return
        stack = contextlib.ExitStack()
        self._stack = stack
        try:
            stack.enter_context(held(self.model))
            for handle in self.runner.attach():
                stack.callback(handle.remove)
        except BaseException:
            self._close()
            raise

    def _close(self) -> None:
        if self._depth <= 0:
            return  # not open (a second __exit__ is harmless)
        try:
            self._depth -= 1
            if self._depth > 0:
                return
            stack, self._stack = self._stack, None
            self.runner.detach()
            if stack is not None:
                stack.close()  # hooks removed, then the model's state restored
        finally:
            self._lock.release()

    # ----------------------------------------------------------------- public call
    def __call__(
        self,
        x: Tensor,
        methods: str | Sequence[str],
        targets: TargetsArg = None,
        **options: Any,
    ) -> dict[str, Tensor]:
        """Compute the requested maps.

        Args:
            x: B x C x H x W input on the model's device, same dtype as the model
                (B x C x D x H x W for models with ``nn.Conv3d``: maps are B x D x H x W).
            methods: a name or a sequence of names from ``METHODS``.
            targets: ``None`` (argmax of the raw logits), an int, a list of class indices or of
                callables ``f(logits_row) -> scalar``.
            **options: method options, e.g. ``scorecam_chunk=16``, ``ablationcam_chunk=32``,
                ``ablation_value=0.0``, ``opticam_iters=50``, ``opticam_lr=0.1``, ``seed``;
                and pytorch-grad-cam's ``eigen_smooth`` / ``aug_smooth`` (see
                ``docs/cam-methods.md``, "Options"). Each method receives only its own
                options, checked here before any pass.

        Returns:
            ``{name: B x H x W float32 map in [0, 1] on x.device}``.
        """
        classes = resolve_methods(methods)
        eigen, aug = smooth_options(options)
        instances = build_methods(classes, options)
        _check_input(self.model, x)
        check_methods(classes, len(self.layers), self.reshape_transform, x.dim() == 5, eigen)
        for method in instances:
            if self.reshape_transform is not None and method.needs_inverse(self.reshape_transform):
                inverse_of(self.reshape_transform, type(method).name)
        self._open()
        try:
            self.runner.new_call()
            with torch.inference_mode(False):  # gradients work under torch.inference_mode() too
                x = x.clone() if x.is_inference() else x.detach()
                if aug:
                    return self._augmented_maps(x, instances, targets, eigen)
                return self._maps(x, instances, targets, eigen)
        finally:
            self._close()

    def _augmented_maps(
        self, x: Tensor, methods: list[CamMethod], targets: TargetsArg, eigen: bool
    ) -> dict[str, Tensor]:
        """``aug_smooth``: the mean of the de-augmented maps over grad-cam's six transforms."""
        runs: list[dict[str, Tensor]] = []
        for augment, deaugment in augmentations():
            maps = self._maps(augment(x), methods, targets, eigen)
            runs.append({name: deaugment(m) for name, m in maps.items()})
        return {name: torch.stack([r[name] for r in runs]).mean(dim=0) for name in runs[0]}

    def _maps(
        self, x: Tensor, methods: list[CamMethod], targets: TargetsArg, eigen: bool = False
    ) -> dict[str, Tensor]:
        """Capture once, then every method's final map from the shared contexts."""
        ctxs = per_layer(self.capture_layers(x, targets, Needs.of([type(m) for m in methods])))
        result: dict[str, Tensor] = {}
        for method in methods:
            with torch.no_grad():
                result[method.name] = method_map(method, ctxs, eigen).float()
        return result

    def capture_layers(
        self, x: Tensor, targets: TargetsArg, need: Needs | bool = False
    ) -> list[CamContext]:
        """One recorded pass, one context per target layer (:meth:`LayerRunner.capture_layers`);
        inside a call or a ``with`` block."""
        if self._depth <= 0:
            raise CamwallError(
                "CamEngine.capture_layers runs inside a `with CamEngine(...)` block."
            )
        if isinstance(need, Needs) and need.hvp:
            with _math_attention():
                return self.runner.capture_layers(x, targets, need)
        return self.runner.capture_layers(x, targets, need)


def _math_attention() -> contextlib.AbstractContextManager[None]:
    """Scaled-dot-product attention through its math backend (plain differentiable ops).

    The Hessian-vector product (shapleycam) needs a double backward; torch's fused attention
    kernels (flash / memory-efficient, e.g. ``_scaled_dot_product_flash_attention_for_cpu``)
    have no second derivative, so a ViT would fail with a raw RuntimeError. The math backend
    computes the same attention (to float rounding) with a double backward.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def compute_cams(
    model: nn.Module,
    x: Tensor,
    target_layer: LayerArg,
    methods: str | Sequence[str],
    targets: TargetsArg = None,
    *,
    output_fn: OutputFn | None = None,
    head: Head | None = None,
    channels_last: bool | None = None,
    reshape_transform: ReshapeTransform | None = None,
    **options: Any,
) -> dict[str, Tensor]:
    """Compute CAMs for a batch in one call (hooks registered and removed inside).

    Gradient methods requested together share one forward and one backward pass; eigencam
    reuses the same activations.

    Args:
        model: a classifier returning B x num_classes logits (or use ``output_fn``).
        x: B x C x H x W input (B x C x D x H x W for models with 3-D convolutions).
        target_layer: a submodule or its dotted name, e.g. ``"features.29"``, or a list.
        methods: a name or names from ``camwall.cams.METHODS``.
        targets: ``None`` (argmax of the raw logits), an int, class indices or callables on one
            logits row.
        output_fn, head, channels_last, reshape_transform: see :class:`CamEngine`.
        **options: ``eigen_smooth``, ``aug_smooth`` and the method options (see
            :meth:`CamEngine.__call__`); each method receives only its own.

    Returns:
        ``{name: B x H x W float32 map in [0, 1] on x.device}``.
    """
    engine = CamEngine(
        model,
        target_layer,
        output_fn=output_fn,
        head=head,
        channels_last=channels_last,
        reshape_transform=reshape_transform,
    )
    return engine(x, methods, targets, **options)


def _check_input(model: nn.Module, x: Any) -> None:
    """Refuse an input the model cannot take (type, shape, dtype, device, NaN/Inf)."""
    if not isinstance(x, Tensor):
        raise CamwallError(f"x must be a torch.Tensor, got {type(x).__name__}.")
    volumes = x.dim() == 5 and _has_conv3d(model)
    if x.dim() != 4 and not volumes:
        hint = " Add a batch dimension with x.unsqueeze(0)." if x.dim() == 3 else ""
        if x.dim() == 5:
            hint = " B x C x D x H x W volumes need a model with nn.Conv3d layers."
        raise CamwallError(f"x must be a B x C x H x W batch, got shape {tuple(x.shape)}.{hint}")
    if x.shape[0] == 0:
        raise CamwallError(
            f"x is an empty batch (shape {tuple(x.shape)}); pass at least one image (B >= 1)."
        )
    if not x.is_floating_point():
        raise CamwallError(
            f"x must be a floating-point tensor, got {x.dtype}; convert images with "
            f"x.float() / 255."
        )
    if not bool(torch.isfinite(x).all()):
        raise CamwallError("x contains NaN or Inf values; clean the input before computing CAMs.")
    param = next(model.parameters(), None)
    if param is not None:
        if param.device != x.device:
            raise CamwallError(
                f"x is on {x.device} but the model is on {param.device}; move one of them "
                f"(e.g. x.to({str(param.device)!r}))."
            )
        if param.is_floating_point() and param.dtype != x.dtype:
            raise CamwallError(
                f"x has dtype {x.dtype} but the model's parameters are {param.dtype}; cast "
                f"them to the same dtype (e.g. model.to(x.dtype) or x.to({param.dtype}))."
            )


class _TokensOnly:
    """A model's declared ``reshape``, applied only to outputs that are not feature maps.

    The model declares how its token layers become grids; its convolutional layers (a ViT's
    patch embedding, B x K x h x w) are feature maps already and pass unchanged, both ways.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def _map(self, output: Any) -> bool:
        """A feature map already: 4-D / 5-D, unless the declared reshape takes it (a Swin's
        channels-last ``B x h x w x C`` tokens, :class:`camwall.tokens.ChannelsLastGrid`)."""
        if not isinstance(output, Tensor) or output.dim() not in (4, 5):
            return False
        takes = getattr(self.fn, "takes", None)
        return not (callable(takes) and takes(output))

    def __call__(self, output: Tensor) -> Tensor:
        return output if self._map(output) else self.fn(output)

    def inverse(self, grid: Tensor, original: Tensor) -> Tensor:
        if self._map(original):
            return grid
        return inverse_of(self.fn, "run_tail")(grid, original)


def _reshape_option(model: nn.Module, reshape: Any) -> ReshapeTransform | None:
    """The caller's ``reshape_transform``, else the model's declared reshape (used only
    for layers whose output is not already a feature map), else None."""
    if reshape is None:
        from camwall.walls import describe

        own = describe(model).reshape
        reshape = _TokensOnly(own) if callable(own) else own
    if reshape is not None and not callable(reshape):
        raise CamwallError(
            f"reshape_transform must be a callable raw_output -> B x K x h x w (e.g. "
            f"camwall.cams.token_grid()), got {type(reshape).__name__}."
        )
    return reshape


def _has_conv3d(model: nn.Module) -> bool:
    """Whether the model has a 3-D convolution (so B x C x D x H x W inputs make sense)."""
    return any(isinstance(m, nn.Conv3d) for m in model.modules())
