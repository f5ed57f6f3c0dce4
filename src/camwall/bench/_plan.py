"""What a bench run is given and what it will do: the models and datasets, and one frozen
:class:`BenchPlan` built once from the user's arguments (methods sorted by kind, device,
batching, seed, figures, options), validated before any work starts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypedDict

import torch
from torch import Tensor, nn

from camwall._cliargs import check_seed
from camwall.errors import CamwallError
from camwall.runtime import resolve_device

__all__ = [
    "FIGURE_IMAGES",
    "BenchDataset",
    "BenchModel",
    "BenchPlan",
    "BenchSettings",
    "check_inputs",
    "explained_cell",
    "paired",
]

FIGURE_IMAGES = 8
"""Images per dataset whose maps are kept (as PNG) for the figure grids."""


@dataclass
class BenchModel:
    """A model under test.

    Attributes:
        name: key in the store and the report (e.g. ``"fashion-vgg (walled)"``).
        model: the network; run in eval mode.
        target_layer: dotted name of the CAM target layer.
        dead_zone: ``H x W`` bool mask of the input pixels that cannot change the output.
        class_names: names of the output classes (may be empty).
        info: description recorded in the store (source, metadata, wall check).
        walled: False for a baseline, which gets predictions and accuracy only.
        channels: input channels the model takes (checked against the datasets), if known.
        task: what the model reads (:func:`camwall.walls.model_task`): ``"single"`` (one label
            per image) or ``"grid"``; it runs only on datasets of the same task.
        kind: its kind of wall for the report's column groups (``CNN``, ``grid``, ``ViT``).
        cell_zones: for a grid model, bool ``cells x H x W``: the dead zone of each cell's
            outputs (``dead_zone`` is then cell 0's).
        normalize: ``(mean, std)`` per channel applied to the ``[0, 1]`` images before the
            model (``(x - mean) / std``, :meth:`inputs`), or None: the images as they are.
            Per-pixel, so the dead zone is the same before and after.
    """

    name: str
    model: nn.Module
    target_layer: str
    dead_zone: Tensor
    class_names: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    walled: bool = True
    channels: int | None = None
    task: str = "single"
    kind: str = "CNN"
    cell_zones: Tensor | None = None
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def inputs(self, images: Tensor) -> Tensor:
        """What the model reads for ``N x C x H x W`` images in [0, 1]: ``(x - mean) / std``
        with :attr:`normalize`, else the images."""
        if self.normalize is None:
            return images
        mean, std = (images.new_tensor(v)[:, None, None] for v in self.normalize)
        return (images - mean) / std


@dataclass
class BenchDataset:
    """Images to test: ``images`` float32 ``N x C x H x W``, ``labels`` int64 ``N`` (or
    ``N x cells`` for a grid dataset, whose ``info["task"]`` is ``"grid"``)."""

    name: str
    images: Tensor
    labels: Tensor
    class_names: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        """``"grid"`` or ``"single"`` (the default)."""
        return str(self.info.get("task", "single"))


def paired(model: BenchModel, dataset: BenchDataset) -> bool:
    """Whether ``model`` can read ``dataset``: the rule is that their tasks match (a grid model
    reads ``fashion-grid``; a single-output model reads single-label datasets)."""
    return model.task == dataset.task


def explained_cell(image: int, seed: int, cells: int = 4) -> int:
    """The grid cell whose predicted class the bench explains for image ``image``:
    ``(image + seed) % cells``, so consecutive images cycle through the cells."""
    return (int(image) + int(seed)) % cells


# --------------------------------------------------------------------------- the plan


class BenchSettings(TypedDict, total=False):
    """The keywords of :meth:`BenchPlan.build` (and of ``run_bench``'s ``**settings``)."""

    device: str | torch.device
    batch_size: int | None
    seed: int
    figure_images: int
    progress: bool
    cam_options: Mapping[str, Any] | None
    explainer_options: Mapping[str, Mapping[str, Any]] | None
    explainers: Mapping[str, Any] | None


@dataclass(frozen=True)
class BenchPlan:
    """What the loop does, decided once: the methods by kind, device, batching, seed, figures,
    progress and options. Build it with :meth:`build` (which validates every argument).

    Attributes:
        methods: every method, in the user's order (the order of the result rows).
        cams: the engine CAMs among them (:data:`camwall.cams.METHODS`), run in one call.
        controls: the controls (:data:`camwall.metrics.CONTROLS`).
        others: the other explainers (registry names, ``py:`` names, given objects).
        batch_size: images per batch; None until :meth:`sized` (the CLI's automatic size).
    """

    methods: tuple[str, ...]
    cams: tuple[str, ...]
    controls: tuple[str, ...]
    others: tuple[str, ...]
    device: torch.device
    batch_size: int | None
    seed: int
    figure_images: int = FIGURE_IMAGES
    progress: bool = True
    cam_options: Mapping[str, Any] = field(default_factory=dict)
    explainer_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    explainers: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        methods: Sequence[str],
        *,
        device: str | torch.device = "auto",
        batch_size: int | None = 16,
        seed: int = 0,
        figure_images: int = FIGURE_IMAGES,
        progress: bool = True,
        cam_options: Mapping[str, Any] | None = None,
        explainer_options: Mapping[str, Mapping[str, Any]] | None = None,
        explainers: Mapping[str, Any] | None = None,
    ) -> BenchPlan:
        """The validated plan.

        Args:
            methods: CAM method names, controls and explainer names, in row order.
            device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device``.
            batch_size: images per batch; None: sized from the models (:meth:`sized`).
            seed: seeds torch and the random control, in ``[0, 2**63 - 1]``.
            figure_images: images per dataset whose maps are kept for the figures.
            progress: show tqdm progress bars (rank 0 only).
            cam_options: extra keyword options for :func:`camwall.cams.compute_cams`.
            explainer_options: ``{explainer name: {option: value}}`` for the non-engine
                explainers (:func:`camwall.explainers.parse_explainer_options`).
            explainers: ``{name: callable}``: explainer objects (the
                :class:`camwall.explainers.Explainer` protocol) run under ``name``, a name in
                ``methods`` (used by :func:`camwall.wall_test`).

        Raises:
            CamwallError: a batch size below 1, a seed outside ``[0, 2**63 - 1]``, an unknown
                device, or methods :func:`camwall.bench._methods.check_methods` refuses.
        """
        from camwall.bench._methods import check_methods
        from camwall.cams import METHODS
        from camwall.metrics import CONTROLS

        if batch_size is not None and batch_size < 1:
            raise CamwallError(f"--batch-size must be at least 1, got {batch_size}.")
        options = {k: MappingProxyType(dict(v)) for k, v in (explainer_options or {}).items()}
        objects = dict(explainers or {})
        check_seed(seed)
        check_methods(methods, options, objects)
        names = tuple(methods)
        return cls(
            methods=names,
            cams=tuple(m for m in names if m in METHODS),
            controls=tuple(m for m in names if m in CONTROLS),
            others=tuple(m for m in names if m not in METHODS and m not in CONTROLS),
            device=device if isinstance(device, torch.device) else resolve_device(device),
            batch_size=batch_size,
            seed=int(seed),
            figure_images=figure_images,
            progress=progress,
            cam_options=MappingProxyType(dict(cam_options or {})),
            explainer_options=MappingProxyType(options),
            explainers=MappingProxyType(objects),
        )

    def sized(self, models: Sequence[BenchModel]) -> BenchPlan:
        """This plan with its batch size set: as given, else 64 when the first walled model's
        inputs are at most 128 x 128, else 16."""
        if self.batch_size is not None:
            return self
        walled = next(m for m in models if m.walled)
        return replace(self, batch_size=64 if walled.dead_zone.numel() <= 128 * 128 else 16)

    def config(
        self, models: Sequence[BenchModel], datasets: Sequence[BenchDataset]
    ) -> dict[str, Any]:
        """The default result-defining config of a run of this plan on these inputs."""
        from camwall.bench._methods import method_config

        return {
            "models": [m.name for m in models if m.walled],
            "baselines": [m.name for m in models if not m.walled],
            "datasets": [d.name for d in datasets],
            "methods": list(self.methods),
            "target_layer": None,
            "images": None,
            "seed": self.seed,
            **method_config(self.methods, self.explainer_options, self.explainers),
        }


# --------------------------------------------------------------------------- the inputs


def check_inputs(models: Sequence[BenchModel], datasets: Sequence[BenchDataset]) -> None:
    """Refuse inputs the bench cannot run: no walled model, duplicate names, unpaired models or
    datasets, malformed images, labels, channels or sizes, or a walled model with no dead zone.

    Raises:
        CamwallError: naming the model or dataset and the fix.
    """
    if not any(m.walled for m in models):
        raise CamwallError("no walled model to test; pass a walled checkpoint with --model.")
    for what, names in (
        ("model", [m.name for m in models]),
        ("dataset", [d.name for d in datasets]),
    ):
        if len(set(names)) != len(names):
            raise CamwallError(f"{what} names must be distinct, got {names}.")
    _check_pairing(models, datasets)
    for d in datasets:
        if d.images.dim() != 4 or len(d.images) != len(d.labels) or len(d.labels) == 0:
            raise CamwallError(
                f"dataset {d.name!r}: need N x C x H x W images and N labels, got images "
                f"{tuple(d.images.shape)} and {len(d.labels)} labels."
            )
        for m in (m for m in models if paired(m, d)):
            _check_fit(m, d)
    for m in models:
        _check_task(m)
        if m.walled and not bool(m.dead_zone.any()):
            raise CamwallError(
                f"model {m.name!r} has no dead zone, so no wall: the test would be meaningless. "
                "Pass a walled model (see `camwall walls`)."
            )
        if m.walled and m.target_layer:
            image = next(d.images[:1] for d in datasets if paired(m, d))
            _check_layer(m, torch.zeros_like(image))


def _check_task(m: BenchModel) -> None:
    """A model's task is ``single``, or ``grid`` with per-cell dead zones (a walled grid model)."""
    if m.task not in ("single", "grid") or (m.task == "grid" and m.cell_zones is None):
        raise CamwallError(
            f'model {m.name!r} declares the task {m.task!r} (its checkpoint\'s "task"), but it '
            "is not a walled grid model (per-cell outputs and dead zones) and the bench knows no "
            'other task; fix or remove the "task" entry of its checkpoint JSON.'
        )


def _check_layer(m: BenchModel, x: Tensor) -> None:
    """The target layer gives a spatial map: ``B x C x H x W`` (or ``B x tokens x C``), found
    by one forward pass of ``x`` (a ``1 x C x H x W`` zero image) in eval mode (the model's
    mode is restored)."""
    from camwall.cams import resolve_layer

    name, layer = resolve_layer(m.model, m.target_layer)
    shapes: list[tuple[int, ...]] = []
    hook = layer.register_forward_hook(
        lambda _m, _i, out: shapes.append(tuple(out.shape)) if isinstance(out, Tensor) else None
    )
    param = next(m.model.parameters(), None)
    training = m.model.training
    try:
        with torch.no_grad():
            m.model.eval()(x if param is None else x.to(param.device))
    finally:
        hook.remove()
        m.model.train(training)
    if shapes and len(shapes[0]) < 3:
        raise CamwallError(
            f"--target-layer {name!r} of model {m.name!r} gives {shapes[0]} outputs, not a "
            "spatial B x C x H x W map (or B x tokens x C), so no CAM can be drawn from it; "
            "choose a convolutional (or token) layer, or leave --target-layer out."
        )


def _check_pairing(models: Sequence[BenchModel], datasets: Sequence[BenchDataset]) -> None:
    """Every model must read some dataset and every dataset be read by some model."""
    for m in models:
        if not any(paired(m, d) for d in datasets):
            fix = "fashion-grid" if m.task == "grid" else "fashion-stackmix or fashion-stackpair"
            raise CamwallError(
                f"model {m.name!r} reads {m.task} images but no dataset of the run does "
                f"({', '.join(f'{d.name}: {d.task}' for d in datasets)}); add --dataset {fix}."
            )
    for d in datasets:
        if not any(paired(m, d) for m in models):
            raise CamwallError(
                f"dataset {d.name!r} ({d.task} labels) fits no model of the run "
                f"({', '.join(f'{m.name}: {m.task}' for m in models)}); a grid model "
                "(fashion-grid-vgg) reads fashion-grid, a single-output model the others."
            )


def _check_fit(m: BenchModel, d: BenchDataset) -> None:
    """``d``'s labels, channels and image size fit model ``m``."""
    if m.class_names:
        check_labels(d, m.name, len(m.class_names))
    if m.channels is not None and d.images.shape[1] != m.channels:
        raise CamwallError(
            f"dataset {d.name!r} has {d.images.shape[1]}-channel images but model "
            f"{m.name!r} takes {m.channels}-channel inputs."
        )
    shape = tuple(m.dead_zone.shape)
    if tuple(d.images.shape[-2:]) != shape:
        raise CamwallError(
            f"dataset {d.name!r} has {d.images.shape[-2]}x{d.images.shape[-1]} images "
            f"but model {m.name!r} takes {shape[0]}x{shape[1]} inputs; build the "
            "dataset at the model's input size."
        )


def check_labels(ds: BenchDataset, model: str, classes: int) -> None:
    """Every label of ``ds`` is a class of a model with ``classes`` outputs (per cell)."""
    bad = ds.labels[(ds.labels < 0) | (ds.labels >= classes)]
    if len(bad):
        where = f" ({ds.info['folder']})" if "folder" in ds.info else ""
        raise CamwallError(
            f"dataset {ds.name!r}{where}: label {int(bad[0])} is out of range for model {model!r}, "
            f"which has {classes} classes (labels 0 to {classes - 1}); use a dataset made for "
            "this model's classes."
        )
