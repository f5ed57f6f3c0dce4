"""``camwall train``, ``camwall train-plot`` and ``camwall evaluate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from camwall.errors import CamwallError
from camwall.train._config import PRESETS

__all__ = ["register"]

# flag -> (TrainConfig field, type, help)
_OVERRIDES: tuple[tuple[str, str, Any, str], ...] = (
    ("--epochs", "epochs", int, "number of epochs"),
    ("--lr", "lr", float, "(peak) learning rate"),
    ("--batch-size", "batch_size", int, "global batch size (split across torchrun ranks)"),
    ("--momentum", "momentum", float, "SGD momentum / AdamW beta1"),
    ("--weight-decay", "weight_decay", float, "weight decay"),
    ("--optimizer", "optimizer", str, "sgd or adamw"),
    ("--scheduler", "scheduler", str, "step, onecycle or constant"),
    ("--step-size", "step_size", int, "StepLR period (epochs)"),
    ("--gamma", "gamma", float, "StepLR factor"),
    ("--label-smoothing", "label_smoothing", float, "cross-entropy label smoothing"),
    ("--seed", "seed", int, "seed of init, data order, augmentation, dropout"),
    ("--data", "data", str, "data folder (Fashion-MNIST IDX files or ImageFolder root)"),
    ("--arch", "arch", str, "model name in camwall.walls.MODELS"),
    ("--num-classes", "num_classes", int, "number of classes"),
    ("--image-size", "image_size", int, "input side for ImageFolder data"),
    ("--train-limit", "train_limit", int, "use only the first N training examples"),
    ("--val-limit", "val_limit", int, "use only the first N validation examples"),
    ("--val-batch-size", "val_batch_size", int, "validation batch size"),
    ("--num-workers", "num_workers", int, "DataLoader worker processes"),
    ("--max-steps", "max_steps", int, "stop after N optimizer steps (resumable)"),
    ("--checkpoint-every", "checkpoint_every", int, "also checkpoint every N steps"),
)


def _parse_kv(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from camwall.train._run import train

    overrides: dict[str, Any] = {f: getattr(args, f) for _, f, _, _ in _OVERRIDES}
    if args.arch_kwarg:
        overrides["arch_kwargs"] = dict(args.arch_kwarg)
    if args.amp is not None:
        overrides["amp"] = args.amp
    if args.augment is not None:
        overrides["augment"] = args.augment
    if args.threads:
        overrides["threads"] = args.threads
        torch.set_num_threads(args.threads)
    variants = {"walled": ("walled",), "baseline": ("baseline",)}.get(
        args.which, ("walled", "baseline")
    )
    result = train(
        args.preset,
        overrides,
        args.out,
        variants=variants,
        resume=args.resume,
        device=args.device,
        progress=False if args.no_progress else None,
    )
    if not result.is_main:
        return 0
    for variant, rows in result.histories.items():
        if not rows:
            continue
        last = rows[-1]
        top1 = last.get("val_top1")
        acc = "n/a" if top1 is None else f"{100 * top1:.2f}%"
        print(
            f"{variant}: epoch {last['epoch']}, step {last['step']}, train loss "
            f"{last['train_loss']:.4f}, val top-1 {acc}, {last['images_per_second']:.0f} img/s, "
            f"{sum(r['seconds'] for r in rows):.1f} s -> {result.checkpoints[variant]}"
        )
    if result.plot is not None:
        print(f"curves: {result.plot}")
    if not result.completed:
        print("stopped by --max-steps; continue with --resume (without --max-steps).")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from camwall.train._plot import plot_curves, read_history

    run = Path(args.run)
    histories = {v: read_history(run / v) for v in ("walled", "baseline") if (run / v).is_dir()}
    if not histories:
        raise CamwallError(
            f"{run} holds neither walled/ nor baseline/ metrics; give the --out folder of "
            "`camwall train`."
        )
    out = plot_curves(histories, args.out or run / "curves.png", title=run.name)
    print(out)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from camwall.train._evaluate import evaluate

    res = evaluate(
        args.model,
        args.dataset,
        n=args.n,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        data_root=args.data,
    )
    if args.json:
        print(json.dumps({"top1": res.top1, "top5": res.top5, "loss": res.loss, "n": res.n}))
    else:
        print(
            f"{args.model} on {args.dataset} ({res.n} images): top-1 {100 * res.top1:.2f}%, "
            f"top-5 {100 * res.top5:.2f}%, loss {res.loss:.4f}"
        )
    return 0


def register(subparsers: Any) -> None:
    """Add ``train``, ``train-plot`` and ``evaluate`` to the ``camwall`` CLI."""
    p = subparsers.add_parser(
        "train",
        help="train a walled model and its baseline",
        description="Train a preset's walled model and/or baseline (same seed, same batches). "
        "Works under `torchrun --nproc_per_node N -m camwall train ...`.",
    )
    p.add_argument("--preset", required=True, choices=PRESETS.names(), help="training recipe")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/PRESET)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--walled", dest="which", action="store_const", const="walled")
    which.add_argument("--baseline", dest="which", action="store_const", const="baseline")
    which.add_argument("--both", dest="which", action="store_const", const="both", help="(default)")
    p.set_defaults(which="both")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    for flag, field, typ, text in _OVERRIDES:
        p.add_argument(flag, dest=field, type=typ, default=None, help=text)
    p.add_argument(
        "--arch-kwarg",
        action="append",
        type=_parse_kv,
        metavar="KEY=VALUE",
        help="model builder option, e.g. width=8 (repeatable)",
    )
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: the preset's; the Fashion presets use 1 on CPU)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    q = subparsers.add_parser(
        "train-plot", help="plot loss and accuracy of walled vs baseline from a training run"
    )
    q.add_argument("run", help="the --out folder of `camwall train`")
    q.add_argument("--out", type=Path, default=None, help="image file (default RUN/curves.png)")
    q.set_defaults(func=_cmd_plot)

    e = subparsers.add_parser("evaluate", help="top-1 / top-5 accuracy of a saved model")
    e.add_argument("--model", required=True, help="checkpoint NAME.safetensors")
    e.add_argument(
        "--dataset",
        required=True,
        help="fashion-canvases, fashion-stackmix, fashion-stackpair, or a folder",
    )
    e.add_argument("--n", type=int, default=None, help="number of composites (default 1000)")
    e.add_argument("--seed", type=int, default=0, help="seed of the composites")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--device", default="auto")
    e.add_argument("--data", default=None, help="Fashion-MNIST folder")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=_cmd_evaluate)
