"""``camwall train``, ``camwall train-plot`` and ``camwall evaluate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from camwall._cliargs import (
    MAX_IMAGES,
    MAX_SIDE,
    add_batch_size,
    add_device,
    add_no_progress,
    add_out,
    add_seed,
    fraction,
    input_path,
    int_in,
    name_or_path,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from camwall.errors import CamwallError
from camwall.train._config import PRESETS
from camwall.train._data import EVAL_DATASETS

__all__ = ["register", "run_evaluate", "run_train", "run_train_plot"]

ORDER = 50  # place in `camwall --help`

MAX_ARCH_SIZE = 65536
"""Largest numeric ``--arch-kwarg`` (a width or channel count)."""

# flag -> (TrainConfig field, argparse type, help)
_OVERRIDES: tuple[tuple[str, str, Any, str], ...] = (
    ("--epochs", "epochs", positive_int, "number of epochs"),
    ("--lr", "lr", positive_float, "(peak) learning rate"),
    ("--momentum", "momentum", fraction, "SGD momentum / AdamW beta1, in [0, 1]"),
    ("--weight-decay", "weight_decay", non_negative_float, "weight decay"),
    ("--optimizer", "optimizer", ("sgd", "adamw"), "sgd or adamw"),
    ("--scheduler", "scheduler", ("step", "onecycle", "constant"), "step, onecycle or constant"),
    ("--step-size", "step_size", positive_int, "StepLR period (epochs)"),
    ("--gamma", "gamma", positive_float, "StepLR factor"),
    ("--label-smoothing", "label_smoothing", fraction, "cross-entropy label smoothing, in [0, 1]"),
    ("--data", "data", name_or_path, "data folder (Fashion-MNIST IDX files or ImageFolder root)"),
    ("--arch", "arch", name_or_path, "camwall model name, torchvision:NAME or timm:NAME"),
    (
        "--init",
        "init",
        name_or_path,
        (
            "fine-tune from these weights, the wall inserted: a camwall checkpoint, a state "
            "dict (.safetensors, .pt/.pth) or shipped:fashion-vgg-baseline"
        ),
    ),
    (
        "--refit",
        "refit",
        non_negative_int,
        "with --init: refit the walled head on the first N training examples (0: off)",
    ),
    ("--refit-ridge", "refit_ridge", non_negative_float, "the refit's relative ridge penalty"),
    (
        "--head-lr-scale",
        "head_lr_scale",
        positive_float,
        "learning rate of the head (walled linear layer and after) relative to --lr (default 1)",
    ),
    ("--num-classes", "num_classes", positive_int, "number of classes"),
    ("--image-size", "image_size", int_in(1, MAX_SIDE), "input side for ImageFolder data"),
    ("--train-limit", "train_limit", positive_int, "use only the first N training examples"),
    ("--val-limit", "val_limit", positive_int, "use only the first N validation examples"),
    ("--val-batch-size", "val_batch_size", positive_int, "validation batch size"),
    ("--num-workers", "num_workers", int_in(0, 256), "DataLoader worker processes"),
    ("--max-steps", "max_steps", positive_int, "stop after N optimizer steps (resumable)"),
    ("--checkpoint-every", "checkpoint_every", non_negative_int, "also checkpoint every N steps"),
)


def _parse_kv(text: str) -> tuple[str, Any]:
    key, sep, value = name_or_path(text).partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return key, value
    # the builders' numeric options are sizes (width, channels): 1 .. MAX_ARCH_SIZE
    number = isinstance(parsed, int | float) and not isinstance(parsed, bool)
    if number and not 0 < parsed <= MAX_ARCH_SIZE:
        raise argparse.ArgumentTypeError(
            f"{key}={value}: a model size must be from 1 to {MAX_ARCH_SIZE}"
        )
    return key, parsed


def run_train(args: argparse.Namespace) -> int:
    import torch

    from camwall.train._run import train

    fields = ["batch_size", "seed", *(f for _, f, _, _ in _OVERRIDES)]
    overrides: dict[str, Any] = {f: getattr(args, f) for f in fields}
    if args.arch_kwarg:
        overrides["arch_kwargs"] = dict(args.arch_kwarg)
    if args.wall:
        overrides["walls"] = tuple(args.wall)
    if args.amp is not None:
        overrides["amp"] = args.amp
    if args.augment is not None:
        overrides["augment"] = args.augment
    if args.threads:
        overrides["threads"] = args.threads
        torch.set_num_threads(args.threads)
    variants = _variants(args)
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
    _print_insertion(result.init)
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


def _variants(args: argparse.Namespace) -> tuple[str, ...]:
    """The variants to train; ``--init`` (which fine-tunes the walled model) or ``--preset``
    is required, and ``--init`` takes neither ``--baseline`` nor ``--both``."""
    if args.preset is None and args.init is None:
        raise CamwallError(
            "camwall train needs --preset NAME (training from scratch) or --init WEIGHTS "
            f"(fine-tuning a wall into trained weights). Presets: {', '.join(PRESETS.names())}."
        )
    if args.init is not None and args.which not in (None, "walled"):
        raise CamwallError(
            f"--init fine-tunes the walled model only (its weights are the baseline); drop "
            f"--{args.which}."
        )
    return {"walled": ("walled",), "baseline": ("baseline",)}.get(
        args.which or "both", ("walled", "baseline")
    )


def _print_insertion(init: dict[str, Any] | None) -> None:
    """The fine-tuning run's starting point: the walled model before any step."""
    if init is None:
        return
    inserted = init.get("inserted")
    acc = "n/a (no validation data)"
    if inserted is not None:
        acc = f"{100 * inserted['val_top1']:.2f}% ({inserted['n']} images)"
    print(
        f"init {init['source']} (sha256 {init['sha256'][:12]}...): wall inserted, "
        f"{init['walled_weights_zeroed']} walled weights set to 0; before fine-tuning: val "
        f"top-1 {acc}"
    )
    if init.get("new_classifier"):
        fresh = ", ".join(init["new_classifier"])
        print(f"another number of classes in the file: {fresh} start fresh (no head refit)")
    refit = init.get("refit")
    if refit is not None and refit.get("refitted") is not None:
        print(
            f"head refit on {refit['examples']} training examples (ridge {refit['ridge']:g}): "
            f"val top-1 {100 * refit['refitted']['val_top1']:.2f}%"
        )


