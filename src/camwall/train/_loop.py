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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from camwall.errors import CamwallError
from camwall.train._config import TrainConfig
from camwall.train._dist import DistInfo, all_reduce_sum, dist_info
from camwall.train._state import (
    atomic_write_text,
    latest_checkpoint,
    read_checkpoint,
    write_checkpoint,
)

__all__ = ["EvalResult", "FitResult", "evaluate_model", "fit", "limit_dataset"]

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


def _topk_correct(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == labels.view(-1, 1)).any(dim=1).sum()


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
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    info = dist_info()
    n = len(dataset)  # type: ignore[arg-type]
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=_RankSlice(n, info),
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
        pin_memory=device.type == "cuda",
    )
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    try:
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            use_amp = amp and device.type == "cuda"
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = model(x)
            logits = logits.float()
            sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
            sums[1] += _topk_correct(logits, y, 1)
            sums[2] += _topk_correct(logits, y, 5)
            sums[3] += y.numel()
    finally:
        model.train(was_training)
    sums = all_reduce_sum(sums).cpu()
    total = max(float(sums[3]), 1.0)
    return EvalResult(
        top1=float(sums[1]) / total,
        top5=float(sums[2]) / total,
        loss=float(sums[0]) / total,
        n=int(sums[3]),
    )


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
) -> FitResult:
    """Train ``model`` in place for ``config.epochs`` epochs (or ``config.max_steps`` steps).

    Per step: cross-entropy (label smoothing ``config.label_smoothing``), backward (GradScaler
    under AMP on CUDA), optimizer step, ``enforce_wall(model)``, per-step scheduler. Per epoch:
    validation top-1/top-5 on ``val_set``, a metrics row appended to ``run_dir/metrics.csv`` and
    ``metrics.jsonl``, and a checkpoint in ``run_dir/checkpoints`` (also every
    ``config.checkpoint_every`` steps and when ``max_steps`` stops the run). Only rank 0 writes.

    Args:
        model: the model, already on ``device``; trained in place.
        train_set: ``(image, label)`` pairs; ``config.train_limit`` keeps the first examples.
        val_set: validation pairs, or ``None`` to skip validation.
        config: hyperparameters.
        run_dir: output folder of this model.
        device: training device.
        enforce_wall: called on the (unwrapped) model after every optimizer step.
        resume: continue from the latest checkpoint in ``run_dir`` (bit-for-bit on CPU with
            ``num_workers=0``); starts fresh when there is none.
        progress: show a tqdm bar (``None``: only on a terminal).
        label: name shown in the progress bar (``"walled"``, ``"baseline"``).
        on_batch: called as ``on_batch(epoch, step, indices)`` with each batch's dataset indices.
        on_epoch_end: called as ``on_epoch_end(epoch, row)`` after each epoch's checkpoint.

    Raises:
        CamwallError: when the loss or the input becomes NaN/inf (the last good checkpoint is
            kept), or when ``config.batch_size`` does not split evenly across ranks.
    """
    run_dir = Path(run_dir)
    device = torch.device(device)
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
    steps_per_epoch = len(batches)
    optimizer = _make_optimizer(model, config)
    scheduler = _make_scheduler(optimizer, config, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    epoch, step_in_epoch, step = 0, 0, 0
    sums = [0.0, 0.0, 0.0, 0.0]  # loss sum, correct, seen, seconds (this epoch so far)
    history: list[dict[str, Any]] = []
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint is not None:
        state = read_checkpoint(
            checkpoint, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler
        )
        _check_resume_config(state.get("config", {}), config, checkpoint)
        epoch, step_in_epoch, step = state["epoch"], state["step_in_epoch"], state["step"]
        sums = [float(v) for v in state["sums"]]
        history = list(state["history"])
    else:
        torch.manual_seed(config.seed)
    if enforce_wall is not None:
        enforce_wall(model)

    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    net: nn.Module = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def save(completed_epoch: bool) -> Path | None:
        if not info.is_main:
            return None
        if not _all_finite(model):
            raise CamwallError(
                f"training {label or config.name} produced NaN/inf weights at step {step}; "
                f"not checkpointing them. The last good checkpoint is kept in "
                f"{run_dir / 'checkpoints'}. Lower --lr (now {config.lr:g}) and train again."
            )
        meta = {
            "epoch": epoch + 1 if completed_epoch else epoch,
            "step_in_epoch": 0 if completed_epoch else step_in_epoch,
            "step": step,
            "sums": [0.0, 0.0, 0.0, 0.0] if completed_epoch else sums,
            "history": history,
            "config": config.to_dict(),
        }
        return write_checkpoint(
            run_dir, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, meta=meta
        )

    def fail(what: str) -> CamwallError:
        last = latest_checkpoint(run_dir) if info.is_main else None
        kept = f"The last good checkpoint is kept: {last}." if last else "No checkpoint yet."
        return CamwallError(
            f"training {label or config.name} stopped: {what} at epoch {epoch + 1}, "
            f"step {step + 1} (lr {optimizer.param_groups[0]['lr']:.3g}). {kept} "
            f"Lower --lr (now {config.lr:g}) or check the training data for NaN/inf values, "
            "then train again."
        )

    # tqdm's disable=None shows the bar only on a terminal
    bar_off: bool | None = (
        not info.is_main or progress is False or (None if progress is None else False)
    )
    completed = True
    if config.max_steps is not None and step >= config.max_steps:
        return FitResult(history=history, steps=step, completed=False, checkpoint=checkpoint)
    model.train()
    while epoch < config.epochs:
        sampler.set_epoch(epoch)
        order = list(batches)[step_in_epoch:]
        _set_epoch(train_set, epoch)
        loader = DataLoader(
            train_set,
            batch_sampler=order,
            num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
            # a private generator: creating the loader must not draw from the global RNG, or a
            # run resumed mid-epoch would see different dropout masks
            generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch),
        )
        bar = tqdm(
            total=steps_per_epoch,
            initial=step_in_epoch,
            desc=f"{label or config.name} {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=bar_off,
            leave=False,
            dynamic_ncols=True,
        )
        start = time.perf_counter()
        stopped = False
        for indices, (x, y) in zip(order, loader):
            if on_batch is not None:
                on_batch(epoch, step, list(indices))
            x = x.to(device, non_blocking=True)
            if x.dim() == 4:
                x = x.contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = net(x)
                loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            stats = torch.stack(
                [
                    (~torch.isfinite(loss.detach())).double(),
                    (~torch.isfinite(x).all()).double(),
                    loss.detach().double() * y.numel(),
                    (logits.detach().argmax(1) == y).sum().double(),
                    torch.tensor(float(y.numel()), dtype=torch.float64, device=device),
                ]
            )
            stats = all_reduce_sum(stats).cpu()
            if stats[1] > 0:
                raise fail("the input batch contains NaN/inf values")
            if stats[0] > 0:
                raise fail("the loss is NaN/inf")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if enforce_wall is not None:
                enforce_wall(model)
            if config.scheduler != "step":
                scheduler.step()
            step += 1
            step_in_epoch += 1
            sums[0] += float(stats[2])
            sums[1] += float(stats[3])
            sums[2] += float(stats[4])
            bar.update(1)
            if step % 10 == 0 or step_in_epoch == steps_per_epoch:
                elapsed = sums[3] + time.perf_counter() - start
                bar.set_postfix(
                    loss=f"{sums[0] / sums[2]:.3f}",
                    acc=f"{sums[1] / sums[2]:.3f}",
                    img_s=f"{sums[2] / max(elapsed, 1e-9):.0f}",
                )
            if config.max_steps is not None and step >= config.max_steps:
                stopped = step_in_epoch < steps_per_epoch
                break
            every = config.checkpoint_every
            if every and step % every == 0 and step_in_epoch < steps_per_epoch:
                sums[3] += time.perf_counter() - start
                start = time.perf_counter()
                save(completed_epoch=False)
        bar.close()
        sums[3] += time.perf_counter() - start
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step,
            "partial": stopped,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": sums[0] / max(sums[2], 1.0),
            "train_acc": sums[1] / max(sums[2], 1.0),
            "val_loss": None,
            "val_top1": None,
            "val_top5": None,
            "seconds": sums[3],
            "images_per_second": sums[2] / max(sums[3], 1e-9),
        }
        if val_set is not None:
            result = evaluate_model(
                model, val_set, batch_size=config.val_batch_size, device=device, amp=use_amp
            )
            row.update(val_loss=result.loss, val_top1=result.top1, val_top5=result.top5)
        if stopped:
            # max_steps ended the run inside an epoch: checkpoint the exact position, record the
            # partial epoch in the metric files but not in the resumable history.
            checkpoint = save(completed_epoch=False) or checkpoint
            if info.is_main:
                _write_metrics(run_dir, [*history, row])
            completed = False
            history = [*history, row]
            break
        history = [*history, row]
        if config.scheduler == "step":
            scheduler.step()
        checkpoint = save(completed_epoch=True) or checkpoint
        if info.is_main:
            _write_metrics(run_dir, history)
        epoch += 1
        step_in_epoch = 0
        sums = [0.0, 0.0, 0.0, 0.0]
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if config.max_steps is not None and step >= config.max_steps:
            completed = epoch >= config.epochs
            break
    return FitResult(history=history, steps=step, completed=completed, checkpoint=checkpoint)
