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
from camwall.cams._targets import Target, TargetsArg, resolve_targets, score_rows
from camwall.errors import CamwallError, did_you_mean

__all__ = ["CamEngine", "compute_cams", "model_lock", "resolve_layer"]

OutputFn = Callable[[Any], Tensor]
Head = Callable[[Tensor], Any]

_ENGINE_OPTIONS = ("output_fn", "head", "channels_last")

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
    grad: bool
    full_graph: bool = False  # keep the graph before the layer (fullgrad: dy/dx, bias layers)
    replacement: Tensor | None = None
    activation: Tensor | None = None
    calls: int = 0
    thread: int = field(default_factory=threading.get_ident)


@dataclass
class _Session:
    modes: list[tuple[nn.Module, bool]] = field(default_factory=list)
    flags: list[tuple[nn.Parameter, bool]] = field(default_factory=list)
    handle: Any = None


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
        target_layer: a submodule or its dotted name.
        output_fn: maps the model's raw output to the logits tensor (for models that return a
            tuple, a dict or an object).
        head: the part of the model after the target layer, ``head(A) -> model output``; used
            by ablationcam. If omitted it is found for Sequential models, else the whole model is
            re-run with the layer's output replaced.
        channels_last: feed the model channels-last inputs (faster convolutions on CPU; same
            values to float rounding). ``None`` (default): on CPU only. If the model rejects such
            an input (e.g. it calls ``.view`` on a feature map), the engine falls back to plain
            contiguous inputs for the rest of its life.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str,
        *,
        output_fn: OutputFn | None = None,
        head: Head | None = None,
        channels_last: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise CamwallError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        self.model = model
        self.layer_name, self.layer = resolve_layer(model, target_layer)
        self.output_fn = output_fn
        self.head = head
        self.channels_last = channels_last
        self._tail = head if head is not None else sequential_tail(model, self.layer_name)
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
            session.handle = self.layer.register_forward_hook(self._hook)
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
            if session.handle is not None:
                session.handle.remove()
            for m, mode in session.modes:
                m.training = mode
            for p, flag in session.flags:
                p.requires_grad_(flag)
        finally:
            self._lock.release()

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        cap = self._capture
        if cap is None or cap.thread != threading.get_ident():
            return None  # disarmed, or a plain forward of the model in another thread
        cap.calls += 1
        if cap.calls > 1:
            raise CamwallError(
                f"target layer {self.layer_name!r} runs more than once in one forward pass (a "
                f"shared module such as a reused ReLU); choose a layer that runs once, e.g. the "
                f"enclosing block."
            )
        if cap.replacement is not None:
            if not isinstance(output, Tensor) or output.shape[1:] != cap.replacement.shape[1:]:
                raise CamwallError(
                    f"target layer {self.layer_name!r} changed its output shape between passes."
                )
            return cap.replacement
        if not isinstance(output, Tensor):
            raise CamwallError(
                f"target layer {self.layer_name!r} returns {type(output).__name__}, not a "
                f"tensor; choose a layer whose output is a B x K x h x w tensor."
            )
        if output.dim() != 4:
            raise CamwallError(
                f"target layer {self.layer_name!r} returns shape {tuple(output.shape)}; CAMs "
                f"need a B x K x h x w feature map (a convolutional layer or its activation)."
            )
        if cap.full_graph:
            cap.activation = output  # a non-leaf: gradients also flow to the layers before it
            return output.clone()
        a = output.detach()
        if cap.grad:
            a.requires_grad_(True)
        cap.activation = a
        return a.clone()

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
                    cap.calls, cap.activation = 0, None
        return self.model(x)

    def run_tail(self, a: Tensor, x: Tensor) -> Tensor:
        """Logits for target-layer outputs ``a`` (N x K x h x w) of inputs ``x`` (N x C x H x W).

        Uses the model's tail after the target layer (Sequential split or ``head``) when known;
        otherwise re-runs the whole model on ``x`` with the layer's output replaced by ``a``.
        """
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

    def _forward(
        self, x: Tensor, grad: bool, full_graph: bool = False, plain: bool = False
    ) -> tuple[Tensor, Tensor]:
        cap = _Capture(grad=grad, full_graph=full_graph)
        self._capture = cap
        try:
            with torch.set_grad_enabled(grad):
                out = self._call_model(x, plain=plain)
        finally:
            self._capture = None
        if cap.activation is None:
            raise CamwallError(
                f"target layer {self.layer_name!r} did not run during the forward pass; choose "
                f"a layer that the model's forward uses."
            )
        return cap.activation, self.logits(out, x.shape[0])

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
            x: B x C x H x W input on the model's device, same dtype as the model.
            methods: a name or a sequence of names from ``METHODS``.
            targets: ``None`` (argmax of the raw logits), an int, a list of class indices or of
                callables ``f(logits_row) -> scalar``.
            **options: method options, e.g. ``scorecam_chunk=16``, ``ablationcam_chunk=32``,
                ``ablation_value=0.0``, ``opticam_iters=50``, ``opticam_lr=0.1``, ``seed``.

        Returns:
            ``{name: B x H x W float32 map in [0, 1] on x.device}``.
        """
        classes = _resolve_methods(methods)
        _check_options(options)
        self._check_input(x)
        self._open()
        try:
            with torch.inference_mode(False):  # gradients work under torch.inference_mode() too
                x = x.clone() if x.is_inference() else x.detach()
                need = _Needs(
                    grad=any(c.needs_gradient or c.needs_hvp for c in classes),
                    hvp=any(c.needs_hvp for c in classes),
                    biases=any(c.needs_bias_gradients for c in classes),
                    plain=not all(c.channels_last_ok for c in classes),
                )
                ctx = self._capture_pass(x, targets, need)
                result: dict[str, Tensor] = {}
                for cls in classes:
                    method: CamMethod = cls(**options)
                    with torch.no_grad():
                        result[_name_of(cls)] = method.final_map(ctx).float()
            return result
        finally:
            self._close()

    def _capture_pass(
        self, x: Tensor, targets: TargetsArg, need: _Needs | bool = False
    ) -> CamContext:
        """One forward pass (and one backward pass if any gradient is needed) for all methods.

        ``need.hvp``: the backward pass builds its own graph and one more batched backward gives
        the Hessian-vector product ``H A``. ``need.biases`` (fullgrad): the same backward also
        gives ``dy/dx`` and ``dy/dz`` at every biased Conv2d / BatchNorm2d output ``z``; the
        pass then keeps the whole graph. ``need.plain``: plain (not channels-last) inputs, for
        methods that amplify float rounding (``CamMethod.channels_last_ok = False``).
        Gradients are enabled here whatever the caller's grad mode (``torch.no_grad()``).
        """
        if isinstance(need, bool):
            need = _Needs(grad=need)
        layers = bias_layers(self.model) if need.biases else []
        store: list[Tensor] = []
        with torch.enable_grad(), capture_outputs(layers, store):
            if need.biases:
                x = x.detach().requires_grad_(True)
            a, logits = self._forward(
                x, need.grad or need.biases, full_graph=need.biases, plain=need.plain
            )
            self._check_finite(a, logits)
            fns: list[Target] = resolve_targets(targets, logits.detach())
            scores = score_rows(logits, range(x.shape[0]), fns)
            grads = hvp = None
            extra: list[Tensor | None] = []
            if need.grad or need.biases:
                if not scores.requires_grad:
                    raise CamwallError(
                        f"the target scores do not depend on target layer {self.layer_name!r}; "
                        f"choose a layer before the output (or check targets)."
                    )
                check_bias_calls(self.model, layers, store)
                others = [x, *store] if need.biases else []
                grads, hvp, extra = _backward(scores, a, need.hvp, others)
        raw = a.detach()
        return CamContext(
            x=x.detach(),
            activations=raw.float(),
            raw_activations=raw,
            gradients=grads,
            logits=logits.detach(),
            scores=scores.detach(),
            targets=fns,
            engine=self,
            hvp=hvp,
            explicit_targets=targets is not None,
            input_gradient=extra[0] if extra else None,
            bias_gradients=tuple(zip(layers, extra[1:], strict=True)),
        )

    def _check_finite(self, a: Tensor, logits: Tensor) -> None:
        """Refuse NaN/Inf target-layer activations or logits (for a finite input).

        One device synchronisation when all is finite; the error names where it starts.
        """
        if bool(torch.isfinite(a).all() & torch.isfinite(logits).all()):
            return
        where = (
            f"the activations of target layer {self.layer_name!r}"
            if not bool(torch.isfinite(a).all())
            else "the model's output (logits)"
        )
        raise CamwallError(
            f"{where} contain NaN or Inf for a finite input, so every map would be NaN"
            f"{_nonfinite_parameters(self.model)}; check the model's weights (or its "
            "numerical range, e.g. float16 overflow)."
        )

    def _check_input(self, x: Any) -> None:
        if not isinstance(x, Tensor):
            raise CamwallError(f"x must be a torch.Tensor, got {type(x).__name__}.")
        if x.dim() != 4:
            hint = " Add a batch dimension with x.unsqueeze(0)." if x.dim() == 3 else ""
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


def _backward(
    scores: Tensor, a: Tensor, need_hvp: bool, others: Sequence[Tensor]
) -> tuple[Tensor, Tensor | None, list[Tensor | None]]:
    """One backward pass: ``G = d(sum_b y_b)/dA`` (float32) and ``d(sum_b y_b)/dt`` for each
    of ``others``; if asked, ``H A = d(sum G * A_detached)/dA`` by one more batched call.

    Images do not interact, so the summed score's Hessian is block-diagonal per image. A tail
    without a second derivative (ReLU, max pooling, linear layers) gives ``H A = 0``.
    """
    found = torch.autograd.grad(
        scores.sum(), [a, *others], allow_unused=True, create_graph=need_hvp
    )
    g = found[0]
    rest: list[Tensor | None] = [None if t is None else t.detach() for t in found[1:]]
    zeros = torch.zeros_like(a, dtype=torch.float32)
    hvp = None
    if need_hvp:
        h = None
        if g is not None and g.requires_grad:
            (h,) = torch.autograd.grad(g, a, grad_outputs=a.detach(), allow_unused=True)
        hvp = zeros if h is None else h.detach().float()
    return (zeros if g is None else g.detach().float()), hvp, rest


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
    known = _known_options()
    for name in options:
        if name not in known:
            raise CamwallError(
                f"unknown option {name!r}.{did_you_mean(name, [*known, *_ENGINE_OPTIONS])} "
                f"Options: {', '.join([*known, *_ENGINE_OPTIONS])}."
            )


def compute_cams(
    model: nn.Module,
    x: Tensor,
    target_layer: nn.Module | str,
    methods: str | Sequence[str],
    targets: TargetsArg = None,
    **options: Any,
) -> dict[str, Tensor]:
    """Compute CAMs for a batch in one call (hooks registered and removed inside).

    Gradient methods requested together share one forward and one backward pass; eigencam
    reuses the same activations.

    Args:
        model: a classifier returning B x num_classes logits (or use ``output_fn``).
        x: B x C x H x W input.
        target_layer: a submodule or its dotted name, e.g. ``"features.29"``.
        methods: a name or names from ``camwall.cams.METHODS``.
        targets: ``None`` (argmax of the raw logits), an int, class indices or callables on one
            logits row.
        **options: ``output_fn``, ``head``, ``channels_last`` (see :class:`CamEngine`) and the
            method options (see :meth:`CamEngine.__call__`).

    Returns:
        ``{name: B x H x W float32 map in [0, 1] on x.device}``.
    """
    engine = CamEngine(
        model,
        target_layer,
        output_fn=options.pop("output_fn", None),
        head=options.pop("head", None),
        channels_last=options.pop("channels_last", None),
    )
    return engine(x, methods, targets, **options)
