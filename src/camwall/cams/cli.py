"""``camwall cam``: compute CAMs for image files with a saved checkpoint.

Example::

    camwall cam runs/fashion-vgg/walled img1.png img2.png --methods gradcam,hirescam --out cams/

writes ``cams/maps.safetensors`` (one ``H x W`` float32 map per ``IMAGE_STEM/METHOD`` key, plus
``IMAGE_STEM/input``), a PNG overlay per image and method, and ``cams/manifest.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from camwall._cliargs import (
    MAX_SIDE,
    add_alias,
    add_device,
    add_out,
    input_path,
    non_negative_int,
    torch_device,
)
from camwall.cams import DEFAULT_METHODS
from camwall.cams._base import METHODS
from camwall.cams._engine import CamEngine
from camwall.errors import CamwallError
from camwall.runtime import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["register", "run_cam"]

ORDER = 20  # place in `camwall --help`


def register(subparsers: Any) -> None:
    """Add the ``cam`` sub-command."""
    p = subparsers.add_parser(
        "cam",
        help="compute CAM saliency maps for image files with a checkpoint",
        description="Compute CAM saliency maps for image files with a saved camwall checkpoint.",
    )
    p.add_argument(
        "checkpoint", type=input_path, help="checkpoint NAME (NAME.safetensors + NAME.json)"
    )
    p.add_argument(
        "images", nargs="+", type=input_path, help="image files (resized to the model's input size)"
    )
    p.add_argument(
        "--methods",
        default="gradcam,hirescam",
        help=f"comma-separated, or 'all' ({', '.join(DEFAULT_METHODS)}); choose from: "
        f"{', '.join(METHODS.names())}",
    )
    p.add_argument(
        "--target-layer",
        action="append",
        metavar="NAME",
        help="CAM target layer, dotted name (default: the model's); repeat it for several "
        "layers, aggregated as pytorch-grad-cam (mean of the per-layer maps)",
    )
    add_alias(p, "--layer", "--target-layer")
    p.add_argument(
        "--target", type=non_negative_int, help="class index (default: the predicted class)"
    )
    p.add_argument(
        "--aug-smooth",
        action="store_true",
        help="test-time augmentation: mean map over horizontal flips x input factors 0.9, 1, 1.1",
    )
    p.add_argument(
        "--eigen-smooth",
        action="store_true",
        help="first principal component of the weighted channels instead of their sum",
    )
    p.add_argument(
        "--normalize",
        choices=("auto", "imagenet", "none"),
        default="auto",
        help="input normalization; auto = ImageNet mean/std for 3-channel inputs",
    )
    add_out(p, "cams")
    add_device(p, default="cpu")
    p.set_defaults(func=run_cam)


def _load_inputs(paths: list[str], shape: tuple[int, int, int]) -> Tensor:
    from PIL import Image

    from camwall.data.images import load_image, to_tensor

    channels, height, width = shape
    if channels not in (1, 3):
        raise CamwallError(f"the checkpoint's input has {channels} channels; only 1 or 3 work.")
    mode = "L" if channels == 1 else "RGB"
    images = []
    for path in paths:
        img = load_image(path, mode=mode).resize((width, height), Image.Resampling.BILINEAR)
        images.append(to_tensor(img))
    return torch.stack(images)


def _overlay(image: Tensor, cam: Tensor) -> Any:
    """Report layer: an RGB uint8 array blending the image with a jet colormap of the map."""
    import numpy as np
    from matplotlib import colormaps

    heat = colormaps["jet"](cam.numpy())[..., :3]
    img = image.permute(1, 2, 0).numpy()
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return (255 * (0.5 * heat + 0.5 * img)).round().astype(np.uint8)


def run_cam(args: argparse.Namespace) -> int:
    """Check everything, compute every map, and only then write the output folder."""
    methods = _parse_methods(args.methods)
    eigen, aug = (
        bool(getattr(args, "eigen_smooth", False)),
        bool(getattr(args, "aug_smooth", False)),
    )
    _check_smooth(methods, eigen)
    device = torch_device(args.device)
    model, meta = _load_checkpoint(args.checkpoint, device)
    shape = _input_shape(args.checkpoint, meta)
    raw = _load_inputs([str(p) for p in args.images], shape)
    normalize = args.normalize == "imagenet" or (args.normalize == "auto" and shape[0] == 3)
    if normalize and shape[0] != 3:
        raise CamwallError(
            f"--normalize imagenet needs 3-channel input; {args.checkpoint} takes {shape[0]} "
            "channel(s). Use --normalize none or auto."
        )
    x = _imagenet(raw) if normalize else raw
    layer = _layers(args.target_layer) or meta.get("target_layer") or _default_layer(model)
    with CamEngine(model, layer) as engine:
        predicted = _predict(engine, x.to(device), args.checkpoint, shape, args.target)
        targets = None if args.target is None else [args.target] * len(args.images)
        maps = engine(x.to(device), methods, targets, eigen_smooth=eigen, aug_smooth=aug)
    stems = _unique_stems([str(p) for p in args.images])
    manifest = {
        "checkpoint": str(args.checkpoint),
        "layer": layer,
        "methods": methods,
        "images": [str(p) for p in args.images],
        "keys": stems,
        "targets": targets if targets is not None else predicted,
        "predicted": predicted,
        "normalized": "imagenet" if normalize else "none",
        "aug_smooth": aug,
        "eigen_smooth": eigen,
    }
    _write_outputs(Path(args.out), raw, maps, methods, stems, manifest)
    for stem, pred in zip(stems, predicted):
        print(f"{stem}: predicted class {pred}")
    print(f"wrote {len(stems) * len(methods)} maps to {args.out}/ (maps.safetensors, PNG overlays)")
    return 0


def _parse_methods(text: str) -> list[str]:
    """``all`` (the default methods) or a comma list of names, each checked first."""
    methods = list(DEFAULT_METHODS) if text == "all" else [m.strip() for m in text.split(",")]
    for name in methods:
        METHODS.get(name)
    return methods


def _layers(given: Any) -> str | list[str] | None:
    """``--target-layer`` as given: None, one name, or a list of several names."""
    if given is None or isinstance(given, str):
        return given
    names = list(given)
    return names[0] if len(names) == 1 else names


def _check_smooth(methods: list[str], eigen: bool) -> None:
    """``--eigen-smooth`` applies to methods whose map is a sum of channels."""
    if not eigen:
        return
    bad = [name for name in methods if not METHODS.get(name).eigen_smooth]
    if bad:
        raise CamwallError(
            f"--eigen-smooth does not apply to {', '.join(bad)} (their maps are not weighted "
            f"sums of channels); drop it or choose other --methods."
        )


def _load_checkpoint(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``load_model``; a checkpoint whose JSON cannot rebuild its model is a user error."""
    from camwall.walls import load_model

    try:
        return load_model(path, device=device)
    except (RuntimeError, TypeError, ValueError) as err:
        if isinstance(err, CamwallError):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CamwallError(
            f"{path}: the checkpoint's JSON does not rebuild a working model ({first}); "
            "re-save it with camwall.walls.save_model."
        ) from None


