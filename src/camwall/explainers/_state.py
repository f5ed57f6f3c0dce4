"""Leave the model as it was found: modes, ``requires_grad``, ``.grad``, hooks and children.

Peer libraries change models: pytorch-grad-cam puts the model in eval mode in its constructor
and leaves it there, registers hooks that live until ``release()``, writes parameter ``.grad``
through ``loss.backward()``, and its ``GuidedBackpropReLUModel`` swaps every ``ReLU`` for a new
one (dropping ``inplace=True``). :func:`preserved` snapshots all of that and restores it in
``finally``, so an adapter that raises half-way leaves no trace either.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["HOOK_DICTS", "hook_count", "preserved"]

#: the per-module hook dictionaries of torch.nn.Module.
HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


@dataclass
class _ModuleState:
    module: nn.Module
    training: bool
    children: dict[str, nn.Module | None]
    hooks: dict[str, set[int]]


def _snapshot(model: nn.Module) -> list[_ModuleState]:
    return [
        _ModuleState(
            module=m,
            training=m.training,
            children=dict(m._modules),
            hooks={d: set(getattr(m, d, {}).keys()) for d in HOOK_DICTS},
        )
        for m in model.modules()
    ]


def _restore(states: list[_ModuleState]) -> None:
    for st in states:
        m = st.module
        for d, keys in st.hooks.items():
            table = getattr(m, d, None)
            if table is None:
                continue
            for key in [k for k in table if k not in keys]:
                del table[key]
        if dict(m._modules) != st.children:
            m._modules.clear()
            m._modules.update(st.children)
        m.training = st.training


def hook_count(model: nn.Module) -> int:
    """Total number of hooks registered on ``model`` and its submodules (for tests)."""
    return sum(len(getattr(m, d, {})) for m in model.modules() for d in HOOK_DICTS)


@contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Inside: ``model`` in eval mode with frozen parameters. After: exactly as before.

    Restores each submodule's ``training`` flag, children (``_modules``), hook tables (hooks
    added inside are removed), and each parameter's ``requires_grad`` and ``.grad``.
    """
    states = _snapshot(model)
    params: list[tuple[nn.Parameter, bool, Tensor | None]] = [
        (p, p.requires_grad, p.grad) for p in model.parameters()
    ]
    try:
        model.eval()
        for p, _, _ in params:
            p.requires_grad_(False)
        yield
    finally:
        _restore(states)
        for p, flag, grad in params:
            p.requires_grad_(flag)
            p.grad = grad
