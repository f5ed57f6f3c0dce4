"""STACK-MIX and STACK-GEN datasets built from image folders (the ImageNet path).

Output layout (both builders)::

    OUT/manifest.json        what was built, from what, with which parameters and versions
    OUT/images/000_<class>.png ...

``manifest.json`` has ``format`` (``"camwall-image-dataset/1"``), ``kind`` (``stackmix`` or
``stackgen``), ``class_names`` (labels index into it), ``items`` (one dict per image: ``file``,
``label``, ``class`` and its sources), ``size``, ``channels``, ``seed``, ``split_row``,
``warnings``, ``skipped``, ``ignored`` and ``versions``. :func:`read_image_dataset` reads it.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image

from camwall._versions import versions
from camwall.data.images import (
    list_image_folder,
    load_image,
    preprocess,
    relative,
    sample_indices,
    summarize,
)
from camwall.errors import CamwallError, did_you_mean

__all__ = [
    "MANIFEST",
    "PROMPT_TEMPLATE",
    "build_stackgen",
    "build_stackmix",
    "export_composites",
    "imagenet_categories",
    "write_prompts",
]

MANIFEST = "manifest.json"
FORMAT = "camwall-image-dataset/1"
PROMPT_TEMPLATE = "A photo of {animal} stacked on top of {animal}."
"""The paper's STACK-GEN prompt."""
ANIMAL_CLASSES = 398
"""The first 398 ImageNet-1k classes are the animals."""


def imagenet_categories() -> list[str]:
    """The 1000 human-readable ImageNet-1k class names shipped with torchvision (no download)."""
    return list(torchvision.models.VGG16_Weights.IMAGENET1K_V1.meta["categories"])


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s[:60] or "class"


def _prepare_out(out: Path, overwrite: bool) -> Path:
    if (out / MANIFEST).exists() and not overwrite:
        raise CamwallError(
            f"{out / MANIFEST} already exists; choose another --out or pass --overwrite to "
            "replace it."
        )
    if out.exists() and not out.is_dir():
        raise CamwallError(f"{out}: exists and is not a folder; choose another --out.")
    (out / "images").mkdir(parents=True, exist_ok=True)
    return out


def _write_manifest(
    out: Path,
    kind: str,
    fields: dict[str, Any],
    class_names: Sequence[str],
    items: list[dict[str, Any]],
    notes: Sequence[str] = (),
    skipped: Sequence[dict[str, str]] = (),
    ignored: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
    trailer: dict[str, Any] | None = None,
) -> Path:
    """Write ``out/manifest.json`` (atomically) with the keys in this order: ``format``,
    ``kind``, ``fields``, ``class_names``, ``extra``, ``items``, ``warnings``, ``skipped``,
    ``ignored``, ``versions``, ``trailer``.

    Returns:
        The path of the written manifest.
    """
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "kind": kind,
        **fields,
        "class_names": list(class_names),
        **(extra or {}),
        "items": items,
        "warnings": list(notes),
        "skipped": list(skipped),
        "ignored": list(ignored),
        "versions": versions(),
        **(trailer or {}),
    }
    path = out / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_class_file(path: str | os.PathLike[str]) -> list[str]:
    """Non-empty, stripped lines of a text file (``#`` starts a comment line)."""
    p = Path(path)
    if not p.is_file():
        raise CamwallError(f"{p}: class file not found (one class name per line).")
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    names = [ln for ln in lines if ln and not ln.startswith("#")]
    if not names:
        raise CamwallError(f"{p}: no class names in the file (one per line).")
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise CamwallError(f"{p}: class names listed twice: {', '.join(dup)}.")
    return names


