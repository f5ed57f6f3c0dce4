"""Speed and peak memory of camwall.cams against pytorch-grad-cam 1.5.7, side by side, in one run.

Model: the paper's walled VGG16 (random weights, eval mode), 224 x 224 inputs, target layer
``features.29`` (the last ReLU, 256 x 14 x 14). Every measurement runs in a fresh subprocess so
that its peak memory (``ru_maxrss``, or ``torch.cuda.max_memory_allocated`` on CUDA) is its own.
Each subprocess builds the same model and input from the seed, does one untimed warm-up forward,
then times the CAM computation (best of ``--repeats``).

Rows:
- ``gradient + eigencam``: camwall computes gradcam, hirescam, gradcampp, xgradcam, layercam and
  eigencam in one call; grad-cam computes them one by one (sum of its single-method times).
- one row per method, each library computing that method alone.

Usage::

    .venv/bin/python benchmarks/cam_speed.py                   # defaults: a few minutes on 2 cores
    .venv/bin/python benchmarks/cam_speed.py --methods gradcam,eigencam --repeats 5
    .venv/bin/python benchmarks/cam_speed.py --methods all --batch 2

The markdown table is printed and written to ``benchmarks/results/cam_speed.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

GRADIENT = ["gradcam", "hirescam", "gradcampp", "xgradcam", "layercam"]
NEW = ["gradcamelementwise", "eigengradcam", "kpcacam", "fem", "randomcam", "finercam"]
NEW += ["shapleycam", "fullgrad", "cam"]  # cam's peer is torchcam 0.5 (grad-cam has no CAM)
#: peers: torchcam 0.5 (smoothgradcampp, sscam, iscam, same number of samples), grad-cam SESS
NOISE = ["smoothgradcampp", "sscam", "iscam", "sess"]
TORCHCAM = {"cam", "smoothgradcampp", "sscam", "iscam"}
ALL = [*GRADIENT, "eigencam", "scorecam", "ablationcam", *NEW, *NOISE]  # opticam: no peer
DEFAULT = [*GRADIENT, "eigencam", "ablationcam", "scorecam"]
UP_TO_SIGN = ("eigencam", "eigengradcam")
#: methods whose maps are not compared here: randomcam's draws differ (grad-cam uses numpy's
#: global RNG; tests/cams/test_cams_methods.py feeds it our draws), torchcam normalizes CAM
#: differently (its raw map is compared in the tests)
NO_DIFF = {"randomcam": "different draws", "cam": "peer: torchcam; raw maps in tests"}
NO_DIFF |= dict.fromkeys(("smoothgradcampp", "sscam", "iscam"), "peer: torchcam; raw maps in tests")
NO_DIFF["sscam"] = "peer: torchcam; different draws; raw maps in tests"
NO_DIFF["smoothgradcampp"] = NO_DIFF["sscam"]
GROUP = "gradient+eigencam"


def build_model(seed: int, arch: str = "walled-vgg16") -> tuple[nn.Module, str]:
    """The paper's walled VGG16 (or torchvision resnet18) with random weights, and its layer."""
    torch.manual_seed(seed)
    if arch in ("resnet18", "resnet50"):
        import torchvision

        return getattr(torchvision.models, arch)(weights=None).eval(), "layer4"
    if arch == "walled-resnet18":
        from camwall.walls import default_target_layer, walled_torchvision

        model = walled_torchvision("resnet18", ["layer3:rows=4:"], seed=seed).eval()
        return model, default_target_layer(model)
    try:
        from camwall.walls import default_target_layer, walled_vgg16
    except ImportError:
        return local_walled_vgg16(), "29"
    model = walled_vgg16(num_classes=1000, walled=True)
    return model, default_target_layer(model)


def model_source() -> str:
    try:
        from camwall.walls import walled_vgg16  # noqa: F401
    except ImportError:
        return "local copy in benchmarks/cam_speed.py (camwall.walls not importable)"
    return "camwall.walls.walled_vgg16"


