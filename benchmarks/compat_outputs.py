"""Detection and segmentation through camwall.compat against pytorch-grad-cam 1.5.7.

One process, both libraries on the same model and input, timed interleaved (camwall, grad-cam,
grad-cam, camwall, ...; best of ``--repeats``), with the max abs difference of their maps.
grad-cam's EigenCAM sign is given camwall's rule (docs/cam-methods.md); its AblationCAM sums
``w_k A_k`` in float64 (tests/compat/test_compat_detection.py says why). Random weights.

    python benchmarks/compat_outputs.py [--repeats 3] [--threads 2] [--ablation]

Rows are appended to ``benchmarks/results/compat_outputs.md`` as they are measured.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "compat"))

from compat_models import mobilenet_detector, signed_projection, tiny_detector  # noqa: E402

import camwall.compat.pytorch_grad_cam as cw  # noqa: E402
from camwall.compat.pytorch_grad_cam.utils import model_targets as cw_t  # noqa: E402
from camwall.compat.pytorch_grad_cam.utils import reshape_transforms as cw_r  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "compat_outputs.md"


def gradcam_modules():
    import pytorch_grad_cam as gc
    from pytorch_grad_cam import base_cam, eigen_cam
    from pytorch_grad_cam.utils import model_targets as gc_t
    from pytorch_grad_cam.utils import reshape_transforms as gc_r

    base_cam.get_2d_projection = signed_projection
    eigen_cam.get_2d_projection = signed_projection
    weights = gc.AblationCAM.get_cam_weights
    gc.AblationCAM.get_cam_weights = lambda self, *a: weights(self, *a).astype(np.float64)
    return gc, gc_t, gc_r


def run(lib, name: str, model, layers, reshape, targets, x, *args) -> np.ndarray:
    """One map: ``lib.<name>(model, layers, reshape, *args)(x, targets)``."""
    return getattr(lib, name)(model, layers, reshape, *args)(x, targets)


def best(fn: Callable[[], np.ndarray], times: list[float]) -> np.ndarray:
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
    return out


def measure(name: str, ours: Callable, theirs: Callable, repeats: int) -> str:
    t_ours: list[float] = []
    t_theirs: list[float] = []
    for i in range(repeats):
        first, second = (ours, theirs) if i % 2 == 0 else (theirs, ours)
        a = best(first, t_ours if first is ours else t_theirs)
        b = best(second, t_theirs if second is theirs else t_ours)
        if first is theirs:
            a, b = b, a
    diff = float(np.abs(a - b).max())
    co, gc = min(t_ours), min(t_theirs)
    return f"| {name} | {co:.3f} | {gc:.3f} | {gc / co:.2f}x | {diff:.1e} | {b.max():.2f} |"


class Out(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def detection_rows(gc, gc_t, gc_r, repeats: int, ablation: bool):
    model = mobilenet_detector()
    x = torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)[0]
    labels, boxes = out["labels"].numpy(), out["boxes"].numpy()
    ct, gt = (
        [cw_t.FasterRCNNBoxScoreTarget(labels, boxes)],
        [gc_t.FasterRCNNBoxScoreTarget(labels, boxes)],
    )
    fpn = (cw_r.fasterrcnn_reshape_transform, gc_r.fasterrcnn_reshape_transform)
    block = list(model.backbone.body.children())[-2]
    tag = f"fasterrcnn_mobilenet_v3_large_fpn, 1 x 3 x 128 x 160, {len(boxes)} boxes"
    for name, layers, (rc, rg) in [
        ("EigenCAM", [model.backbone], fpn),
        ("GradCAM", [block], (None, None)),
    ]:
        where = "backbone (FPN dict)" if rc else "body[-2]"
        yield measure(
            f"{tag}: {name} on {where}",
            functools.partial(run, cw, name, model, layers, rc, ct, x),
            functools.partial(run, gc, name, model, layers, rg, gt, x),
            repeats,
        )
    if ablation:
        tiny = tiny_detector()
        y = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            o = tiny(y)[0]
        ct = [cw_t.FasterRCNNBoxScoreTarget(o["labels"].numpy(), o["boxes"].numpy())]
        gt = [gc_t.FasterRCNNBoxScoreTarget(o["labels"].numpy(), o["boxes"].numpy())]
        yield measure(
            "tiny Faster R-CNN (5 x 256-channel FPN), 1 x 3 x 64 x 64: AblationCAM with "
            "AblationLayerFasterRCNN",
            functools.partial(
                run, cw, "AblationCAM", tiny, [tiny.backbone], fpn[0], ct, y,
                cw.AblationLayerFasterRCNN(), 256,
            ),
            functools.partial(
                run, gc, "AblationCAM", tiny, [tiny.backbone], fpn[1], gt, y,
                gc.AblationLayerFasterRCNN(), 256,
            ),
            repeats,
        )  # fmt: skip


def segmentation_rows(gc, gc_t, repeats: int):
    torch.manual_seed(0)
    seg = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=3, aux_loss=False
    ).eval()
    x = torch.rand(2, 3, 96, 80, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        masks = (seg(x)["out"].argmax(1) == 1).numpy().astype(np.float32)
    ct = [cw_t.SemanticSegmentationTarget(1, m) for m in masks]
    gt = [gc_t.SemanticSegmentationTarget(1, m) for m in masks]
    wrapped = Out(seg)
    for name in ("GradCAM", "HiResCAM", "EigenCAM"):
        yield measure(
            f"deeplabv3_resnet50, 2 x 3 x 96 x 80: {name} on backbone.layer4",
            # camwall takes the model's dict output as it is; grad-cam needs the wrapper
            functools.partial(run, cw, name, seg, [seg.backbone.layer4], None, ct, x),
            functools.partial(run, gc, name, wrapped, [seg.backbone.layer4], None, gt, x),
            repeats,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--ablation", action="store_true", help="also the tiny detector's AblationCAM"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gc, gc_t, gc_r = gradcam_modules()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    header = [
        "# camwall.compat vs pytorch-grad-cam 1.5.7: detection and segmentation",
        "",
        (
            f"`python benchmarks/compat_outputs.py --repeats {args.repeats} --threads "
            f"{args.threads}{' --ablation' if args.ablation else ''}`; torch {torch.__version__}, "
            f"{platform.machine()}, {args.threads} threads, CPU, random weights."
        ),
        "Best of the repeats (interleaved); times in seconds; `grad-cam max` > 0.5: not trivial.",
        "",
        "| case | camwall s | grad-cam s | speed-up | max abs diff | grad-cam max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    OUT.write_text("\n".join(header) + "\n")
    rows = itertools.chain(
        detection_rows(gc, gc_t, gc_r, args.repeats, args.ablation),
        segmentation_rows(gc, gc_t, args.repeats),
    )
    for row in rows:  # each row written as soon as it is measured
        print(row, flush=True)
        with OUT.open("a") as f:
            f.write(row + "\n")


if __name__ == "__main__":
    main()
