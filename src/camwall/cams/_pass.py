"""The layer runner: one forward (and one backward) pass recorded at the target layers.

:class:`LayerRunner` is what a method sees of the model (:class:`camwall.cams.CamRunner`):
``run_model`` (the target layers not recorded), ``capture`` (a new recorded pass, with the
gradients, Hessian-vector products or bias gradients asked) and ``run_tail`` (the model's part
after the target layer on modified feature maps). :class:`camwall.cams.CamEngine` owns one, arms
its hooks inside a call and holds the model's state (:mod:`camwall.modelstate`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from camwall.cams._base import CamContext, Needs, PassExtras
from camwall.cams._biases import BiasCall, bias_layers, capture_bias_gradients, check_bias_calls
from camwall.cams._outputs import (
    Outputs,
    as_outputs,
    detach_tree,
    leaves,
    rebuild,
    tree_finite,
)
from camwall.cams._reshape import ReshapeTransform, inverse_of
from camwall.cams._tail import NotPerImage, Rows, Tail, find_tail, take_rows_of
from camwall.cams._targets import Target, TargetsArg, first_scores, resolve_targets
from camwall.errors import CamwallError

__all__ = ["LayerRunner"]

OutputFn = Callable[[Any], Tensor]


@functools.cache
def _wide_vectors() -> bool:
    """Whether oneDNN's convolutions run on AVX-512 kernels here: torch's CPU capability,
    capped by ``ONEDNN_MAX_CPU_ISA`` (or the older ``DNNL_MAX_CPU_ISA``) where that is set."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    capped = isa != "ALL" and not any(s in isa for s in ("AVX512", "AVX10", "AMX"))
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512") and not capped


def channels_last_default(x: Tensor) -> bool:
    """Whether a call feeds ``x`` (B x C x H x W) to the model channels-last by default.

    On CPU for batches of 2 or more, and for one image where the convolutions run on AVX-512
    kernels; off the CPU (CUDA), plain inputs. Measured at 224 x 224, forward + backward to the
    last block, 2 threads, walled VGG16, resnet18 and resnet50 (``benchmarks/layout_speed.py``,
    ``benchmarks/results/layout.md``): channels-last over plain time, one image, 0.87-0.96x on
    AVX-512 kernels and 1.03-1.27x on AVX2 kernels; four images, 0.66-0.84x and 0.88-1.00x.
    """
    return x.device.type == "cpu" and (x.shape[0] > 1 or _wide_vectors())


@dataclass
class _Capture:
    """One pass's per-layer records: ``outputs[i]`` is layer i's raw output (a tensor, or a
    dict of tensors, that requires grad when gradients are asked), ``views[i]`` its reshaped
    feature map."""

    grad: bool
    layers: int = 1
    replacement: Any = None  # run_tail without a known tail: layer 0's new output
    outputs: list[Any] = field(default_factory=list)
    views: list[Tensor | None] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    thread: int = field(default_factory=threading.get_ident)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every record (a pass that failed and is run again)."""
        self.outputs = [None] * self.layers
        self.views = [None] * self.layers
        self.calls = [0] * self.layers


@dataclass(frozen=True)
class _Shared:
    """What every layer's context shares."""

    x: Tensor
    logits: Outputs
    scores: Tensor
    targets: list[Target]
    explicit: bool


