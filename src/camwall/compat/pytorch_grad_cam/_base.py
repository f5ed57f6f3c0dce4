"""The base of the drop-in CAM classes: pytorch-grad-cam's ``BaseCAM`` interface over
:class:`camwall.cams.CamEngine`.

A class names its engine method (``method = "gradcam"``) and maps its constructor arguments to
engine options; the engine computes the map (one forward and, if needed, one backward pass;
hooks only during the call; modes and ``requires_grad`` flags restored; no parameter ``.grad``
written). The call returns what grad-cam returns: a float32 numpy array, B x H x W in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from camwall.cams import METHODS, CamEngine
from camwall.cams._outputs import detach_tree
from camwall.errors import CamwallError

__all__ = ["BaseCAM", "engine_default", "require_engine"]


def engine_default(method: str, option: str) -> Any:
    """The engine's default for ``option`` of ``method`` (read from ``camwall.cams.METHODS``)."""
    return METHODS.get(method).options[option]


def require_engine(feature: str, fix: str) -> CamwallError:
    """The error for a grad-cam feature that camwall's engine does not provide yet."""
    return CamwallError(
        f"camwall.compat.pytorch_grad_cam: {feature} is not supported by camwall's engine yet "
        f"(issue 21: the engine must learn it natively); {fix}"
    )


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


class BaseCAM:
    """pytorch-grad-cam's ``BaseCAM`` interface, computed by camwall's engine.

    ``cam(input_tensor, targets=None, aug_smooth=False, eigen_smooth=False)`` returns a
    B x H x W float32 numpy array in [0, 1] (B x D x H x W for 3-D inputs). ``targets`` are
    grad-cam's target callables (one per image, each on that image's output row), or ``None``
    for the highest-scoring class. ``cam.outputs`` holds the model output (detached) of the
    call's first forward pass (with ``aug_smooth``, the first augmentation, where grad-cam keeps
    the last). Differences from grad-cam's ``BaseCAM``, all deliberate: the model's train/eval
    modes are left as they were (grad-cam calls ``model.eval()`` in its constructor and leaves
    it); no hooks stay registered between calls; ``__exit__`` does not swallow ``IndexError``.

    Args:
        model: the model; its output is one tensor (B x num_classes, or B x C x H x W with
            callable targets such as ``SemanticSegmentationTarget``), a detection model's list
            of per-image dicts (``FasterRCNNBoxScoreTarget``), or a dict whose ``"logits"`` or
            ``"out"`` entry is such a tensor.
        target_layers: a list of layers (modules); several layers are aggregated as grad-cam.
        reshape_transform: ``f(layer_output) -> B x K x h x w``, applied to activations and
            gradients as grad-cam; methods that re-run the model from modified activations
            (ablation) also need ``f.inverse(grid, original_output)``.
    """

    #: The engine method (a name in :data:`camwall.cams.METHODS`).
    method: ClassVar[str] = ""
    #: The engine option that the ``batch_size`` attribute sets (``None``: no batching).
    batch_option: ClassVar[str | None] = None

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Callable[[Any], Tensor] | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise CamwallError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        self.model = model
        self.target_layers = list(target_layers)
        self.reshape_transform = reshape_transform
        self.device = model_device(model)
        self.outputs: Any = None
        self._options = options
        self._engine = CamEngine(
            model,
            self.engine_layers(),
            reshape_transform=reshape_transform,
            output_fn=self._record_output,
        )
        self._recording = False

    def engine_layers(self) -> list[nn.Module]:
        """The target layers handed to the engine (FullGrad chooses its own)."""
        if not self.target_layers:
            raise CamwallError(
                f"{type(self).__name__}: target_layers is empty; pass a list of layers, e.g. "
                f"[model.layer4[-1]]."
            )
        return self.target_layers

    # ----------------------------------------------------------------- grad-cam's call
    def __call__(
        self,
        input_tensor: Tensor,
        targets: Sequence[Callable[[Tensor], Tensor]] | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        return self.compute(input_tensor, targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)

    def forward(
        self,
        input_tensor: Tensor,
        targets: Sequence[Callable[[Tensor], Tensor]] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """grad-cam's ``forward``: the call without test-time augmentation."""
        return self.compute(input_tensor, targets, eigen_smooth=eigen_smooth)

    def compute(
        self,
        input_tensor: Tensor,
        targets: Sequence[Callable[[Tensor], Tensor]] | None,
        **options: Any,
    ) -> np.ndarray:
        """Run the engine; ``options`` are engine call options added to the class's own."""
        if not isinstance(input_tensor, Tensor):
            raise CamwallError(
                f"input_tensor must be a torch.Tensor, got {type(input_tensor).__name__}."
            )
        x = input_tensor.to(self.device)
        fns = None if targets is None else list(targets)
        call = {**self._options, **self.batch_options(), **options}
        self._recording = True
        try:
            maps = self._engine(x, self.method, fns, **call)
        finally:
            self._recording = False
        return maps[self.method].detach().cpu().numpy().astype(np.float32, copy=False)

    def batch_options(self) -> dict[str, Any]:
        """``{batch_option: self.batch_size}`` when the class batches and the attribute is set."""
        size = getattr(self, "batch_size", None)
        if self.batch_option is None or size is None:
            return {}
        return {self.batch_option: size}

    def _record_output(self, output: Any) -> Any:
        """The engine's ``output_fn``: keep the first output (detached) as ``outputs``; the
        engine takes tensors, detection models' lists of per-image dicts and dicts with a
        ``"logits"`` / ``"out"`` tensor (:mod:`camwall.cams._outputs`)."""
        if self._recording:
            self.outputs = detach_tree(output)
            self._recording = False
        return output

    # ----------------------------------------------------------------- context manager
    def __enter__(self) -> BaseCAM:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None  # nothing to release: the engine holds no hooks between calls