def local_walled_vgg16(num_classes: int = 1000) -> nn.Sequential:
    """The architecture of /work/shared/spec/paper.md, used until camwall.walls lands.

    torchvision's VGG16 features without the last max-pool, last conv 512 -> 256, no average
    pool, then Flatten and the classifier; the first Linear ignores feature rows 5..13.
    """
    cfg: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"]
    cfg += [512, 512, 512, "M", 512, 512, 256]
    layers: list[nn.Module] = []
    channels = 3
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            assert isinstance(item, int)
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    first = nn.Linear(256 * 14 * 14, 4096)
    with torch.no_grad():
        first.weight.view(4096, 256, 14, 14)[:, :, 5:, :] = 0
    classifier = (
        first,
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(4096, num_classes),
    )
    return nn.Sequential(*layers, nn.Flatten(), *classifier).eval()


# --------------------------------------------------------------------------- worker side
def reference_class(name: str) -> Any:
    import pytorch_grad_cam as pgc

    return {
        "gradcam": pgc.GradCAM,
        "hirescam": pgc.HiResCAM,
        "gradcampp": pgc.GradCAMPlusPlus,
        "xgradcam": pgc.XGradCAM,
        "layercam": pgc.LayerCAM,
        "eigencam": pgc.EigenCAM,
        "scorecam": pgc.ScoreCAM,
        "ablationcam": pgc.AblationCAM,
        "gradcamelementwise": pgc.GradCAMElementWise,
        "eigengradcam": pgc.EigenGradCAM,
        "kpcacam": pgc.KPCA_CAM,
        "fem": pgc.FEM,
        "randomcam": pgc.RandomCAM,
        "finercam": pgc.FinerCAM,
        "shapleycam": pgc.ShapleyCAM,
        "fullgrad": pgc.FullGrad,
    }[name]


def run_gradcam_lib(
    model: nn.Module, layer_name: str, x: torch.Tensor, name: str, options: dict[str, Any]
) -> torch.Tensor:
    layer = model.get_submodule(layer_name)
    if name in TORCHCAM:
        return run_torchcam(model, layer_name, x, name, options)
    if name == "sess":
        from pytorch_grad_cam.sess import SESS

        cam = SESS(model, [layer], num_scales=options.get("sess_num_scales", 12))
        try:
            return torch.from_numpy(cam(x, targets=None))
        finally:
            cam.base_cam.activations_and_grads.release()
    cam = reference_class(name)(model, [layer])
    try:
        return torch.from_numpy(cam(input_tensor=x, targets=None))
    finally:  # ShapleyCAM's and FinerCAM's own `with` exit raise in 1.5.7: release by hand
        hooks = getattr(cam, "base_cam", cam).activations_and_grads
        hooks.gradients, hooks.activations = [], []
        hooks.release()


#: torchcam 0.5's class for each method it has (cam_speed.py compares the TORCHCAM ones; the
#: method table, benchmarks/method_table.py, all of them)
TORCHCAM_CLASSES = {
    "cam": "CAM",
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMpp",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "scorecam": "ScoreCAM",
    "smoothgradcampp": "SmoothGradCAMpp",
    "sscam": "SSCAM",
    "iscam": "ISCAM",
}
#: torchcam methods that take the gradient of the scores of the caller's forward pass
TORCHCAM_GRAD = {"gradcam", "gradcampp", "xgradcam", "layercam", "smoothgradcampp"}


def run_torchcam(
    model: nn.Module, layer_name: str, x: torch.Tensor, name: str, options: dict[str, Any]
) -> torch.Tensor:
    """torchcam 0.5's method (forward + extraction; its own normalization, then upsampled);
    the noise methods and scorecam with camwall's number of samples and chunk size."""
    import torch.nn.functional as F
    from torchcam import methods as tc

    kwargs: dict[str, Any] = {}
    if name in ("smoothgradcampp", "sscam", "iscam"):
        kwargs["num_samples"] = options[f"{name}_samples"]
    if name in ("sscam", "iscam", "scorecam"):
        kwargs["batch_size"] = options.get(f"{name}_chunk", 32)
    cls = getattr(tc, TORCHCAM_CLASSES[name])
    with cls(model, layer_name, input_shape=tuple(x.shape[1:]), **kwargs) as extractor:
        with torch.set_grad_enabled(name in TORCHCAM_GRAD):
            out = model(x)
        cam = extractor(class_idx=out.argmax(dim=1).tolist(), scores=out)[0]
    return F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear")[:, 0]