class LayerRunner:
    """Runs one model and records its target layers (see the module docstring).

    Args:
        model: the classifier.
        layers: ``[(dotted_name, module), ...]``, the target layers (at least one).
        output_fn: maps the model's raw output to what the targets score, or ``None``
            (:func:`camwall.cams._outputs.as_outputs`: a tensor, a detection model's list of
            per-image dicts, or a dict's ``"logits"`` / ``"out"`` tensor).
        head: the caller's part of the model after the (single) target layer,
            ``head(A) -> output``, or ``None``: then ``run_tail`` finds the tail itself
            (:func:`camwall.cams._tail.find_tail`: a Sequential chain or a torch.fx split),
            else re-runs the whole model with the layer replaced.
        channels_last: feed channels-last inputs (``None``: :func:`channels_last_default`).
            A model that rejects them runs on plain inputs for the rest of the current call
            (:meth:`new_call`).
        reshape_transform: raw layer output (a tensor, or a dict of tensors such as an FPN's
            levels) -> B x K x h x w, or ``None``.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[tuple[str, nn.Module]],
        output_fn: OutputFn | None,
        head: Callable[[Tensor], Any] | None,
        channels_last: bool | None,
        reshape_transform: ReshapeTransform | None,
    ) -> None:
        self._model = model
        self.layers = list(layers)
        self.layer_names = tuple(name for name, _ in self.layers)
        self.output_fn = output_fn
        self.head = head
        self._tail: Tail | None = None  # found at the first run_tail of a call
        self.channels_last = channels_last
        self.reshape_transform = reshape_transform
        self._capture: _Capture | None = None
        self._plain = False  # this call fell back to plain inputs
        self._plain_pass = False  # the last recorded pass ran on plain inputs (Needs.plain)
        # (x, tail.prefix(x), their version counters): the tail's captured values for x
        self._captured: tuple[Tensor, tuple[Any, ...], tuple[int, ...]] | None = None

    @property
    def model(self) -> nn.Module:
        return self._model

    @property
    def layer_name(self) -> str:
        return self.layer_names[0]

    def new_call(self) -> None:
        """Start a call: channels-last is tried again (a fallback lasts one call)."""
        self._plain = False
        self._tail = None  # the model may have changed since the last call: check again
        self._captured = None

    @property
    def tail(self) -> Tail:
        """How :meth:`run_tail` runs the part after the target layer (one target layer)."""
        if len(self.layers) > 1:
            return Tail(None, "none: several target layers")
        if self._tail is None:
            self._tail = find_tail(self._model, self.layer_name, self.head)
        return self._tail

    @property
    def ablates_raw(self) -> bool:
        """Whether :meth:`run_ablated` sets channels in the raw layer output: the
        ``reshape_transform`` has ``ablate`` (e.g. :class:`camwall.cams.FpnGrid`)."""
        return callable(getattr(self.reshape_transform, "ablate", None))

    def attach(self) -> list[Any]:
        """Register the recording hook on every target layer; returns the handles."""
        return [
            layer.register_forward_hook(functools.partial(self._hook, index))
            for index, (_, layer) in enumerate(self.layers)
        ]

    def detach(self) -> None:
        """Drop any record in progress (the hooks are disarmed)."""
        self._capture = None

    # ----------------------------------------------------------------- the hook
    def _hook(self, index: int, module: nn.Module, inputs: Any, output: Any) -> Any:
        cap = self._capture
        if cap is None or cap.thread != threading.get_ident():
            return None  # disarmed, or a plain forward of the model in another thread
        name = self.layer_names[index]
        cap.calls[index] += 1
        if cap.calls[index] > 1:
            raise CamwallError(
                f"target layer {name!r} runs more than once in one forward pass (a shared module "
                f"such as a reused ReLU); choose a layer that runs once, e.g. the enclosing block."
            )
        if cap.replacement is not None:
            return _replaced(name, output, cap.replacement)
        self._check_output(name, output)
        with torch.no_grad():
            cap.views[index] = self._check_view(name, self.view(detach_tree(output)))
        # a later layer's output already depends on an earlier (recorded) one: keep that graph
        recorded = [t if t.requires_grad else t.detach() for t in leaves(output)]
        for t in recorded:
            if cap.grad and not t.requires_grad and t.is_floating_point():
                t.requires_grad_(True)
        cap.outputs[index] = rebuild(output, recorded)
        return rebuild(output, [t.clone() for t in recorded])

    def _check_output(self, name: str, output: Any) -> None:
        """A tensor, or (with a ``reshape_transform``) a dict of tensors; else a CamwallError."""
        if isinstance(output, Tensor):
            return
        if isinstance(output, Mapping) and output and len(leaves(output)) == len(output):
            if self.reshape_transform is not None:
                return
            raise CamwallError(
                f"target layer {name!r} returns a dict of {len(output)} tensors (e.g. an FPN's "
                f"levels); pass reshape_transform= to make one B x K x h x w map of them (e.g. "
                f"camwall.cams.FpnGrid(), or grad-cam's fasterrcnn_reshape_transform)."
            )
        raise CamwallError(
            f"target layer {name!r} returns {type(output).__name__}, not a tensor; choose a "
            f"layer whose output is a tensor (B x K x h x w, or tokens with reshape_transform)."
        )

    def view(self, output: Any) -> Tensor:
        """The target layer's raw output as a feature map (``reshape_transform`` applied)."""
        if self.reshape_transform is None:
            return output
        return self.reshape_transform(output)

    def _check_view(self, name: str, view: Any) -> Tensor:
        if self.reshape_transform is not None and not isinstance(view, Tensor):
            raise CamwallError(
                f"reshape_transform returned {type(view).__name__} for target layer {name!r}; "
                f"it must return a B x K x h x w tensor."
            )
        if view.dim() not in (4, 5):
            fix = (
                "fix reshape_transform"
                if self.reshape_transform is not None
                else "pass reshape_transform= (e.g. camwall.cams.token_grid() for ViT tokens)"
            )
            raise CamwallError(
                f"target layer {name!r} gives shape {tuple(view.shape)}; CAMs need a B x K x h x w "
                f"feature map (or B x K x d x h x w for 3-D convolutions); choose a convolutional "
                f"layer or {fix}."
            )
        return view

    # ----------------------------------------------------------------- running the model
    def logits(self, output: Any, batch: int) -> Outputs:
        """Apply ``output_fn`` and check that the result is a B x ... tensor or a list of B
        per-image dicts (:func:`camwall.cams._outputs.as_outputs`)."""
        if self.output_fn is not None:
            output = self.output_fn(output)
        return as_outputs(output, batch)

    def run_model(self, x: Tensor) -> Outputs:
        """Full forward pass (hook disarmed), returning the logits."""
        return self.logits(self._call_model(x), x.shape[0])

    def _call_model(
        self, x: Tensor, plain: bool = False, fn: Callable[[Tensor], Any] | None = None
    ) -> Any:
        """``model(x)`` (or ``fn(x)``) on channels-last inputs where they are used."""
        fn = self._model if fn is None else fn
        use = False if plain or self._plain else self.channels_last
        if use is None:
            use = channels_last_default(x)
        if use and x.dim() == 4:
            cap = self._capture
            try:
                return fn(x.contiguous(memory_format=torch.channels_last))
            except RuntimeError:
                self._plain = True  # e.g. a .view() on a feature map: plain for this call
                if cap is not None:
                    cap.reset()
        return fn(x)

    def run_tail(
        self, a: Tensor, x: Tensor, original: Any = None, rows: Rows | None = None
    ) -> Outputs:
        """Logits for target-layer feature maps ``a`` (N x K x h x w) of the images ``rows``
        of inputs ``x`` (``rows=None``: ``x`` holds the N images themselves).

        Uses the model's tail after the target layer (:attr:`tail`: ``head``, a Sequential
        chain or a torch.fx split, with the values it captures from before the layer computed
        once per ``x``) when there is one; otherwise re-runs the whole model on ``x[rows]``
        (plain inputs if the recorded pass was plain) with the layer's output replaced by
        ``a``. With a ``reshape_transform``, ``a`` is first mapped back to the layer's raw
        output by ``reshape_transform.inverse(a, original)`` (``original``: the N rows' raw
        outputs).
        One target layer only.
        """
        if len(self.layers) > 1:
            raise CamwallError("run_tail needs a single target layer.")
        if self.reshape_transform is not None:
            if original is None:
                raise CamwallError("run_tail needs the original raw output with reshape_transform.")
            a = inverse_of(self.reshape_transform, "run_tail")(a, original)
        return self.run_raw(a, x, rows)

    def run_ablated(
        self,
        a: Tensor,
        x: Tensor,
        original: Any,
        channels: Tensor,
        value: float,
        rows: Rows | None = None,
    ) -> Outputs:
        """Outputs for rows ``a`` (N x K x h x w feature maps of the images ``rows`` of inputs
        ``x``, as in :meth:`run_tail`) with channel ``channels[i]`` of row i set to ``value``.

        With a ``reshape_transform`` that has ``ablate(original, channels, value) -> raw
        output`` (a channel-by-channel transform such as :class:`camwall.cams.FpnGrid`) the
        channel is set in the layer's raw output ``original``; otherwise in ``a``, mapped back
        by :meth:`run_tail`.
        """
        if self.ablates_raw and original is not None:
            if len(self.layers) > 1:
                raise CamwallError("run_ablated needs a single target layer.")
            transform: Any = self.reshape_transform  # a callable that also has ablate()
            return self.run_raw(transform.ablate(original, channels, value), x, rows)
        batch = a.clone()
        batch[torch.arange(batch.shape[0], device=batch.device), channels] = value
        return self.run_tail(batch, x, original, rows)

    def run_raw(self, raw: Any, x: Tensor, rows: Rows | None = None) -> Outputs:
        """Outputs for the target layer's raw outputs ``raw`` (no ``reshape_transform``
        inverse) of the images ``rows`` of ``x`` (as in :meth:`run_tail`): the tail, or the
        whole model with the layer's forward skipped and its output replaced."""
        count = x.shape[0] if rows is None else len(rows)
        tail = self.tail
        if tail.fn is not None:
            captured = self._captured_rows(tail, x, rows)
            if captured is not None:
                return self.logits(tail.fn(raw, *captured), count)
        cap = _Capture(grad=False, replacement=raw)
        self._capture = cap
        try:
            with _skipped(self.layers[0][1], cap):
                out = self._call_model(x if rows is None else x[rows], plain=self._plain_pass)
        finally:
            self._capture = None
        return self.logits(out, count)

    def _captured_rows(self, tail: Tail, x: Tensor, rows: Rows | None) -> tuple[Any, ...] | None:
        """The values ``tail`` captures from before the layer, for the images ``rows``: its
        ``prefix`` run once per ``x`` (no gradient; again if a run wrote into them in place),
        then taken by row; ``None`` when one has no row per image (the tail then becomes the
        whole model, its info says why)."""
        if tail.prefix is None:
            return ()
        memo = self._captured
        if memo is None or memo[0] is not x or _versions(memo[1]) != memo[2]:
            try:
                with torch.no_grad():
                    values = self._call_model(x, plain=self._plain_pass, fn=tail.prefix)
            except NotPerImage as exc:
                self._tail = Tail(None, f"whole model: {exc}")
                return None
            memo = self._captured = (x, values, _versions(values))
        return take_rows_of(memo[1], rows)

    def _forward(self, x: Tensor, grad: bool, plain: bool = False) -> tuple[_Capture, Outputs]:
        """One forward pass with every target layer recorded; returns the records and logits."""
        cap = _Capture(grad=grad, layers=len(self.layers))
        self._capture = cap
        self._plain_pass = plain
        try:
            with torch.set_grad_enabled(grad):
                out = self._call_model(x, plain=plain)
        finally:
            self._capture = None
        for name, view in zip(self.layer_names, cap.views, strict=True):
            if view is None:
                raise CamwallError(
                    f"target layer {name!r} did not run during the forward pass; choose a layer "
                    f"that the model's forward uses."
                )
        return cap, self.logits(out, x.shape[0])

    # ----------------------------------------------------------------- recorded passes
    def capture(self, x: Tensor, targets: TargetsArg, need: Needs | bool = False) -> CamContext:
        """The first target layer's context of :meth:`capture_layers`."""
        return self.capture_layers(x, targets, need)[0]

    def capture_layers(
        self, x: Tensor, targets: TargetsArg, need: Needs | bool = False
    ) -> list[CamContext]:
        """One forward pass (and one backward pass if any gradient is needed) for all methods
        and all target layers; one :class:`CamContext` per target layer.

        ``need.hvp``: the backward pass builds its own graph and one more batched backward per
        layer gives the Hessian-vector product ``H A``. ``need.biases`` (fullgrad): the same
        backward also gives ``dy/dx`` and ``dy/dz`` at every biased Conv2d / BatchNorm2d output
        ``z``; the pass then keeps the whole graph. ``need.plain``: plain (not channels-last)
        inputs, for methods that amplify float rounding (``CamMethod.channels_last_ok = False``).
        Gradients are enabled here whatever the caller's grad mode (``torch.no_grad()``).
        """
        if isinstance(need, bool):
            need = Needs(grad=need)
        layers = bias_layers(self._model) if need.biases else []
        calls: list[BiasCall] = []
        with torch.enable_grad(), capture_bias_gradients(layers, calls):
            if need.biases:
                x = x.detach().requires_grad_(True)
            cap, logits = self._forward(x, need.grad or need.biases, plain=need.plain)
            outputs = [t for t in cap.outputs if t is not None]
            views = [v for v in cap.views if v is not None]
            self._check_finite(views, logits)
            fns: list[Target] = resolve_targets(targets, detach_tree(logits))
            scores = first_scores(logits, fns, need.grad or need.biases, x.device)
            grads: list[Tensor | None] = [None] * len(outputs)
            hvps: list[Tensor | None] = [None] * len(outputs)
            extra: list[Tensor | None] = []
            if need.grad or need.biases:
                if not scores.requires_grad:
                    raise CamwallError(
                        f"the target scores do not depend on target layer {self.layer_name!r}; "
                        f"choose a layer before the output (or check targets)."
                    )
                check_bias_calls(self._model, layers, calls)
                others = [x] if need.biases else []
                grads, hvps, extra = _backward(scores, outputs, need.hvp, others)
        biases = tuple((c.layer, c.grad) for c in calls)  # the hooks' dy/dz, in call order
        shared = _Shared(x.detach(), detach_tree(logits), scores.detach(), fns, targets is not None)
        return [
            self._context(shared, out, view, g, h, extra, biases)
            for out, view, g, h in zip(outputs, views, grads, hvps, strict=True)
        ]

    def _context(
        self,
        shared: _Shared,
        output: Any,
        view: Tensor,
        grad: Any,
        hvp: Any,
        extra: list[Tensor | None],
        biases: tuple[tuple[nn.Module, Tensor | None], ...],
    ) -> CamContext:
        """One layer's context: gradients and ``H A`` reshaped like the activations (as
        pytorch-grad-cam applies ``reshape_transform`` to the gradient)."""

        volume = tuple(int(n) for n in view.shape[2:]) if view.dim() == 5 else None

        def flat(t: Tensor) -> Tensor:  # B x K x d x h x w -> B x K x d x (h*w)
            return t if volume is None else t.flatten(3)

        def shaped(t: Any) -> Tensor | None:
            return None if t is None else flat(self.view(t).float())

        extras = PassExtras(
            hvp=shaped(hvp),
            input_gradient=extra[0] if extra else None,
            bias_gradients=biases,
            explicit_targets=shared.explicit,
        )
        return CamContext(
            x=shared.x,
            activations=flat(view.float()),
            raw_activations=flat(view),
            gradients=shaped(grad),
            logits=shared.logits,
            scores=shared.scores,
            targets=shared.targets,
            runner=self,
            extras=extras,
            layer_output=detach_tree(output) if self.reshape_transform is not None else None,
            volume=volume,
        )

    def _check_finite(self, views: list[Tensor], logits: Outputs) -> None:
        """Refuse NaN/Inf target-layer activations or logits (for a finite input).

        One device synchronisation when all is finite; the error names where it starts.
        """
        ok = tree_finite(logits)
        for v in views:
            ok = ok & torch.isfinite(v).all()
        if bool(ok):
            return
        bad = [n for n, v in zip(self.layer_names, views) if not bool(torch.isfinite(v).all())]
        where = (
            f"the activations of target layer {bad[0]!r}" if bad else "the model's output (logits)"
        )
        raise CamwallError(
            f"{where} contain NaN or Inf for a finite input, so every map would be NaN"
            f"{_nonfinite_parameters(self._model)}; check the model's weights (or its "
            "numerical range, e.g. float16 overflow)."
        )


