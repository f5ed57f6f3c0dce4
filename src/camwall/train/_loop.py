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

import csv
import io
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from camwall.errors import CamwallError
from camwall.runtime import DistInfo, all_reduce_sum, dist_info, seed_everything
from camwall.train._config import TrainConfig
from camwall.train._state import (
    atomic_write_text,
    latest_checkpoint,
    read_checkpoint,
    write_checkpoint,
)

__all__ = [
    "EpochTotals",
    "EvalResult",
    "FitResult",
    "FitState",
    "evaluate_model",
    "fit",
    "limit_dataset",
]

METRIC_FIELDS = (
    "epoch",
    "step",
    "partial",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_top1",
    "val_top5",
    "seconds",
    "images_per_second",
)

BatchHook = Callable[[int, int, list[int]], None]
EpochHook = Callable[[int, dict[str, Any]], None]


@dataclass(frozen=True)
class EvalResult:
    """Accuracy of a model on a dataset: fractions in [0, 1] and the mean cross-entropy."""

    top1: float
    top5: float
    loss: float
    n: int


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


class _RankSlice(torch.utils.data.Sampler[int]):
    """Indices ``rank, rank + world, ...`` of ``range(n)``: an unpadded evaluation split."""

    def __init__(self, n: int, info: DistInfo) -> None:
        self.indices = list(range(info.rank, n, info.world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def per_cell(logits: Tensor, labels: Tensor) -> Tensor:
    """Logits in the layout of ``labels``: ``B x K`` unchanged for ``B`` labels; for a grid
    task (``B x cells`` labels, logits ``[k K/cells, (k+1) K/cells)`` are cell ``k``'s), the
    ``B x K/cells x cells`` view that ``F.cross_entropy`` and ``argmax(1)`` read per cell."""
    if labels.dim() != 2:
        return logits
    return logits.reshape(labels.shape[0], labels.shape[1], -1).transpose(1, 2)


def _topk_correct(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """Labels among the top ``k`` logits (``logits``: ``B x K`` or ``B x K x cells``)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == labels.unsqueeze(1)).any(dim=1).sum()


@dataclass
class _EvalTotals:
    """Running sums of :func:`evaluate_model` (float64 tensors on the device)."""

    loss: Tensor
    top1: Tensor
    top5: Tensor
    seen: Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> _EvalTotals:
        z = [torch.zeros((), dtype=torch.float64, device=device) for _ in range(4)]
        return cls(*z)

    def add(self, logits: Tensor, labels: Tensor) -> None:
        logits = per_cell(logits, labels)
        self.loss += F.cross_entropy(logits, labels, reduction="sum").double()
        self.top1 += _topk_correct(logits, labels, 1)
        self.top5 += _topk_correct(logits, labels, 5)
        self.seen += labels.numel()

    def result(self) -> EvalResult:
        """All-reduce over ranks and divide: the full-dataset :class:`EvalResult`."""
        loss, top1, top5, seen = all_reduce_sum(
            torch.stack([self.loss, self.top1, self.top5, self.seen])
        ).tolist()
        total = max(seen, 1.0)
        return EvalResult(top1=top1 / total, top5=top5 / total, loss=loss / total, n=int(seen))


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    amp: bool = False,
    num_workers: int = 0,
) -> EvalResult:
    """Top-1 / top-5 accuracy and mean cross-entropy of ``model`` on ``dataset`` (eval mode).

    Under ``torch.distributed`` each rank evaluates every ``world``-th example and the sums are
    all-reduced, so every rank returns the full-dataset result. The model's train/eval mode is
    restored afterwards.

    Args:
        model: maps ``B x C x H x W`` to logits ``B x K``.
        dataset: ``(image, label)`` pairs.
        batch_size: evaluation batch size.
        device: where to run; default: the model's device.
        amp: float16 autocast (CUDA only).
        num_workers: DataLoader workers.
    """
    device = torch.device(device if device is not None else next(model.parameters()).device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=_RankSlice(len(dataset), dist_info()),  # type: ignore[arg-type]
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
        pin_memory=device.type == "cuda",
    )
    was_training = model.training
    model.eval()
    totals = _EvalTotals.zeros(device)
    use_amp = amp and device.type == "cuda"
    try:
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = model(x)
            totals.add(logits.float(), y)
    finally:
        model.train(was_training)
    return totals.result()


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=config.lr, betas=(config.momentum, 0.999), weight_decay=config.weight_decay
        )
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=config.step_size, gamma=config.gamma
        )
    total = config.epochs * steps_per_epoch
    if config.scheduler == "onecycle" and total >= 3:
        # warm up over 25% of the steps (at least 1.5 steps, so that tiny runs work too)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.lr,
            total_steps=total,
            pct_start=min(0.5, max(0.25, 1.5 / total)),
            cycle_momentum=config.optimizer == "sgd",
            base_momentum=0.85 * config.momentum,
            max_momentum=config.momentum,
        )
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _write_metrics(run_dir: Path, history: Sequence[dict[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` and ``metrics.jsonl`` from the whole history (atomically)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k) for k in METRIC_FIELDS})
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))


# Options that may change when resuming; every other field must match the checkpoint's.
_RESUME_FREE = frozenset(
    {
        "epochs",
        "max_steps",
        "checkpoint_every",
        "num_workers",
        "threads",
        "val_limit",
        "val_batch_size",
        "data",
    }
)


def _check_resume_config(saved: dict[str, Any], config: TrainConfig, where: Path) -> None:
    now = json.loads(json.dumps(config.to_dict()))
    diff = [
        f"{k}={saved.get(k)!r} (now {now[k]!r})"
        for k in now
        if k not in _RESUME_FREE and k in saved and saved[k] != now[k]
    ]
    if config.scheduler == "onecycle" and saved.get("epochs", config.epochs) != config.epochs:
        diff.append(f"epochs={saved.get('epochs')!r} (now {config.epochs}; fixed by onecycle)")
    if diff:
        raise CamwallError(
            f"cannot resume from {where}: it was trained with {', '.join(diff)}. Resume with the "
            "same options (only --epochs, --max-steps and loader options may change), or train "
            "into a new --out folder."
        )


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


@dataclass
class _Run:
    """What stays fixed during one :func:`fit` call."""

    model: nn.Module
    config: TrainConfig
    run_dir: Path
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
    enforce_wall: Callable[[nn.Module], Any] | None
    label: str
    bar_off: bool | None
    log_epochs: bool
    on_batch: BatchHook | None
    on_epoch_end: EpochHook | None
    net: nn.Module | None = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    @property
    def name(self) -> str:
        return self.label or self.config.name

    def at_max_steps(self, state: FitState) -> bool:
        return self.config.max_steps is not None and state.step >= self.config.max_steps


def fit(
    model: nn.Module,
    train_set: Dataset[Any],
    val_set: Dataset[Any] | None,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    device: torch.device | str = "cpu",
    enforce_wall: Callable[[nn.Module], Any] | None = None,
    resume: bool = False,
    progress: bool | None = None,
    label: str = "",
    on_batch: BatchHook | None = None,
    on_epoch_end: EpochHook | None = None,
    log_epochs: bool | None = None,
) -> FitResult:
    """Train ``model`` in place for ``config.epochs`` epochs (or ``config.max_steps`` steps).

    Per step: cross-entropy (label smoothing ``config.label_smoothing``), backward (GradScaler
    under AMP on CUDA), optimizer step, ``enforce_wall(model)``, per-step scheduler. Per epoch:
    validation top-1/top-5 on ``val_set``, a metrics row appended to ``run_dir/metrics.csv`` and
    ``metrics.jsonl``, a checkpoint in ``run_dir/checkpoints`` (also every ``checkpoint_every``
    steps and when ``max_steps`` stops the run). Rank 0 writes; :class:`FitState` is resumable.

    Args:
        model: the model, already on ``device``; trained in place.
        train_set, val_set: ``(image, label)`` pairs (``config.train_limit`` / ``val_limit``
            keep the first ones); ``val_set=None`` skips validation.
        config, run_dir, device: hyperparameters, this model's output folder, training device.
        enforce_wall: called on the (unwrapped) model after every optimizer step.
        resume: continue from the latest checkpoint in ``run_dir`` (bit-for-bit on CPU with
            ``num_workers=0``); starts fresh when there is none.
        progress, label: tqdm bar (``None``: on a terminal only) and its name (``"walled"``).
        on_batch: called as ``on_batch(epoch, step, indices)`` with each batch's dataset indices.
        on_epoch_end: called as ``on_epoch_end(epoch, row)`` after each epoch's checkpoint.
        log_epochs: one line per epoch on stderr (``train fashion-vgg walled: epoch 3/7 loss
            0.512 acc 88.1% val 87.9% 31.2 s``); ``None``: when stderr is not a terminal.

    Raises:
        CamwallError: when the loss or the input becomes NaN/inf (the last good checkpoint is
            kept), or when ``config.batch_size`` does not split evenly across ranks.
    """
    run = _prepare(model, train_set, val_set, config, Path(run_dir), torch.device(device))
    run.enforce_wall, run.label, run.on_batch, run.on_epoch_end = (
        enforce_wall, label, on_batch, on_epoch_end)  # fmt: skip
    _set_output(run, progress, log_epochs)
    state = _start(run, resume)
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


def _prepare(
    model: nn.Module,
    train_set: Dataset[Any],
    val_set: Dataset[Any] | None,
    config: TrainConfig,
    run_dir: Path,
    device: torch.device,
) -> _Run:
    """Check the batch size, create the folder, sampler, optimizer, scheduler and scaler."""
    info = dist_info()
    if config.batch_size % info.world:
        raise CamwallError(
            f"--batch-size {config.batch_size} does not split evenly across {info.world} "
            f"processes; use a multiple of {info.world}."
        )
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train_set = limit_dataset(train_set, config.train_limit)
    if val_set is not None:
        val_set = limit_dataset(val_set, config.val_limit)
    use_amp = config.amp and device.type == "cuda"
    sampler: DistributedSampler[Any] = DistributedSampler(
        train_set, num_replicas=info.world, rank=info.rank, shuffle=True, seed=config.seed
    )
    batches = BatchSampler(sampler, batch_size=config.batch_size // info.world, drop_last=False)
    optimizer = _make_optimizer(model, config)
    return _Run(
        model=model,
        config=config,
        run_dir=run_dir,
        device=device,
        info=info,
        train_set=train_set,
        val_set=val_set,
        sampler=sampler,
        batches=batches,
        optimizer=optimizer,
        scheduler=_make_scheduler(optimizer, config, len(batches)),
        scaler=torch.amp.GradScaler(device.type, enabled=use_amp),
        use_amp=use_amp,
        memory_format=torch.channels_last if config.channels_last else torch.contiguous_format,
        enforce_wall=None,
        label="",
        bar_off=None,
        log_epochs=False,
        on_batch=None,
        on_epoch_end=None,
    )


def _set_output(run: _Run, progress: bool | None, log_epochs: bool | None) -> None:
    """Progress bar and per-epoch lines: rank 0 only; ``None`` means "on a terminal" for the
    bar (tqdm's ``disable=None``) and "when stderr is not a terminal" for the lines."""
    run.bar_off = not run.info.is_main or progress is False or (None if progress is None else False)
    run.log_epochs = run.info.is_main and (
        not sys.stderr.isatty() if log_epochs is None else log_epochs
    )


def _start(run: _Run, resume: bool) -> FitState:
    """Resume from the latest checkpoint (weights, optimizer, RNG, counters) or seed a fresh
    run; apply the wall and the memory format; wrap the model in DDP when distributed."""
    state = FitState()
    checkpoint = latest_checkpoint(run.run_dir) if resume else None
    if checkpoint is not None:
        saved = read_checkpoint(
            checkpoint,
            model=run.model,
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            scaler=run.scaler,
        )
        _check_resume_config(saved.get("config", {}), run.config, checkpoint)
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
    if run.enforce_wall is not None:
        run.enforce_wall(run.model)
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
    if run.enforce_wall is not None:
        run.enforce_wall(run.model)
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
            if run.on_batch is not None:
                run.on_batch(state.epoch, state.step, list(indices))
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
        _write_metrics(run.run_dir, [*state.history, row])
    state.history = [*state.history, row]


def _record_epoch(run: _Run, state: FitState, row: dict[str, Any]) -> None:
    """Append the row, step a per-epoch scheduler, checkpoint, write the metric files, move on
    to the next epoch and call ``on_epoch_end``."""
    state.history = [*state.history, row]
    if run.config.scheduler == "step":
        run.scheduler.step()
    state.checkpoint = _save(run, state, completed_epoch=True) or state.checkpoint
    if run.info.is_main:
        _write_metrics(run.run_dir, state.history)
    state.epoch += 1
    state.step_in_epoch = 0
    state.totals = EpochTotals()
    if run.on_epoch_end is not None:
        run.on_epoch_end(state.epoch, row)
