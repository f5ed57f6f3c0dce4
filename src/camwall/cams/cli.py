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

from camwall.cams._base import METHODS
from camwall.cams._engine import CamEngine
from camwall.errors import CamwallError
from camwall.runtime import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``cam`` sub-command."""
    p = subparsers.add_parser(
        "cam",
        help="compute CAM saliency maps for image files with a checkpoint",
        description="Compute CAM saliency maps for image files with a saved camwall checkpoint.",
    )
    p.add_argument("checkpoint", help="checkpoint NAME (NAME.safetensors + NAME.json)")
    p.add_argument("images", nargs="+", help="image files (resized to the model's input size)")
    p.add_argument(
        "--methods",
        default="gradcam,hirescam",
        help=f"comma-separated, or 'all'; choose from: {', '.join(METHODS.names())}",
    )
    p.add_argument("--layer", help="target layer (dotted name); default: the model's own")
    p.add_argument("--target", type=int, help="class index (default: the predicted class)")
    p.add_argument(
        "--normalize",
        choices=("auto", "imagenet", "none"),
        default="auto",
        help="input normalization; auto = ImageNet mean/std for 3-channel inputs",
    )
    p.add_argument("--out", default="cams", help="output folder (default: ./cams)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    from PIL import Image
    from safetensors.torch import save_file

    from camwall.walls import default_target_layer, load_model

    methods = METHODS.names() if args.methods == "all" else args.methods.split(",")
    for name in methods:
        METHODS.get(name.strip())  # unknown names fail before the model is loaded
    methods = [m.strip() for m in methods]
    model, meta = load_model(args.checkpoint, device=args.device)
    shape = meta.get("input_shape")
    if not shape or len(shape) != 3:
        raise CamwallError(
            f"{args.checkpoint}: the metadata has no input_shape (C, H, W); re-save the model "
            f"with camwall.walls.save_model."
        )
    raw = _load_inputs(args.images, (int(shape[0]), int(shape[1]), int(shape[2])))
    x = raw
    normalize = args.normalize == "imagenet" or (args.normalize == "auto" and raw.shape[1] == 3)
    if normalize:
        mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
        std = torch.tensor(IMAGENET_STD)[:, None, None]
        x = (raw - mean) / std
    layer = args.layer or meta.get("target_layer") or default_target_layer(model)
    targets = None if args.target is None else [args.target] * len(args.images)
    with CamEngine(model, layer) as engine:
        maps = engine(x.to(args.device), methods, targets)
        with torch.no_grad():
            predicted = engine.run_model(x.to(args.device)).argmax(1).tolist()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    stems = _unique_stems(args.images)
    for i, stem in enumerate(stems):
        tensors[f"{stem}/input"] = raw[i].contiguous()
        for name in methods:
            cam = maps[name][i].cpu()
            tensors[f"{stem}/{name}"] = cam.contiguous()
            Image.fromarray(_overlay(raw[i], cam)).save(out / f"{stem}_{name}.png")
    save_file(tensors, str(out / "maps.safetensors"))
    manifest = {
        "checkpoint": str(args.checkpoint),
        "layer": layer,
        "methods": methods,
        "images": [str(p) for p in args.images],
        "keys": stems,
        "targets": targets if targets is not None else predicted,
        "predicted": predicted,
        "normalized": "imagenet" if normalize else "none",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    for stem, pred in zip(stems, predicted):
        print(f"{stem}: predicted class {pred}")
    print(f"wrote {len(stems) * len(methods)} maps to {out}/ (maps.safetensors, PNG overlays)")
    return 0


def _unique_stems(paths: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems
