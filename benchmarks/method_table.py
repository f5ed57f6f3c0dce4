"""Every native CAM method against its peers and its physical limit, side by side in one run.

Models: torchvision resnet50 (random weights, eval mode) at 224 x 224, batch 4, target
``layer4``; the paper's walled VGG16 (:func:`camwall.walls.walled_vgg16`) at 224 x 224, batch 1,
its default target layer. Peers: pytorch-grad-cam 1.5.7, torchcam 0.5 and captum 0.9 (its
``LayerGradCam``), each where it has the method (helpers shared with ``cam_speed.py``).

Columns:
- ``camwall``: the time of ``compute_cams`` for the method alone.
- ``limit``: the bare passes the method cannot avoid, batched as camwall batches them, with the
  parameters frozen and the graph starting at the target layer (as camwall's engine), and in
  camwall's memory format (``camwall.cams._pass.channels_last_default``, unless the method
  asks plain inputs; see :func:`limit_passes`): one forward (activation methods), plus one
  backward to the target layer (gradient methods), plus the tail forwards of all B x K
  ablated copies (ablationcam, through the model's part after the layer), the B x K masked
  forwards (scorecam; x samples for sscam and iscam), the noisy forwards and backwards
  (smoothgradcampp), the optimisation steps (opticam). ``camwall / limit`` is how far the
  method is from it.
- each peer's time, ``speed-up`` (the fastest peer's time over camwall's; also in process CPU
  time, ``time.process_time``, steadier than wall time on a shared CPU) and peak memory
  (camwall's and the fastest peer's): on CUDA ``torch.cuda.max_memory_allocated`` above the
  memory held before the call; on CPU the peak resident set above the level before the call
  (sampled every millisecond; ``malloc_trim`` first, so that memory freed by an earlier run is
  not counted as free room for the next one).
- tensor peaks (camwall's and the fastest peer's; :func:`tensor_peak`): one more, untimed call
  of each column faster than ``--tensor-peak-under`` seconds, the peak of live tensors in the
  profiler's allocation events. The resident set of the same passes varies by 10-20 MiB from
  run to run with what glibc keeps; the tensor peak is the same on every run.

Timing: one fresh process per (model, method) builds the model and input, warms up (the
peers' imports, one forward and backward), then times
camwall, the limit and the peers interleaved (ABC, CBA, ...), best of ``--repeats``, the peak
memory measured during the same runs; the heavy rows (``cam_speed.HEAVY``) time every column
once, interleaved, then camwall ``--heavy-repeats - 1`` more times. Runs on CUDA unchanged
(``--device``, default: CUDA when present).

Usage::

    .venv/bin/python benchmarks/method_table.py            # the full table (long on a CPU)
    .venv/bin/python benchmarks/method_table.py --quick    # small inputs, four methods
    .venv/bin/python benchmarks/method_table.py --models resnet50 --methods ablationcam

The markdown table is printed and written to ``benchmarks/results/method_table.md`` (``--out``)
and ``method_table.json`` beside it, both rewritten after every row; each row's JSON (with its
setting, load average and the git commit) is kept in ``--results`` (default: ``--out`` without
``.md``), so a killed run resumes where it stopped (``--fresh`` measures again). Rows whose
peer is infeasible at full size on a CPU run a reduced setting, the same on every side
(:data:`REDUCED`), with a full-size estimate in the note.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import io
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from camwall.modelstate import held

sys.path.insert(0, str(Path(__file__).parent))
import cam_speed  # the shared helpers: models, peer runners, machine

#: (model, size, batch) of the full table and of ``--quick``
MODELS = {"resnet50": ("resnet50", 224, 4), "walled-vgg16": ("walled-vgg16", 224, 1)}
QUICK_MODELS = {"resnet50": ("resnet50", 32, 2), "walled-vgg16": ("walled-vgg16", 224, 1)}
QUICK_METHODS = ["gradcam", "fem", "cam", "ablationcam"]
QUICK_SKIP = {("walled-vgg16", "ablationcam")}  # grad-cam: 256 VGG16 forwards at 224
#: rollout and legrad need a vision transformer's attention: not on these models
SKIPPED = {"rollout", "legrad"}
PEERS = ("grad-cam", "torchcam", "captum")
GRAD_CAM_EXTRA = {"sess"}  # run by cam_speed.run_gradcam_lib, not by reference_class
FORWARD_ONLY = {"eigencam", "kpcacam", "fem", "randomcam", "cam"}
MASKED = {"scorecam": 1, "sscam": "sscam_samples", "iscam": "iscam_samples"}
#: Rows whose peer is infeasible at full size on a small CPU: the same reduced setting on every
#: side (camwall, the limit, the peers), stated in the table with the full-size estimate (the
#: measured time scaled by batch x pixels x samples: the work of the masked forwards).
#: grad-cam's ScoreCAM on resnet50 at 4 x 224 x 224 is 8192 full forwards; torchcam's SS-CAM
#: with its default 35 samples 35 x that.
REDUCED: dict[tuple[str, str], dict[str, int]] = {
    ("resnet50", "scorecam"): {"batch": 1, "size": 64},
    ("resnet50", "sscam"): {"batch": 1, "size": 64, "samples": 1},
    ("resnet50", "iscam"): {"batch": 1, "size": 64, "samples": 1},
    ("resnet50", "ablationcam"): {"batch": 1, "size": 112},
    ("resnet50", "sess"): {"batch": 1},
    ("walled-vgg16", "sscam"): {"samples": 1},
    ("walled-vgg16", "iscam"): {"samples": 1},
}
#: peers (and the limit) of these rows are timed once; camwall best of --repeats
HEAVY = set(cam_speed.HEAVY)


def peers_of(name: str) -> list[str]:
    """The peers that have the method."""
    found = []
    with contextlib.suppress(KeyError):
        cam_speed.reference_class(name)
        found.append("grad-cam")
    if name in GRAD_CAM_EXTRA:
        found.append("grad-cam")
    if name in cam_speed.TORCHCAM_CLASSES:
        found.append("torchcam")
    if name == "gradcam":
        found.append("captum")
    return found


# --------------------------------------------------------------------------- the limit
def _layer_output(model: nn.Module, layer: str, x: torch.Tensor, grad: bool) -> tuple[Any, Any]:
    """``(logits, A)`` of one forward pass with the target layer's output recorded.

    ``grad``: the graph starts at ``A`` (made a leaf that requires grad), or at ``x`` where
    ``x.requires_grad``; with the parameters frozen (:func:`camwall.modelstate.held`) nothing
    before the layer is recorded, the bare work of a backward to the layer."""
    store: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        if grad and not out.requires_grad:
            out.requires_grad_(True)
        store.append(out)

    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        with torch.set_grad_enabled(grad):
            logits = model(x)
    finally:
        handle.remove()
    return logits, store[0]


def _backward(logits: torch.Tensor, wrt: torch.Tensor, twice: bool = False) -> None:
    """One backward pass of the summed top scores to ``wrt`` (twice: a second derivative)."""
    score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    (g,) = torch.autograd.grad(score, wrt, create_graph=twice)
    if twice and g.requires_grad:
        torch.autograd.grad(g, wrt, grad_outputs=wrt.detach(), allow_unused=True)


def _rows(run: Callable[[torch.Tensor], Any], row: torch.Tensor, total: int, chunk: int) -> None:
    """``total`` rows through ``run`` in chunks of ``chunk`` (copies of one prepared row, in the
    row's memory format)."""
    like = row[None]
    fmt = torch.channels_last if like.dim() == 4 and _is_channels_last(like) else None
    full = row.expand(chunk, *row.shape).contiguous(memory_format=fmt or torch.contiguous_format)
    for start in range(0, total, chunk):
        run(full[: min(chunk, total - start)])


def _is_channels_last(t: torch.Tensor) -> bool:
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _grad_pass(model: nn.Module, layer: str, x: torch.Tensor, to: str, twice: bool) -> Any:
    """One forward and one backward of ``x`` to the target layer (``to="layer"``: the graph
    starts at the layer) or to the input (``to="input"``); returns the layer's output. Call it
    inside :func:`camwall.modelstate.held` (parameters frozen)."""
    inputs = x.clone().requires_grad_(to == "input")
    logits, a = _layer_output(model, layer, inputs, True)
    _backward(logits, inputs if to == "input" else a, twice)
    return a


def limit_passes(
    name: str, model: nn.Module, layer: str, x: torch.Tensor, opts: dict[str, Any]
) -> Callable[[], None] | None:
    """The bare passes ``name`` must do on ``x`` (see the module docstring) as a callable, or
    ``None`` where the table gives no limit (sess: its patches depend on its scores)."""
    from camwall.cams import METHODS
    from camwall.cams._pass import channels_last_default
    from camwall.cams._tail import find_tail

    if name == "sess":
        return None
    cls = METHODS.get(name)
    b = x.shape[0]
    tail = find_tail(model, layer).fn
    if cls.channels_last_ok and x.dim() == 4 and channels_last_default(x):
        x = x.contiguous(memory_format=torch.channels_last)  # camwall's layout for x

    def run() -> None:
        with held(model):  # as camwall's engine: parameters frozen
            passes()

    def passes() -> None:
        if cls.needs_gradient or cls.needs_hvp or name == "opticam":
            a = _grad_pass(model, layer, x, "layer", cls.needs_hvp)
        elif cls.needs_bias_gradients:
            a = _grad_pass(model, layer, x, "input", False)
        else:
            with torch.no_grad():
                _, a = _layer_output(model, layer, x, False)
        k = a.shape[1]
        with torch.no_grad():
            if name == "ablationcam" and tail is not None:
                _rows(tail, a[0].detach(), b * k, opts["ablationcam_chunk"])
            if name in MASKED:
                times = 1 if name == "scorecam" else opts[str(MASKED[name])]
                _rows(model, x[0], b * k * times, opts[f"{name}_chunk"])
        if name == "finercam" and tail is not None:  # the finer score's pass through the tail
            t = a.detach().requires_grad_(True)
            _backward(tail(t), t)
        if name == "smoothgradcampp":
            noisy = opts["smoothgradcampp_samples"] * b
            chunk = opts["smoothgradcampp_chunk"]
            _rows(lambda rows: _grad_pass(model, layer, rows, "layer", False), x[0], noisy, chunk)
        for _ in range(opts["opticam_iters"] - 1 if name == "opticam" else 0):
            _grad_pass(model, layer, x, "input", False)

    return run


# --------------------------------------------------------------------------- worker side
def run_captum(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """captum 0.9's LayerGradCam (ReLU, upsampled to the input), targets the argmax."""
    from captum.attr import LayerAttribution, LayerGradCam

    with torch.no_grad():
        target = model(x).argmax(dim=1)
    maps = LayerGradCam(model, model.get_submodule(layer)).attribute(
        x, target=target, relu_attributions=True
    )
    return LayerAttribution.interpolate(maps, tuple(x.shape[-2:]), "bilinear")[:, 0]


def _rss() -> int:
    """Resident bytes of this process (Linux /proc; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _trim() -> None:
    """Give freed heap memory back to the OS (glibc), so the next run's peak starts level."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def timed_peak(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    """``(seconds, peak MiB above the level before the call, fn's value)`` of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        value = fn()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return seconds, (torch.cuda.max_memory_allocated() - before) / 2**20, value
    _trim()
    base = peak = _rss()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.001):
            peak = max(peak, _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        value = fn()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    return seconds, (max(peak, _rss()) - base) / 2**20, value


def tensor_peak(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak MiB of live tensors above the level before one call of ``fn``.

    On CPU: the running sum of the profiler's allocation events (``profile_memory``), in time
    order; every tensor torch's allocator hands out, none of the allocator's cache nor of
    oneDNN's own scratch memory. Unlike the resident set it does not depend on what glibc kept
    from earlier runs, so it is the same on every run of the same passes. On CUDA:
    ``max_memory_allocated``, as in :func:`timed_peak`.
    """
    if device.type == "cuda":
        return timed_peak(fn, device)[1]
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    now = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        now += e.nbytes()
        peak = max(peak, now)
    return peak / 2**20


def runners(spec: dict[str, Any], model: nn.Module, layer: str, x: torch.Tensor) -> dict[str, Any]:
    """``{column: callable or None}``: camwall, the limit and each peer that has the method."""
    from camwall.cams import compute_cams

    name, opts = spec["method"], spec["options"]
    out: dict[str, Any] = {
        "camwall": lambda: compute_cams(model, x, layer, name, **opts),
        "limit": limit_passes(name, model, layer, x, opts),
    }
    for peer in peers_of(name):
        if peer == "grad-cam":
            out[peer] = lambda: cam_speed.run_gradcam_lib(model, layer, x, name, opts)
        elif peer == "torchcam":
            out[peer] = lambda: cam_speed.run_torchcam(model, layer, x, name, opts)
        else:
            out[peer] = lambda: run_captum(model, layer, x)
    return out


def worker(spec: dict[str, Any]) -> None:
    """One (model, method): build, warm up, time every column interleaved; JSON to spec['out']."""
    from camwall.cams import CamEngine

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    model, layer = cam_speed.build_model(spec["seed"], spec["arch"])
    model = model.to(device).eval()
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    x = torch.rand(spec["batch"], 3, spec["size"], spec["size"], generator=gen).to(device)
    columns = {k: v for k, v in runners(spec, model, layer, x).items() if v is not None}
    result: dict[str, dict[str, Any]] = {k: {"seconds": math.inf, "peak_mib": 0.0} for k in columns}
    names = list(columns)
    maps: dict[str, Any] = {}
    load = os.getloadavg()
    _warm_up(model, layer, x)
    if spec["method"] not in HEAVY:
        _timed_runs(columns, result, names, spec["repeats"], device, maps)
    else:  # every column once, interleaved; then camwall again (its first call warms up)
        _timed_runs(columns, result, names, 1, device, maps)
        again = spec["heavy_repeats"] - 1
        _timed_runs(columns, result, ["camwall"], again, device, maps)
    _tensor_peaks(columns, result, device, spec.get("tensor_peak_under", 0.0))
    info = CamEngine(model, layer).info["tail"] if spec["method"] in TAIL_METHODS else ""
    out = {
        "columns": result,
        "tail": info,
        "diff": _grad_cam_diff(spec["method"], maps),
        "load": [load, os.getloadavg()],
    }
    Path(spec["out"]).write_text(json.dumps(out))


def _warm_up(model: nn.Module, layer: str, x: torch.Tensor) -> None:
    """First-call costs out of the timed runs: the peers' imports, one forward and backward
    (plain and channels-last: oneDNN builds its primitives on first use)."""
    import captum.attr  # noqa: F401
    import pytorch_grad_cam  # noqa: F401
    import torchcam.methods  # noqa: F401

    inputs = [x] + ([x.contiguous(memory_format=torch.channels_last)] if x.dim() == 4 else [])
    with held(model):
        for inp in inputs:
            _grad_pass(model, layer, inp, "layer", False)


def _tensor_peaks(
    columns: dict[str, Callable[[], Any]],
    result: dict[str, dict[str, Any]],
    device: torch.device,
    under: float,
) -> None:
    """One more call of every column whose best time is under ``under`` seconds, untimed, for
    its :func:`tensor_peak` (``result[column]["tensor_mib"]``); the slower ones are left out."""
    for key, fn in columns.items():
        if "error" in result[key] or result[key]["seconds"] >= under:
            continue
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            result[key]["tensor_mib"] = tensor_peak(fn, device)


def _grad_cam_diff(name: str, maps: dict[str, Any]) -> float | None:
    """Max abs difference of camwall's final maps from grad-cam's, where comparable."""
    if set(maps) != {"camwall", "grad-cam"} or name in cam_speed.NO_DIFF:
        return None
    if name in cam_speed.UP_TO_SIGN:
        return None
    ref = maps["grad-cam"].float().cpu()
    return float((maps["camwall"][name].float().cpu() - ref).abs().max())


def _timed_runs(
    columns: dict[str, Callable[[], Any]],
    result: dict[str, dict[str, Any]],
    names: list[str],
    repeats: int,
    device: torch.device,
    maps: dict[str, Any],
) -> None:
    """``repeats`` interleaved rounds (ABC, CBA, ...); best time, worst peak, first error; the
    last maps of camwall and grad-cam into ``maps``."""
    for i in range(repeats):
        for key in names if i % 2 == 0 else names[::-1]:
            if "error" in result[key]:
                continue
            try:
                with (
                    contextlib.redirect_stderr(io.StringIO()),
                    contextlib.redirect_stdout(io.StringIO()),
                ):
                    cpu = time.process_time()
                    seconds, peak, value = timed_peak(columns[key], device)
                    cpu = time.process_time() - cpu
            except Exception as exc:  # a peer (or camwall) refusing the model is a table entry
                result[key]["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                continue
            result[key]["seconds"] = min(result[key]["seconds"], seconds)
            result[key]["cpu_seconds"] = min(result[key].get("cpu_seconds", math.inf), cpu)
            result[key]["peak_mib"] = max(result[key]["peak_mib"], peak)
            if key in ("camwall", "grad-cam"):
                maps[key] = value


TAIL_METHODS = {"ablationcam", "finercam"}


# --------------------------------------------------------------------------- driver side
def method_options(
    method: str, args: argparse.Namespace, x_shape: tuple[int, ...], samples: int | None = None
) -> dict:
    """camwall's options for the method: its chunk for this input size (the same for the peers
    that have the knob and for the limit), the samples of ``cam_speed.noise_options`` (or
    ``samples``, a reduced setting)."""
    from camwall.cams import METHODS, chunk_options

    cls = METHODS.get(method)
    shared = {**cam_speed.noise_options(args), "opticam_iters": args.opticam_iters}
    if samples is not None:
        shared.update({f"{n}_samples": samples for n in ("smoothgradcampp", "sscam", "iscam")})
    opts = {k: v for k, v in shared.items() if k in cls.options}
    if cls.chunk_option is not None and cls.chunk_option not in opts:
        opts.update(chunk_options(torch.empty(x_shape), [method]))
    return {**{k: cls.options[k] for k in cls.options if k.endswith("_samples")}, **opts}


def setting(model: str, method: str, quick: bool, full: bool = False) -> dict[str, Any]:
    """``{"size", "batch", "samples", "reduced"}`` of one row (:data:`REDUCED` off ``--quick``
    and ``--full``)."""
    arch, size, batch = (QUICK_MODELS if quick else MODELS)[model]
    cut = {} if quick or full else REDUCED.get((model, method), {})
    return {
        "arch": arch,
        "size": cut.get("size", size),
        "batch": cut.get("batch", batch),
        "samples": cut.get("samples"),
        "reduced": cut,
        "full": {"size": size, "batch": batch},
    }


def measure(model: str, method: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """One row, in a fresh process; its JSON is kept in ``folder`` (a rerun skips it)."""
    out = folder / f"{model}-{method}.json"
    if out.exists() and not args.fresh:
        print(f"  {model:12s} {method:18s} (kept from {out})", flush=True)
        kept = dict(json.loads(out.read_text()))
        mtime = datetime.datetime.fromtimestamp(out.stat().st_mtime, datetime.timezone.utc)
        kept.setdefault("finished", f"{mtime:%Y-%m-%d %H:%M}")
        return kept
    row_setting = setting(model, method, args.quick, args.full)
    size, batch = row_setting["size"], row_setting["batch"]
    spec = {
        "arch": row_setting["arch"],
        "size": size,
        "batch": batch,
        "method": method,
        "repeats": args.repeats,
        "heavy_repeats": args.heavy_repeats,
        "tensor_peak_under": args.tensor_peak_under,
        "threads": args.threads,
        "device": args.device,
        "seed": args.seed,
        "options": method_options(method, args, (batch, 3, size, size), row_setting["samples"]),
        "out": str(out) + ".part",
    }
    subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], check=True)
    result = json.loads(Path(spec["out"]).read_text())
    result["spec"] = spec
    result["setting"] = row_setting
    result["commit"] = _commit()
    result["finished"] = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"
    out.write_text(json.dumps(result, indent=1))
    Path(spec["out"]).unlink()
    cols = result["columns"]
    shown = ", ".join(
        f"{k} {v['seconds']:.3f} s" if "error" not in v else f"{k} failed" for k, v in cols.items()
    )
    print(f"  {model:12s} {method:18s} {shown}", flush=True)
    return dict(result)


def _commit() -> str:
    """The git commit of the benchmarked code, ``+dirty`` with uncommitted changes (from
    ``$CAMWALL_COMMIT`` when set: a run from an exported snapshot of a commit)."""
    if os.environ.get("CAMWALL_COMMIT"):
        return os.environ["CAMWALL_COMMIT"]
    here = Path(__file__).parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "../src"],
            cwd=here,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def _tensors(col: dict[str, Any] | None) -> str:
    """A column's tensor peak (MiB, one decimal), or ``n/a`` where it was not measured."""
    mib = (col or {}).get("tensor_mib")
    return "n/a" if mib is None else f"{mib:.1f}"


def times(ratio: float) -> str:
    """A speed-up: two decimals below 10x (0.96x must not read 1.0x), one above."""
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def row(method: str, result: dict[str, Any]) -> str:
    """One markdown row: times, limit ratio, peers, speed-up, peaks, notes."""
    cols = result["columns"]

    def secs(key: str) -> float:
        c = cols.get(key)
        return math.nan if c is None or "error" in c else float(c["seconds"])

    ours, limit = secs("camwall"), secs("limit")
    peers = {p: secs(p) for p in PEERS}
    known = {p: t for p, t in peers.items() if t == t}
    best = min(known, key=lambda p: known[p]) if known else None
    notes = [f"{k}: {c['error']}" for k, c in cols.items() if "error" in c]
    if result.get("skipped"):
        notes.append(f"not measured: {result['skipped']}")
    if result.get("diff") is not None:
        notes.append(f"max abs diff from grad-cam {result['diff']:.1e}")
    if result.get("tail"):
        notes.append(f"tail: {result['tail']}")
    factor = full_size_factor(method, result.get("setting", {}))
    if factor != 1 and best and ours == ours:
        notes.append(
            f"at full size (x{factor:.0f} the work): ~{ours * factor:.0f} s camwall, "
            f"~{known[best] * factor:.0f} s {best}"
        )

    def fmt(t: float) -> str:
        return "n/a" if t != t else f"{t:.3f}"

    speedup = times(known[best] / ours) if best and ours == ours else "n/a"
    cpu_ours = cols.get("camwall", {}).get("cpu_seconds")
    cpu_peer = cols[best].get("cpu_seconds") if best else None
    cpu_speedup = times(cpu_peer / cpu_ours) if cpu_ours and cpu_peer else "n/a"
    ratio = f"{ours / limit:.2f}" if ours == ours and limit == limit else "n/a"
    peak_peer = f"{cols[best]['peak_mib']:.0f}" if best else "n/a"
    peak_ours = f"{cols['camwall']['peak_mib']:.0f}" if ours == ours else "n/a"
    cells = [method, fmt(ours), fmt(limit), ratio, *(fmt(peers[p]) for p in PEERS)]
    cells += [f"{speedup} ({best})" if best else "n/a", cpu_speedup, peak_ours, peak_peer]
    cells += [_tensors(cols.get("camwall")), _tensors(cols.get(best) if best else None)]
    cells += [setting_text(result.get("setting", {})), _load_text(result.get("load"))]
    cells.append("; ".join(notes))
    return "| " + " | ".join(cells) + " |"


def full_size_factor(method: str, row_setting: dict[str, Any]) -> float:
    """How much more work the full-size row is than the reduced one: batch x pixels x samples
    (the samples of the method's default, torchcam's: 35 for sscam, 10 for iscam)."""
    from camwall.cams import METHODS

    cut = row_setting.get("reduced") or {}
    if not cut:
        return 1.0
    full = row_setting["full"]
    factor = full["batch"] / row_setting["batch"] * (full["size"] / row_setting["size"]) ** 2
    if "samples" in cut:
        factor *= METHODS.get(method).options[f"{method}_samples"] / cut["samples"]
    return factor


def setting_text(row_setting: dict[str, Any]) -> str:
    """``B x S x S`` of the row, ``, N samples`` where reduced; ``(reduced)`` when it is."""
    if not row_setting:
        return ""
    text = f"{row_setting['batch']} x {row_setting['size']}"
    if row_setting.get("samples"):
        text += f", {row_setting['samples']} sample(s)"
    return text + (" (reduced)" if row_setting.get("reduced") else "")


def _load_text(load: Any) -> str:
    """The 1-minute load average at the row's start and end."""
    return f"{load[0][0]:.1f} / {load[1][0]:.1f}" if load else ""


HEADER = (
    "| method | camwall (s) | limit (s) | camwall / limit | grad-cam (s) | torchcam (s) "
    "| captum (s) | speed-up vs fastest peer | same in CPU time | camwall peak (MiB) "
    "| peer peak (MiB) | camwall tensors (MiB) | peer tensors (MiB) "
    "| setting (batch x size) | load (start / end) | note |"
)


def report(
    results: dict[str, list[tuple[str, dict]]], args: argparse.Namespace, took: float
) -> str:
    from importlib.metadata import version

    versions = ", ".join(
        f"{p} {version(p)}" for p in ("torch", "grad-cam", "torchcam", "captum", "camwall")
    )
    lines = [
        "# CAM methods against their peers and their physical limit",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {cam_speed.machine()}; device: {args.device}; torch threads: {args.threads}",
        f"- versions: python {platform.python_version()}, {versions}",
        f"- load average (1, 5, 15 min) at start / end: {LOAD_START} / {os.getloadavg()}",
        (
            f"- timing: one fresh process per (model, method), peers imported and one forward + "
            "backward of the model (plain and channels-last) untimed, then camwall, the limit "
            f"and the peers interleaved, best of {args.repeats} (heavy rows: peers and limit "
            f"once, camwall best of {args.heavy_repeats}); peak memory "
            "above the level before the call (CPU: resident set, sampled every ms; CUDA: "
            "max_memory_allocated); tensor peak: one more untimed call of every column faster "
            f"than {args.tensor_peak_under:g} s, the peak of live tensors in the profiler's "
            "allocation events (CPU; CUDA: max_memory_allocated), the same on every run"
        ),
        f"- command: `{' '.join(['python', 'benchmarks/method_table.py', *sys.argv[1:]])}`",
        f"- total wall time of this invocation: {took:.0f} s{_span(results)}",
    ]
    lines.append(
        "- reading it on a shared CPU: the load column is the 1-minute load average at the "
        "row's start / end; with other processes on the cores, wall times of the same passes "
        "vary by tens of percent between runs (best of N narrows it), so the CPU-time speed-up "
        "(process CPU time, the work done, not the wait) is the steadier comparison; a camwall "
        "/ limit ratio below 1 is that noise"
    )
    reduced = [
        f"{m} {meth}: {c}" for (m, meth), c in REDUCED.items() if not (args.quick or args.full)
    ]
    if reduced:
        lines.append(
            "- reduced rows (the same setting on every side; the full-size estimate in the "
            "note scales the time by batch x pixels x samples): " + "; ".join(reduced)
        )
    for model, rows in results.items():
        arch, size, batch = (QUICK_MODELS if args.quick else MODELS)[model]
        lines += ["", f"## {arch}, {batch} x 3 x {size} x {size}", "", HEADER]
        lines.append("|---|" + "---:|" * 12 + "---|---:|---|")
        lines += [row(method, result) for method, result in rows]
    lines.append("")
    return "\n".join(lines)


def _span(results: dict[str, list[tuple[str, dict]]]) -> str:
    """``; rows measured from .. to .. (commits ..)`` over the rows kept from earlier runs."""
    stamps = [r["finished"] for rows in results.values() for _, r in rows if "finished" in r]
    commits = sorted({r["commit"] for rows in results.values() for _, r in rows if "commit" in r})
    if not stamps:
        return ""
    when = f"; rows measured from {min(stamps)} to {max(stamps)} UTC"
    return when + (f" (code: commit {', '.join(commits)})" if commits else "")


def build_parser() -> argparse.ArgumentParser:
    """The command line (every flag, with its default)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, four methods")
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of " + str(MODELS))
    parser.add_argument("--methods", default="all", help="comma list or 'all'")
    parser.add_argument("--repeats", type=int, default=8, help="timed runs (best is reported)")
    parser.add_argument(
        "--heavy-repeats", type=int, default=2, help="camwall's timed runs in the heavy rows"
    )
    cam_speed.add_shared_arguments(parser)
    parser.add_argument("--opticam-iters", type=int, default=10)
    parser.add_argument(
        "--tensor-peak-under",
        type=float,
        default=30.0,
        help="seconds: columns faster than this run once more under the profiler for their "
        "tensor peak (0: none)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "method_table.md"))
    parser.add_argument(
        "--results",
        help="folder of the per-row JSON (default: --out without .md); kept rows "
        "are not measured again",
    )
    parser.add_argument("--fresh", action="store_true", help="measure kept rows again")
    parser.add_argument(
        "--full", action="store_true", help="every row at full size (no reduced settings)"
    )
    parser.add_argument("--skip", default="", help="rows not measured: model:method,...")
    parser.add_argument("--skip-why", default="skipped", help="the reason, in the table")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    from camwall.cams import METHODS

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    native = [n for n in METHODS.names() if n not in SKIPPED]
    methods = native if args.methods == "all" else args.methods.split(",")
    if args.quick and args.methods == "all":
        methods, args.repeats, args.samples = QUICK_METHODS, 2, 1
    unknown = [m for m in methods if m not in native] + [
        m for m in args.models.split(",") if m not in MODELS
    ]
    if unknown:
        parser.error(f"unknown {unknown}; methods: {native}; models: {list(MODELS)}")
    out = Path(args.out)
    folder = Path(args.results) if args.results else out.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    from camwall.runtime import folder_lock

    with folder_lock(folder, "--results"):
        run_table(args, methods, folder, out)
    print(f"written to {out} and {out.with_suffix('.json')}")
    return 0


def run_table(args: argparse.Namespace, methods: list[str], folder: Path, out: Path) -> None:
    """Every row, the markdown and the JSON rewritten after each (a killed run resumes)."""
    started = time.perf_counter()
    results: dict[str, list[tuple[str, dict]]] = {}
    for model in args.models.split(","):
        results[model] = []
        for m in methods:
            if args.quick and (model, m) in QUICK_SKIP:
                continue
            if f"{model}:{m}" in args.skip.split(","):
                results[model].append((m, {"columns": {}, "skipped": args.skip_why}))
            else:
                results[model].append((m, measure(model, m, args, folder)))
            text = report(results, args, time.perf_counter() - started)
            out.write_text(text)
            table = {mod: dict(rows) for mod, rows in results.items()}
            out.with_suffix(".json").write_text(json.dumps(table, indent=1))
    print(text)


LOAD_START = os.getloadavg()

if __name__ == "__main__":
    sys.exit(main())
