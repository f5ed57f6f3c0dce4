"""Helpers shared by test folders (on ``sys.path`` through pytest's ``pythonpath``)."""

from __future__ import annotations

import threading

from torch import nn


def hook_count(model: nn.Module) -> int:
    """Forward, forward-pre and backward hooks registered on any submodule of ``model``."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def run_in_threads(fns: list, timeout: float = 120.0) -> list:
    """Run each ``fn()`` in its own thread, all released at once; re-raise the first error."""
    results: list = [None] * len(fns)
    errors: list[BaseException] = []
    start = threading.Barrier(len(fns))

    def body(i: int) -> None:
        start.wait()
        try:
            results[i] = fns[i]()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results
