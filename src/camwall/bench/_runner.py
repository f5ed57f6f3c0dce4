"""The benchmark loop: predictions, saliency maps, metrics, rows committed as they are computed.

Under ``torchrun`` (``WORLD_SIZE > 1``) the images of every dataset are sharded over the ranks
(image ``i`` goes to rank ``i % world``). Each rank writes its own shard store
(``results.rank{r}.sqlite``); after a barrier, rank 0 merges the shards into the one store and
writes the report. Controls and metrics depend only on the image, never on the batch or shard,
so the merged results equal a single-process run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import operator
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camwall._versions import versions
from camwall.bench._store import (
    STORE_NAME,
    BatchRecord,
    ResultRow,
    Store,
    archive_store,
    to_png,
)
from camwall.errors import CamwallError
from camwall.metrics import CONTROLS, METRICS, empty_maps
from camwall.runtime import DistInfo, dist_setup, folder_lock, resolve_device

__all__ = [
    "BenchDataset",
    "BenchModel",
    "check_out_dir",
    "check_seed",
    "out_lock",
    "resolve_device",
    "run_bench",
    "shard_store_path",
]

FIGURE_IMAGES = 8
"""Images per dataset whose maps are kept (as PNG) for the figure grids."""

CHUNK_BUDGET = {"scorecam_chunk": (16, 2**20), "ablationcam_chunk": (32, 2**21)}
"""``option: (floor, input elements per chunk)``: the bench forwards Score-CAM's masked inputs
and Ablation-CAM's ablated copies in chunks of ``max(floor, elements // (C * H * W))`` rows
(256 and 512 on 64 x 64 grey canvases; the library defaults on 224 x 224 RGB). Rows do not
interact, so the maps depend on the chunk only through float rounding (the default run's store
is the same bit for bit as with the library defaults: benchmarks/bench_speed.md)."""


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


def check_out_dir(out: str | Path) -> Path:
    """Create ``out`` and prove it is writable, before any work starts."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".camwall-write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise CamwallError(
            f"--out {path}: cannot write there ({err.strerror or err}); choose a writable folder."
        ) from None
    return path


def shard_store_path(out: Path, rank: int) -> Path:
    return out / f"results.rank{rank}.sqlite"


_Dist = DistInfo  # this process's rank and world size (``barrier()`` included)


def _dist_setup(device: torch.device) -> tuple[DistInfo, bool]:
    """Join the torchrun process group if launched by torchrun. Returns (dist, we_initialised)."""
    return dist_setup(device)


def _validate(models: Sequence[BenchModel], datasets: Sequence[BenchDataset]) -> None:
    if not any(m.walled for m in models):
        raise CamwallError("no walled model to test; pass a walled checkpoint with --model.")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise CamwallError(f"model names must be distinct, got {names}.")
    dnames = [d.name for d in datasets]
    if len(set(dnames)) != len(dnames):
        raise CamwallError(f"dataset names must be distinct, got {dnames}.")
    _check_pairing(models, datasets)
    for d in datasets:
        if d.images.dim() != 4 or len(d.images) != len(d.labels) or len(d.labels) == 0:
            raise CamwallError(
                f"dataset {d.name!r}: need N x C x H x W images and N labels, got images "
                f"{tuple(d.images.shape)} and {len(d.labels)} labels."
            )
        for m in (m for m in models if paired(m, d)):
            if m.class_names:
                _check_labels(d, m.name, len(m.class_names))
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
    for m in models:
        if m.walled and not bool(m.dead_zone.any()):
            raise CamwallError(
                f"model {m.name!r} has no dead zone, so no wall: the test would be meaningless. "
                "Pass a walled model (see `camwall walls`)."
            )


