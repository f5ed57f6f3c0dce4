"""The model's part after the target layer, for any model whose graph torch.fx can split.

Methods that re-run the network from modified target-layer activations (``reruns_tail``:
ablationcam, finercam) call ``tail(A) -> model output``. :func:`find_tail` gives, in order of
preference: the caller's ``head``; the chain of plain ``nn.Sequential`` stages after the layer
(:func:`camwall.cams._layers.sequential_tail`); the graph split below; else ``None`` (the whole
model is re-run with the layer's output replaced) with the reason.

Graph split: ``torch.fx`` traces only the ``forward`` of the model and of the layer's
ancestors (every other submodule, the target layer included, is one opaque ``call_module``
node, so blocks with data-dependent control flow still trace). The tail graph keeps the nodes
the output needs after the layer's node ``A``; it is valid when none of them needs the input
or any value computed before ``A`` (a residual branch around the layer, a shape of the input):
then ``tail(A) = model(x)`` exactly, the same modules run on the same values. Traced in eval
mode (as every engine call runs), so ``self.training`` branches take their eval side.

Cache: one split per (model, layer name), held in a ``WeakKeyDictionary`` (dropped with the
model); it is checked against the model's structure (every submodule's name and identity, the
traced modules' ``forward`` and forward hooks) and re-made when that changed.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from camwall.cams._layers import sequential_tail

__all__ = ["Tail", "find_tail"]

TailFn = Callable[[torch.Tensor], Any]


@dataclass(frozen=True)
class Tail:
    """How :meth:`LayerRunner.run_tail` runs the part after the target layer.

    Attributes:
        fn: ``fn(A) -> model output``, or ``None``: re-run the whole model with the layer's
            output replaced.
        info: how, in words: ``"head"``, ``"sequential"``, ``"graph (N nodes)"`` or
            ``"whole model: <why the graph could not be split>"``.
    """

    fn: TailFn | None
    info: str


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
    """Trace ``model`` (in eval mode, then its modes restored) and cut it after the layer; when
    a residual branch around the layer blocks the cut, the reason names the nearest enclosing
    module whose output the tail can start from (:func:`_enclosing_hint`)."""
    split = _split(model, layer_name)
    if isinstance(split, str):
        if _RESIDUAL in split:
            split += _enclosing_hint(model, layer_name)
        return Tail(None, f"whole model: {split}")
    steps = sum(1 for n in split.graph.nodes if n.op not in ("placeholder", "output"))
    return Tail(split, f"graph ({steps} nodes after {layer_name})")


_RESIDUAL = "a residual branch around the layer"


def _split(model: nn.Module, layer_name: str) -> fx.GraphModule | str:
    """The tail after ``layer_name`` as a graph module, or why there is none."""
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
    return cut if isinstance(cut, str) else fx.GraphModule(model, cut)


def _enclosing_hint(model: nn.Module, layer_name: str) -> str:
    """``"; the tail works from 'blocks.3' ..."`` for the nearest enclosing module (not the
    model) whose output has a tail, else ``""``. A ViT's ``blocks.N.norm1`` is inside the
    residual ``x + attn(norm1(x))``: a tail from it would need the block input of every image
    as a captured constant, which the tail function ``tail(A)`` does not take."""
    parts = layer_name.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        outer = ".".join(parts[:depth])
        if sequential_tail(model, outer) is not None or not isinstance(_split(model, outer), str):
            return (
                f"; the tail works from {outer!r}, the enclosing module (a tail from inside it "
                f"would need the residual input of each image captured, which tail(A) does not "
                f"take)"
            )
    return ""


def _cut(graph: fx.Graph, layer_name: str) -> fx.Graph | str:
    """The nodes after the layer's node that the output needs, with the layer's output as the
    first input; or why there is no such graph.

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
    needed = _needed(next(n for n in graph.nodes if n.op == "output"), layer)
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
    if early:
        name = early[-1].target if early[-1].op == "call_module" else early[-1].name
        return (
            f"the part after {layer_name!r} also needs {name!r}, computed before it (e.g. "
            f"{_RESIDUAL})"
        )
    tail = fx.Graph()
    env: dict[fx.Node, fx.Node] = {layer: tail.placeholder("activations")}
    for node in defaults:
        if node in needed:
            env[node] = tail.placeholder(node.name, default_value=node.args[0])
    for node in graph.nodes:
        if node in needed and node not in env:
            env[node] = tail.node_copy(node, lambda n: env[n])
    tail.lint()
    return tail


def _needed(output: fx.Node, layer: fx.Node) -> set[fx.Node]:
    """The nodes ``output`` depends on, not looking past ``layer``."""
    seen: set[fx.Node] = set()
    stack = [output]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node is not layer:
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
