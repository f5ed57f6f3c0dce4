"""Closed-form refit of the walled linear layers right after a wall is inserted (``--refit N``).

Inserting a wall into trained weights sets the walled columns of every
:class:`~camwall.walls.WalledLinear` to 0, and the layer's outputs lose what those columns
added. The refit gives that back as far as the open features allow: on the layer's inputs
``x`` (``N x D``: the first ``N`` training examples, epoch 0's draws, model in eval mode) it
replaces the open weights and the bias by the ridge regression of the **unwalled** layer's
outputs on the open features,

    theta = argmin_theta || Z theta - T ||^2 + ridge * mean(diag(Z_o^T Z_o)) * ||theta_w||^2,

with ``Z = [x[:, open], 1]`` (``N x (k + 1)``), ``T = x W0^T + b0`` (``N x out``, ``W0``,
``b0`` the file's weights before the wall), ``theta = [W_open^T; b^T]`` (``(k + 1) x out``) and
``theta_w`` its weight rows (the bias is not penalised). The penalty is relative to the mean
square of the open features, so ``ridge`` does not depend on their scale. It is solved in
float64 from the normal equations (``Z^T Z``, accumulated batch by batch, with ``Z^T T =
Z^T [x, 1] [W0, b0]^T``) by ``torch.linalg.lstsq`` (``gelsd``: a dead, always-zero feature
makes ``Z^T Z`` singular and gets weight 0). With one wall per output group, each group is
refitted on its own open features. The walled weights stay exactly 0. Memory: ``(D + 1)^2``
float64 per layer (32 MiB for ``fashion-vgg``'s 2,048 features).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from camwall.walls import WalledLinear

__all__ = ["gram_of_inputs", "refit_walled_layers", "ridge_refit", "walled_layers"]


def walled_layers(model: nn.Module) -> dict[str, WalledLinear]:
    """The :class:`WalledLinear` layers of ``model`` by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, WalledLinear)}


@contextmanager
def _gram_hooks(layers: dict[str, WalledLinear], grams: dict[str, Tensor]) -> Iterator[None]:
    """Forward pre-hooks adding ``[x, 1]^T [x, 1]`` (float64) of each layer's input to
    ``grams[name]``; removed on exit."""

    def hook(name: str) -> Any:
        def add(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            x = inputs[0].detach().flatten(1).double()
            z = torch.cat([x, x.new_ones(x.shape[0], 1)], 1)
            grams[name] = grams[name] + (z.T @ z).cpu()

        return add

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def gram_of_inputs(
    model: nn.Module,
    layers: dict[str, WalledLinear],
    data: Dataset[Any],
    batch_size: int,
    device: torch.device,
) -> dict[str, Tensor]:
    """``Z^T Z`` (float64, ``(D + 1) x (D + 1)``, ``Z = [x, 1]``) of each layer's inputs over
    ``data``, with ``model`` in eval mode (its mode is restored)."""
    grams = {n: torch.zeros(m.in_features + 1, m.in_features + 1, dtype=torch.float64)
             for n, m in layers.items()}  # fmt: skip
    was_training = model.training
    model.eval()
    try:
        with _gram_hooks(layers, grams), torch.no_grad():
            for x, _ in DataLoader(data, batch_size=batch_size, shuffle=False):
                model(x.to(device))
    finally:
        model.train(was_training)
    return grams


def ridge_refit(gram: Tensor, weight: Tensor, bias: Tensor, keep: Tensor, ridge: float) -> Tensor:
    """``theta`` (float64, ``(k + 1) x out``) of the module docstring for one group of outputs.

    Args:
        gram: ``Z^T Z`` of ``[x, 1]``, ``(D + 1) x (D + 1)`` float64.
        weight, bias: the unwalled layer's ``W0`` (``out x D``) and ``b0`` (``out``).
        keep: bool ``D``, the open features.
        ridge: relative penalty (>= 0).
    """
    cols = torch.cat([keep.cpu(), torch.tensor([True])])
    w0 = torch.cat([weight.detach().double().cpu(), bias.detach().double().cpu()[:, None]], 1)
    a = gram[cols][:, cols].clone()
    k = int(keep.sum())
    scale = float(a.diagonal()[:k].mean()) if k else 0.0
    a[range(k), range(k)] += ridge * scale
    b = gram[cols] @ w0.T
    return torch.linalg.lstsq(a, b, driver="gelsd").solution


def refit_walled_layers(
    model: nn.Module,
    originals: dict[str, tuple[Tensor, Tensor]],
    data: Dataset[Any],
    ridge: float,
    batch_size: int,
    device: torch.device,
) -> list[str]:
    """Refit the open weights and the bias of every walled layer named in ``originals``
    (``name -> (W0, b0)``, the file's tensors before the wall) on ``data`` (module docstring).

    Returns:
        The names of the refitted layers (those with a bias).
    """
    layers = {
        n: m for n, m in walled_layers(model).items() if n in originals and m.bias is not None
    }
    grams = gram_of_inputs(model, layers, data, batch_size, device)
    for name, layer in layers.items():
        weight0, bias0 = originals[name]
        new_w = torch.zeros_like(layer.weight, dtype=torch.float64, device="cpu")
        new_b = torch.zeros(layer.out_features, dtype=torch.float64)
        size = layer.out_features // len(layer.walls)
        for g, keep in enumerate(layer.group_keep.cpu()):
            rows = slice(g * size, (g + 1) * size)
            theta = ridge_refit(grams[name], weight0[rows], bias0[rows], keep, ridge)
            new_w[rows, keep] = theta[:-1].T
            new_b[rows] = theta[-1]
        assert layer.bias is not None
        with torch.no_grad():
            layer.weight.copy_(new_w.to(layer.weight))
            layer.bias.copy_(new_b.to(layer.bias))
        layer.enforce()
    return list(layers)
