"""The model's part after the target layer, for any model whose graph torch.fx can split.

Methods that re-run the network from modified target-layer activations (``reruns_tail``:
ablationcam, finercam) call ``tail(A) -> model output``. :func:`find_tail` gives, in order of
preference: the caller's ``head``; the chain of plain ``nn.Sequential`` stages after the layer
(:func:`camwall.cams._layers.sequential_tail`); the graph split below; else ``None`` (the whole
model is re-run with the layer's output replaced) with the reason.

Graph split: ``torch.fx`` traces only the ``forward`` of the model and of the layer's
ancestors (every other submodule, the target layer included, is one opaque ``call_module``
node, so blocks with data-dependent control flow still trace). The tail graph keeps the nodes
the output needs after the layer's node ``A``. Values it needs that were computed from the
input before ``A`` (the residual ``x`` of ``x + attn(norm1(x))`` in a ViT block, the identity
branch around a ResNet block's last conv) become captured inputs: ``tail(A, *c)`` with
``c = prefix(x)``, the graph's part that computes them (run once per call on the pass's B
inputs, :attr:`Tail.prefix`), each a tensor with one row per image, taken by row for every
batch (:func:`take_rows_of`). Then ``tail(A, *c) = model(x)`` exactly: the same modules run on
the same values. A captured value that is not such a tensor (a shape of the input, a list)
cannot be taken by row: the runner then re-runs the whole model (:class:`NotPerImage`). Traced
in eval mode (as every engine call runs), so ``self.training`` branches take their eval side.

Cache: one split per (model, layer name), held in a ``WeakKeyDictionary`` (dropped with the
model); it is checked against the model's structure (every submodule's name and identity, the
traced modules' ``forward`` and forward hooks) and re-made when that changed.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from camwall.cams._layers import sequential_tail

__all__ = ["NotPerImage", "Tail", "find_tail", "take_rows_of"]

TailFn = Callable[..., Any]
Rows = Sequence[int] | torch.Tensor


class NotPerImage(Exception):
    """A value the tail captures from before the layer has no row per image (the reason)."""


def take_rows_of(captured: tuple[Any, ...], rows: Rows | None) -> tuple[Any, ...]:
    """Rows ``rows`` (``None``: all) of each captured tensor (first dim: the image)."""
    return captured if rows is None else tuple(c[rows] for c in captured)


@dataclass(frozen=True)
class Tail:
    """How :meth:`LayerRunner.run_tail` runs the part after the target layer.

    Attributes:
        fn: ``fn(A, *captured) -> model output``, or ``None``: re-run the whole model with the
            layer's output replaced.
        info: how, in words: ``"head"``, ``"sequential"``, ``"graph (N nodes after L)"``
            (``", K values captured from before it"``) or ``"whole model: <why the graph could
            not be split>"``.
        prefix: ``prefix(x) -> captured``, what ``fn`` needs besides ``A`` for the B inputs
            ``x`` (raises :class:`NotPerImage` when a value has no row per image); ``None``:
            nothing.
    """

    fn: TailFn | None
    info: str
    prefix: Callable[[torch.Tensor], tuple[Any, ...]] | None = None


@dataclass(frozen=True)
class _Entry:
    signature: Hashable
    tail: Tail


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[str, _Entry]] = weakref.WeakKeyDictionary()


def find_tail(model: nn.Module, layer_name: str, head: TailFn | None = None) -> Tail:
    """The tail of ``model`` after ``layer_name`` (see the module docstring); cached."""
    if head is not None:
        return Tail(head, "head")
    seq = sequential_tail(model, layer_name)
    if seq is not None:
        return Tail(seq, "sequential")
    signature = _signature(model, layer_name)
    per_model = _CACHE.setdefault(model, {})
    entry = per_model.get(layer_name)
    if entry is None or entry.signature != signature:
        entry = _Entry(signature, _graph_tail(model, layer_name))
        per_model[layer_name] = entry
    return entry.tail


def _ancestors(model: nn.Module, layer_name: str) -> list[tuple[str, nn.Module]]:
    """``[(name, module)]`` of the model (``""``) and every module above the layer."""
    parts = layer_name.split(".")
    names = [".".join(parts[:i]) for i in range(len(parts))]
    return [(n, model.get_submodule(n) if n else model) for n in names]


def _signature(model: nn.Module, layer_name: str) -> Hashable:
    """What the split depends on: every submodule's name and identity (a replaced or added
    module changes it; the traced graph holds the old ones, so their ids stay unique), the
    traced modules' ``forward`` and their forward hooks."""
    modules = tuple((name, id(m)) for name, m in model.named_modules(remove_duplicate=False))
    traced = tuple(
        (
            id(type(m).forward),
            id(m.__dict__.get("forward")),
            tuple(m._forward_hooks),
            tuple(m._forward_pre_hooks),
        )
        for _, m in _ancestors(model, layer_name)
    )
    return modules, traced


class _AncestorTracer(fx.Tracer):
    """Traces the forward of the given modules only; every other submodule is a leaf."""

    def __init__(self, traced: set[str]) -> None:
        super().__init__()
        self.traced = traced

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name not in self.traced


def _graph_tail(model: nn.Module, layer_name: str) -> Tail:
    """Trace ``model`` (in eval mode, then its modes restored) and cut it after the layer."""
    split = _split(model, layer_name)
    if isinstance(split, str):
        return Tail(None, f"whole model: {split}")
    tail, prefix = split
    steps = sum(1 for n in tail.graph.nodes if n.op not in ("placeholder", "output"))
    info = f"graph ({steps} nodes after {layer_name}"
    if prefix is None:
        return Tail(tail, info + ")")
    count = len(prefix.names)
    values = "value" if count == 1 else "values"
    return Tail(tail, info + f", {count} {values} captured from before it)", prefix)


class _Prefix:
    """``prefix(x)``: the captured values (graph module ``module``), checked to be tensors with
    one row per input image."""

    def __init__(self, module: fx.GraphModule, names: list[str]) -> None:
        self.module = module
        self.names = names

    def __call__(self, x: torch.Tensor) -> tuple[Any, ...]:
        values = tuple(self.module(x))
        for name, value in zip(self.names, values, strict=True):
            if not isinstance(value, torch.Tensor) or value.dim() == 0 or len(value) != len(x):
                what = type(value).__name__
                if isinstance(value, torch.Tensor):
                    what = f"a tensor of shape {tuple(value.shape)}"
                raise NotPerImage(
                    f"the part after the layer also needs {name!r}, computed before it, which "
                    f"is {what}, not one row per image"
                )
        return values


def _split(model: nn.Module, layer_name: str) -> tuple[fx.GraphModule, _Prefix | None] | str:
    """The tail after ``layer_name`` and the prefix computing its captured values, as graph
    modules; or why there is none."""
    ancestors = _ancestors(model, layer_name)
    hooked = [n or "the model" for n, m in ancestors if m._forward_hooks or m._forward_pre_hooks]
    if hooked:
        return f"forward hooks on {hooked[0]} (a graph would skip them)"
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        graph = _AncestorTracer({n for n, _ in ancestors if n}).trace(model)
    except Exception as exc:  # torch.fx raises many kinds (TraceError, TypeError, ...)
        return f"torch.fx cannot trace it ({type(exc).__name__}: {exc})"
    finally:
        for m, mode in modes:
            m.training = mode
    cut = _cut(graph, layer_name)
    if isinstance(cut, str):
        return cut
    tail, prefix, early = cut
    if prefix is None:
        return fx.GraphModule(model, tail), None
    names = [str(n.target) if n.op == "call_module" else n.name for n in early]
    return fx.GraphModule(model, tail), _Prefix(fx.GraphModule(model, prefix), names)


def _cut(graph: fx.Graph, layer_name: str) -> tuple[fx.Graph, fx.Graph | None, list[fx.Node]] | str:
    """``(tail, prefix, early)``: the nodes after the layer's node that the output needs, with
    the layer's output as the first input and the values ``early`` computed from the input
    before it as the next ones; the graph computing ``early`` from the input (``None`` when
    there are none); or why there is no such graph.

    The model is called with one input, so its other ``forward`` parameters (e.g. timm's
    ``attn_mask=None``) keep their defaults: they stay parameters of the tail, with the same
    defaults.
    """
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == layer_name]
    if len(calls) != 1:
        return f"layer {layer_name!r} is called {len(calls)} times in the traced graph"
    layer = calls[0]
    places = [n for n in graph.nodes if n.op == "placeholder"]
    defaults = [n for n in places[1:] if n.args]
    output = next(n for n in graph.nodes if n.op == "output")
    needed = _needed(output, {layer})
    from_input = _depends(graph, set(places) - set(defaults))
    from_layer = _depends(graph, {layer})
    early = [
        n
        for n in graph.nodes
        if n in needed
        and n in from_input
        and n not in from_layer
        and any(u in from_layer and u in needed for u in n.users)
    ]
    tail = fx.Graph()
    env: dict[fx.Node, fx.Node] = {layer: tail.placeholder("activations")}
    for node in early:
        env[node] = tail.placeholder(f"captured_{node.name}")
    in_tail = _needed(output, {layer, *early})  # the prefix computes what only early needs
    for node in defaults:
        if node in in_tail:
            env[node] = tail.placeholder(node.name, default_value=node.args[0])
    for node in graph.nodes:
        if node in in_tail and node not in env:
            env[node] = tail.node_copy(node, lambda n: env[n])
    tail.lint()
    return tail, _prefix(graph, early), early


def _prefix(graph: fx.Graph, early: list[fx.Node]) -> fx.Graph | None:
    """The graph computing the nodes ``early`` from the model's inputs (``None`` if none)."""
    if not early:
        return None
    needed: set[fx.Node] = set()
    for node in early:
        needed |= _needed(node, set())
    prefix = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node in needed or node.op == "placeholder":
            env[node] = prefix.node_copy(node, lambda n: env[n])
    prefix.output(tuple(env[n] for n in early))
    prefix.lint()
    return prefix


def _needed(output: fx.Node, stops: set[fx.Node]) -> set[fx.Node]:
    """The nodes ``output`` depends on, not looking past the nodes ``stops``."""
    seen: set[fx.Node] = set()
    stack = [output]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node not in stops:
            stack.extend(node.all_input_nodes)
    return seen


def _depends(graph: fx.Graph, sources: set[fx.Node]) -> set[fx.Node]:
    """The nodes computed from any of ``sources`` (the sources included); nodes are in
    topological order."""
    found = set(sources)
    for node in graph.nodes:
        if any(n in found for n in node.all_input_nodes):
            found.add(node)
    return found