def _input_shape(path: Path, meta: dict[str, Any]) -> tuple[int, int, int]:
    """The checkpoint's ``input_shape``: three positive ints ``(C, H, W)``, C in {1, 3}."""
    shape: Any = meta.get("input_shape")
    ints = isinstance(shape, list | tuple) and len(shape) == 3
    ints = ints and all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
    if not ints or not (shape[0] in (1, 3) and 1 <= min(shape[1:]) <= max(shape[1:]) <= MAX_SIDE):
        raise CamwallError(
            f"{path}: input_shape in the JSON must be [C, H, W] with C 1 or 3 and sides 1 to "
            f"{MAX_SIDE}, got {shape!r}; re-save the model with camwall.walls.save_model."
        )
    return int(shape[0]), int(shape[1]), int(shape[2])


def _default_layer(model: torch.nn.Module) -> str:
    from camwall.walls import default_target_layer

    return default_target_layer(model)


def _imagenet(raw: Tensor) -> Tensor:
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (raw - mean) / std


def _predict(
    engine: CamEngine, x: Tensor, path: Path, shape: tuple[int, ...], target: int | None
) -> list[int]:
    """Predicted classes; a model that fails on ``input_shape`` or a ``--target`` out of range
    is a user error (the checkpoint's JSON or the argument is wrong)."""
    try:
        with torch.no_grad():
            logits = engine.run_model(x)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CamwallError(
            f"{path}: the model fails on its recorded input_shape {list(shape)} ({first}); "
            "fix input_shape in the JSON or re-save the model."
        ) from None
    classes = logits.shape[1]
    if target is not None and target >= classes:
        raise CamwallError(
            f"--target {target}: the model has {classes} classes (0..{classes - 1})."
        )
    return [int(c) for c in logits.argmax(1).tolist()]


def _write_outputs(
    out: Path,
    raw: Tensor,
    maps: dict[str, Tensor],
    methods: list[str],
    stems: list[str],
    manifest: dict[str, Any],
) -> None:
    """Encode every file in memory first (PNG overlays, maps, manifest), then write them: a
    failure while encoding leaves no half-written folder."""
    import io

    from PIL import Image
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {}
    blobs: dict[str, bytes] = {}
    for i, stem in enumerate(stems):
        tensors[f"{stem}/input"] = raw[i].contiguous()
        for name in methods:
            cam = maps[name][i].cpu()
            tensors[f"{stem}/{name}"] = cam.contiguous()
            png = io.BytesIO()
            Image.fromarray(_overlay(raw[i], cam)).save(png, format="PNG")
            blobs[f"{stem}_{name}.png"] = png.getvalue()
    blobs["maps.safetensors"] = save(tensors)
    blobs["manifest.json"] = json.dumps(manifest, indent=2).encode("utf-8")
    out.mkdir(parents=True, exist_ok=True)
    for file_name, data in blobs.items():
        (out / file_name).write_bytes(data)


def _unique_stems(paths: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems
