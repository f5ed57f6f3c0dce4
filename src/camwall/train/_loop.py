"""The training loop: one model, one dataset, checkpoints, resume, DDP, metrics.

:func:`fit` is generic: it takes any ``nn.Module`` that maps a batch ``B x C x H x W`` to logits
``B x K`` and any map-style dataset of ``(image, label)`` pairs. The preset layer
(:func:`camwall.train.train`) builds walled and baseline models and calls it twice with the same
config, so both see the same initialization seed and the same batches in the same order.

Data order: epoch ``e`` uses ``DistributedSampler(shuffle=True, seed=config.seed)`` with
``set_epoch(e)``, i.e. ``randperm(N, generator=manual_seed(seed + e))``; rank ``r`` of ``W`` takes
every ``W``-th index and batches of ``batch_size / W``. Step ``s`` of all ranks together therefore
covers exactly the indices ``perm[s * batch_size : (s + 1) * batch_size]`` of a one-process run,
and since DDP averages the gradients of equal-sized per-rank means, a ``W``-process run follows the
same trajectory as a one-process run (up to float summation order).

After every optimizer step ``enforce_wall(model)`` re-applies the wall (the walls area's
function), so the masked weights stay exactly zero despite momentum and weight decay.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from camwall.errors import CamwallError
from camwall.runtime import DistInfo, all_reduce_sum, dist_info, seed_everything
from camwall.train._accuracy import evaluate_model, per_cell
from camwall.train._config import TrainConfig
from camwall.train._optim import make_optimizer, make_scheduler
from camwall.train._state import (
    check_resume_config,
    latest_checkpoint,
    read_checkpoint,
    write_checkpoint,
    write_metrics,
)

__all__ = [
    "EpochTotals",
    "FitOptions",
    "FitResult",
    "FitState",
    "fit",
    "limit_dataset",
]

BatchHook = Callable[[int, int, list[int]], None]
EpochHook = Callable[[int, dict[str, Any]], None]


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` did: the per-epoch ``history`` rows, total ``steps``, whether all epochs
    ran (``completed``; ``False`` when ``max_steps`` stopped it) and the last checkpoint folder."""

    history: list[dict[str, Any]]
    steps: int
    completed: bool
    checkpoint: Path | None


def limit_dataset(dataset: Dataset[Any], limit: int | None) -> Dataset[Any]:
    """The first ``limit`` examples of ``dataset`` (all of them for ``None``)."""
    n = len(dataset)  # type: ignore[arg-type]
    if limit is None or limit >= n:
        return dataset
    return Subset(dataset, range(limit))


