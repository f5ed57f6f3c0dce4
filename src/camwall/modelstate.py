"""Save a model's state and put it back: one helper for the engine, ``dead_zone`` and explainers.

:func:`held` takes the model's re-entrant lock (:func:`model_lock`), snapshots what a caller
may change (each submodule's ``training`` flag, each parameter's ``requires_grad``; optionally
each parameter's ``.grad``, and each submodule's children and hook tables), sets the model up
(eval mode, parameters frozen, as asked) and restores the snapshot in ``finally``: an exception
half-way leaves no trace. Calls on one model from several threads run one after the other, each
seeing (and restoring) the model's own state; the same thread may nest them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from torch import Tensor, nn

__all__ = ["HOOK_DICTS", "ModelState", "held", "hook_count", "model_lock"]

#: the per-module hook dictionaries of torch.nn.Module.
HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)

_LOCKS: dict[int, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock of ``model``, held by every :func:`held` block on it.

    One lock per model object, dropped when the model is garbage-collected: two threads
    explaining the same model are serialized, while the same thread may nest blocks on it.
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(id(model))
        if lock is None:
            lock = _LOCKS[id(model)] = threading.RLock()
            weakref.finalize(model, _LOCKS.pop, id(model), None)
        return lock


def hook_count(model: nn.Module) -> int:
    """Total number of hooks registered on ``model`` and its submodules (for tests)."""
    return sum(len(getattr(m, d, {})) for m in model.modules() for d in HOOK_DICTS)


@dataclass
class _Structure:
    """One submodule's children and the keys of its hook tables."""

    module: nn.Module
    children: dict[str, nn.Module | None]
    hooks: dict[str, set[int]]

    def restore(self) -> None:
        m = self.module
        for d, keys in self.hooks.items():
            table = getattr(m, d, None)
            if table is None:
                continue
            for key in [k for k in table if k not in keys]:
                del table[key]
        if dict(m._modules) != self.children:
            m._modules.clear()
            m._modules.update(self.children)


@dataclass
class ModelState:
    """A snapshot of what :func:`held` restores (see the module docstring)."""

    modes: list[tuple[nn.Module, bool]]
    flags: list[tuple[nn.Parameter, bool]]
    grads: list[tuple[nn.Parameter, Tensor | None]] = field(default_factory=list)
    structure: list[_Structure] = field(default_factory=list)

    @classmethod
    def capture(
        cls, model: nn.Module, *, grads: bool = False, structure: bool = False
    ) -> ModelState:
        """Snapshot modes and flags; ``grads``: also ``.grad``; ``structure``: children, hooks."""
        return cls(
            modes=[(m, m.training) for m in model.modules()],
            flags=[(p, p.requires_grad) for p in model.parameters()],
            grads=[(p, p.grad) for p in model.parameters()] if grads else [],
            structure=[
                _Structure(
                    m, dict(m._modules), {d: set(getattr(m, d, {}).keys()) for d in HOOK_DICTS}
                )
                for m in model.modules()
            ]
            if structure
            else [],
        )

    def restore(self) -> None:
        """Put every recorded value back (hooks added since are removed)."""
        for st in self.structure:
            st.restore()
        for m, mode in self.modes:
            if m.training != mode:  # Module.__setattr__ is slow: set only what changed
                m.training = mode
        for p, flag in self.flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        for p, grad in self.grads:
            p.grad = grad


@contextmanager
def held(
    model: nn.Module,
    *,
    freeze: bool = True,
    grads: bool = False,
    structure: bool = False,
) -> Iterator[ModelState]:
    """Inside: ``model`` locked, in eval mode, its parameters frozen (``freeze``). After: as before.

    Args:
        model: the module.
        freeze: set every parameter's ``requires_grad`` to False inside (restored after).
        grads: also restore each parameter's ``.grad`` (for libraries that call ``backward``).
        structure: also restore children and hook tables (for libraries that swap modules or
            leave hooks behind).

    Yields:
        The snapshot that is restored on exit.
    """
    lock = model_lock(model)
    with lock:
        state = ModelState.capture(model, grads=grads, structure=structure)
        try:
            if any(mode for _, mode in state.modes):
                model.eval()
            if freeze:
                for p, flag in state.flags:
                    if flag:
                        p.requires_grad_(False)
            yield state
        finally:
            state.restore()
