"""Every class of camwall.compat.pytorch_grad_cam against pytorch-grad-cam 1.5.7, side by side.

One fresh process per class builds torchvision resnet18 (random weights, seed 0, eval mode) and
one input, then calls the camwall class and grad-cam's class, both with their defaults and the
same constructor arguments, interleaved (camwall, grad-cam, grad-cam, camwall, ...), best of
``--repeats`` after one untimed call each (one timed call each, no warm-up call, for the
classes in :data:`HEAVY`). Columns: wall time of each,
the speed-up (grad-cam's time over camwall's), the peak memory of each call above the level
before it (``method_table.timed_peak``: resident set sampled every millisecond on CPU,
``torch.cuda.max_memory_allocated`` on CUDA) and the max abs difference of the maps. grad-cam's
eigen projections are given camwall's sign rule (``docs/cam-methods.md``); RandomCAM's maps are
random by design and not compared.

    .venv/bin/python benchmarks/compat_speed.py                 # every class, 1 x 3 x 224 x 224
    .venv/bin/python benchmarks/compat_speed.py --classes GradCAM ScoreCAM --size 112

The markdown table goes to ``benchmarks/results/compat_speed.md`` (``--out``), rewritten after
every class; each class's JSON is kept beside it (``compat_speed/NAME.json``), so an interrupted
run resumes (``--fresh`` measures again). Runs on CUDA unchanged (``--device``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "compat"))

from compat_models import signed_projection  # noqa: E402

from method_table import timed_peak  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "compat_speed.md"

#: Every CAM class grad-cam 1.5.7 exports, in its README's order.
CLASSES = [
    "GradCAM", "HiResCAM", "GradCAMElementWise", "GradCAMPlusPlus", "XGradCAM", "LayerCAM",
    "EigenCAM", "EigenGradCAM", "KPCA_CAM", "ScoreCAM", "AblationCAM", "FullGrad", "ShapleyCAM",
    "FEM", "FinerCAM", "RefineCAM", "SESS", "SegEigenCAM", "RandomCAM",
]  # fmt: skip

#: Classes whose grad-cam call runs the model hundreds of times: one timed call per library.
HEAVY = {"ScoreCAM", "AblationCAM", "SESS"}

#: Classes that take more than the last layer: target layers by name, extra constructor args.
LAYERS = {"RefineCAM": ["layer3", "layer4"]}


def extra_args(name: str, lib: Any) -> dict[str, Any]:
    """Constructor arguments beyond ``model, target_layers`` (the same for both libraries)."""
    if name in ("FinerCAM", "SESS"):
        return {"base_method": lib.GradCAM}
    return {}


def gradcam_lib() -> Any:
    """grad-cam with camwall's sign rule for its eigen projections (docs/cam-methods.md)."""
    import pytorch_grad_cam as gc
    from pytorch_grad_cam import base_cam, eigen_cam, eigen_grad_cam, seg_eigen_cam

    for module in (base_cam, eigen_cam, eigen_grad_cam, seg_eigen_cam):
        if hasattr(module, "get_2d_projection"):
            module.get_2d_projection = signed_projection
    return gc


def build(size: int, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval().to(device)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    return model, x


def one_call(lib: Any, name: str, model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """``lib.<name>(model, layers, **extra)(x, targets)``: class 281's map, B x H x W."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget as GcTarget

    from camwall.compat.pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    target = GcTarget if lib.__name__ == "pytorch_grad_cam" else ClassifierOutputTarget
    layers = [getattr(model, n)[-1] for n in LAYERS.get(name, ["layer4"])]
    cam = getattr(lib, name)(model, layers, **extra_args(name, lib))
    scope = cam if hasattr(cam, "__enter__") else contextlib.nullcontext(cam)  # RefineCAM
    with scope as c:
        return c(input_tensor=x, targets=[target(281)] * x.shape[0])


def worker(name: str, size: int, repeats: int, device: str, path: Path) -> None:
    """Measure one class and write its JSON to ``path``."""
    import camwall.compat.pytorch_grad_cam as cw

    gc = gradcam_lib()
    dev = torch.device(device)
    model, x = build(size, dev)
    with torch.no_grad():
        model(x)  # warm-up of the kernels both libraries use
    runs = 1 if name in HEAVY else repeats
    if name not in HEAVY:  # and of each library's first call (lazy inits, layouts)
        one_call(cw, name, model, x)
        one_call(gc, name, model, x)
    times: dict[str, list[float]] = {"camwall": [], "grad-cam": []}
    cpu: dict[str, list[float]] = {"camwall": [], "grad-cam": []}
    peaks: dict[str, list[float]] = {"camwall": [], "grad-cam": []}
    maps: dict[str, np.ndarray] = {}
    for i in range(runs):
        order = [("camwall", cw), ("grad-cam", gc)]
        for side, lib in order if i % 2 == 0 else order[::-1]:
            start = time.process_time()
            seconds, peak, value = timed_peak(lambda lib=lib: one_call(lib, name, model, x), dev)
            cpu[side].append(time.process_time() - start)
            times[side].append(seconds)
            peaks[side].append(peak)
            maps[side] = value
    diff = None if name == "RandomCAM" else float(np.abs(maps["camwall"] - maps["grad-cam"]).max())
    result = {
        "class": name,
        "size": size,
        "runs": runs,
        "seconds": {k: min(v) for k, v in times.items()},
        "cpu_seconds": {k: min(v) for k, v in cpu.items()},
        "peak_mib": {k: max(v) for k, v in peaks.items()},
        "max_abs_diff": diff,
        "grad_cam_max": float(maps["grad-cam"].max()),
        "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "device": device,
    }
    path.write_text(json.dumps(result, indent=1))


def row(r: dict[str, Any]) -> str:
    s, c, m = r["seconds"], r["cpu_seconds"], r["peak_mib"]
    diff = "n/a (random)" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
    return (
        f"| {r['class']} | {s['camwall']:.3f} | {s['grad-cam']:.3f} | "
        f"{s['grad-cam'] / s['camwall']:.2f}x | {c['grad-cam'] / c['camwall']:.2f}x | "
        f"{m['camwall']:.0f} | {m['grad-cam']:.0f} | {diff} | {r['runs']} | {r['load']:.1f} |"
    )


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = [
        "# camwall.compat vs pytorch-grad-cam 1.5.7: every class",
        "",
        (
            f"`python benchmarks/compat_speed.py --size {args.size} --repeats {args.repeats}`; "
            f"torchvision resnet18 (random weights), 1 x 3 x {args.size} x {args.size}, target "
            f"`layer4[-1]` (RefineCAM: `layer3[-1]`, `layer4[-1]`; FinerCAM, SESS over GradCAM); "
            f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, "
            f"{args.device}. Times in seconds (best of the runs, interleaved), peak memory in MiB "
            f"above the level before the call; `CPU speed-up`: the same ratio in process CPU time "
            f"(steadier than wall time on a shared CPU); `load`: the 1-minute load average after "
            f"the class."
        ),
        "",
        (
            "| class | camwall s | grad-cam s | speed-up | CPU speed-up | camwall MiB "
            "| grad-cam MiB | max abs diff | runs | load |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    return "\n".join(head + [row(r) for r in results]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", nargs="+", default=CLASSES, choices=CLASSES)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--fresh", action="store_true", help="measure again the classes kept")
    p.add_argument("--one", choices=CLASSES, help=argparse.SUPPRESS)  # the worker
    args = p.parse_args(argv)
    folder = args.out.with_suffix("")
    if args.one:
        worker(args.one, args.size, args.repeats, args.device, folder / f"{args.one}.json")
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.classes:
        path = folder / f"{name}.json"
        if args.fresh or not path.exists():
            cmd = [sys.executable, __file__, "--one", name, "--size", str(args.size)]
            cmd += ["--repeats", str(args.repeats), "--device", args.device, "--out", str(args.out)]
            subprocess.run(cmd, check=True)
        results.append(json.loads(path.read_text()))
        args.out.write_text(report(results, args))
        print(row(results[-1]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
