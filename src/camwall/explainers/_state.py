"""Leave the model as it was found: modes, ``requires_grad``, ``.grad``, hooks and children.

Peer libraries change models: pytorch-grad-cam puts the model in eval mode in its constructor
and leaves it there, registers hooks that live until ``release()``, writes parameter ``.grad``
through ``loss.backward()``, and its ``GuidedBackpropReLUModel`` swaps every ``ReLU`` for a new
one (dropping ``inplace=True``). :func:`preserved` snapshots all of that with
:func:`camwall.modelstate.held` and restores it in ``finally``, so an adapter that raises
half-way leaves no trace either; it holds the model's lock, so explainers called from several
threads on one model run one after the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from camwall.modelstate import HOOK_DICTS, held, hook_count

__all__ = ["HOOK_DICTS", "hook_count", "preserved"]


@contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Inside: ``model`` locked, in eval mode, with frozen parameters. After: exactly as before.

    Restores each submodule's ``training`` flag, children (``_modules``), hook tables (hooks
    added inside are removed), and each parameter's ``requires_grad`` and ``.grad``.
    """
    with held(model, grads=True, structure=True):
        yield
