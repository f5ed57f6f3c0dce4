"""The benchmark loop: predictions, saliency maps, metrics, rows committed as they are computed.

Under ``torchrun`` (``WORLD_SIZE > 1``) the images of every dataset are sharded over the ranks
(image ``i`` goes to rank ``i % world``). Each rank writes its own shard store
(``results.rank{r}.sqlite``); after a barrier, rank 0 merges the shards into the one store and
writes the report. Controls and metrics depend only on the image, never on the batch or shard,
so the merged results equal a single-process run.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camwall._versions import versions
from camwall.bench._store import STORE_NAME, ResultRow, Store, to_png
from camwall.errors import CamwallError
from camwall.metrics import CONTROLS, METRICS, empty_maps
from camwall.runtime import DistInfo, dist_setup, resolve_device

__all__ = [
    "BenchDataset",
    "BenchModel",
    "check_out_dir",
    "resolve_device",
    "run_bench",
    "shard_store_path",
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
    """

    name: str
    model: nn.Module
    target_layer: str
    dead_zone: Tensor
    class_names: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    walled: bool = True
    channels: int | None = None


@dataclass
class BenchDataset:
    """Images to test: ``images`` float32 ``N x C x H x W``, ``labels`` int64 ``N``."""

    name: str
    images: Tensor
    labels: Tensor
    class_names: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


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
    for d in datasets:
        if d.images.dim() != 4 or len(d.images) != len(d.labels) or len(d.labels) == 0:
            raise CamwallError(
                f"dataset {d.name!r}: need N x C x H x W images and N labels, got images "
                f"{tuple(d.images.shape)} and {len(d.labels)} labels."
            )
        for m in models:
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
) -> Path:
    """Run the wall benchmark and write the store (and, on rank 0, the report) into ``out``.

    Args:
        models: walled models to test (and baselines, ``walled=False``, for accuracy only).
        datasets: image sets; every image size must match every walled model's dead zone.
        methods: CAM method names (:data:`camwall.cams.METHODS`) and controls
            (:data:`camwall.metrics.CONTROLS`).
        out: output folder; the store is ``out/results.sqlite``.
        config: the result-defining configuration recorded with the run (and compared on
            ``resume``); by default built from the names above.
        device: ``auto``, ``cpu``, ``cuda`` or a ``torch.device``.
        batch_size: images per batch.
        resume: continue a store written with the same config; without it an existing store
            is moved to ``results.prev.sqlite`` and a fresh one started.
        seed: seeds torch and the random control.
        figure_images: images per dataset whose maps are kept for the figures.
        progress: show tqdm progress bars (rank 0 only).
        report: write the report files when done.
        cam_options: extra keyword options for :func:`camwall.cams.compute_cams`.

    Returns:
        The path of the store.
    """
    from camwall.cams import METHODS

    if batch_size < 1:
        raise CamwallError(f"--batch-size must be at least 1, got {batch_size}.")
    for m in methods:
        if m not in CONTROLS:
            METHODS.get(m)  # raises CamwallError with a suggestion
    _validate(models, datasets)
    out = check_out_dir(out)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if config is None:
        config = {
            "models": [m.name for m in models if m.walled],
            "baselines": [m.name for m in models if not m.walled],
            "datasets": [d.name for d in datasets],
            "methods": list(methods),
            "target_layer": None,
            "images": None,
            "seed": seed,
        }
    config = {**config, "device": str(dev), "batch_size": batch_size, "out": str(out)}
    dist, owned = _dist_setup(dev)
    main_path = out / STORE_NAME
    try:
        run_id = (
            _open_main(main_path, out, config, resume, models, datasets) if dist.rank == 0 else 0
        )
        dist.barrier()
        if dist.world > 1:
            shard = shard_store_path(out, dist.rank)
            if shard.exists():
                shard.unlink()
            store = Store(shard)
            store.merge(main_path)  # what is done already (resume) is skipped
        else:
            store = Store(main_path)
        torch.manual_seed(seed)
        try:
            _loop(
                store,
                models,
                datasets,
                methods,
                dev,
                batch_size,
                seed,
                dist,
                figure_images,
                progress and dist.rank == 0,
                cam_options or {},
            )
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
    finally:
        if owned:
            torch.distributed.destroy_process_group()
    return main_path


def _open_main(
    path: Path,
    out: Path,
    config: dict[str, Any],
    resume: bool,
    models: Sequence[BenchModel],
    datasets: Sequence[BenchDataset],
) -> int:
    if path.exists() and not resume:
        prev = out / "results.prev.sqlite"
        for suffix in ("", "-wal", "-shm"):
            old = Path(str(path) + suffix)
            if old.exists():
                old.replace(Path(str(prev) + suffix))
        for shard in out.glob("results.rank*.sqlite"):
            shard.unlink()
        print(
            f"camwall bench: previous results moved to {prev} (use --resume to continue a run).",
            file=sys.stderr,
        )
    with Store(path) as store:
        if resume:
            store.check_resume(config)
            stored = store.info("models")
            for m in models:
                stored_fp = stored.get(m.name, {}).get("fingerprint")
                if stored_fp is not None and stored_fp != fingerprint(m.model):
                    raise CamwallError(
                        f"--resume: the weights of model {m.name!r} differ from those the "
                        f"stored results in {path} were computed with; choose another --out."
                    )
            _check_dataset_versions(store, datasets, path)
            _merge_shards(store, out)
        run_id = store.start_run(config, versions())
        for m in models:
            info = {
                **m.info,
                "walled": m.walled,
                "target_layer": m.target_layer,
                "class_names": m.class_names,
                "dead_zone_png": to_png(m.dead_zone.cpu().numpy()).hex() if m.walled else None,
                "dead_rows": _dead_rows(m.dead_zone) if m.walled else None,
                "dead_fraction": float(m.dead_zone.float().mean()) if m.walled else None,
                "input_size": list(m.dead_zone.shape),
                "fingerprint": fingerprint(m.model),
            }
            store.put_info("models", m.name, info)
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
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(shard) + suffix)
            if p.exists():
                p.unlink()


