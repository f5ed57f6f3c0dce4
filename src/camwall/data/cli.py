"""Command line of the data area: ``camwall stackmix``, ``camwall stackgen``,
``camwall data preview`` and ``camwall data export``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from camwall._cliargs import (
    MAX_IMAGES,
    MAX_SIDE,
    add_alias,
    add_out,
    add_overwrite,
    add_seed,
    input_path,
    int_in,
    non_negative_int,
    positive_int,
)
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

__all__ = [
    "register",
    "run_data_export",
    "run_data_preview",
    "run_stackgen",
    "run_stackmix",
]

ORDER = 40  # place in `camwall --help`

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


def run_stackmix(args: argparse.Namespace) -> int:
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
        overwrite=args.overwrite,
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


def run_stackgen(args: argparse.Namespace) -> int:
    if args.prompts:
        prompts, table = write_prompts(args.out, _prompt_classes(args), overwrite=args.overwrite)
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
        args.source, args.out, csv_path=args.csv, class_list=class_list, overwrite=args.overwrite
    )
    _report(path)
    return 0


def run_data_preview(args: argparse.Namespace) -> int:
    title: str
    if args.folder:
        ds = read_image_dataset(args.folder, size=args.image_size)
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


def run_data_export(args: argparse.Namespace) -> int:
    comp = DATASETS.get(args.dataset)(n=args.n, seed=args.seed, root=args.data)
    if comp.labels.dim() != 1:
        raise CamwallError(
            f"--dataset {args.dataset} has one label per cell ({tuple(comp.labels.shape[1:])}); "
            "export writes one class folder per image, so it takes single-label datasets only."
        )
    extra = {k: v for k, v in comp.meta.items() if k not in ("class_names", "n", "size")}
    path = export_composites(
        comp.images,
        comp.labels,
        comp.class_names,
        args.out,
        kind=args.dataset,
        sources=comp.sources,
        extra=extra,
        overwrite=args.overwrite,
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
    p.add_argument("--source", required=True, type=input_path, help="ImageFolder root")
    add_out(p, required=True)
    _add_n(p, "classes (images); default 100")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--classes", type=input_path, help="text file of class folder names")
    _add_first_classes(group)
    p.add_argument(
        "--split-row", type=non_negative_int, default=112, help="first row from x2 (default 112)"
    )
    add_seed(p)
    p.add_argument("--skip-bad", action="store_true", help="skip undecodable files, loudly")
    add_overwrite(p, "replace an existing manifest in --out")
    p.set_defaults(func=run_stackmix)

    g = subparsers.add_parser(
        "stackgen",
        help="STACK-GEN: write prompts, or post-process generated images",
        description="With --prompts: write the paper's prompts and a CSV template. Otherwise: "
        "crop the generated images listed in the CSV to 1:1 at their offset, resize to 256, "
        "centre-crop 224, and write PNGs with a manifest.",
    )
    g.add_argument("--source", type=input_path, help="folder of generated images")
    add_out(g, required=True)
    g.add_argument(
        "--csv", type=input_path, help="file,class[,label][,offset] (default SOURCE/stackgen.csv)"
    )
    g.add_argument(
        "--classes",
        type=input_path,
        help="text file of class names, one per line (line number = label, or LABEL<TAB>NAME)",
    )
    g.add_argument("--prompts", action="store_true", help="write prompts.txt + stackgen.csv")
    _add_n(g, "with --prompts: classes; default 100")
    _add_first_classes(g)
    add_seed(g)
    add_overwrite(g, "replace an existing manifest in --out")
    g.set_defaults(func=run_stackgen)

    d = subparsers.add_parser("data", help="inspect the datasets")
    dsub = d.add_subparsers(dest="data_command", metavar="COMMAND")
    d.set_defaults(func=lambda _args: (d.print_help(), 0)[1])
    _register_preview(dsub)
    _register_export(dsub)


def _add_n(p: Any, text: str, default: int | None = None) -> None:
    p.add_argument("--n", type=int_in(1, MAX_IMAGES), default=default, metavar="N", help=text)


def _add_first_classes(p: Any) -> None:
    p.add_argument(
        "--first-classes",
        type=positive_int,
        default=ANIMAL_CLASSES,
        metavar="K",
        help="sample from the first K class indices (default 398: the ImageNet animals)",
    )


def _register_preview(dsub: Any) -> None:
    pv = dsub.add_parser("preview", help="save a grid of examples with labels as a PNG")
    src = pv.add_mutually_exclusive_group()
    src.add_argument(
        "--dataset",
        default="fashion-stackpair",
        choices=[*DATASETS.names(), *CANVAS_CHOICES],
        help="embedded dataset (default fashion-stackpair)",
    )
    src.add_argument("--folder", type=input_path, help="a dataset folder (manifest or ImageFolder)")
    add_out(pv, kind="png", required=True, help="output figure (NAME -> NAME.png)")
    _add_n(pv, "examples (default 16)", 16)
    add_seed(pv)
    pv.add_argument("--split", choices=("train", "test"), default="train", help="for canvases")
    pv.add_argument(
        "--image-size",
        type=int_in(1, MAX_SIDE),
        default=None,
        metavar="S",
        help="for --folder: resize + crop to S x S",
    )
    add_alias(pv, "--size", "--image-size")
    pv.add_argument("--data", type=input_path, default=None, help="Fashion-MNIST folder")
    pv.add_argument(
        "--mark-row", type=non_negative_int, action="append", default=[], help="draw a line"
    )
    pv.set_defaults(func=run_data_preview)


def _register_export(dsub: Any) -> None:
    ex = dsub.add_parser(
        "export", help="write an embedded dataset as 8-bit PNGs + manifest.json (a folder)"
    )
    ex.add_argument("--dataset", required=True, choices=DATASETS.names())
    add_out(ex, required=True)
    _add_n(ex, "images (default 100)", 100)
    add_seed(ex)
    ex.add_argument("--data", type=input_path, default=None, help="Fashion-MNIST folder")
    add_overwrite(ex, "replace an existing manifest")
    ex.set_defaults(func=run_data_export)