def _backward(
    scores: Tensor, outputs: Sequence[Any], need_hvp: bool, others: Sequence[Tensor]
) -> tuple[list[Any], list[Any], list[Tensor | None]]:
    """One backward pass: ``G_l = d(sum_b y_b)/dA_l`` (float32) for every recorded layer output
    (a tensor or a dict of tensors: the gradients have the same structure) and
    ``d(sum_b y_b)/dt`` for each of ``others``; if asked, ``H_l A_l =
    d(sum G_l * A_l detached)/dA_l`` by one more batched call per layer.

    Images do not interact, so the summed score's Hessian is block-diagonal per image. A tail
    without a second derivative (ReLU, max pooling, linear layers) gives ``H A = 0``.
    """
    per_layer = [leaves(out) for out in outputs]
    flat = [t for ts in per_layer for t in ts]
    found = torch.autograd.grad(
        scores.sum(), [*flat, *others], allow_unused=True, create_graph=need_hvp
    )
    n = len(flat)
    rest: list[Tensor | None] = [None if t is None else t.detach() for t in found[n:]]
    grads: list[Any] = []
    hvps: list[Any] = []
    start = 0
    for out, ts in zip(outputs, per_layer, strict=True):
        gs = list(found[start : start + len(ts)])
        start += len(ts)
        grads.append(rebuild(out, [_float_or_zeros(g, a) for g, a in zip(gs, ts, strict=True)]))
        hvps.append(rebuild(out, _hvp(gs, ts)) if need_hvp else None)
    return grads, hvps, rest


