"""Deep Feature Factorization (Collins et al., 2018, https://arxiv.org/abs/1806.10206).

The target layer's activations of a batch, ``A`` (B x K x h x w), become a K x (B h w) matrix,
each channel shifted by its minimum ``m_k`` to be non-negative; non-negative matrix
factorization ``A - m ~ W H`` (scikit-learn's ``NMF``, ``init="random"``, ``random_state=0``
as grad-cam) gives the concepts ``W + m`` (K x n: one embedding per component) and the
explanations ``H`` (n x B h w -> B x n x h x w). The activations come from camwall's engine
(hooks only during the call, modes and flags restored); NMF needs scikit-learn
(``pip install camwall[compat]``), imported when called.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camwall.cams import CamEngine, Needs
from camwall.compat.pytorch_grad_cam.utils.image import (
    create_labels_legend,
    scale_cam_image,
    show_factorization_on_image,
)
from camwall.errors import CamwallError

__all__ = ["DeepFeatureFactorization", "dff", "run_dff_on_image"]


def _nmf(n_components: int) -> Any:
    try:
        from sklearn.decomposition import NMF
    except ImportError:
        raise CamwallError(
            "DeepFeatureFactorization factorizes with scikit-learn's NMF: pip install "
            "scikit-learn (or camwall[compat])."
        ) from None
    return NMF(n_components=n_components, init="random", random_state=0)


def dff(activations: np.ndarray, n_components: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Factorize B x K x h x w activations (NaN taken as 0).

    Returns:
        ``(concepts, explanations)``: K x n concept embeddings and B x n x h x w maps.
    """
    b, k, h, w = activations.shape
    flat = np.nan_to_num(np.moveaxis(activations, 1, 0), nan=0.0).reshape(k, -1)
    offset = flat.min(axis=-1)
    model = _nmf(n_components)
    weights = model.fit_transform(flat - offset[:, None])
    maps = model.components_.reshape(n_components, b, h, w)
    return weights + offset[:, None], np.moveaxis(maps, 0, 1)


class DeepFeatureFactorization:
    """grad-cam's ``DeepFeatureFactorization`` on camwall's engine.

    ``dff(input_tensor, n_components=16)`` returns ``(concepts, explanations)``: K x n concepts
    and a list of B arrays n x H x W (each map min-max scaled to [0, 1] and resized to the
    input), plus ``concept_outputs = computation_on_concepts(concepts.T)`` (n x ..., NumPy)
    when that callable is given (e.g. the model's classifier head). Differences from grad-cam:
    the model runs in eval mode during the call (its modes are restored after; grad-cam runs
    it in whatever mode it is in), no hook stays registered, ``__exit__`` swallows nothing.

    Args:
        model: any model (its output is not read).
        target_layer: one layer (a module).
        reshape_transform: ``f(layer_output) -> B x K x h x w``, as for the CAM classes.
        computation_on_concepts: a callable on the n x K float32 concept tensor.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module,
        reshape_transform: Callable[[Any], Tensor] | None = None,
        computation_on_concepts: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.model = model
        self.target_layer = target_layer
        self.reshape_transform = reshape_transform
        self.computation_on_concepts = computation_on_concepts

    def activations(self, input_tensor: Tensor) -> np.ndarray:
        """The target layer's B x K x h x w activations (reshaped), as NumPy in the model's
        dtype."""
        batch = input_tensor.shape[0]
        engine = CamEngine(
            self.model,
            [self.target_layer],
            reshape_transform=self.reshape_transform,
            output_fn=lambda _: torch.zeros(batch, 1),  # nothing is scored
        )
        with engine:
            (ctx,) = engine.capture_layers(input_tensor, None, Needs())
        if ctx.raw_activations.dim() != 4:
            raise CamwallError(
                "DeepFeatureFactorization needs a B x K x h x w layer (2-D feature maps)."
            )
        return ctx.raw_activations.cpu().numpy()

    def __call__(self, input_tensor: Tensor, n_components: int = 16) -> tuple[Any, ...]:
        if not isinstance(input_tensor, Tensor) or input_tensor.dim() != 4:
            raise CamwallError("DeepFeatureFactorization takes a B x C x H x W input tensor.")
        height, width = input_tensor.shape[-2:]
        concepts, explanations = dff(self.activations(input_tensor), n_components=n_components)
        maps = [scale_cam_image(e, (width, height)) for e in explanations]
        if self.computation_on_concepts is None:
            return concepts, maps
        with torch.no_grad():
            embeddings = torch.from_numpy(np.asarray(concepts, dtype=np.float32).T.copy())
            outputs = self.computation_on_concepts(embeddings).cpu().numpy()
        return concepts, maps, outputs

    def __enter__(self) -> DeepFeatureFactorization:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None  # nothing to release: hooks exist only during a call


def run_dff_on_image(
    model: nn.Module,
    target_layer: nn.Module,
    classifier: Callable[[Tensor], Tensor],
    img_pil: Any,
    img_tensor: Tensor,
    reshape_transform: Callable[[Any], Tensor] | None = None,
    n_components: int = 5,
    top_k: int = 2,
) -> np.ndarray:
    """One image's factorization drawn beside it: ``[image | components + legend]``, uint8.

    ``img_tensor`` is the C x H x W model input of the PIL image ``img_pil``; ``classifier``
    scores the concepts, labelled by ``model.config.id2label`` (a Hugging Face model) with
    each concept's ``top_k`` softmax scores. grad-cam's default ``reshape_transform`` is
    ``typing.Optional[typing.Callable]`` (a typing object, not a transform); camwall's is
    ``None``.
    """
    labels = getattr(getattr(model, "config", None), "id2label", None)
    if labels is None:
        raise CamwallError(
            "run_dff_on_image labels the concepts with model.config.id2label (a Hugging Face "
            "model); give the model a config with id2label, or call DeepFeatureFactorization."
        )
    rgb = np.array(img_pil) / 255
    factorize = DeepFeatureFactorization(model, target_layer, reshape_transform, classifier)
    _, maps, outputs = factorize(img_tensor[None, :], n_components)
    scores = torch.softmax(torch.from_numpy(outputs), dim=-1).numpy()
    legend = create_labels_legend(scores, labels=labels, top_k=top_k)
    picture = show_factorization_on_image(rgb, maps[0], image_weight=0.3, concept_labels=legend)
    return np.hstack((np.array(img_pil), picture))