def _loop(
    store: Store,
    models: Sequence[BenchModel],
    datasets: Sequence[BenchDataset],
    methods: Sequence[str],
    dev: torch.device,
    batch_size: int,
    seed: int,
    dist: _Dist,
    figure_images: int,
    progress: bool,
    cam_options: dict[str, Any],
) -> None:
    from tqdm import tqdm

    compute = _cam_fn()
    for bm in models:
        model = bm.model.to(dev).eval()
        dead = bm.dead_zone.to(dev)
        for ds in datasets:
            mine = [i for i in range(len(ds.labels)) if i % dist.world == dist.rank]
            preds = _predict(store, bm, model, ds, mine, dev, batch_size)
            if not bm.walled:
                continue
            for i in mine:
                if i < figure_images:
                    store.add_figure(bm.name, ds.name, i, "image", _image_png(ds.images[i]))
            for method in methods:
                done = store.done(bm.name, ds.name, method)
                todo = [i for i in mine if i not in done]
                bar = tqdm(
                    total=len(mine),
                    initial=len(mine) - len(todo),
                    desc=f"{ds.name} {method}",
                    unit="img",
                    disable=not progress,
                    leave=True,
                    dynamic_ncols=True,
                    file=sys.stderr,
                )
                with bar:
                    for ids in _batches(todo, batch_size):
                        x = ds.images[ids].to(dev)
                        targets = [preds[i][1] for i in ids]
                        start = time.perf_counter()
                        if method in CONTROLS:
                            maps = CONTROLS.get(method)(x, ids, seed)
                        else:
                            maps = compute(
                                model,
                                x,
                                bm.target_layer,
                                [method],
                                targets=targets,
                                **cam_options,
                            )[method]
                        if dev.type == "cuda":
                            torch.cuda.synchronize(dev)
                        seconds = (time.perf_counter() - start) / len(ids)
                        _store_batch(
                            store, bm, ds, method, ids, maps, dead, preds, seconds, figure_images
                        )
                        bar.update(len(ids))


def _predict(
    store: Store,
    bm: BenchModel,
    model: nn.Module,
    ds: BenchDataset,
    mine: list[int],
    dev: torch.device,
    batch_size: int,
) -> dict[int, tuple[int, int, float]]:
    have = store.predicted(bm.name, ds.name)
    todo = [i for i in mine if i not in have]
    for ids in _batches(todo, max(batch_size, 64)):
        with torch.no_grad():
            logits = model(ds.images[ids].to(dev))
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != len(ids):
            raise CamwallError(
                f"model {bm.name!r} must return B x classes logits; got "
                f"{getattr(logits, 'shape', type(logits).__name__)}."
            )
        prob = logits.float().softmax(dim=1)
        conf, pred = prob.max(dim=1)
        rows = [
            (i, int(ds.labels[i]), int(p), float(c))
            for i, p, c in zip(ids, pred.cpu().tolist(), conf.cpu().tolist())
        ]
        store.add_predictions(bm.name, ds.name, rows)
        have.update({r[0]: (r[1], r[2], r[3]) for r in rows})
    return have


def _image_png(image: Tensor) -> bytes:
    a = image.detach().float().cpu()
    a = a[0] if a.shape[0] == 1 else a[:3].permute(1, 2, 0)
    return to_png(a.clamp(0, 1).numpy())


def _store_batch(
    store: Store,
    bm: BenchModel,
    ds: BenchDataset,
    method: str,
    ids: list[int],
    maps: Tensor,
    dead: Tensor,
    preds: dict[int, tuple[int, int, float]],
    seconds: float,
    figure_images: int,
) -> None:
    if maps.shape != (len(ids), *dead.shape):
        raise CamwallError(
            f"method {method!r} returned maps of shape {tuple(maps.shape)}; expected "
            f"{(len(ids), *dead.shape)}."
        )
    maps = maps.detach().float()
    values = {name: METRICS.get(name)(maps, dead).cpu().tolist() for name in METRICS.names()}
    empty = empty_maps(maps).cpu().tolist()
    rows = []
    for row, i in enumerate(ids):
        label, predicted, conf = preds[i]
        rows.append(
            ResultRow(
                model=bm.name,
                dataset=ds.name,
                image=i,
                method=method,
                metrics={name: values[name][row] for name in values},
                empty=bool(empty[row]),
                label=label,
                target=predicted,
                predicted=predicted,
                confidence=conf,
                seconds=seconds,
            )
        )
        if i < figure_images:
            store.add_figure(bm.name, ds.name, i, method, to_png(maps[row].cpu().numpy()))
    store.add_results(rows)