def _pick_two(
    cls: str,
    files: list[Path],
    seed: int,
    label: int,
    skip_bad: bool,
    resize: int,
    crop: int,
    skipped: list[dict[str, str]],
) -> list[tuple[Path, Image.Image, tuple[int, int]]]:
    if len(files) < 2:
        raise CamwallError(
            f"class {cls!r} has {len(files)} image file(s); STACK-MIX needs two different images "
            "of each class. Add images, or leave the class out with --classes FILE."
        )
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + label)
    order = torch.randperm(len(files), generator=g).tolist()
    chosen: list[tuple[Path, Image.Image, tuple[int, int]]] = []
    broken: list[Path] = []
    for k in order:
        try:
            img = load_image(files[k])
        except CamwallError as err:
            if not skip_bad:
                raise CamwallError(
                    f"{err} (class {cls!r}; pass --skip-bad to skip broken files; they are "
                    "then listed in the manifest and on the terminal)"
                ) from None
            broken.append(files[k])
            skipped.append({"file": str(files[k]), "reason": str(err)})
            continue
        chosen.append((files[k], preprocess(img, resize, crop), img.size))
        if len(chosen) == 2:
            return chosen
    raise CamwallError(
        f"class {cls!r} has only {len(chosen)} usable image(s) of {len(files)} files "
        f"({len(broken)} broken: {summarize(broken)}); STACK-MIX needs two."
    )


def _class_pool(
    src: Path,
    all_classes: list[str],
    classes: Sequence[str] | None,
    first_classes: int,
    n: int | None,
) -> tuple[list[int], int]:
    """The class indices to sample from and the number ``n`` to sample (checked)."""
    if classes is not None:
        unknown = [c for c in classes if c not in all_classes]
        if unknown:
            raise CamwallError(
                f"class {unknown[0]!r} (from --classes) is not a subfolder of {src}."
                f"{did_you_mean(unknown[0], all_classes)}"
            )
        pool = [all_classes.index(c) for c in classes]
        n = len(pool) if n is None else n
    else:
        if first_classes < 1:
            raise CamwallError(f"--first-classes must be at least 1, got {first_classes}.")
        pool = list(range(min(first_classes, len(all_classes))))
        n = 100 if n is None else n
    if n < 1:
        raise CamwallError(f"--n must be at least 1, got {n}.")
    if n > len(pool):
        raise CamwallError(
            f"--n {n} classes requested but only {len(pool)} are available in {src} "
            f"({len(all_classes)} class folders); lower --n."
        )
    return pool, n


def _stackmix_item(
    picks: list[tuple[Path, Image.Image, tuple[int, int]]],
    name: str,
    split_row: int,
    crop: int,
    src: Path,
    dst: Path,
    notes: list[str],
) -> dict[str, Any]:
    """Save the composite ``x1[:split_row]`` over ``x2[split_row:]`` as ``dst/name``; note
    upscaled sources in ``notes``; return the item's source fields (paths relative to ``src``)."""
    (p1, a1, s1), (p2, a2, s2) = picks
    comp = np.asarray(a1).copy()
    comp[split_row:] = np.asarray(a2)[split_row:]
    Image.fromarray(comp, mode="RGB").save(dst / name)
    for p, s in ((p1, s1), (p2, s2)):
        if min(s) < crop:
            notes.append(f"{p}: {s[0]}x{s[1]} is smaller than the {crop} crop; upscaled.")
    return {
        "x1": relative(p1, src),
        "x2": relative(p2, src),
        "x1_size": list(s1),
        "x2_size": list(s2),
    }


def _stackmix_items(
    chosen: list[int],
    all_classes: list[str],
    files: list[list[Path]],
    src: Path,
    dst: Path,
    split_row: int,
    crops: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[str]]:
    """One composite per chosen class, saved in ``dst``: ``(items, skipped, notes)``.

    ``crops`` holds ``seed``, ``skip_bad``, ``resize`` and ``crop`` (see :func:`build_stackmix`).
    """
    items: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    notes: list[str] = []
    seed, skip_bad, resize, crop = (crops[k] for k in ("seed", "skip_bad", "resize", "crop"))
    for i, label in enumerate(chosen):
        cls = all_classes[label]
        picks = _pick_two(cls, files[label], seed, label, skip_bad, resize, crop, skipped)
        name = f"images/{i:03d}_{_slug(cls)}.png"
        parts = _stackmix_item(picks, name, split_row, crop, src, dst, notes)
        items.append({"file": name, "label": label, "class": cls, **parts})
    return items, skipped, notes


