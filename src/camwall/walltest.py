"""``camwall.wall_test``: the wall test of one explainer, in one call.

::

    import camwall

    result = camwall.wall_test("captum:IntegratedGradients", images=100, n_steps=32)
    print(result)              # Table-1 layout: mu mean ± std per dataset, uniform beside it
    result.to_dict()           # JSON-ready

By default it runs the shipped fashion-vgg walled + baseline pair
(:func:`camwall.weights.shipped_pair`) on fashion-stackmix and fashion-stackpair, the same
inputs as ``camwall bench``. The numbers come from the bench itself: :func:`camwall.bench.run_bench`
writes a store (in a temporary folder unless ``out`` is given) and
:func:`camwall.bench._results.load_results` reads it, so ``wall_test`` and the bench share one
code path for maps, metrics and statistics. mu = ||L * D||_2 / ||L||_2 per image (``D`` the
dead zone), mean ± population std over the non-empty maps.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from camwall.errors import CamwallError

__all__ = ["WallTestResult", "wall_test"]

CONTROL = "uniform"
"""The control printed beside the explainer: a map with no information."""


@dataclass(frozen=True)
class WallTestResult:
    """The wall test of one explainer on one walled model.

    Attributes:
        explainer: the explainer's name (a registry name, ``py:...``, or ``callable:...``).
        family: its family (:data:`camwall.explainers.FAMILIES`).
        model: the walled model's name.
        results: everything the bench read back (:class:`camwall.bench._results.BenchResults`).
    """

    explainer: str
    family: str
    model: str
    results: Any

    def _model(self) -> Any:
        return next(m for m in self.results.models if m.name == self.model)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per dataset the explainer's and the control's stats of every metric
        (``mean``, ``std``, ``n``, ``empty``; the headline ``mu`` is ``wall_leakage``) and the
        seconds per image."""
        model = self._model()
        datasets: dict[str, Any] = {}
        for d, ds in model.datasets.items():
            datasets[d] = {
                name: {
                    "mu": ds.methods[name].headline.to_json(),
                    "metrics": {k: v.to_json() for k, v in ds.methods[name].stats.items()},
                    "seconds_per_image": ds.methods[name].seconds,
                    "images": ds.methods[name].images,
                }
                for name in self._methods()
            }
        return {
            "explainer": self.explainer,
            "family": self.family,
            "model": self.model,
            "dead_zone": model.dead_zone.to_json(),
            "control": CONTROL,
            "datasets": datasets,
        }

    def _methods(self) -> list[str]:
        return [self.explainer] + ([CONTROL] if self.explainer != CONTROL else [])

    def __str__(self) -> str:
        """The Table-1 layout: one row per method, ``mu (%) mean ± std`` per dataset."""
        from camwall.bench._tables import cell, dead_text

        model = self._model()
        names = list(model.datasets)
        lines = [
            f"Wall test of {self.explainer} ({self.family}) on {self.model}",
            "",
            "| method | " + " | ".join(f"{d} μ (%)" for d in names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for meth in self._methods():
            label = meth + (" (control)" if meth == CONTROL else "")
            cells = [cell(model.datasets[d].methods[meth]) for d in names]
            lines.append("| " + " | ".join([label, *cells]) + " |")
        lines += ["", f"Dead zone: {dead_text(model.dead_zone)}. 0 = respects the wall."]
        return "\n".join(lines)

    __repr__ = __str__


def wall_test(
    explainer: Any,
    *,
    model: Any = None,
    datasets: Sequence[Any] | None = None,
    images: int = 100,
    target_layer: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = False,
    normalize: Any = "auto",
    **options: Any,
) -> WallTestResult:
    """Run the wall test of one explainer and return its result.

    Args:
        explainer: a name ``camwall methods`` lists (``"captum:Saliency"``, ``"gradcam"``, ...),
            ``"py:package.module:function"``, or a callable following the protocol
            ``fn(model, x B x C x H x W, targets) -> B x H x W`` (or ``B x C x H x W``
            attributions); a :class:`camwall.explainers.BoundExplainer` keeps its options.
        model: None (the shipped fashion-vgg walled + baseline pair), a
            :class:`camwall.bench.BenchModel`, a checkpoint / registry name as ``--model``, or
            an ``nn.Module`` walled with :mod:`camwall.walls` (its dead zone, input shape and
            target layer are found as for a checkpoint, and the wall is checked). Outputs of
            HuggingFace-style models (``.logits``, or a tuple starting with the logits) need
            no wrapper.
        datasets: None (fashion-stackmix and fashion-stackpair), or
            :class:`camwall.bench.BenchDataset` objects and/or names or folders as ``--dataset``
            (an ImageFolder tree is read at the model's square input size, resized and
            centre-cropped; a ``stackmix`` / ``stackgen`` folder as it is).
        images: images per dataset built from a name (default 100).
        target_layer: CAM target layer (default: the model's).
        device, batch_size, seed: as ``camwall bench`` (batch size 64 for inputs up to
            128 x 128, else 16).
        out: keep the store and report there; default: a temporary folder, deleted after.
        progress: show progress bars.
        normalize: for an ``nn.Module`` ``model``: ``"auto"`` (ImageNet mean / std for
            3-channel inputs, none for 1-channel ones, as ``camwall train``), None (the [0, 1]
            images as they are) or ``(mean, std)`` per channel. A checkpoint's comes from its
            JSON (:func:`camwall.bench._inputs.input_normalization`).
        **options: the explainer's options (``n_steps=32``, ...); for camwall's CAMs, options
            of :func:`camwall.cams.compute_cams`.

    Returns:
        A :class:`WallTestResult`; ``print`` it or call ``.to_dict()``.

    Raises:
        CamwallError: unknown name, missing package, bad model or dataset, ``batch_size`` < 1,
            or an explainer whose output is wrong (shape, NaN, type (numpy too), device) or
            that calls ``sys.exit``, naming the explainer.
    """
    from camwall.bench._methods import object_family

    name, objects = _explainer_name(explainer)
    _check_batch_size(batch_size)
    models = _models(model, target_layer, normalize)
    walled = next(m for m in models if m.walled)
    sets = _datasets(datasets, images, seed, models)
    methods = [name] + ([CONTROL] if name != CONTROL else [])
    if batch_size is None:
        batch_size = 64 if walled.dead_zone.numel() <= 128 * 128 else 16
    run = _run_options(name, objects, options, device=device, batch_size=batch_size, seed=seed)
    results = _run(models, sets, methods, out, {**run, "progress": progress})
    family = object_family(objects[name]) if name in objects else results.families.get(name)
    return WallTestResult(name, family or "other", walled.name, results)


def _run_options(
    name: str, objects: dict[str, Any], options: dict[str, Any], **run: Any
) -> dict[str, Any]:
    """:func:`camwall.bench.run_bench` keywords: ``run`` plus the explainer's options (as CAM
    options for camwall's own CAMs) and objects."""
    from camwall.bench._methods import is_engine

    engine = is_engine(name)
    return {
        **run,
        "cam_options": options if engine else None,
        "explainer_options": {name: options} if options and not engine else None,
        "explainers": objects,
    }


def _check_batch_size(batch_size: Any) -> None:
    """None (the default) or an int >= 1 (0 is not "the default")."""
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CamwallError(
            f"wall_test: batch_size must be None (the default) or an integer >= 1, got "
            f"{batch_size!r}."
        )


def _explainer_name(explainer: Any) -> tuple[str, dict[str, Any]]:
    """``(name, {name: object})``: a string is a name; a callable gets one (``callable:...``)."""
    if isinstance(explainer, str):
        return explainer, {}
    if not callable(explainer):
        raise CamwallError(
            f"wall_test: explainer must be a name (see `camwall methods`) or a callable, got "
            f"{type(explainer).__name__}."
        )
    name = getattr(explainer, "name", None)
    if not isinstance(name, str) or not name:
        fn = getattr(explainer, "__qualname__", type(explainer).__qualname__)
        name = f"callable:{getattr(explainer, '__module__', '?')}.{fn}"
    return name, {name: explainer}


def _models(model: Any, target_layer: str | None, normalize: Any = "auto") -> list[Any]:
    from camwall.bench import BenchModel
    from camwall.bench import _inputs as inputs

    if model is None:
        from camwall.weights import shipped_pair

        walled, baseline = shipped_pair(inputs.DEFAULT_PRESET)
        return [
            inputs.resolve_model(str(walled), target_layer=target_layer),
            inputs.resolve_model(str(baseline), walled=False),
        ]
    if isinstance(model, BenchModel):
        return [model]
    if isinstance(model, (str, Path)):
        return [inputs.resolve_model(str(model), target_layer=target_layer)]
    if isinstance(model, nn.Module):
        return [_module_model(model, target_layer, normalize)]
    raise CamwallError(
        f"wall_test: model must be None, an nn.Module walled with camwall.walls, a "
        f"camwall.bench.BenchModel or a checkpoint path, got {type(model).__name__}."
    )


def _module_model(model: nn.Module, target_layer: str | None, normalize: Any) -> Any:
    """A walled ``nn.Module`` as a checked :class:`camwall.bench.BenchModel`."""
    from camwall.bench import _inputs as inputs

    meta: dict[str, Any] = {} if normalize == "auto" else {"normalize": _norm_entry(normalize)}
    name = type(model).__name__
    return inputs.bench_model(model, meta, name, name=name, target_layer=target_layer)


def _norm_entry(normalize: Any) -> Any:
    """``normalize=`` as a checkpoint's ``"normalize"`` entry (checked there)."""
    if normalize is None:
        return None
    try:
        mean, std = normalize
    except (TypeError, ValueError):
        raise CamwallError(
            f'wall_test: normalize must be "auto", None or (mean, std), got {normalize!r}.'
        ) from None
    return {"mean": list(mean), "std": list(std)}


def _datasets(datasets: Sequence[Any] | None, images: int, seed: int, models: Any) -> list[Any]:
    from camwall.bench import BenchDataset
    from camwall.bench import _inputs as inputs

    specs = list(inputs.DEFAULT_DATASETS) if datasets is None else list(datasets)
    channels, size = inputs.reading_size(models)
    return [
        d
        if isinstance(d, BenchDataset)
        else inputs.resolve_dataset(str(d), images, seed, channels, size)
        for d in specs
    ]


def _run(
    models: list[Any],
    datasets: list[Any],
    methods: list[str],
    out: str | Path | None,
    run: dict[str, Any],
) -> Any:
    """:func:`camwall.bench.run_bench` into ``out`` (or a temporary folder), then read it."""
    from camwall.bench import Store, run_bench
    from camwall.bench._results import load_results

    with tempfile.TemporaryDirectory(prefix="camwall-wall-test-") as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        path = run_bench(models, datasets, methods, folder, report=out is not None, **run)
        with Store(path, readonly=True) as store:
            return load_results(store)