def _batches(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


ComputeFn = Callable[..., dict[str, Tensor]]


def _cam_fn() -> ComputeFn:
    from camwall.cams import compute_cams

    return compute_cams


MAX_SEED = 2**63 - 1
"""The largest seed (torch seeds are 64-bit)."""

_HELD: set[Path] = set()


@contextlib.contextmanager
def out_lock(out: str | Path, rank: int = 0, what: str = "--out") -> Iterator[None]:
    """Hold :func:`camwall.runtime.folder_lock` on ``out`` (rank 0 only; re-entrant in-process).

    Under torchrun only rank 0 locks: every rank writes its own shard, rank 0 the one store. A
    second camwall process writing into ``out`` fails at once, naming the holder's PID.
    """
    key = Path(out).resolve()
    if rank != 0 or key in _HELD:
        yield
        return
    with folder_lock(out, what):
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


def check_seed(seed: int) -> int:
    """``seed`` as an int if it is an integer in ``[0, 2**63 - 1]``, else a CamwallError."""
    try:
        value = operator.index(seed)
    except TypeError:
        value = -1
    if isinstance(seed, bool) or not 0 <= value <= MAX_SEED:
        raise CamwallError(f"--seed must be an integer in [0, 2**63 - 1], got {seed!r}.")
    return value


@dataclass(frozen=True)
class _Plan:
    """What the loop does: methods, batching, seeds, figures, progress, CAM options, ranks."""

    methods: tuple[str, ...]
    device: torch.device
    batch_size: int
    seed: int
    figure_images: int
    progress: bool
    cam_options: dict[str, Any]
    dist: _Dist
    explainer_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    explainers: dict[str, Any] = field(default_factory=dict)


def _check_args(
    models: Sequence[BenchModel],
    datasets: Sequence[BenchDataset],
    methods: Sequence[str],
    batch_size: int,
    seed: int,
    explainer_options: dict[str, dict[str, Any]],
    explainers: dict[str, Any],
) -> None:
    from camwall.bench._methods import check_methods

    if batch_size < 1:
        raise CamwallError(f"--batch-size must be at least 1, got {batch_size}.")
    check_seed(seed)
    check_methods(methods, explainer_options, explainers)
    _validate(models, datasets)


def _default_config(
    models: Sequence[BenchModel],
    datasets: Sequence[BenchDataset],
    methods: Sequence[str],
    seed: int,
    explainer_options: dict[str, dict[str, Any]],
    explainers: dict[str, Any],
) -> dict[str, Any]:
    from camwall.bench._methods import method_config

    return {
        "models": [m.name for m in models if m.walled],
        "baselines": [m.name for m in models if not m.walled],
        "datasets": [d.name for d in datasets],
        "methods": list(methods),
        "target_layer": None,
        "images": None,
        "seed": seed,
        **method_config(methods, explainer_options, explainers),
    }


def run_bench(
    models: Sequence[BenchModel],
    datasets: Sequence[BenchDataset],
    methods: Sequence[str],
    out: str | Path,
    *,
    config: dict[str, Any] | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 16,
    resume: bool = False,
    seed: int = 0,
    figure_images: int = FIGURE_IMAGES,
    progress: bool = True,
    report: bool = True,
    cam_options: dict[str, Any] | None = None,
    explainer_options: dict[str, dict[str, Any]] | None = None,
    explainers: dict[str, Any] | None = None,
) -> Path:
    """Run the wall benchmark and write the store (and, on rank 0, the report) into ``out``.

    The CAM methods of a batch are computed together in one :func:`camwall.cams.compute_cams`
    call (gradient methods share one forward and one backward pass); explainers from other
    sources (``captum:NAME``, ``gradcam:NAME``, ``torchcam:NAME``, ``py:module:function``, see
    :mod:`camwall.explainers`) run per batch through their adapter, each timed alone. A batch's
    rows are stored in one transaction: an explainer that fails stores nothing of its batch,
    and the batches stored before are kept. ``out`` is locked (:func:`out_lock`) for the whole run.

    Args:
        models: walled models to test (and baselines, ``walled=False``, for accuracy only).
        datasets: image sets; every image size must match every walled model's dead zone.
        methods: CAM method names (:data:`camwall.cams.METHODS`), controls
            (:data:`camwall.metrics.CONTROLS`) and explainer names
            (:data:`camwall.explainers.EXPLAINERS`, or ``py:package.module:function``).
        out: output folder; the store is ``out/results.sqlite``.
        config: the result-defining configuration recorded with the run (and compared on
            ``resume``); by default built from the names above.
        device: ``auto``, ``cpu``, ``cuda`` or a ``torch.device``.
        batch_size: images per batch.
        resume: continue a store written with the same config; without it an existing store
            is kept aside as ``results.<started UTC>.sqlite`` (never deleted) and a fresh one
            started.
        seed: seeds torch and the random control, in ``[0, 2**63 - 1]``.
        figure_images: images per dataset whose maps are kept for the figures.
        progress: show tqdm progress bars (rank 0 only).
        report: write the report files when done.
        cam_options: extra keyword options for :func:`camwall.cams.compute_cams`.
        explainer_options: ``{explainer name: {option: value}}`` for the non-engine explainers
            (see :func:`camwall.explainers.parse_explainer_options`); recorded in the config.
        explainers: ``{name: callable}``: explainer objects (the
            :class:`camwall.explainers.Explainer` protocol) run under ``name``, a name in
            ``methods`` (used by :func:`camwall.wall_test`).

    Returns:
        The path of the store.
    """
    ex_options = {k: dict(v) for k, v in (explainer_options or {}).items()}
    objects = dict(explainers or {})
    _check_args(models, datasets, methods, batch_size, seed, ex_options, objects)
    out = check_out_dir(out)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if config is None:
        config = _default_config(models, datasets, methods, seed, ex_options, objects)
    config = {**config, "device": str(dev), "batch_size": batch_size, "out": str(out)}
    dist, owned = _dist_setup(dev)
    plan = _Plan(
        tuple(methods),
        dev,
        batch_size,
        seed,
        figure_images,
        progress,
        cam_options or {},
        dist,
        ex_options,
        objects,
    )
    try:
        with out_lock(out, dist.rank):
            _run_ranks(models, datasets, out, config, resume, report, plan)
    finally:
        if owned:
            torch.distributed.destroy_process_group()
    return out / STORE_NAME


def _run_ranks(
    models: Sequence[BenchModel],
    datasets: Sequence[BenchDataset],
    out: Path,
    config: dict[str, Any],
    resume: bool,
    report: bool,
    plan: _Plan,
) -> None:
    """Open the store (rank 0), run every rank's share, merge the shards and write the report."""
    dist, main_path = plan.dist, out / STORE_NAME
    run_id = _open_main(main_path, out, config, resume, models, datasets) if dist.rank == 0 else 0
    dist.barrier()
    if dist.world > 1:
        shard = shard_store_path(out, dist.rank)
        for suffix in ("", "-wal", "-shm"):  # a left-over of this rank's own crashed shard
            Path(f"{shard}{suffix}").unlink(missing_ok=True)
        store = Store(shard)
        store.merge(main_path)  # what is done already (resume) is skipped
    else:
        store = Store(main_path)
    torch.manual_seed(plan.seed)
    try:
        _loop(store, models, datasets, plan)
    finally:
        store.close()
    dist.barrier()
    if dist.rank == 0:
        with Store(main_path) as main:
            _merge_shards(main, out)
            main.finish_run(run_id)
        if report:
            from camwall.bench._report import write_report

            write_report(out)
    dist.barrier()


def _open_main(
    path: Path,
    out: Path,
    config: dict[str, Any],
    resume: bool,
    models: Sequence[BenchModel],
    datasets: Sequence[BenchDataset],
) -> int:
    if path.exists() and not resume:
        kept = archive_store(out)
        print(
            f"camwall bench: the previous store is kept as {kept} (use --resume to continue "
            "a run).",
            file=sys.stderr,
        )
    with Store(path) as store:
        if resume:
            _check_resume_store(store, path, config, models)
            _check_dataset_versions(store, datasets, path)
            _merge_shards(store, out)
        run_id = store.start_run(config, versions())
        for m in models:
            store.put_info("models", m.name, _model_info(m))
        for d in datasets:
            info = {
                **d.info,
                "n": len(d.labels),
                "shape": list(d.images.shape[1:]),
                "class_names": d.class_names,
            }
            store.put_info("datasets", d.name, info)
    return run_id


def _check_dataset_versions(store: Store, datasets: Sequence[BenchDataset], path: Path) -> None:
    """Refuse to resume on a dataset whose design version (``info["version"]``, 1 if absent)
    differs from the stored one: the same name and seed would give other images."""
    stored = store.info("datasets")
    for d in datasets:
        old, new = stored.get(d.name, {}).get("version", 1), d.info.get("version", 1)
        if d.name in stored and old != new:
            raise CamwallError(
                f"--resume: dataset {d.name!r} is version {new} but the stored results in {path} "
                f"were computed on version {old}; choose another --out."
            )


def _check_resume_store(
    store: Store, path: Path, config: dict[str, Any], models: Sequence[BenchModel]
) -> None:
    """Refuse ``--resume`` with another config or with models whose weights changed."""
    store.check_resume(config)
    stored = store.info("models")
    for m in models:
        stored_fp = stored.get(m.name, {}).get("fingerprint")
        if stored_fp is not None and stored_fp != fingerprint(m.model):
            raise CamwallError(
                f"--resume: the weights of model {m.name!r} differ from those the "
                f"stored results in {path} were computed with; choose another --out."
            )


def _model_info(m: BenchModel) -> dict[str, Any]:
    return {
        **m.info,
        "walled": m.walled,
        "target_layer": m.target_layer,
        "class_names": m.class_names,
        "dead_zone_png": to_png(m.dead_zone.cpu().numpy()).hex() if m.walled else None,
        "dead_rows": _dead_rows(m.dead_zone) if m.walled else None,
        "dead_fraction": float(m.dead_zone.float().mean()) if m.walled else None,
        "input_size": list(m.dead_zone.shape),
        "fingerprint": fingerprint(m.model),
        "task": m.task,
        "kind": m.kind,
    }


def fingerprint(model: nn.Module) -> str:
    """SHA-256 (16 hex digits) of the model's state dict: names, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _dead_rows(dead: Tensor) -> list[int] | None:
    """``[first, last]`` if the dead zone is a band of full rows, else None."""
    full = dead.all(dim=1)
    if not bool((dead.any(dim=1) == full).all()) or not bool(full.any()):
        return None
    rows = torch.nonzero(full).flatten().tolist()
    if rows != list(range(rows[0], rows[-1] + 1)):
        return None
    return [rows[0], rows[-1]]


def _merge_shards(main: Store, out: Path) -> None:
    for shard in sorted(out.glob("results.rank*.sqlite")):
        main.merge(shard)
        for suffix in ("", "-wal", "-shm"):  # merged into main: nothing is lost
            Path(f"{shard}{suffix}").unlink(missing_ok=True)


def _loop(
    store: Store,
    models: Sequence[BenchModel],
    datasets: Sequence[BenchDataset],
    plan: _Plan,
) -> None:
    """Predictions for every model; maps and metrics for every walled model, batch by batch."""
    dist = plan.dist
    for bm in models:
        model = bm.model.to(plan.device).eval()
        for ds in (d for d in datasets if paired(bm, d)):
            mine = [i for i in range(len(ds.labels)) if i % dist.world == dist.rank]
            preds = _predict(store, bm, model, ds, mine, plan)
            if bm.walled:
                _maps(store, bm, model, ds, mine, preds, plan)


def _maps(
    store: Store,
    bm: BenchModel,
    model: nn.Module,
    ds: BenchDataset,
    mine: list[int],
    preds: dict[int, tuple[int, int, float]],
    plan: _Plan,
) -> None:
    """Compute, measure and store every method's maps for ``mine``, one batch at a time."""
    from tqdm import tqdm

    from camwall.bench._methods import bound_explainers

    store.add_batch([], _input_figures(bm, ds, mine, plan))
    done = {m: store.done(bm.name, ds.name, m) for m in plan.methods}
    todo = [i for i in mine if any(i not in done[m] for m in plan.methods)]
    bar = tqdm(
        total=len(mine),
        initial=len(mine) - len(todo),
        desc=f"{ds.name} ({len(plan.methods)} methods)",
        unit="img",
        disable=not plan.progress,
        leave=True,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    explainers = bound_explainers(
        plan.methods, bm.target_layer, plan.explainer_options, plan.explainers, plan.seed
    )
    with bar:
        for ids in _batches(todo, plan.batch_size):
            need = [m for m in plan.methods if any(i not in done[m] for i in ids)]
            x = ds.images[ids].to(plan.device)
            maps, seconds, batch = _compute(bm, model, ds, x, ids, need, preds, plan)
            more, times = _explain(bm, model, ds, x, ids, need, preds, plan, explainers)
            maps.update(more)
            seconds.update({m: t / len(ids) for m, t in times.items()})
            records = [batch] if batch is not None else []
            records += [
                BatchRecord(bm.name, ds.name, tuple(ids), (m,), t) for m, t in times.items()
            ]
            dead, region = _zones(bm, ids, plan.seed)
            zones = (dead.to(plan.device), None if region is None else region.to(plan.device))
            rows, figs = _measure(bm, ds, ids, maps, seconds, zones, preds, plan.figure_images)
            store.add_batch(rows, figs, records)
            bar.update(len(ids))


def _input_figures(
    bm: BenchModel, ds: BenchDataset, mine: list[int], plan: _Plan
) -> list[tuple[str, str, int, str, bytes]]:
    """The figure PNGs of the first images: each image, and for a per-output wall (a grid
    model) each image's own dead zone (kind ``"dead_zone"``)."""
    shown = [i for i in mine if i < plan.figure_images]
    figures = [(bm.name, ds.name, i, "image", _image_png(ds.images[i])) for i in shown]
    if bm.cell_zones is not None and shown:
        zones = _zones(bm, shown, plan.seed)[0].float().cpu().numpy()
        figures += [(bm.name, ds.name, i, "dead_zone", to_png(z)) for i, z in zip(shown, zones)]
    return figures


def _timed(dev: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and its wall time in seconds (CUDA synchronised)."""
    start = time.perf_counter()
    value = fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return value, time.perf_counter() - start


def _compute(
    bm: BenchModel,
    model: nn.Module,
    ds: BenchDataset,
    x: Tensor,
    ids: list[int],
    methods: list[str],
    preds: dict[int, tuple[int, int, float]],
    plan: _Plan,
) -> tuple[dict[str, Tensor], dict[str, float], BatchRecord | None]:
    """Maps of ``methods`` for one batch: every CAM method in ONE ``compute_cams`` call.

    Returns:
        ``(maps, seconds per image per method, the shared call's record or None)``.
    """
    from camwall.cams import METHODS

    cams = [m for m in methods if m in METHODS]
    maps: dict[str, Tensor] = {}
    seconds: dict[str, float] = {}
    batch = None
    if cams:
        targets = _targets(bm, ids, preds, plan.seed)
        compute = _cam_fn()
        options = {**chunk_options(x, cams), **plan.cam_options}
        out, t = _timed(
            plan.device,
            lambda: compute(model, x, bm.target_layer, cams, targets=targets, **options),
        )
        maps.update({m: out[m] for m in cams})
        seconds.update(dict.fromkeys(cams, t / len(ids)))
        batch = BatchRecord(bm.name, ds.name, tuple(ids), tuple(cams), t)
    for m in methods:
        if m in CONTROLS:
            control = CONTROLS.get(m)
            maps[m], t = _timed(plan.device, functools.partial(control, x, ids, plan.seed))
            seconds[m] = t / len(ids)
    return maps, seconds, batch


def chunk_options(x: Tensor, methods: Sequence[str]) -> dict[str, int]:
    """The :data:`CHUNK_BUDGET` options of ``methods`` for a batch ``x`` (B x C x H x W)."""
    per_row = max(1, x[0].numel())
    return {
        k: max(floor, budget // per_row)
        for k, (floor, budget) in CHUNK_BUDGET.items()
        if k.removesuffix("_chunk") in methods
    }


def _explain(
    bm: BenchModel,
    model: nn.Module,
    ds: BenchDataset,
    x: Tensor,
    ids: list[int],
    methods: list[str],
    preds: dict[int, tuple[int, int, float]],
    plan: _Plan,
    explainers: dict[str, Any],
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Maps of the non-engine explainers among ``methods``, one adapter call each.

    Returns:
        ``(maps, seconds of each explainer's call on the whole batch)``.
    """
    from camwall.bench._methods import run_explainer

    targets = _targets(bm, ids, preds, plan.seed)
    maps: dict[str, Tensor] = {}
    seconds: dict[str, float] = {}
    for m in methods:
        if m in explainers:
            where = f"images {ids[0]}..{ids[-1]} of {ds.name!r}"
            call = functools.partial(run_explainer, explainers[m], model, x, targets, where)
            maps[m], seconds[m] = _timed(plan.device, call)
    return maps, seconds


def _predict(
    store: Store,
    bm: BenchModel,
    model: nn.Module,
    ds: BenchDataset,
    mine: list[int],
    plan: _Plan,
) -> dict[int, tuple[int, int, float]]:
    """``image -> (label, predicted class, confidence)``; for a grid model, of the explained
    cell (:func:`explained_cell`): its label and the argmax of its logits."""
    have = store.predicted(bm.name, ds.name)
    todo = [i for i in mine if i not in have]
    for ids in _batches(todo, max(plan.batch_size, 64)):
        with torch.no_grad():
            logits = model(ds.images[ids].to(plan.device))
        _check_logits(bm, ds, logits, len(ids))
        labels = ds.labels[ids]
        if bm.cell_zones is not None:
            cells = _explained_cells(bm, ids, plan.seed)
            per_cell = logits.reshape(len(ids), len(bm.cell_zones), -1)
            logits = per_cell[torch.arange(len(ids)), cells.to(logits.device)]
            labels = labels[torch.arange(len(ids)), cells]
        prob = logits.float().softmax(dim=1)
        conf, pred = prob.max(dim=1)
        rows = [
            (i, int(label), int(p), float(c))
            for i, label, p, c in zip(
                ids, labels.tolist(), pred.cpu().tolist(), conf.cpu().tolist()
            )
        ]
        store.add_predictions(bm.name, ds.name, rows)
        have.update({r[0]: (r[1], r[2], r[3]) for r in rows})
    return have


def _targets(
    bm: BenchModel, ids: list[int], preds: dict[int, tuple[int, int, float]], seed: int
) -> list[int]:
    """The output index each map explains: the predicted class, offset by ``cell * classes``
    for a grid model (logits ``[k K, (k+1) K)`` are cell ``k``'s)."""
    if bm.cell_zones is None:
        return [preds[i][1] for i in ids]
    from camwall.walls import model_task

    classes = int(model_task(bm.model).get("classes") or len(bm.class_names))
    cells = _explained_cells(bm, ids, seed).tolist()
    return [cell * classes + preds[i][1] for cell, i in zip(cells, ids, strict=True)]


def _explained_cells(bm: BenchModel, ids: list[int], seed: int) -> Tensor:
    """int64 ``B``: the cell each image of a grid model explains (:func:`explained_cell`)."""
    assert bm.cell_zones is not None
    return torch.tensor([explained_cell(i, seed, len(bm.cell_zones)) for i in ids])


def _zones(bm: BenchModel, ids: list[int], seed: int) -> tuple[Tensor, Tensor | None]:
    """``(dead zones, target regions)`` of a batch: bool ``B x H x W`` per image for a grid
    model (the explained cell's dead zone, and the cell itself), else the model's one
    ``H x W`` dead zone and None."""
    if bm.cell_zones is None:
        return bm.dead_zone, None
    from camwall.data import cell_masks

    cells = _explained_cells(bm, ids, seed)
    size = int(bm.dead_zone.shape[-1])
    return bm.cell_zones[cells], cell_masks(size)[cells]


def _check_logits(bm: BenchModel, ds: BenchDataset, logits: Any, n: int) -> None:
    """``B x classes`` logits, and every label of ``ds`` a class of the model."""
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != n:
        raise CamwallError(
            f"model {bm.name!r} must return B x classes logits; got "
            f"{getattr(logits, 'shape', type(logits).__name__)}."
        )
    _check_labels(ds, bm.name, int(logits.shape[1]))


def _check_labels(ds: BenchDataset, model: str, classes: int) -> None:
    bad = ds.labels[(ds.labels < 0) | (ds.labels >= classes)]
    if len(bad):
        where = f" ({ds.info['folder']})" if "folder" in ds.info else ""
        raise CamwallError(
            f"dataset {ds.name!r}{where}: label {int(bad[0])} is out of range for model {model!r}, "
            f"which has {classes} classes (labels 0 to {classes - 1}); use a dataset made for "
            "this model's classes."
        )


def _image_png(image: Tensor) -> bytes:
    a = image.detach().float().cpu()
    a = a[0] if a.shape[0] == 1 else a[:3].permute(1, 2, 0)
    return to_png(a.clamp(0, 1).numpy())


def _measure(
    bm: BenchModel,
    ds: BenchDataset,
    ids: list[int],
    maps: dict[str, Tensor],
    seconds: dict[str, float],
    zones: tuple[Tensor, Tensor | None],
    preds: dict[int, tuple[int, int, float]],
    figure_images: int,
) -> tuple[list[ResultRow], list[tuple[str, str, int, str, bytes]]]:
    """Metric rows (one per image and method) and the figure PNGs of one batch; ``zones``:
    the dead zone (``H x W``, or ``B x H x W`` per image) and the target regions (or None:
    metrics of a target region are then not computed)."""
    dead, region = zones
    rows: list[ResultRow] = []
    figures: list[tuple[str, str, int, str, bytes]] = []
    for method, raw in maps.items():
        if raw.shape != (len(ids), *dead.shape[-2:]):
            raise CamwallError(
                f"method {method!r} returned maps of shape {tuple(raw.shape)}; expected "
                f"{(len(ids), *dead.shape[-2:])}."
            )
        m = raw.detach().float()
        zone_of = {"dead": dead, "target": region}
        values = {
            name: metric(m, zone).cpu().tolist()
            for name, metric in METRICS.items()
            if (zone := zone_of.get(metric.zone)) is not None
        }
        empty = empty_maps(m).cpu().tolist()
        for row, i in enumerate(ids):
            label, predicted, conf = preds[i]
            metrics = {name: values[name][row] for name in values}
            rows.append(
                ResultRow(
                    bm.name, ds.name, i, method, metrics, bool(empty[row]), label, predicted,
                    predicted, conf, seconds[method],
                )
            )  # fmt: skip
            if i < figure_images:
                figures.append((bm.name, ds.name, i, method, to_png(m[row].cpu().numpy())))
    return rows, figures