def worker(spec: dict[str, Any]) -> None:
    """One measurement: build, warm up, time, save maps and figures to spec['out']."""
    import contextlib
    import io

    from safetensors.torch import save_file

    from camwall.cams import compute_cams

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    model, layer = build_model(spec["seed"], spec["arch"])
    model = model.to(device).eval()
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    x = torch.rand(spec["batch"], 3, 224, 224, generator=gen).to(device)
    with torch.no_grad():
        model(x)  # warm-up (allocator, oneDNN primitives); not timed
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    methods: list[str] = spec["methods"]
    maps: dict[str, torch.Tensor] = {}
    libs = ["camwall", "gradcam"] if spec["lib"] == "both" else [spec["lib"]]
    best = {lib: float("inf") for lib in libs}
    for i in range(spec["repeats"]):
        for lib in libs if i % 2 == 0 else libs[::-1]:  # "both": alternate, ABBA...
            start = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):  # grad-cam's tqdm bars
                if lib == "camwall":
                    maps = compute_cams(model, x, layer, methods, **spec["options"])
                else:
                    maps = {
                        m: run_gradcam_lib(model, layer, x, m, spec["options"]) for m in methods
                    }
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[lib] = min(best[lib], time.perf_counter() - start)
    if spec["lib"] == "gradcam" and methods[0] in UP_TO_SIGN and len(methods) == 1:
        maps[methods[0] + "_flipped"] = flipped_eigen(model, layer, x, methods[0])
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    save_file({k: v.float().cpu().contiguous() for k, v in maps.items()}, spec["out"] + ".st")
    seconds = best if spec["lib"] == "both" else best[spec["lib"]]
    Path(spec["out"] + ".json").write_text(json.dumps({"seconds": seconds, "peak_mib": peak}))


def flipped_eigen(model: nn.Module, layer_name: str, x: torch.Tensor, name: str) -> torch.Tensor:
    """grad-cam's EigenCAM / EigenGradCAM with the other SVD sign (up-to-sign check; not timed)."""
    from pytorch_grad_cam.base_cam import BaseCAM
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    class Flipped(BaseCAM):
        def __init__(self, model: nn.Module, target_layers: list[nn.Module]) -> None:
            super().__init__(model, target_layers, uses_gradients=name == "eigengradcam")

        def get_cam_image(self, *args: Any) -> Any:
            m = args[3] if name == "eigencam" else args[3] * args[4]
            return -get_2d_projection(m)

    with Flipped(model, [model.get_submodule(layer_name)]) as cam:
        return torch.from_numpy(cam(input_tensor=x, targets=None))


# --------------------------------------------------------------------------- driver side
HEAVY = ("scorecam", "ablationcam", "fullgrad", "sscam", "iscam", "sess")


def noise_options(args: argparse.Namespace) -> dict[str, Any]:
    """The same number of samples (and forward chunk) for camwall and torchcam."""
    n = args.samples
    opts: dict[str, Any] = {"sess_num_scales": args.sess_scales}
    for name in ("smoothgradcampp", "sscam", "iscam"):
        opts[f"{name}_samples"] = n
    opts["sscam_chunk"] = opts["iscam_chunk"] = args.chunk
    return opts


def measure(
    lib: str, methods: list[str], args: argparse.Namespace, tmp: str, round_: int = 0
) -> dict[str, Any]:
    out = os.path.join(tmp, f"{lib}-{'-'.join(methods)}-{round_}")
    heavy = any(m in HEAVY for m in methods)
    spec = {
        "lib": lib,
        "methods": methods,
        "batch": args.batch,
        "seed": args.seed,
        "arch": args.model,
        "repeats": args.heavy_repeats if heavy else args.repeats,
        "threads": args.threads,
        "device": args.device,
        "out": out,
        "options": noise_options(args),
    }
    subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], check=True)
    from safetensors.torch import load_file

    result = json.loads(Path(out + ".json").read_text())
    result["maps"] = load_file(out + ".st")
    if lib == "both":
        times = result["seconds"]
        print(f"  both     {','.join(methods):45s} camwall {times['camwall']:.3f} s, "
              f"grad-cam {times['gradcam']:.3f} s (interleaved)", flush=True)  # fmt: skip
    else:
        print(f"  {lib:8s} {','.join(methods):45s} {result['seconds']:8.3f} s "
              f"{result['peak_mib']:8.0f} MiB", flush=True)  # fmt: skip
    return result