def _set_epoch(dataset: Dataset[Any], epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the dataset (or on the one a ``Subset`` wraps), if it has
    one: per-epoch augmentation draws such as :class:`camwall.data.FashionCanvases`'."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    set_epoch = getattr(dataset, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@dataclass
class EpochTotals:
    """Running totals of the current epoch: summed per-example ``loss``, ``correct`` top-1
    predictions, ``seen`` examples and training ``seconds`` (checkpointed as ``sums``)."""

    loss: float = 0.0
    correct: float = 0.0
    seen: float = 0.0
    seconds: float = 0.0

    def as_list(self) -> list[float]:
        """``[loss, correct, seen, seconds]``, the checkpoint's ``sums``."""
        return [self.loss, self.correct, self.seen, self.seconds]

    @classmethod
    def from_list(cls, values: Sequence[float]) -> EpochTotals:
        loss, correct, seen, seconds = (float(v) for v in values)
        return cls(loss, correct, seen, seconds)


@dataclass
class FitState:
    """Where :func:`fit` stands: the next ``epoch`` (0-based), batches done in it
    (``step_in_epoch``), optimizer steps in total (``step``), this epoch's ``totals``, the rows
    of the finished epochs (``history``) and the last checkpoint written."""

    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0
    totals: EpochTotals = field(default_factory=EpochTotals)
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None


@dataclass(frozen=True)
class FitOptions:
    """How :func:`fit` runs, beside the model, the data and the hyperparameters.

    Attributes:
        device: training device (the model is already on it).
        enforce_wall: called on the (unwrapped) model after every optimizer step.
        resume: continue from the latest checkpoint in ``run_dir`` (bit-for-bit on CPU with
            ``num_workers=0``); starts fresh when there is none.
        progress: tqdm bar (``None``: on a terminal only).
        label: the run's name in the bar and the log lines (``"walled"``).
        on_batch: called as ``on_batch(epoch, step, indices)`` with each batch's dataset indices.
        on_epoch_end: called as ``on_epoch_end(epoch, row)`` after each epoch's checkpoint.
        log_epochs: one line per epoch on stderr (``train fashion-vgg walled: epoch 3/7 loss
            0.512 acc 88.1% val 87.9% 31.2 s``); ``None``: when stderr is not a terminal.
    """

    device: torch.device | str = "cpu"
    enforce_wall: Callable[[nn.Module], Any] | None = None
    resume: bool = False
    progress: bool | None = None
    label: str = ""
    on_batch: BatchHook | None = None
    on_epoch_end: EpochHook | None = None
    log_epochs: bool | None = None


@dataclass
class _Run:
    """What stays fixed during one :func:`fit` call."""

    model: nn.Module
    config: TrainConfig
    run_dir: Path
    options: FitOptions
    device: torch.device
    info: DistInfo
    train_set: Dataset[Any]
    val_set: Dataset[Any] | None
    sampler: DistributedSampler[Any]
    batches: BatchSampler
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    use_amp: bool
    memory_format: torch.memory_format
    net: nn.Module | None = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    @property
    def label(self) -> str:
        return self.options.label

    @property
    def name(self) -> str:
        return self.label or self.config.name

    @property
    def bar_off(self) -> bool | None:
        """tqdm's ``disable``: rank 0 only; ``None`` (the default) means "on a terminal"."""
        progress = self.options.progress
        return not self.info.is_main or progress is False or (None if progress is None else False)

    @property
    def log_epochs(self) -> bool:
        """One line per epoch on stderr: rank 0 only; by default when stderr is no terminal."""
        wanted = self.options.log_epochs
        return self.info.is_main and (not sys.stderr.isatty() if wanted is None else wanted)

    def at_max_steps(self, state: FitState) -> bool:
        return self.config.max_steps is not None and state.step >= self.config.max_steps


def fit(
    model: nn.Module,
    train_set: Dataset[Any],
    val_set: Dataset[Any] | None,
    config: TrainConfig,
    run_dir: str | Path,
    options: FitOptions | None = None,
    **changes: Any,
) -> FitResult:
    """Train ``model`` in place for ``config.epochs`` epochs (or ``config.max_steps`` steps).

    Per step: cross-entropy (label smoothing ``config.label_smoothing``), backward (GradScaler
    under AMP on CUDA), optimizer step, ``enforce_wall(model)``, per-step scheduler. Per epoch:
    validation top-1/top-5 on ``val_set``, a metrics row appended to ``run_dir/metrics.csv`` and
    ``metrics.jsonl``, a checkpoint in ``run_dir/checkpoints`` (also every ``checkpoint_every``
    steps and when ``max_steps`` stops the run). Rank 0 writes; :class:`FitState` is resumable.

    Args:
        model: the model, already on the device; trained in place.
        train_set, val_set: ``(image, label)`` pairs (``config.train_limit`` / ``val_limit``
            keep the first ones); ``val_set=None`` skips validation.
        config, run_dir: hyperparameters and this model's output folder.
        options: device, wall, resume, output and hooks (:class:`FitOptions`).
        **changes: :class:`FitOptions` fields that replace those of ``options``
            (``fit(..., resume=True, progress=False)``).

    Raises:
        CamwallError: when the loss or the input becomes NaN/inf (the last good checkpoint is
            kept), or when ``config.batch_size`` does not split evenly across ranks.
        TypeError: a keyword that is no :class:`FitOptions` field.
    """
    options = replace(options or FitOptions(), **changes)
    run = _prepare(model, train_set, val_set, config, Path(run_dir), options)
    state = _start(run)
    completed = not run.at_max_steps(state)  # nothing left when resumed at max_steps
    while completed and state.epoch < config.epochs:
        stopped = _train_epoch(run, state)
        row = _epoch_row(run, state, stopped)
        _log_epoch(run, state, row)
        if stopped:  # max_steps ended the run inside an epoch
            _record_partial_epoch(run, state, row)
            completed = False
            break
        _record_epoch(run, state, row)
        if run.at_max_steps(state):
            completed = state.epoch >= config.epochs
            break
    return FitResult(state.history, state.step, completed=completed, checkpoint=state.checkpoint)


def _check_batch_size(config: TrainConfig, info: DistInfo) -> None:
    if config.batch_size % info.world:
        raise CamwallError(
            f"--batch-size {config.batch_size} does not split evenly across {info.world} "
            f"processes; use a multiple of {info.world}."
        )


def _prepare(
    model: nn.Module,
    train_set: Dataset[Any],
    val_set: Dataset[Any] | None,
    config: TrainConfig,
    run_dir: Path,
    options: FitOptions,
) -> _Run:
    """Check the batch size, create the folder, sampler, optimizer, scheduler and scaler."""
    device = torch.device(options.device)
    info = dist_info()
    _check_batch_size(config, info)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train_set = limit_dataset(train_set, config.train_limit)
    sampler: DistributedSampler[Any] = DistributedSampler(
        train_set, num_replicas=info.world, rank=info.rank, shuffle=True, seed=config.seed
    )
    batches = BatchSampler(sampler, batch_size=config.batch_size // info.world, drop_last=False)
    optimizer = make_optimizer(model, config)
    use_amp = config.amp and device.type == "cuda"
    return _Run(
        model=model,
        config=config,
        run_dir=run_dir,
        options=options,
        device=device,
        info=info,
        train_set=train_set,
        val_set=None if val_set is None else limit_dataset(val_set, config.val_limit),
        sampler=sampler,
        batches=batches,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, config, len(batches)),
        scaler=torch.amp.GradScaler(device.type, enabled=use_amp),
        use_amp=use_amp,
        memory_format=torch.channels_last if config.channels_last else torch.contiguous_format,
    )


def _start(run: _Run) -> FitState:
    """Resume from the latest checkpoint (weights, optimizer, RNG, counters) or seed a fresh
    run; apply the wall and the memory format; wrap the model in DDP when distributed."""
    state = FitState()
    checkpoint = latest_checkpoint(run.run_dir) if run.options.resume else None
    if checkpoint is not None:
        saved = read_checkpoint(
            checkpoint,
            model=run.model,
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            scaler=run.scaler,
        )
        check_resume_config(saved.get("config", {}), run.config, checkpoint)
        state = FitState(
            epoch=saved["epoch"],
            step_in_epoch=saved["step_in_epoch"],
            step=saved["step"],
            totals=EpochTotals.from_list(saved["sums"]),
            history=list(saved["history"]),
            checkpoint=checkpoint,
        )
    else:
        seed_everything(run.config.seed)
    if run.options.enforce_wall is not None:
        run.options.enforce_wall(run.model)
    run.model.to(memory_format=run.memory_format)
    run.net = run.model
    if run.info.enabled:
        run.net = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None
        )
    return state


