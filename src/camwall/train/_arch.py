"""The model a training config names: a registry architecture or a library classifier.

``config.arch`` is a name in :data:`camwall.walls.MODELS` (its wall built in; ``walled=False``
builds its baseline), or ``torchvision:NAME`` / ``timm:NAME``: the library's classifier built
with ``weights=None`` / ``pretrained=False`` (never a download) and walled with
``config.walls`` (:func:`camwall.walls.walled_torchvision`, :func:`camwall.walls.walled_timm`).
"""

from __future__ import annotations

import torch
from torch import nn

from camwall.errors import CamwallError
from camwall.train._config import TrainConfig

__all__ = ["LIBRARIES", "build_model", "check_arch", "library_arch"]

LIBRARIES = ("torchvision", "timm")
"""The prefixes of ``config.arch`` that name a library classifier (``torchvision:resnet18``)."""


def library_arch(arch: str) -> tuple[str, str] | None:
    """``(library, name)`` of ``torchvision:NAME`` / ``timm:NAME``; ``None`` for a registry
    name.

    Raises:
        CamwallError: another ``PREFIX:NAME``, or an empty name.
    """
    library, sep, name = arch.partition(":")
    if not sep:
        return None
    if library not in LIBRARIES or not name:
        raise CamwallError(
            f"--arch {arch!r}: give a camwall model name or LIBRARY:NAME with LIBRARY one of "
            f"{', '.join(LIBRARIES)} (e.g. torchvision:resnet18, timm:vit_tiny_patch16_224)."
        )
    return library, name


def check_arch(config: TrainConfig, walled: bool = True) -> None:
    """Fail early (before data is read) for an architecture :func:`build_model` would refuse:
    an unknown library or name (with a suggestion), a registry model given ``walls``, a
    library model to be walled without them."""
    from camwall.walls import MODELS

    library = library_arch(config.arch)
    if library is None:
        MODELS.get(config.arch)  # an unknown name: CamwallError with a suggestion
        if config.walls:
            raise CamwallError(
                f"--wall applies to --arch torchvision:NAME / timm:NAME; {config.arch!r} has "
                "its wall built in (drop --wall)."
            )
        return
    if library[0] == "torchvision":
        from camwall.walls._torchvision import _check_builder_args

        _check_builder_args(library[1], dict(config.arch_kwargs))
    else:
        from camwall.walls._timm import _check_args, timm_module

        _check_args(timm_module(), library[1], config.arch_kwargs, f"--arch {config.arch}")
    if walled and not config.walls:
        raise CamwallError(
            f"--arch {config.arch} has no wall of its own; give one with --wall LAYER:REGION "
            "(e.g. --wall layer3:rows=8: for a ResNet, --wall encoder:rows=10: or "
            "blocks:rows=10: for a ViT), or train --baseline."
        )


def _library_model(config: TrainConfig, library: str, name: str, walled: bool) -> nn.Module:
    from camwall.walls import walled_timm, walled_torchvision

    size = config.image_size
    shape = None if size is None else (3, size, size)
    build = walled_torchvision if library == "torchvision" else walled_timm
    walls = list(config.walls) if walled else None
    return build(
        name,
        walls,
        config.num_classes,
        input_shape=shape,
        seed=config.seed,
        **dict(config.arch_kwargs),
    )


def build_model(config: TrainConfig, walled: bool) -> nn.Module:
    """The model of ``config``: ``camwall.walls.create_model(config.arch, walled=...,
    num_classes=..., **arch_kwargs)`` or a walled library classifier (see the module
    docstring), with the torch RNG seeded by ``config.seed`` (so walled and baseline start
    alike).

    Raises:
        CamwallError: ``config.walls`` with a registry architecture, a library architecture
        walled without ``config.walls``, or an unknown name (with a suggestion).
    """
    from camwall.walls import create_model

    check_arch(config, walled)
    torch.manual_seed(config.seed)
    library = library_arch(config.arch)
    if library is not None:
        return _library_model(config, *library, walled)
    return create_model(
        config.arch, walled=walled, num_classes=config.num_classes, **dict(config.arch_kwargs)
    )