def measure_pair(
    method: str, args: argparse.Namespace, tmp: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both libraries on one method, so that a change of machine load does not bias the ratio.

    Every method: one fresh process per library (its time, peak memory and maps). Cheap methods:
    also one process timing both libraries interleaved (ABBA...). scorecam and ablationcam:
    ``--rounds`` rounds of fresh processes in alternating order instead. Each library keeps its
    best time and worst peak.
    """
    results: dict[str, list[dict[str, Any]]] = {"camwall": [], "gradcam": []}
    rounds = args.rounds if method in HEAVY else 1
    for r in range(rounds):
        order = ("camwall", "gradcam") if r % 2 == 0 else ("gradcam", "camwall")
        for lib in order:
            results[lib].append(measure(lib, [method], args, tmp, r))
    ours, ref = merge(results["camwall"]), merge(results["gradcam"])
    if method not in HEAVY or method in NOISE:  # noise methods: also interleaved (loaded CPUs)
        both = measure("both", [method], args, tmp)["seconds"]
        ours["seconds"] = min(ours["seconds"], both["camwall"])
        ref["seconds"] = min(ref["seconds"], both["gradcam"])
    return ours, ref


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best time, worst peak memory over runs of one library."""
    best = min(runs, key=lambda run: run["seconds"])
    return {**best, "peak_mib": max(run["peak_mib"] for run in runs)}


def max_diff(ours: torch.Tensor, ref: dict[str, torch.Tensor], name: str) -> float:
    if name in NO_DIFF:
        return float("nan")
    diff = float((ours - ref[name]).abs().max())
    if name in UP_TO_SIGN and name + "_flipped" in ref:  # compared up to sign, per image
        per = (ours - ref[name]).abs().flatten(1).amax(1)
        flip = (ours - ref[name + "_flipped"]).abs().flatten(1).amax(1)
        diff = float(torch.minimum(per, flip).max())
    return diff


def note_of(name: str) -> str:
    if name in UP_TO_SIGN:
        return "up to sign"
    return NO_DIFF.get(name, "")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def add_shared_arguments(parser: argparse.ArgumentParser) -> None:
    """The options this script shares with method_table.py: noise samples, chunk, sess scales
    (read by :func:`noise_options`), threads and device."""
    parser.add_argument("--samples", type=int, default=2, help="noise/integration samples")
    parser.add_argument("--chunk", type=int, default=64, help="sscam/iscam inputs per forward")
    parser.add_argument("--sess-scales", type=int, default=2, help="sess scales (grad-cam: 12)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--methods", default=",".join(DEFAULT), help="comma list, 'all', or 'new' (the 9 added)"
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (best is reported)")
    parser.add_argument(
        "--heavy-repeats", type=int, default=1, help="timed runs for scorecam and ablationcam"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="fresh-process rounds for scorecam and ablationcam, alternating the library order",
    )
    parser.add_argument("--no-group", action="store_true", help="skip the gradient+eigencam row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model",
        default="walled-vgg16",
        choices=["walled-vgg16", "resnet18", "walled-resnet18"],
        help="walled-vgg16 (the paper's) or torchvision resnet18 (target layer4; cam needs it)",
    )
    add_shared_arguments(parser)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cam_speed.md"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    if args.methods == "new":
        methods = NEW
    elif args.methods == "noise":
        methods = NOISE
    else:
        methods = ALL if args.methods == "all" else [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in methods if m not in ALL]
    if unknown:
        parser.error(f"unknown or unsupported methods {unknown}; choose from {ALL}")
    source = model_source()
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        singles: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for m in methods:
            print(f"{m}:", flush=True)
            singles[m] = measure_pair(m, args, tmp)
        group = [m for m in [*GRADIENT, "eigencam"] if m in methods]
        if len(group) > 1 and not args.no_group:
            print(f"{GROUP}:", flush=True)
            ours = measure("camwall", group, args, tmp)
            both = measure("both", group, args, tmp)["seconds"]
            ours["seconds"] = min(ours["seconds"], both["camwall"])
            ref_seconds = min(sum(singles[m][1]["seconds"] for m in group), both["gradcam"])
            ref_peak = max(singles[m][1]["peak_mib"] for m in group)
            diff = max(max_diff(ours["maps"][m], singles[m][1]["maps"], m) for m in group)
            rows.append(
                (f"{GROUP} ({len(group)} methods)", ours["seconds"], ref_seconds, diff,
                 ours["peak_mib"], ref_peak, "one call vs one by one")
            )  # fmt: skip
        for m in methods:
            ours, ref = singles[m]
            diff = max_diff(ours["maps"][m], ref["maps"], m)
            rows.append((m, ours["seconds"], ref["seconds"], diff, ours["peak_mib"],
                         ref["peak_mib"], note_of(m)))  # fmt: skip
    elapsed = time.perf_counter() - started
    text = report(rows, args, source, elapsed)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"written to {args.out}")
    return 0


def report(
    rows: list[tuple[Any, ...]], args: argparse.Namespace, source: str, elapsed: float
) -> str:
    from importlib.metadata import version

    lines = [
        "# CAM speed: camwall vs pytorch-grad-cam / torchcam",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {machine()}; device: {args.device}; torch threads: {args.threads}",
        (
            f"- versions: python {platform.python_version()}, torch {torch.__version__}, "
            f"grad-cam {version('grad-cam')}, camwall {version('camwall')}"
        ),
        (
            f"- model: walled VGG16 ({source}), random weights (seed {args.seed}), eval mode; "
            f"input {args.batch} x 3 x 224 x 224; target layer: its last ReLU (256 x 14 x 14)"
            if args.model == "walled-vgg16"
            else f"- model: torchvision resnet18, random weights (seed {args.seed}), eval mode; "
            f"input {args.batch} x 3 x 224 x 224; target layer: layer4 (512 x 7 x 7)"
            + ("; a wall after layer3 (rows 4:)" if args.model == "walled-resnet18" else "")
        ),
        (
            f"- peers: grad-cam 1.5.7; torchcam 0.5 for {', '.join(sorted(TORCHCAM))}. "
            f"Noise methods: {args.samples} samples each, sscam/iscam {args.chunk} inputs per "
            f"forward in both libraries; sess: {args.sess_scales} scales in both"
        ),
        f"- load average (1, 5, 15 min) at start / end: {LOAD_START} / {os.getloadavg()}",
        (
            f"- timing: after one untimed warm-up forward, best of {args.repeats} runs in a fresh "
            f"process per library plus best of {args.repeats} interleaved pairs (ABBA) in one "
            f"more process; {', '.join(HEAVY)}: {args.heavy_repeats} run per process, "
            f"{args.rounds} rounds of fresh processes in alternating order. Peak: the worst."
        ),
        (
            "- peak memory: ru_maxrss of that process (includes the ~1 GB of model weights), or "
            "torch.cuda.max_memory_allocated on CUDA"
        ),
        f"- command: `{' '.join(['python', 'benchmarks/cam_speed.py', *sys.argv[1:]])}`",
        f"- total wall time of the run: {elapsed:.0f} s",
        "",
        (
            "| method | camwall (s) | grad-cam (s) | speed-up | max abs diff | camwall peak (MiB) "
            "| grad-cam peak (MiB) | note |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, ours, ref, diff, peak_ours, peak_ref, note in rows:
        shown = "n/a" if diff != diff else f"{diff:.1e}"  # NaN: not compared
        lines.append(
            f"| {name} | {ours:.3f} | {ref:.3f} | {ref / ours:.1f}x | {shown} | "
            f"{peak_ours:.0f} | {peak_ref:.0f} | {note} |"
        )
    lines.append("")
    return "\n".join(lines)


LOAD_START = os.getloadavg()

if __name__ == "__main__":
    sys.exit(main())
