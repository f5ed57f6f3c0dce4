"""Command line of the data area: ``camwall stackmix``, ``camwall stackgen``,
``camwall data preview`` and ``camwall data export``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from camwall.data.canvases import fashion_canvases
from camwall.data.composites import DATASETS
from camwall.data.fashion import FASHION_CLASSES
from camwall.data.folders import (
    ANIMAL_CLASSES,
    build_stackgen,
    build_stackmix,
    export_composites,
    imagenet_categories,
    read_class_file,
    write_prompts,
)
from camwall.data.images import sample_indices
from camwall.data.preview import preview_grid
from camwall.data.reader import read_image_dataset
from camwall.errors import CamwallError

__all__ = ["register"]

CANVAS_CHOICES = ("fashion-canvases",)


def _report(manifest_path: Path) -> None:
    m = json.loads(manifest_path.read_text(encoding="utf-8"))
    print(f"wrote {len(m['items'])} images and {manifest_path}")
    for note in m.get("warnings", []):
        print(f"camwall: warning: {note}", file=sys.stderr)
    if m.get("skipped"):
        print(
            f"camwall: warning: skipped {len(m['skipped'])} broken file(s) (listed in the "
            "manifest under 'skipped'):",
            file=sys.stderr,
        )
        for s in m["skipped"]:
            print(f"  {s['file']}", file=sys.stderr)
    if m.get("ignored"):
        print(
            f"camwall: note: {len(m['ignored'])} file(s) without an image extension in the class "
            "folders were not considered (listed in the manifest under 'ignored').",
            file=sys.stderr,
        )


def _stackmix(args: argparse.Namespace) -> int:
    classes = read_class_file(args.classes) if args.classes else None
    path = build_stackmix(
        args.source,
        args.out,
        n=args.n,
        classes=classes,
        first_classes=args.first_classes,
        split_row=args.split_row,
        seed=args.seed,
        skip_bad=args.skip_bad,
        overwrite=args.force,
    )
    _report(path)
    return 0


def _labelled_classes(path: Path) -> list[tuple[int, str]]:
    """Lines ``NAME`` (label = line number) or ``LABEL<TAB>NAME`` of a class file."""
    out: list[tuple[int, str]] = []
    for k, line in enumerate(read_class_file(path)):
        if "\t" in line:
            label, name = line.split("\t", 1)
            try:
                out.append((int(label), name.strip()))
            except ValueError:
                raise CamwallError(
                    f"{path}: line {line!r}: expected 'LABEL<TAB>NAME' or 'NAME'."
                ) from None
        else:
            out.append((k, line))
    return out


def _prompt_classes(args: argparse.Namespace) -> list[tuple[int, str]]:
    if args.classes:
        return _labelled_classes(args.classes)
    names = imagenet_categories()
    pool = min(args.first_classes, len(names))
    n = 100 if args.n is None else args.n
    return [(i, names[i]) for i in sample_indices(pool, n, args.seed)]


def _stackgen(args: argparse.Namespace) -> int:
    if args.prompts:
        prompts, table = write_prompts(args.out, _prompt_classes(args), overwrite=args.force)
        print(f"wrote {prompts} and the CSV template {table}")
        return 0
    if not args.source:
        raise CamwallError("stackgen needs --source DIR (the generated images), or --prompts.")
    class_list: list[str] | None = None
    if args.classes:
        pairs = _labelled_classes(args.classes)
        class_list = [f"class_{i}" for i in range(max(lbl for lbl, _ in pairs) + 1)]
        for lbl, name in pairs:
            class_list[lbl] = name
    path = build_stackgen(
        args.source, args.out, csv_path=args.csv, class_list=class_list, overwrite=args.force
    )
    _report(path)
    return 0


def _preview(args: argparse.Namespace) -> int:
    title: str
    if args.folder:
        ds = read_image_dataset(args.folder, size=args.size)
        k = min(args.n, len(ds))
        images, labels, names = ds.images[:k], ds.labels[:k], ds.class_names
        title = str(args.folder)
    elif args.dataset in CANVAS_CHOICES:
        canv = fashion_canvases(args.split, seed=args.seed, augment=args.split == "train")
        images, labels = canv.batch(list(range(min(args.n, len(canv)))))
        names = list(FASHION_CLASSES)
        title = f"{args.dataset} ({args.split}, seed {args.seed})"
    else:
        comp = DATASETS.get(args.dataset)(n=args.n, seed=args.seed, root=args.data)
        images, labels, names = comp.images, comp.labels, comp.class_names
        title = f"{args.dataset} (seed {args.seed})"
    path = preview_grid(images, labels, names, args.out, title=title, mark_rows=args.mark_row)
    print(f"wrote {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    comp = DATASETS.get(args.dataset)(n=args.n, seed=args.seed, root=args.data)
    extra = {k: v for k, v in comp.meta.items() if k not in ("class_names", "n", "size")}
    path = export_composites(
        comp.images,
        comp.labels,
        comp.class_names,
        args.out,
        kind=args.dataset,
        sources=comp.sources,
        extra=extra,
        overwrite=args.force,
    )
    print(f"wrote {len(comp.labels)} images and {path}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``stackmix``, ``stackgen`` and ``data`` to the ``camwall`` CLI."""
    p = subparsers.add_parser(
        "stackmix",
        help="build STACK-MIX from an ImageFolder tree (e.g. ImageNet val)",
        description="STACK-MIX: for each sampled class, the top rows of one image over the "
        "bottom rows of another image of the same class (resize 256, centre-crop 224).",
    )
    p.add_argument("--source", required=True, type=Path, help="ImageFolder root")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--n", type=int, default=None, help="classes (images); default 100")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--classes", type=Path, help="text file of class folder names")
    group.add_argument(
        "--first-classes",
        type=int,
        default=ANIMAL_CLASSES,
        help="sample from the first K class indices (default 398: the ImageNet animals)",
    )
    p.add_argument("--split-row", type=int, default=112, help="first row from x2 (default 112)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-bad", action="store_true", help="skip undecodable files, loudly")
    p.add_argument("--force", action="store_true", help="replace an existing manifest in --out")
    p.set_defaults(func=_stackmix)

    g = subparsers.add_parser(
        "stackgen",
        help="STACK-GEN: write prompts, or post-process generated images",
        description="With --prompts: write the paper's prompts and a CSV template. Otherwise: "
        "crop the generated images listed in the CSV to 1:1 at their offset, resize to 256, "
        "centre-crop 224, and write PNGs with a manifest.",
    )
    g.add_argument("--source", type=Path, help="folder of generated images")
    g.add_argument("--out", required=True, type=Path, help="output folder")
    g.add_argument(
        "--csv", type=Path, help="file,class[,label][,offset] (default SOURCE/stackgen.csv)"
    )
    g.add_argument(
        "--classes",
        type=Path,
        help="text file of class names, one per line (line number = label, or LABEL<TAB>NAME)",
    )
    g.add_argument("--prompts", action="store_true", help="write prompts.txt + stackgen.csv")
    g.add_argument("--n", type=int, default=None, help="with --prompts: classes; default 100")
    g.add_argument("--first-classes", type=int, default=ANIMAL_CLASSES)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--force", action="store_true")
    g.set_defaults(func=_stackgen)

    d = subparsers.add_parser("data", help="inspect the datasets")
    dsub = d.add_subparsers(dest="data_command", metavar="COMMAND")
    d.set_defaults(func=lambda _args: (d.print_help(), 0)[1])
    pv = dsub.add_parser("preview", help="save a grid of examples with labels as a PNG")
    src = pv.add_mutually_exclusive_group()
    src.add_argument(
        "--dataset",
        default="fashion-stackpair",
        choices=[*DATASETS.names(), *CANVAS_CHOICES],
        help="embedded dataset (default fashion-stackpair)",
    )
    src.add_argument("--folder", type=Path, help="a dataset folder (manifest or ImageFolder)")
    pv.add_argument("--out", required=True, type=Path, help="output PNG")
    pv.add_argument("--n", type=int, default=16)
    pv.add_argument("--seed", type=int, default=0)
    pv.add_argument("--split", choices=("train", "test"), default="train", help="for canvases")
    pv.add_argument("--size", type=int, default=None, help="for --folder: resize + crop")
    pv.add_argument("--data", type=Path, default=None, help="Fashion-MNIST folder")
    pv.add_argument("--mark-row", type=int, action="append", default=[], help="draw a line")
    pv.set_defaults(func=_preview)

    ex = dsub.add_parser(
        "export", help="write an embedded dataset as 8-bit PNGs + manifest.json (a folder)"
    )
    ex.add_argument("--dataset", required=True, choices=DATASETS.names())
    ex.add_argument("--out", required=True, type=Path, help="output folder")
    ex.add_argument("--n", type=int, default=100)
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--data", type=Path, default=None, help="Fashion-MNIST folder")
    ex.add_argument("--force", action="store_true", help="replace an existing manifest")
    ex.set_defaults(func=_export)