def _float_or_zeros(g: Tensor | None, a: Tensor) -> Tensor:
    return torch.zeros_like(a, dtype=torch.float32) if g is None else g.detach().float()


def _hvp(gs: Sequence[Tensor | None], ts: list[Tensor]) -> list[Tensor]:
    """``H A`` for one layer's tensors ``ts`` (``gs``: their gradients, with a graph):
    ``d(sum_m G_m . A_m detached)/dA_l`` for every tensor l."""
    pairs = [(g, a) for g, a in zip(gs, ts, strict=True) if g is not None and g.requires_grad]
    found: Sequence[Tensor | None] = [None] * len(ts)
    if pairs:
        found = torch.autograd.grad(
            [g for g, _ in pairs],
            ts,
            grad_outputs=[a.detach() for _, a in pairs],
            allow_unused=True,
            retain_graph=True,
        )
    return [_float_or_zeros(h, a) for h, a in zip(found, ts, strict=True)]


def _versions(values: tuple[Any, ...]) -> tuple[int, ...]:
    """The version counters of the tensors among ``values`` (an in-place write moves one)."""
    return tuple(v._version for v in values if isinstance(v, Tensor))


def _replaced(name: str, output: Any, replacement: Any) -> Any:
    """The hook's answer in :meth:`LayerRunner.run_tail`: ``replacement``, once its tensors'
    shapes (but the batch) are checked against the layer's output ``output``."""
    old, new = leaves(output), leaves(replacement)
    if len(old) != len(new) or any(
        o.shape[1:] != r.shape[1:] for o, r in zip(old, new, strict=True)
    ):
        raise CamwallError(f"target layer {name!r} changed its output shape between passes.")
    return replacement


@contextlib.contextmanager
def _skipped(layer: nn.Module, cap: _Capture) -> Iterator[None]:
    """While open, ``layer``'s forward in the capturing thread returns ``cap.replacement``
    without computing (its hooks still run); other threads run it as usual."""
    if isinstance(layer, torch.jit.ScriptModule):
        yield  # its forward cannot be replaced: it runs, and the hook replaces its output
        return
    own = layer.__dict__.get("forward")
    original = layer.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if cap.thread == threading.get_ident():
            return cap.replacement
        return original(*args, **kwargs)

    layer.forward = forward
    try:
        yield
    finally:
        if own is None:
            del layer.forward
        else:
            layer.forward = own


def _nonfinite_parameters(model: nn.Module) -> str:
    """``": parameter NAME has N NaN / M Inf values"`` for the first such parameter, or ``""``."""
    for name, p in model.named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            nan, inf = int(torch.isnan(p).sum()), int(torch.isinf(p).sum())
            return f": parameter {name} has {nan} NaN / {inf} Inf values"
    return ""
