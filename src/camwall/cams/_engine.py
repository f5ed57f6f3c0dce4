"""The capture engine: one forward (and one backward) pass, shared by all requested methods.

Hygiene: hooks exist only inside a call or a ``with`` block and are removed in ``finally``;
the model's train/eval mode and the parameters' ``requires_grad`` flags are restored; no
parameter ``.grad`` is ever written (gradients come from ``torch.autograd.grad`` on the
captured activation). Gradients are enabled inside the engine, so a call under
``torch.no_grad()`` gives the same maps (as in captum).

Threads: each model has one re-entrant lock (:func:`model_lock`), held for a whole call or
``with`` block, so concurrent calls on one model run one after the other and each sees (and
restores) the model's own modes and flags.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._biases import bias_layers, capture_outputs, check_bias_calls
from camwall.cams._layers import LayerArg, check_methods, method_map, resolve_layers
from camwall.cams._reshape import ReshapeTransform, inverse_of
from camwall.cams._smooth import SMOOTH_OPTIONS, augmentations, smooth_options
from camwall.cams._targets import Target, TargetsArg, resolve_targets, score_rows
from camwall.errors import CamwallError, did_you_mean

__all__ = ["CamEngine", "compute_cams", "model_lock", "resolve_layer"]

OutputFn = Callable[[Any], Tensor]
Head = Callable[[Tensor], Any]

_ENGINE_OPTIONS = ("output_fn", "head", "channels_last", "reshape_transform")

_LOCKS: dict[int, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock of ``model`` that every engine on it holds while it runs.

    One lock per model object, dropped when the model is garbage-collected: two threads
    explaining the same model are serialized, while the same thread may nest engines on it.
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(id(model))
        if lock is None:
            lock = _LOCKS[id(model)] = threading.RLock()
            weakref.finalize(model, _LOCKS.pop, id(model), None)
        return lock


def resolve_layer(model: nn.Module, target_layer: nn.Module | str) -> tuple[str, nn.Module]:
    """Find the target layer by dotted name (``"features.29"``) or by identity.

    Returns:
        ``(dotted_name, module)``.
    """
    names = {id(m): n for n, m in reversed(list(model.named_modules()))}
    if isinstance(target_layer, str):
        try:
            module = model.get_submodule(target_layer)
        except AttributeError:
            choices = [n for n, _ in model.named_modules() if n]
            raise CamwallError(
                f"target_layer {target_layer!r} is not a submodule of "
                f"{type(model).__name__}.{did_you_mean(target_layer, choices)} "
                f"Layers: {', '.join(choices[-12:])}{' ...' if len(choices) > 12 else ''}"
            ) from None
        return target_layer, module
    if not isinstance(target_layer, nn.Module):
        raise CamwallError(
            f"target_layer must be an nn.Module or a dotted name like 'features.29', "
            f"got {type(target_layer).__name__}."
        )
    if id(target_layer) not in names:
        raise CamwallError(
            f"target_layer {type(target_layer).__name__} is not a submodule of "
            f"{type(model).__name__}; pass one of its layers or a dotted name."
        )
    return names[id(target_layer)], target_layer


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def sequential_tail(model: nn.Module, layer_name: str) -> Callable[[Tensor], Any] | None:
    """The part of ``model`` after ``layer_name`` as a callable, if it is a chain of Sequentials.

    Works when the model and every ancestor of the layer are plain ``nn.Sequential`` (e.g.
    ``features.29`` in a Sequential whose ``features`` is a Sequential). Returns ``None`` otherwise.
    """
    if not layer_name:
        return None
    parts = layer_name.split(".")
    chain: list[nn.Module] = []
    parent = model
    for depth, part in enumerate(parts):
        if not _is_plain_sequential(parent):
            return None
        # _modules keeps repeated entries (a shared ReLU), exactly as Sequential.forward runs them
        children = [(n, m) for n, m in parent._modules.items() if m is not None]
        position = [n for n, _ in children].index(part)
        chain.append(nn.Sequential(*[m for _, m in children[position + 1 :]]))
        if depth < len(parts) - 1:
            parent = children[position][1]
    stages = list(reversed(chain))  # deepest first

    def tail(a: Tensor) -> Any:
        out: Any = a
        for stage in stages:
            out = stage(out)
        return out

    return tail


@dataclass
class _Capture:
    """One pass's per-layer records: ``outputs[i]`` is layer i's raw output (a tensor that
    requires grad when gradients are asked), ``views[i]`` its reshaped feature map."""

    grad: bool
    layers: int = 1
    replacement: Tensor | None = None  # run_tail without a known tail: layer 0's new output
    outputs: list[Tensor | None] = field(default_factory=list)
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


@dataclass
class _Session:
    modes: list[tuple[nn.Module, bool]] = field(default_factory=list)
    flags: list[tuple[nn.Parameter, bool]] = field(default_factory=list)
    handles: list[Any] = field(default_factory=list)


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
        model: a classifier; its output (after ``output_fn``) is B x num_classes logits.
        target_layer: a submodule or its dotted name, or a list of them: several layers are
            recorded in the same pass and their maps aggregated as pytorch-grad-cam
            (``docs/cam-methods.md``, "Options").
        output_fn: maps the model's raw output to the logits tensor (for models that return a
            tuple, a dict or an object).
        head: the part of the model after the target layer, ``head(A) -> model output``; used
            by ablationcam. If omitted it is found for Sequential models, else the whole model is
            re-run with the layer's output replaced.
        channels_last: feed the model channels-last inputs (faster convolutions on CPU; same
            values to float rounding). ``None`` (default): on CPU only. If the model rejects such
            an input (e.g. it calls ``.view`` on a feature map), the engine falls back to plain
            contiguous inputs for the rest of its life.
        reshape_transform: ``f(raw_output) -> B x K x h x w`` for layers whose output is not a
            feature map (e.g. :func:`camwall.cams.token_grid` for ViT tokens); gradients are
            reshaped the same way (as pytorch-grad-cam). Default: ``describe(model).reshape`` if
            the model declares one. ablationcam and finercam also need ``f.inverse``.
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
        self.output_fn = output_fn
        self.head = head
        self.channels_last = channels_last
        self.reshape_transform = _reshape_option(model, reshape_transform)
        single = len(self.layers) == 1
        self._tail = head if head is not None else sequential_tail(model, self.layer_name)
        if not single:
            self._tail = None
        self._session: _Session | None = None
        self._depth = 0
        self._capture: _Capture | None = None
        self._lock = model_lock(model)

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
        session = _Session(
            modes=[(m, m.training) for m in self.model.modules()],
            flags=[(p, p.requires_grad) for p in self.model.parameters()],
        )
        self._session = session
        try:
            self.model.eval()
            for p, _ in session.flags:
                p.requires_grad_(False)
            for index, (_, layer) in enumerate(self.layers):
                hook = functools.partial(self._hook, index)
                session.handles.append(layer.register_forward_hook(hook))
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
            session, self._session = self._session, None
            self._capture = None
            if session is None:
                return
            for handle in session.handles:
                handle.remove()
            for m, mode in session.modes:
                m.training = mode
            for p, flag in session.flags:
                p.requires_grad_(flag)
        finally:
            self._lock.release()

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
            if not isinstance(output, Tensor) or output.shape[1:] != cap.replacement.shape[1:]:
                raise CamwallError(
                    f"target layer {name!r} changed its output shape between passes."
                )
            return cap.replacement
        if not isinstance(output, Tensor):
            raise CamwallError(
                f"target layer {name!r} returns {type(output).__name__}, not a tensor; choose a "
                f"layer whose output is a tensor (B x K x h x w, or tokens with reshape_transform)."
            )
        with torch.no_grad():
            cap.views[index] = self._check_view(name, self.view(output.detach()))
        # a later layer's output already depends on an earlier (recorded) one: keep that graph
        a = output if output.requires_grad else output.detach()
        if cap.grad and not a.requires_grad:
            a.requires_grad_(True)
        cap.outputs[index] = a
        return a.clone()

    def view(self, output: Tensor) -> Tensor:
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
    def logits(self, output: Any, batch: int) -> Tensor:
        """Apply ``output_fn`` and check that the result is a B x ... tensor."""
        if self.output_fn is not None:
            output = self.output_fn(output)
        if not isinstance(output, Tensor):
            raise CamwallError(
                f"the model returned a {type(output).__name__}, not a logits tensor. Wrap the "
                f"model so that it returns the logits (e.g. nn.Sequential(model, PickLogits())) or "
                f"pass output_fn=lambda out: out[0] (or out['logits'])."
            )
        if output.dim() == 0 or output.shape[0] != batch:
            raise CamwallError(
                f"the model output has shape {tuple(output.shape)} for a batch of {batch}; "
                f"expected B x num_classes logits (use output_fn to select them)."
            )
        return output

    def run_model(self, x: Tensor) -> Tensor:
        """Full forward pass (hook disarmed), returning the logits."""
        return self.logits(self._call_model(x), x.shape[0])

    def _call_model(self, x: Tensor, plain: bool = False) -> Any:
        use = False if plain else self.channels_last
        if use is None:
            use = x.device.type == "cpu"
        if use and x.dim() == 4:
            cap = self._capture
            try:
                return self.model(x.contiguous(memory_format=torch.channels_last))
            except RuntimeError:
                self.channels_last = False  # e.g. a .view() on a feature map: go plain
                if cap is not None:
                    cap.reset()
        return self.model(x)

    def run_tail(self, a: Tensor, x: Tensor, original: Tensor | None = None) -> Tensor:
        """Logits for target-layer feature maps ``a`` (N x K x h x w) of inputs ``x``.

        Uses the model's tail after the target layer (Sequential split or ``head``) when known;
        otherwise re-runs the whole model on ``x`` with the layer's output replaced by ``a``.
        With a ``reshape_transform``, ``a`` is first mapped back to the layer's raw output by
        ``reshape_transform.inverse(a, original)`` (``original``: the N rows' raw outputs).
        One target layer only.
        """
        if len(self.layers) > 1:
            raise CamwallError("run_tail needs a single target layer.")
        if self.reshape_transform is not None:
            if original is None:
                raise CamwallError("run_tail needs the original raw output with reshape_transform.")
            a = inverse_of(self.reshape_transform, "run_tail")(a, original)
        if self._tail is not None:
            return self.logits(self._tail(a), a.shape[0])
        self._capture = _Capture(grad=False, replacement=a)
        try:
            out = self._call_model(x)
        finally:
            self._capture = None
        return self.logits(out, a.shape[0])

    @property
    def has_tail(self) -> bool:
        """Whether :meth:`run_tail` can skip the part of the model before the target layer."""
        return self._tail is not None

    def _forward(self, x: Tensor, grad: bool, plain: bool = False) -> tuple[_Capture, Tensor]:
        """One forward pass with every target layer recorded; returns the records and logits."""
        cap = _Capture(grad=grad, layers=len(self.layers))
        self._capture = cap
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
                ``docs/cam-methods.md``, "Options").

        Returns:
            ``{name: B x H x W float32 map in [0, 1] on x.device}``.
        """
        classes = _resolve_methods(methods)
        eigen, aug = smooth_options(options)
        _check_options(options)
        self._check_input(x)
        check_methods(self, classes, volumes=x.dim() == 5, eigen_smooth=eigen)
        self._open()
        try:
            with torch.inference_mode(False):  # gradients work under torch.inference_mode() too
                x = x.clone() if x.is_inference() else x.detach()
                if aug:
                    return self._augmented_maps(x, classes, targets, options, eigen)
                return self._maps(x, classes, targets, options, eigen)
        finally:
            self._close()

    def _augmented_maps(
        self,
        x: Tensor,
        classes: list[type[CamMethod]],
        targets: TargetsArg,
        options: Any,
        eigen: bool,
    ) -> dict[str, Tensor]:
        """``aug_smooth``: the mean of the de-augmented maps over grad-cam's six transforms."""
        runs: list[dict[str, Tensor]] = []
        for augment, deaugment in augmentations():
            maps = self._maps(augment(x), classes, targets, options, eigen)
            runs.append({name: deaugment(m) for name, m in maps.items()})
        return {name: torch.stack([r[name] for r in runs]).mean(dim=0) for name in runs[0]}

    def _maps(
        self,
        x: Tensor,
        classes: list[type[CamMethod]],
        targets: TargetsArg,
        options: Any,
        eigen: bool = False,
    ) -> dict[str, Tensor]:
        """Capture once, then every method's final map from the shared contexts."""
        need = _Needs(
            grad=any(c.needs_gradient or c.needs_hvp for c in classes),
            hvp=any(c.needs_hvp for c in classes),
            biases=any(c.needs_bias_gradients for c in classes),
            plain=not all(c.channels_last_ok for c in classes),
        )
        ctxs = self._capture_layers(x, targets, need)
        result: dict[str, Tensor] = {}
        for cls in classes:
            method: CamMethod = cls(**options)
            with torch.no_grad():
                result[_name_of(cls)] = method_map(method, ctxs, eigen).float()
        return result

    def _capture_pass(
        self, x: Tensor, targets: TargetsArg, need: _Needs | bool = False
    ) -> CamContext:
        """The first target layer's context of :meth:`_capture_layers`."""
        return self._capture_layers(x, targets, need)[0]

    def _capture_layers(
        self, x: Tensor, targets: TargetsArg, need: _Needs | bool = False
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
            need = _Needs(grad=need)
        layers = bias_layers(self.model) if need.biases else []
        store: list[Tensor] = []
        with torch.enable_grad(), capture_outputs(layers, store):
            if need.biases:
                x = x.detach().requires_grad_(True)
            cap, logits = self._forward(x, need.grad or need.biases, plain=need.plain)
            outputs = [t for t in cap.outputs if t is not None]
            views = [v for v in cap.views if v is not None]
            self._check_finite(views, logits)
            fns: list[Target] = resolve_targets(targets, logits.detach())
            scores = score_rows(logits, range(x.shape[0]), fns)
            grads: list[Tensor | None] = [None] * len(outputs)
            hvps: list[Tensor | None] = [None] * len(outputs)
            extra: list[Tensor | None] = []
            if need.grad or need.biases:
                if not scores.requires_grad:
                    raise CamwallError(
                        f"the target scores do not depend on target layer {self.layer_name!r}; "
                        f"choose a layer before the output (or check targets)."
                    )
                check_bias_calls(self.model, layers, store)
                others = [x, *store] if need.biases else []
                grads, hvps, extra = _backward(scores, outputs, need.hvp, others)
        shared = _Shared(x.detach(), logits.detach(), scores.detach(), fns, targets is not None)
        return [
            self._context(shared, out, view, g, h, extra, layers)
            for out, view, g, h in zip(outputs, views, grads, hvps, strict=True)
        ]

    def _context(
        self,
        shared: _Shared,
        output: Tensor,
        view: Tensor,
        grad: Tensor | None,
        hvp: Tensor | None,
        extra: list[Tensor | None],
        layers: list[nn.Module],
    ) -> CamContext:
        """One layer's context: gradients and ``H A`` reshaped like the activations (as
        pytorch-grad-cam applies ``reshape_transform`` to the gradient)."""

        volume = tuple(int(n) for n in view.shape[2:]) if view.dim() == 5 else None

        def flat(t: Tensor) -> Tensor:  # B x K x d x h x w -> B x K x d x (h*w)
            return t if volume is None else t.flatten(3)

        def shaped(t: Tensor | None) -> Tensor | None:
            return None if t is None else flat(self.view(t).float())

        return CamContext(
            x=shared.x,
            activations=flat(view.float()),
            raw_activations=flat(view),
            gradients=shaped(grad),
            logits=shared.logits,
            scores=shared.scores,
            targets=shared.targets,
            engine=self,
            hvp=shaped(hvp),
            explicit_targets=shared.explicit,
            input_gradient=extra[0] if extra else None,
            bias_gradients=tuple(zip(layers, extra[1:], strict=True)),
            layer_output=output.detach() if self.reshape_transform is not None else None,
            volume=volume,
        )

    def _check_finite(self, views: list[Tensor], logits: Tensor) -> None:
        """Refuse NaN/Inf target-layer activations or logits (for a finite input).

        One device synchronisation when all is finite; the error names where it starts.
        """
        ok = torch.isfinite(logits).all()
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
            f"{_nonfinite_parameters(self.model)}; check the model's weights (or its "
            "numerical range, e.g. float16 overflow)."
        )

    def _check_input(self, x: Any) -> None:
        if not isinstance(x, Tensor):
            raise CamwallError(f"x must be a torch.Tensor, got {type(x).__name__}.")
        volumes = x.dim() == 5 and _has_conv3d(self.model)
        if x.dim() != 4 and not volumes:
            hint = " Add a batch dimension with x.unsqueeze(0)." if x.dim() == 3 else ""
            if x.dim() == 5:
                hint = " B x C x D x H x W volumes need a model with nn.Conv3d layers."
            raise CamwallError(
                f"x must be a B x C x H x W batch, got shape {tuple(x.shape)}.{hint}"
            )
        if not x.is_floating_point():
            raise CamwallError(
                f"x must be a floating-point tensor, got {x.dtype}; convert images with "
                f"x.float() / 255."
            )
        if not bool(torch.isfinite(x).all()):
            raise CamwallError(
                "x contains NaN or Inf values; clean the input before computing CAMs."
            )
        param = next(self.model.parameters(), None)
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


@dataclass(frozen=True)
class _Needs:
    """What the shared pass must compute beyond the activations."""

    grad: bool = False
    hvp: bool = False
    biases: bool = False
    plain: bool = False  # plain (not channels-last) inputs: a method amplifies rounding


@dataclass(frozen=True)
class _Shared:
    """What every layer's context shares."""

    x: Tensor
    logits: Tensor
    scores: Tensor
    targets: list[Target]
    explicit: bool


def _backward(
    scores: Tensor, outputs: Sequence[Tensor], need_hvp: bool, others: Sequence[Tensor]
) -> tuple[list[Tensor | None], list[Tensor | None], list[Tensor | None]]:
    """One backward pass: ``G_l = d(sum_b y_b)/dA_l`` (float32) for every recorded layer output
    and ``d(sum_b y_b)/dt`` for each of ``others``; if asked, ``H_l A_l =
    d(sum G_l * A_l detached)/dA_l`` by one more batched call per layer.

    Images do not interact, so the summed score's Hessian is block-diagonal per image. A tail
    without a second derivative (ReLU, max pooling, linear layers) gives ``H A = 0``.
    """
    found = torch.autograd.grad(
        scores.sum(), [*outputs, *others], allow_unused=True, create_graph=need_hvp
    )
    n = len(outputs)
    rest: list[Tensor | None] = [None if t is None else t.detach() for t in found[n:]]
    grads: list[Tensor | None] = []
    hvps: list[Tensor | None] = []
    for a, g in zip(outputs, found[:n], strict=True):
        zeros = torch.zeros_like(a, dtype=torch.float32)
        grads.append(zeros if g is None else g.detach().float())
        if not need_hvp:
            hvps.append(None)
            continue
        h = None
        if g is not None and g.requires_grad:
            (h,) = torch.autograd.grad(
                g, a, grad_outputs=a.detach(), allow_unused=True, retain_graph=True
            )
        hvps.append(zeros if h is None else h.detach().float())
    return grads, hvps, rest


def _nonfinite_parameters(model: nn.Module) -> str:
    """``": parameter NAME has N NaN / M Inf values"`` for the first such parameter, or ``""``."""
    for name, p in model.named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            nan, inf = int(torch.isnan(p).sum()), int(torch.isinf(p).sum())
            return f": parameter {name} has {nan} NaN / {inf} Inf values"
    return ""


def _name_of(cls: type[CamMethod]) -> str:
    for name, entry in METHODS.items():
        if entry is cls:
            return name
    raise KeyError(cls)


def _resolve_methods(methods: str | Sequence[str]) -> list[type[CamMethod]]:
    names = [methods] if isinstance(methods, str) else list(methods)
    if not names:
        raise CamwallError(f"no CAM method requested; choose from: {', '.join(METHODS.names())}.")
    classes: list[type[CamMethod]] = []
    for name in names:
        if not isinstance(name, str):
            raise CamwallError(f"method names must be strings, got {name!r}.")
        cls = METHODS.get(name)
        if cls not in classes:
            classes.append(cls)
    return classes


def _known_options() -> list[str]:
    known = {name for _, cls in METHODS.items() for name in cls.options}
    return sorted(known)


def _check_options(options: dict[str, Any]) -> None:
    known = [*_known_options(), *SMOOTH_OPTIONS]
    for name in options:
        if name not in known:
            raise CamwallError(
                f"unknown option {name!r}.{did_you_mean(name, [*known, *_ENGINE_OPTIONS])} "
                f"Options: {', '.join([*known, *_ENGINE_OPTIONS])}."
            )


def compute_cams(
    model: nn.Module,
    x: Tensor,
    target_layer: LayerArg,
    methods: str | Sequence[str],
    targets: TargetsArg = None,
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
        **options: ``output_fn``, ``head``, ``channels_last``, ``reshape_transform`` (see
            :class:`CamEngine`), ``eigen_smooth``, ``aug_smooth`` and the method options (see
            :meth:`CamEngine.__call__`).

    Returns:
        ``{name: B x H x W float32 map in [0, 1] on x.device}``.
    """
    engine = CamEngine(
        model,
        target_layer,
        output_fn=options.pop("output_fn", None),
        head=options.pop("head", None),
        channels_last=options.pop("channels_last", None),
        reshape_transform=options.pop("reshape_transform", None),
    )
    return engine(x, methods, targets, **options)


class _TokensOnly:
    """A model's declared ``reshape``, applied only to outputs that are not feature maps.

    The model declares how its token layers become grids; its convolutional layers (a ViT's
    patch embedding, B x K x h x w) are feature maps already and pass unchanged, both ways.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def __call__(self, output: Tensor) -> Tensor:
        if isinstance(output, Tensor) and output.dim() in (4, 5):
            return output
        return self.fn(output)

    def inverse(self, grid: Tensor, original: Tensor) -> Tensor:
        if original.dim() in (4, 5):
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