def run_train_plot(args: argparse.Namespace) -> int:
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


def run_evaluate(args: argparse.Namespace) -> int:
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
        unit = "grid cells" if args.dataset == "fashion-grid" else "images"
        print(
            f"{args.model} on {args.dataset} ({res.n} {unit}): top-1 {100 * res.top1:.2f}%, "
            f"top-5 {100 * res.top5:.2f}%, loss {res.loss:.4f}"
        )
    return 0


def register(subparsers: Any) -> None:
    """Add ``train``, ``train-plot`` and ``evaluate`` to the ``camwall`` CLI."""
    _add_train(subparsers)
    _add_train_plot(subparsers)
    _add_evaluate(subparsers)


def _add_train(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a walled model and its baseline, or fine-tune a wall into trained weights",
        description="Train a preset's walled model and/or baseline (same seed, same batches), "
        "or, with --init, fine-tune the walled model from an unwalled model's weights (the "
        "preset's fine-tuning defaults: fewer epochs, lower lr). "
        "Works under `torchrun --nproc_per_node N -m camwall train ...`.",
    )
    p.add_argument(
        "--preset",
        default=None,
        choices=PRESETS.names(),
        help="training recipe (required unless --init is given)",
    )
    add_out(p, help="output folder (default runs/PRESET)")
    add_device(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--walled", dest="which", action="store_const", const="walled")
    which.add_argument("--baseline", dest="which", action="store_const", const="baseline")
    which.add_argument("--both", dest="which", action="store_const", const="both", help="(default)")
    p.set_defaults(which=None)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    add_batch_size(
        p, None, "global batch size, split across torchrun ranks (default: the preset's)"
    )
    add_seed(p, "seed of init, data order, augmentation, dropout", default=None)
    for flag, field, typ, text in _OVERRIDES:
        kind = {"choices": typ} if isinstance(typ, tuple) else {"type": typ}
        p.add_argument(flag, dest=field, default=None, help=text, **kind)
    p.add_argument(
        "--arch-kwarg",
        action="append",
        type=_parse_kv,
        metavar="KEY=VALUE",
        help="model builder option, e.g. width=8 (repeatable)",
    )
    p.add_argument(
        "--wall",
        action="append",
        type=name_or_path,
        metavar="LAYER:REGION",
        help="wall of a torchvision:/timm: --arch, e.g. layer3:rows=8: (repeatable)",
    )
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument(
        "--threads",
        type=int_in(1, 1024),
        default=None,
        help="torch.set_num_threads (default: the preset's; the Fashion presets use 1 on CPU)",
    )
    add_no_progress(p)
    p.set_defaults(func=run_train)


def _add_train_plot(subparsers: Any) -> None:
    q = subparsers.add_parser(
        "train-plot", help="plot loss and accuracy of walled vs baseline from a training run"
    )
    q.add_argument("run", type=input_path, help="the --out folder of `camwall train`")
    add_out(q, kind="png", help="figure file (default RUN/curves.png)")
    q.set_defaults(func=run_train_plot)


def _add_evaluate(subparsers: Any) -> None:
    e = subparsers.add_parser("evaluate", help="top-1 / top-5 accuracy of a saved model")
    e.add_argument("--model", required=True, type=name_or_path, help="checkpoint NAME.safetensors")
    e.add_argument(
        "--dataset",
        required=True,
        type=name_or_path,
        help=f"{', '.join(EVAL_DATASETS)}, or a folder",
    )
    e.add_argument(
        "--n",
        type=int_in(1, MAX_IMAGES),
        default=None,
        metavar="N",
        help="number of composites (default 1000)",
    )
    add_seed(e, "seed of the composites")
    add_batch_size(e, 256, "images per batch (default 256)")
    add_device(e)
    e.add_argument("--data", type=name_or_path, default=None, help="Fashion-MNIST folder")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=run_evaluate)
