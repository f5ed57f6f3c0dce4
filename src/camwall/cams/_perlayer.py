"""Several target layers and methods that re-run the model: one runner per layer.

A multi-layer call records every target layer in one pass (:class:`LayerRunner`); a method that
re-runs the model's part after its layer (ablationcam, finercam) needs that part for each layer
in turn. :func:`per_layer` binds each layer's context to a :class:`OneLayer` runner.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

from torch import Tensor, nn

from camwall.cams._base import CamContext, Needs
from camwall.cams._pass import LayerRunner
from camwall.cams._tail import Rows

__all__ = ["OneLayer", "per_layer"]


class OneLayer:
    """What a method sees of the model (:class:`camwall.cams.CamRunner`) for target layer
    ``index`` of a multi-layer call: ``run_tail`` re-runs the model from that layer (its own
    Sequential / torch.fx tail, else the whole model with that layer's output replaced, through
    a hook that exists only during the run); ``run_model`` and ``capture`` are the engine's.
    """

    def __init__(self, runner: LayerRunner, index: int) -> None:
        self._outer = runner
        self._index = index
        self._one = LayerRunner(
            runner.model,
            [runner.layers[index]],
            runner.output_fn,
            None,
            runner.channels_last,
            runner.reshape_transform,
        )

    @property
    def model(self) -> nn.Module:
        return self._outer.model

    @property
    def layer_name(self) -> str:
        return self._one.layer_name

    def run_model(self, x: Tensor) -> Tensor:
        return self._outer.run_model(x)

    def capture(self, x: Tensor, targets: Any, need: Needs | bool = False) -> CamContext:
        """A new pass recorded at every target layer; this layer's context."""
        ctx = self._outer.capture_layers(x, targets, need)[self._index]
        return dataclasses.replace(ctx, runner=self)

    @property
    def ablates_raw(self) -> bool:
        return self._one.ablates_raw

    def capture_layers(self, x: Tensor, targets: Any, need: Needs | bool = False) -> list[Any]:
        """A new pass recorded at every target layer of the call (the engine's)."""
        return self._outer.capture_layers(x, targets, need)

    def run_tail(self, a: Tensor, x: Tensor, original: Any = None, rows: Rows | None = None) -> Any:
        with self._bound() as one:
            return one.run_tail(a, x, original, rows)

    def run_ablated(
        self,
        a: Tensor,
        x: Tensor,
        original: Any,
        channels: Tensor,
        value: float,
        rows: Rows | None = None,
    ) -> Any:
        with self._bound() as one:
            return one.run_ablated(a, x, original, channels, value, rows)

    def run_raw(self, raw: Any, x: Tensor, rows: Rows | None = None) -> Any:
        with self._bound() as one:
            return one.run_raw(raw, x, rows)

    @contextlib.contextmanager
    def _bound(self) -> Iterator[LayerRunner]:
        """This layer's runner, on the recorded pass's inputs (plain or channels-last), with its
        hook attached for the run when the layer has no tail of its own."""
        one = self._one
        one._plain_pass = self._outer._plain_pass  # the same inputs as the recorded pass
        handles = [] if one.tail.fn is not None else one.attach()
        try:
            yield one
        finally:
            for handle in handles:
                handle.remove()


def per_layer(ctxs: Sequence[CamContext]) -> list[CamContext]:
    """Each context with its runner bound to its own target layer (:class:`OneLayer`); one
    layer, or contexts whose runner is not the engine's, are returned unchanged."""
    out = list(ctxs)
    if len(out) < 2:
        return out
    return [
        dataclasses.replace(ctx, runner=OneLayer(ctx.runner, i))
        if isinstance(ctx.runner, LayerRunner)
        else ctx
        for i, ctx in enumerate(out)
    ]