def build_stackmix(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    n: int | None = None,
    classes: Sequence[str] | None = None,
    first_classes: int = ANIMAL_CLASSES,
    split_row: int = 112,
    seed: int = 0,
    resize: int = 256,
    crop: int = 224,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> Path:
    """Build STACK-MIX from an ImageFolder tree (e.g. ImageNet val in class folders).

    For each sampled class ``c`` two different images ``x1, x2`` are drawn; each is resized
    (shorter side ``resize``) and centre-cropped (``crop``); the composite is
    ``out[:split_row] = x1[:split_row]`` and ``out[split_row:] = x2[split_row:]``, saved as PNG.

    Args:
        source: ImageFolder root; sorted subfolder names give the class indices.
        out: output folder (``manifest.json`` + ``images/``).
        n: number of classes (one image each). Default: 100, or all of ``classes``.
        classes: class folder names to sample from (instead of the first ``first_classes``).
        first_classes: sample from class indices ``0..first_classes-1`` (398: the animals).
        split_row: first row taken from ``x2``.
        seed: seed of the class and image draws.
        resize, crop: the evaluation crop.
        skip_bad: skip undecodable files (listed in ``manifest["skipped"]``) instead of failing.
        overwrite: replace an existing ``manifest.json`` in ``out``.

    Returns:
        The path of the written ``manifest.json``.
    """
    src = Path(source)
    all_classes, files, ignored = list_image_folder(src)
    if not 0 < split_row < crop:
        raise CamwallError(f"--split-row must be in 1..{crop - 1}, got {split_row}.")
    pool, n = _class_pool(src, all_classes, classes, first_classes, n)
    chosen = sorted(pool[i] for i in sample_indices(len(pool), n, seed))
    dst = _prepare_out(Path(out), overwrite)
    crops = {"seed": seed, "skip_bad": skip_bad, "resize": resize, "crop": crop}
    items, skipped, notes = _stackmix_items(chosen, all_classes, files, src, dst, split_row, crops)
    fields = {
        "source": str(src.resolve()),
        "n": n,
        "seed": seed,
        "split_row": split_row,
        "resize": resize,
        "crop": crop,
        "size": [crop, crop],
        "channels": 3,
        "class_pool": "classes file" if classes is not None else f"first {len(pool)} classes",
    }
    trailer = {"display_names": imagenet_categories()} if len(all_classes) == 1000 else None
    rel_ignored = [relative(p, src) for p in ignored]
    return _write_manifest(
        dst, "stackmix", fields, all_classes, items, notes, skipped, rel_ignored, trailer=trailer
    )


# ----------------------------------------------------------------------------- STACK-GEN


def write_prompts(
    out: str | os.PathLike[str],
    classes: Sequence[tuple[int, str]],
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write ``prompts.txt`` (the paper's prompt, one line per class) and a ``stackgen.csv``
    template (``file,class,label,offset``) to fill in after generating the images.

    Args:
        out: output folder.
        classes: ``(label, name)`` pairs.

    Returns:
        ``(prompts_path, csv_path)``.
    """
    dst = Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    prompts, table = dst / "prompts.txt", dst / "stackgen.csv"
    for p in (prompts, table):
        if p.exists() and not overwrite:
            raise CamwallError(f"{p} already exists; choose another --out or pass --overwrite.")
    lines = [PROMPT_TEMPLATE.format(animal=name) for _, name in classes]
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with table.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "class", "label", "offset"])
        for i, (label, name) in enumerate(classes):
            w.writerow([f"{i:03d}_{_slug(name)}.png", name, label, ""])
    return prompts, table


def _parse_offset(raw: str, where: str) -> int | None:
    raw = raw.strip()
    if raw in ("", "center", "centre"):
        return None
    try:
        return int(raw)
    except ValueError:
        raise CamwallError(
            f"{where}: offset {raw!r} is not an integer (pixels along the longer side) or 'center'."
        ) from None


def _read_stackgen_csv(table: Path) -> list[dict[str, str]]:
    """The CSV's rows as dicts keyed by the lower-cased header (blank lines dropped)."""
    if not table.is_file():
        raise CamwallError(
            f"{table}: CSV not found. It lists the generated images: header "
            "'file,class,label,offset' (label and offset optional); see docs/data.md."
        )
    with table.open(newline="", encoding="utf-8") as fh:
        raw_rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    header = [h.strip().lower() for h in raw_rows[0]] if raw_rows else []
    rows = [dict(zip(header, (c.strip() for c in r))) for r in raw_rows[1:]]
    missing = [c for c in ("file", "class") if c not in header]
    if not rows or missing:
        problem = f"the header lacks {missing}" if missing else "no rows below the header"
        raise CamwallError(
            f"{table}: needs a header with at least the columns file,class (optional label, "
            f"offset) and one row per image; {problem}."
        )
    return rows


def _row_label(
    r: dict[str, str], where: str, class_list: Sequence[str] | None, names: list[str]
) -> int:
    """A row's label: its ``label`` column, else the class's line in ``class_list``, else its
    index among the sorted class names ``names`` of the CSV."""
    raw_label = (r.get("label") or "").strip()
    cls = r["class"].strip()
    if not r["file"] or not cls:
        raise CamwallError(f"{where}: empty file or class.")
    if raw_label:
        try:
            label = int(raw_label)
        except ValueError:
            raise CamwallError(f"{where}: label {raw_label!r} is not an integer.") from None
        if label < 0:
            raise CamwallError(f"{where}: label {label} is negative.")
        return label
    if class_list is not None:
        if cls not in class_list:
            raise CamwallError(
                f"{where}: class {cls!r} is not in the class list.{did_you_mean(cls, class_list)}"
            )
        return list(class_list).index(cls)
    return names.index(cls)


def _stackgen_class_names(
    table: Path, entries: list[tuple[int, dict[str, str]]], class_list: Sequence[str] | None
) -> list[str]:
    """Names for labels ``0..max``: ``class_list`` first, then the CSV's classes, else
    ``class_<label>``; refuses a label used for two CSV classes."""
    n_names = max(lbl for lbl, _ in entries) + 1
    if class_list is not None:
        n_names = max(n_names, len(class_list))
    class_names = [
        class_list[i] if class_list is not None and i < len(class_list) else f"class_{i}"
        for i in range(n_names)
    ]
    for label, r in entries:
        cls = r["class"].strip()
        if class_list is None or label >= len(class_list):
            if class_names[label] not in (f"class_{label}", cls):
                raise CamwallError(
                    f"{table}: label {label} is used for two classes, "
                    f"{class_names[label]!r} and {cls!r}."
                )
            class_names[label] = cls
    return class_names


def _stackgen_item(
    r: dict[str, str],
    name: str,
    where: str,
    src: Path,
    dst: Path,
    resize: int,
    crop: int,
    notes: list[str],
) -> dict[str, Any]:
    """Crop the row's image to a square at its offset, resize and centre-crop it, save it as
    ``dst/name``; note an upscaled square in ``notes``; return the item's source fields."""
    path = src / r["file"].strip()
    img = load_image(path)
    w, h = img.size
    side, long = min(w, h), max(w, h)
    off = _parse_offset(r.get("offset") or "", where)
    off = (long - side) // 2 if off is None else off
    if not 0 <= off <= long - side:
        raise CamwallError(
            f"{where}: offset {off} is outside 0..{long - side} for {path} ({w}x{h})."
        )
    box = (0, off, w, off + side) if h > w else (off, 0, off + side, h)
    if side < crop:
        notes.append(f"{path}: {side}x{side} square is smaller than the {crop} crop; upscaled.")
    preprocess(img.crop(box), resize, crop).save(dst / name)
    return {
        "source": r["file"].strip(),
        "source_size": [w, h],
        "offset": off,
        "crop_box": list(box),
    }


def build_stackgen(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    csv_path: str | os.PathLike[str] | None = None,
    class_list: Sequence[str] | None = None,
    resize: int = 256,
    crop: int = 224,
    overwrite: bool = False,
) -> Path:
    """Post-process generated STACK-GEN images: crop each to 1:1 at its offset, resize the
    shorter side to ``resize``, centre-crop ``crop``, save as PNG with a manifest.

    The CSV (default ``SOURCE/stackgen.csv``) has a header and the columns:

    * ``file``: image path relative to ``source``;
    * ``class``: class name;
    * ``label`` (optional): integer class index (e.g. the ImageNet index); if absent or empty,
      the line number of ``class`` in ``class_list``, or else its index among the sorted
      distinct class names of the CSV;
    * ``offset`` (optional): where the square crop starts along the longer side, in pixels
      (rows from the top for a portrait image, columns from the left for a landscape one);
      empty or ``center`` centres it. Square images need no offset.

    Returns:
        The path of the written ``manifest.json``.
    """
    src = Path(source)
    if not src.is_dir():
        raise CamwallError(f"{src}: no such folder (the generated images).")
    table = Path(csv_path) if csv_path is not None else src / "stackgen.csv"
    rows = _read_stackgen_csv(table)
    names = sorted({r["class"].strip() for r in rows})
    entries = [
        (_row_label(r, f"{table}, line {k}", class_list, names), r)
        for k, r in enumerate(rows, start=2)
    ]
    class_names = _stackgen_class_names(table, entries, class_list)
    dst = _prepare_out(Path(out), overwrite)
    items: list[dict[str, Any]] = []
    notes: list[str] = []
    for i, (label, r) in enumerate(entries):
        cls = r["class"].strip()
        name = f"images/{i:03d}_{_slug(cls)}.png"
        parts = _stackgen_item(r, name, f"{table}, line {i + 2}", src, dst, resize, crop, notes)
        items.append({"file": name, "label": label, "class": cls, **parts})
    fields = {
        "source": str(src.resolve()),
        "csv": str(table.resolve()),
        "n": len(items),
        "prompt": PROMPT_TEMPLATE,
        "resize": resize,
        "crop": crop,
        "size": [crop, crop],
        "channels": 3,
    }
    return _write_manifest(dst, "stackgen", fields, class_names, items, notes)


def _export_arrays(images: Any, labels: Any) -> tuple[np.ndarray, list[int]]:
    """Check the images (N x C x H x W, C = 1 or 3, finite) and labels; return uint8
    ``N x H x W x C`` (``round(clamp(x, 0, 1) * 255)``) and the labels as ints."""
    imgs = torch.as_tensor(images).detach().to("cpu", torch.float32)
    if imgs.dim() != 4 or imgs.shape[1] not in (1, 3):
        raise CamwallError(
            f"images must be N x C x H x W with C = 1 or 3, got {tuple(imgs.shape)}."
        )
    if not torch.isfinite(imgs).all():
        raise CamwallError("images contain NaN or infinite values; nothing was written.")
    labs = [int(v) for v in torch.as_tensor(labels).tolist()]
    if len(labs) != len(imgs):
        raise CamwallError(f"{len(imgs)} images but {len(labs)} labels.")
    return (imgs.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), labs


def export_composites(
    images: Any,
    labels: Any,
    class_names: Sequence[str],
    out: str | os.PathLike[str],
    kind: str,
    sources: Sequence[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write in-memory images (float ``N x C x H x W`` in [0, 1], C = 1 or 3) as 8-bit PNGs with
    a manifest, so that :func:`read_image_dataset` reads them back (to within 0.5 / 255).

    Args:
        images, labels: the tensors (e.g. of a :class:`~camwall.data.Composites`).
        class_names: label names.
        out: output folder.
        kind: what the images are (e.g. the dataset name), stored in the manifest.
        sources: per-image dicts stored with each item.
        extra: more manifest fields (e.g. seed).

    Returns:
        The path of the written ``manifest.json``.
    """
    u8, labs = _export_arrays(images, labels)
    dst = _prepare_out(Path(out), overwrite)
    items: list[dict[str, Any]] = []
    for i, (arr, lab) in enumerate(zip(u8, labs)):
        name = class_names[lab] if 0 <= lab < len(class_names) else str(lab)
        file = f"images/{i:04d}_{_slug(name)}.png"
        pil = Image.fromarray(arr[:, :, 0], mode="L") if arr.shape[2] == 1 else Image.fromarray(arr)
        pil.save(dst / file)
        item: dict[str, Any] = {"file": file, "label": lab, "class": name}
        if sources is not None:
            item["source"] = sources[i]
        items.append(item)
    fields = {"n": len(items), "size": list(u8.shape[1:3]), "channels": int(u8.shape[3])}
    return _write_manifest(dst, kind, fields, class_names, items, extra=extra)
