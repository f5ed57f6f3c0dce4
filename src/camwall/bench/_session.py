"""A bench run's place on disk and among the ranks: the out folder, its lock, the torchrun
shards, and the store (opened fresh or resumed, merged, finished).

Under ``torchrun`` (``WORLD_SIZE > 1``) the images of every dataset are sharded over the ranks
(image ``i`` goes to rank ``i % world``). Each rank writes its own shard store
(``results.rank{r}.sqlite``); after a barrier, rank 0 merges the shards into the one store and
writes the report. Only rank 0 locks ``out``; a second camwall process writing there fails at
once, naming the holder's PID.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camwall._versions import versions
from camwall.bench._archive import archive_store
from camwall.bench._plan import BenchDataset, BenchModel
from camwall.bench._store import STORE_NAME, Store, store_error, to_png
from camwall.errors import CamwallError
from camwall.runtime import DistInfo, dist_setup, folder_lock

__all__ = [
    "Session",
    "check_out_dir",
    "data_fingerprint",
    "fingerprint",
    "open_session",
    "shard_store_path",
]


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


@contextlib.contextmanager
def open_session(out: Path, device: torch.device, resume: bool) -> Iterator[Session]:
    """Join the torchrun process group (if launched by torchrun), lock ``out`` (rank 0), and
    yield the :class:`Session`; leave the group again if this call joined it."""
    dist, owned = dist_setup(device)
    try:
        with _store_errors(out), folder_lock(out) if dist.rank == 0 else contextlib.nullcontext():
            yield Session(out, dist, resume)
    finally:
        if owned:
            torch.distributed.destroy_process_group()


_FULL_OR_READONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


@contextlib.contextmanager
def _store_errors(out: Path) -> Iterator[None]:
    """A SQLite error (a full disk, a read-only store) or a full or read-only disk while
    writing ``out`` becomes one line naming the folder and the cause (:func:`store_error`)."""
    try:
        yield
    except sqlite3.OperationalError as err:
        raise store_error(out / STORE_NAME, err) from None
    except OSError as err:
        if err.errno not in _FULL_OR_READONLY:
            raise
        raise store_error(out / STORE_NAME, err) from None


class Session:
    """The store side of a run in ``out``, for this process's ``dist`` rank."""

    def __init__(self, out: Path, dist: DistInfo, resume: bool) -> None:
        self.out, self.dist, self.resume = out, dist, resume
        self.main_path = out / STORE_NAME
        self.run_id = 0

    def mine(self, n: int) -> list[int]:
        """This rank's share of ``n`` images: ``i`` with ``i % world == rank``."""
        return [i for i in range(n) if i % self.dist.world == self.dist.rank]

    def check_config(self, config: dict[str, Any]) -> None:
        """On ``--resume``, refuse a store written with another result-defining config (before
        any model is loaded or trained)."""
        if self.resume and self.main_path.exists():
            with Store(self.main_path) as store:
                store.check_resume(config)

    def open(
        self, config: dict[str, Any], models: Sequence[BenchModel], datasets: Sequence[BenchDataset]
    ) -> Store:
        """Rank 0 opens (or resumes) the main store and records the run; every rank then gets
        the store it writes: its own shard (holding what is done already), or the main one."""
        if self.dist.rank == 0:
            self.run_id = self._open_main(config, models, datasets)
        self.dist.barrier()
        if self.dist.world == 1:
            return Store(self.main_path)
        shard = shard_store_path(self.out, self.dist.rank)
        for suffix in ("", "-wal", "-shm"):  # a left-over of this rank's own crashed shard
            Path(f"{shard}{suffix}").unlink(missing_ok=True)
        store = Store(shard)
        store.merge(self.main_path)  # what is done already (resume) is skipped
        return store

    def finish(self, report: bool) -> None:
        """After every rank: rank 0 merges the shards, closes the run and writes the report."""
        self.dist.barrier()
        if self.dist.rank == 0:
            with Store(self.main_path) as main:
                _merge_shards(main, self.out)
                main.finish_run(self.run_id)
            if report:
                from camwall.bench._report import write_report

                write_report(self.out)
        self.dist.barrier()

    def _open_main(
        self, config: dict[str, Any], models: Sequence[BenchModel], datasets: Sequence[BenchDataset]
    ) -> int:
        if self.main_path.exists() and not self.resume:
            kept = archive_store(self.out)
            print(
                f"camwall bench: the previous store is kept as {kept} (use --resume to continue "
                "a run).",
                file=sys.stderr,
            )
        with Store(self.main_path) as store:
            if self.resume:
                _check_models(store, self.main_path, models)
                _check_datasets(store, datasets, self.main_path)
                _merge_shards(store, self.out)
            run_id = store.start_run(config, versions())
            for m in models:
                store.put_info("models", m.name, _model_info(m))
            for d in datasets:
                store.put_info("datasets", d.name, _dataset_info(d))
        return run_id


def _merge_shards(main: Store, out: Path) -> None:
    for shard in sorted(out.glob("results.rank*.sqlite")):
        main.merge(shard)
        for suffix in ("", "-wal", "-shm"):  # merged into main: nothing is lost
            Path(f"{shard}{suffix}").unlink(missing_ok=True)


def _check_datasets(store: Store, datasets: Sequence[BenchDataset], path: Path) -> None:
    """Refuse to resume on a dataset whose design version (``info["version"]``, 1 if absent)
    differs from the stored one (the same name and seed would give other images), or a folder
    dataset whose contents changed (``info["fingerprint"]``, :func:`data_fingerprint`)."""
    stored = store.info("datasets")
    for d in (d for d in datasets if d.name in stored):
        old, new = stored[d.name].get("version", 1), d.info.get("version", 1)
        if old != new:
            raise CamwallError(
                f"--resume: dataset {d.name!r} is version {new} but the stored results in {path} "
                f"were computed on version {old}; choose another --out."
            )
        old, new = stored[d.name].get("fingerprint"), d.info.get("fingerprint")
        if old is not None and old != new:
            where = d.info.get("folder", d.name)
            raise CamwallError(
                f"--resume: the images or labels of dataset {where} differ from those the stored "
                f"results in {path} were computed on; choose another --out."
            )


def _check_models(store: Store, path: Path, models: Sequence[BenchModel]) -> None:
    """Refuse ``--resume`` with models whose weights changed."""
    stored = store.info("models")
    for m in models:
        stored_fp = stored.get(m.name, {}).get("fingerprint")
        if stored_fp is not None and stored_fp != fingerprint(m.model):
            raise CamwallError(
                f"--resume: the weights of model {m.name!r} differ from those the "
                f"stored results in {path} were computed with; choose another --out."
            )


def _dataset_info(d: BenchDataset) -> dict[str, Any]:
    return {
        **d.info,
        "n": len(d.labels),
        "shape": list(d.images.shape[1:]),
        "class_names": d.class_names,
    }


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


def data_fingerprint(images: Tensor, labels: Tensor) -> str:
    """SHA-256 (16 hex digits) of a dataset's images and labels: shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for t in (images, labels):
        h.update(f"{tuple(t.shape)}:{t.dtype}".encode())
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
