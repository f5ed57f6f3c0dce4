"""AblationCAM from a layer whose tail torch.fx cannot cut cleanly, against grad-cam.

- A ViT target layer inside the last block (timm ``vit_small_patch16_224``, ``blocks.11.norm1``,
  384 token channels): the tail captures the block input. Through the compat class with a
  custom ablation layer that zeroes a token channel (grad-cam's protocol, on both sides, so
  that both ablate the same values: grad-cam's own AblationLayerVit ablates to ``min - 1e7``).
- A torchvision ``fasterrcnn_resnet50_fpn`` on ``model.backbone`` with AblationLayerFasterRCNN
  (1280 FPN channels). fx cannot trace ``GeneralizedRCNN.forward``: camwall re-runs the model
  with the backbone's forward skipped (only the input transform runs before it), and grad-cam
  replaces the backbone by its ablation layer; both run the RPN and box head per batch, the
  limit of this case.

Columns: camwall; camwall with the whole model re-run (a no-op forward hook on the model stops
the graph split: the ViT's path before the captured tails); grad-cam 1.5.7; one process,
interleaved, best of ``--repeats``; max abs difference from grad-cam. Random weights.

    python benchmarks/tail_speed.py [--repeats 2] [--threads 2]

Writes ``benchmarks/results/tail_speed.md``, a row at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import timm
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "compat"))

from compat_models import resnet50_detector  # noqa: E402

import camwall.compat.pytorch_grad_cam as cw  # noqa: E402
from camwall.compat.pytorch_grad_cam.utils import model_targets as cw_t  # noqa: E402
from camwall.compat.pytorch_grad_cam.utils import reshape_transforms as cw_r  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "tail_speed.md"


def zeroing(base: type) -> type:
    """An ablation layer class on ``base`` that sets token channel ``indices[i]`` to 0."""

    def __call__(self, x):  # type: ignore[no-untyped-def]
        out = self.activations
        for i in range(out.size(0)):
            out[i, :, self.indices[i]] = 0
        return out

    return type(f"Zeroing{base.__name__}", (base,), {"__call__": __call__})


@contextlib.contextmanager
def whole_model(model: torch.nn.Module) -> Iterator[None]:
    handle = model.register_forward_hook(lambda *args: None)
    try:
        yield
    finally:
        handle.remove()


def timed(fn: Callable[[], np.ndarray], times: list[float]) -> np.ndarray:
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
    return out


def measure(name: str, ours: Callable, whole: Callable, theirs: Callable, repeats: int) -> str:
    runs: dict[str, list[float]] = {"ours": [], "whole": [], "theirs": []}
    fns = {"ours": ours, "whole": whole, "theirs": theirs}
    maps: dict[str, np.ndarray] = {}
    for i in range(repeats):
        order = ["ours", "whole", "theirs"] if i % 2 == 0 else ["theirs", "whole", "ours"]
        for key in order:
            maps[key] = timed(fns[key], runs[key])
    best = {k: min(v) for k, v in runs.items()}
    diff = float(np.abs(maps["ours"] - maps["theirs"]).max())
    same = float(np.abs(maps["ours"] - maps["whole"]).max())
    return (
        f"| {name} | {best['ours']:.2f} | {best['whole']:.2f} | {best['theirs']:.2f} | "
        f"{best['theirs'] / best['ours']:.1f}x | {best['whole'] / best['ours']:.1f}x | "
        f"{diff:.1e} | {same:.1e} | {maps['theirs'].max():.2f} |"
    )


def vit_row(gc, gc_t, repeats: int) -> str:
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", num_classes=10).eval()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    layer = model.blocks[11].norm1
    ours_layer, theirs_layer = zeroing(cw.AblationLayerVit), zeroing(gc.AblationLayerVit)

    def grid(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:, :].reshape(t.size(0), 14, 14, t.size(2)).permute(0, 3, 1, 2)

    def ours() -> np.ndarray:
        cam = cw.AblationCAM(model, [layer], grid, ablation_layer=ours_layer(), batch_size=64)
        return cam(x, [cw_t.ClassifierOutputTarget(3)])

    def whole() -> np.ndarray:
        with whole_model(model):
            return ours()

    def theirs() -> np.ndarray:
        cam = gc.AblationCAM(model, [layer], grid, ablation_layer=theirs_layer(), batch_size=64)
        return cam(x, [gc_t.ClassifierOutputTarget(3)])

    name = "timm vit_small_patch16_224, 1 x 224, blocks.11.norm1 (384 channels), zeroing layer"
    return measure(name, ours, whole, theirs, repeats)


def detector_row(gc, gc_t, gc_r, repeats: int) -> str:
    model = resnet50_detector()
    x = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)[0]
    labels, boxes = out["labels"].numpy(), out["boxes"].numpy()

    def ours() -> np.ndarray:
        cam = cw.AblationCAM(
            model, [model.backbone], cw_r.fasterrcnn_reshape_transform,
            ablation_layer=cw.AblationLayerFasterRCNN(), batch_size=256,
        )  # fmt: skip
        return cam(x, [cw_t.FasterRCNNBoxScoreTarget(labels, boxes)])

    def whole() -> np.ndarray:
        with whole_model(model):
            return ours()

    def theirs() -> np.ndarray:
        cam = gc.AblationCAM(
            model, [model.backbone], gc_r.fasterrcnn_reshape_transform,
            ablation_layer=gc.AblationLayerFasterRCNN(), batch_size=256,
        )  # fmt: skip
        return cam(x, [gc_t.FasterRCNNBoxScoreTarget(labels, boxes)])

    name = (
        f"fasterrcnn_resnet50_fpn, 1 x 64 x 80, backbone (1280 FPN channels), "
        f"AblationLayerFasterRCNN, {len(boxes)} boxes"
    )
    return measure(name, ours, whole, theirs, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import pytorch_grad_cam as gc
    from pytorch_grad_cam.utils import model_targets as gc_t
    from pytorch_grad_cam.utils import reshape_transforms as gc_r

    weights = gc.AblationCAM.get_cam_weights  # float64 sums, as tests/compat (FPN offsets)
    gc.AblationCAM.get_cam_weights = lambda self, *a: weights(self, *a).astype(np.float64)
    header = [
        "# AblationCAM from a layer fx cannot cut cleanly: camwall, its whole-model path, grad-cam",
        "",
        (
            f"`python benchmarks/tail_speed.py --repeats {args.repeats} --threads "
            f"{args.threads}`; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch "
            f"{torch.__version__}, {platform.processor() or platform.machine()}, "
            f"{args.threads} threads, CPU, random weights, load average at start "
            f"{tuple(round(v, 1) for v in os.getloadavg())}."
        ),
        "Best of the repeats (interleaved); times in seconds. `whole`: camwall re-running the",
        "whole model per batch, the target layer's forward skipped (the ViT's path before the",
        "captured tails; on the detector only the input transform runs before the backbone, so",
        "`whole` and grad-cam also run just the RPN and box head). `grad-cam max` > 0.5: the",
        "comparison is not trivial.",
        "",
        (
            "| case | camwall s | camwall whole s | grad-cam s | vs grad-cam | vs whole | "
            "max abs diff from grad-cam | from whole | grad-cam max |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    OUT.write_text("\n".join(header) + "\n")
    for row_fn in (lambda: vit_row(gc, gc_t, args.repeats),
                   lambda: detector_row(gc, gc_t, gc_r, args.repeats)):  # fmt: skip
        row = row_fn()
        print(row, flush=True)
        with OUT.open("a") as f:
            f.write(row + "\n")


if __name__ == "__main__":
    main()