def _save(run: _Run, state: FitState, completed_epoch: bool) -> Path | None:
    """Checkpoint the run (rank 0 only); refuses NaN/inf weights."""
    if not run.info.is_main:
        return None
    if not _all_finite(run.model):
        raise CamwallError(
            f"training {run.name} produced NaN/inf weights at step {state.step}; "
            f"not checkpointing them. The last good checkpoint is kept in "
            f"{run.run_dir / 'checkpoints'}. Lower --lr (now {run.config.lr:g}) and train again."
        )
    meta = {
        "epoch": state.epoch + 1 if completed_epoch else state.epoch,
        "step_in_epoch": 0 if completed_epoch else state.step_in_epoch,
        "step": state.step,
        "sums": EpochTotals().as_list() if completed_epoch else state.totals.as_list(),
        "history": state.history,
        "config": run.config.to_dict(),
    }
    return write_checkpoint(
        run.run_dir,
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        scaler=run.scaler,
        meta=meta,
    )


def _failure(run: _Run, state: FitState, what: str) -> CamwallError:
    """The error that stops a run whose loss or input became NaN/inf."""
    last = latest_checkpoint(run.run_dir) if run.info.is_main else None
    kept = f"The last good checkpoint is kept: {last}." if last else "No checkpoint yet."
    return CamwallError(
        f"training {run.name} stopped: {what} at epoch {state.epoch + 1}, "
        f"step {state.step + 1} (lr {run.optimizer.param_groups[0]['lr']:.3g}). {kept} "
        f"Lower --lr (now {run.config.lr:g}) or check the training data for NaN/inf values, "
        "then train again."
    )


def _epoch_batches(run: _Run, state: FitState) -> tuple[list[list[int]], DataLoader[Any]]:
    """The remaining batches (dataset indices) of ``state.epoch`` and their loader."""
    run.sampler.set_epoch(state.epoch)
    order = list(run.batches)[state.step_in_epoch :]
    _set_epoch(run.train_set, state.epoch)
    loader = DataLoader(
        run.train_set,
        batch_sampler=order,
        num_workers=run.config.num_workers,
        pin_memory=run.device.type == "cuda",
        # a private generator: creating the loader must not draw from the global RNG, or a
        # run resumed mid-epoch would see different dropout masks
        generator=torch.Generator().manual_seed(run.config.seed * 100_003 + state.epoch),
    )
    return order, loader


def _train_step(run: _Run, state: FitState, x: Tensor, y: Tensor) -> None:
    """Forward, NaN/inf check (over all ranks), backward, optimizer step, wall, scheduler."""
    assert run.net is not None
    x = x.to(run.device, non_blocking=True)
    if x.dim() == 4:
        x = x.contiguous(memory_format=run.memory_format)
    y = y.to(run.device, non_blocking=True)
    with torch.autocast(run.device.type, dtype=torch.float16, enabled=run.use_amp):
        logits = per_cell(run.net(x), y)
        mean = F.cross_entropy(logits, y, label_smoothing=run.config.label_smoothing)
        loss = mean * (y.shape[1] if y.dim() == 2 else 1)  # a grid: the sum over the cells
    stats = torch.stack(
        [
            (~torch.isfinite(loss.detach())).double(),
            (~torch.isfinite(x).all()).double(),
            mean.detach().double() * y.numel(),
            (logits.detach().argmax(1) == y).sum().double(),
            torch.tensor(float(y.numel()), dtype=torch.float64, device=run.device),
        ]
    )
    bad_loss, bad_input, loss_sum, correct, seen = all_reduce_sum(stats).cpu().tolist()
    if bad_input > 0:
        raise _failure(run, state, "the input batch contains NaN/inf values")
    if bad_loss > 0:
        raise _failure(run, state, "the loss is NaN/inf")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.options.enforce_wall is not None:
        run.options.enforce_wall(run.model)
    if run.config.scheduler != "step":
        run.scheduler.step()
    state.step += 1
    state.step_in_epoch += 1
    state.totals.loss += loss_sum
    state.totals.correct += correct
    state.totals.seen += seen


def _train_epoch(run: _Run, state: FitState) -> bool:
    """Train the rest of ``state.epoch``; ``True`` when ``max_steps`` stopped it inside."""
    order, loader = _epoch_batches(run, state)
    run.model.train()
    bar = tqdm(
        total=run.steps_per_epoch,
        initial=state.step_in_epoch,
        desc=f"{run.name} {state.epoch + 1}/{run.config.epochs}",
        unit="batch",
        disable=run.bar_off,
        leave=False,
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    stopped = False
    totals = state.totals
    with bar:
        for indices, (x, y) in zip(order, loader):
            if run.options.on_batch is not None:
                run.options.on_batch(state.epoch, state.step, list(indices))
            _train_step(run, state, x, y)
            bar.update(1)
            if state.step % 10 == 0 or state.step_in_epoch == run.steps_per_epoch:
                elapsed = totals.seconds + time.perf_counter() - start
                bar.set_postfix(
                    loss=f"{totals.loss / totals.seen:.3f}",
                    acc=f"{totals.correct / totals.seen:.3f}",
                    img_s=f"{totals.seen / max(elapsed, 1e-9):.0f}",
                )
            if run.at_max_steps(state):
                stopped = state.step_in_epoch < run.steps_per_epoch
                break
            every = run.config.checkpoint_every
            if every and state.step % every == 0 and state.step_in_epoch < run.steps_per_epoch:
                totals.seconds += time.perf_counter() - start
                start = time.perf_counter()
                _save(run, state, completed_epoch=False)
    totals.seconds += time.perf_counter() - start
    return stopped


def _epoch_row(run: _Run, state: FitState, partial: bool) -> dict[str, Any]:
    """The metrics row of the epoch just trained, validation included."""
    totals = state.totals
    row: dict[str, Any] = {
        "epoch": state.epoch + 1,
        "step": state.step,
        "partial": partial,
        "lr": run.optimizer.param_groups[0]["lr"],
        "train_loss": totals.loss / max(totals.seen, 1.0),
        "train_acc": totals.correct / max(totals.seen, 1.0),
        "val_loss": None,
        "val_top1": None,
        "val_top5": None,
        "seconds": totals.seconds,
        "images_per_second": totals.seen / max(totals.seconds, 1e-9),
    }
    if run.val_set is not None:
        result = evaluate_model(
            run.model,
            run.val_set,
            batch_size=run.config.val_batch_size,
            device=run.device,
            amp=run.use_amp,
        )
        row.update(val_loss=result.loss, val_top1=result.top1, val_top5=result.top5)
    return row


def _log_epoch(run: _Run, state: FitState, row: Mapping[str, Any]) -> None:
    """One sign of life per epoch on stderr (when ``run.log_epochs``)."""
    if not run.log_epochs:
        return
    who = f"{run.config.name} {run.label}" if run.label else run.config.name
    val = "" if row["val_top1"] is None else f" val {100 * row['val_top1']:.1f}%"
    part = " (partial)" if row["partial"] else ""
    print(
        f"train {who}: epoch {row['epoch']}/{run.config.epochs}{part} loss "
        f"{row['train_loss']:.3f} acc {100 * row['train_acc']:.1f}%{val} {row['seconds']:.1f} s",
        file=sys.stderr,
        flush=True,
    )


def _record_partial_epoch(run: _Run, state: FitState, row: dict[str, Any]) -> None:
    """Checkpoint the exact position inside the epoch; the partial row goes to the metric
    files (and the returned history) but not into the checkpoint's resumable history."""
    state.checkpoint = _save(run, state, completed_epoch=False) or state.checkpoint
    if run.info.is_main:
        write_metrics(run.run_dir, [*state.history, row])
    state.history = [*state.history, row]


def _record_epoch(run: _Run, state: FitState, row: dict[str, Any]) -> None:
    """Append the row, step a per-epoch scheduler, checkpoint, write the metric files, move on
    to the next epoch and call ``on_epoch_end``."""
    state.history = [*state.history, row]
    if run.config.scheduler == "step":
        run.scheduler.step()
    state.checkpoint = _save(run, state, completed_epoch=True) or state.checkpoint
    if run.info.is_main:
        write_metrics(run.run_dir, state.history)
    state.epoch += 1
    state.step_in_epoch = 0
    state.totals = EpochTotals()
    if run.options.on_epoch_end is not None:
        run.options.on_epoch_end(state.epoch, row)
