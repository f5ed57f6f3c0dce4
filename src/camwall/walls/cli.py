"""``camwall deadzone``: compute, verify and draw the dead zone of a model or checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from camwall._cliargs import (
    MAX_SIDE,
    add_out,
    add_seed,
    int_in,
    name_or_path,
    non_negative_int,
    positive_int,
)
from camwall.errors import CamwallError
from camwall.walls._deadzone import dead_zone, dead_zone_summary
from camwall.walls._info import describe
from camwall.walls._models import MODELS
from camwall.walls._resolve import resolve_model
from camwall.walls._verify import WallCheck, verify_wall

__all__ = ["register", "run_deadzone"]

ORDER = 30  # place in `camwall --help`


def register(subparsers: Any) -> None:
    """Add the ``deadzone`` sub-command."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "deadzone",
        help="compute, verify and draw the exact dead zone of a model or checkpoint",
        description=(
            "Compute the dead zone (the input pixels that influence no output) of a registered "
            "model, a torchvision classifier walled with --wall, or a checkpoint, from its "
            "structure; verify it with random changes of the "
            "dead zone (bit-identical logits, zero gradient); optionally draw it over an "
            "example input. Eval mode."
        ),
    )
    p.add_argument(
        "--model", required=True, type=name_or_path, metavar="NAME_OR_CHECKPOINT",
        help="checkpoint path (NAME, NAME.safetensors or NAME.json), registered model "
        f"({', '.join(MODELS.names())}) or torchvision classifier name (resnet18, vgg16, ...)",
    )  # fmt: skip
    p.add_argument(
        "--wall", action="append", default=[], type=name_or_path, metavar="LAYER:SPEC",
        help="insert a wall into a torchvision model after LAYER, e.g. layer3:rows=4: or "
        "layer3:rows=4:8,cols=0:2 (feature-map rows/cols, Python slices); repeatable",
    )  # fmt: skip
    p.add_argument(
        "--weights", type=name_or_path, metavar="FILE",
        help="state dict for a model name (.safetensors; .pt/.pth read with weights_only); "
        "names of the network without its walls are accepted",
    )  # fmt: skip
    p.add_argument(
        "--num-classes",
        type=positive_int,
        metavar="N",
        help="outputs of a model name (default: its own)",
    )
    p.add_argument(
        "--input-size", type=int_in(1, MAX_SIDE, "pixels per side"), nargs=2, metavar=("H", "W"),
        help="input height and width (default: the model's own, e.g. 224 224 for walled-vgg16)",
    )  # fmt: skip
    add_out(p, kind="png", help="draw the dead zone over an example input (NAME -> NAME.png)")
    p.add_argument(
        "--trials", type=positive_int, default=4, help="random inputs for the verification"
    )
    add_seed(p, "seed of the verification draws")
    p.add_argument(
        "--baseline", action="store_true", help="build the registered model with walled=False"
    )
    p.add_argument(
        "--target", type=non_negative_int, default=None, metavar="K",
        help="the dead zone of output K only (exact per output: e.g. 0..9 are cell 0's logits "
        "of fashion-grid-vgg); default: the pixels no output sees",
    )  # fmt: skip
    p.set_defaults(func=run_deadzone)


def _spans(ranges: list[list[int]], unit: str) -> str:
    if not ranges:
        return "none"
    parts = [f"{a}..{b - 1}" for a, b in ranges]
    count = sum(b - a for a, b in ranges)
    return f"{', '.join(parts)} ({count} {unit}{'s' if count != 1 else ''})"


def _example(shape: tuple[int, int, int]) -> tuple[Tensor, str]:
    """A ``C x H x W`` example in [0, 1]: a Fashion-MNIST canvas if available, else a gradient."""
    if shape == (1, 64, 64):
        try:
            from camwall.data import fashion_canvases

            image, label = fashion_canvases("test", seed=0, augment=False)[0]
            return image.float(), f"Fashion-MNIST test canvas 0 (label {int(label)})"
        except (ImportError, CamwallError, OSError):
            pass
    c, h, w = shape
    rows = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
    cols = torch.linspace(0, 1, w).view(1, w).expand(h, w)
    planes = [rows, cols, 1 - (rows + cols) / 2]
    return torch.stack([planes[i % 3] for i in range(c)]), "gradient image"


def _draw(zone: Tensor, shape: tuple[int, int, int], title: str, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, source = _example(shape)
    z = zone.detach().cpu().float().numpy()
    fig, ax = plt.subplots(figsize=(5, 5.4))
    try:
        if image.shape[0] == 3:
            ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        else:
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        tint = torch.zeros(*zone.shape, 4)
        tint[..., 0] = 1.0
        tint[..., 3] = zone.detach().cpu().float() * 0.35
        ax.imshow(tint.numpy(), interpolation="nearest")
        if z.any() and not z.all():
            ax.contourf(z, levels=[0.5, 1.5], colors="none", hatches=["///"])
            ax.contour(z, levels=[0.5], colors="red", linewidths=1.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"dead zone (red, hatched) over a {source}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return source


def _verdict(check: WallCheck) -> str:
    trials = f"{check.trials} trial{'s' if check.trials != 1 else ''}"
    if check.dead_pixels == 0:
        return "nothing to verify (no dead pixel)"
    if check.ok:
        return (
            f"PASS ({trials}): logits bit-identical, gradient exactly 0 on the dead "
            f"zone (max gradient elsewhere {check.live_grad_max:.3g})"
        )
    return (
        f"FAIL ({trials}): max logit change {check.max_logit_change:.3g}, max "
        f"dead-zone gradient {check.max_dead_grad:.3g}"
    )


def run_deadzone(args: argparse.Namespace) -> int:
    model, meta = resolve_model(
        args.model,
        args.wall,
        args.weights,
        baseline=args.baseline,
        num_classes=args.num_classes,
    )
    label = meta["label"]
    shape = describe(model).input_shape
    if shape is None:
        raise CamwallError(f"{label} does not record its input shape.")
    c, h, w = (int(v) for v in shape)
    if args.input_size is not None:
        h, w = args.input_size
    zone = dead_zone(model, (c, h, w), target=args.target)
    info = dead_zone_summary(zone)
    gen = torch.Generator().manual_seed(args.seed)
    check = verify_wall(model, zone, trials=args.trials, generator=gen, target=args.target)
    print(f"model: {label}" + ("" if args.target is None else f", output {args.target}"))
    print(f"input: {c} x {h} x {w}")
    print(f"dead rows: {_spans(info['rows'], 'row')}")
    print(f"dead columns: {_spans(info['cols'], 'column')}")
    print(f"dead area: {info['pixels']} of {h * w} pixels = {100 * info['fraction']:.1f}%")
    print(f"verification: {_verdict(check)}")
    if args.out:
        out = Path(args.out)  # the real file name: out_png added ".png" if there was none
        title = f"{label}\ndead: {100 * info['fraction']:.1f}% of {h} x {w}, rows " + (
            _spans(info["rows"], "row")
        )
        source = _draw(zone, (c, h, w), title, out)
        print(f"wrote {out} (over a {source})")
    return 0 if check.ok else 1
