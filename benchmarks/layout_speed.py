"""Plain against channels-last inputs on CPU: the measurement behind camwall's layout rule.

One forward and one backward to the target layer (the gradient family's whole work), plain
(NCHW) and channels-last inputs interleaved in one process, best of ``--repeats``; walled VGG16,
torchvision resnet18 and resnet50 (random weights) at 224 x 224, batches 1 and 4. Each oneDNN
instruction set runs in a fresh process: the machine's own (``native``) and, where the CPU has
AVX-512, ``ONEDNN_MAX_CPU_ISA=AVX2`` (the kernels of an AVX2-only CPU, as ``make test-avx2``).
The last column says whether ``camwall.cams._pass.channels_last_default`` picks the faster one.

    python benchmarks/layout_speed.py [--repeats 6] [--threads 2]

Writes ``benchmarks/results/layout.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from camwall.modelstate import held

sys.path.insert(0, str(Path(__file__).parent))
import cam_speed
import method_table

ARCHS = ("walled-vgg16", "resnet18", "resnet50")
BATCHES = (1, 4)
ISAS = {"native": {}, "AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}


def worker(repeats: int, threads: int) -> list[dict]:
    """``[{arch, batch, plain, channels_last, default}]`` in this process's oneDNN setting."""
    from camwall.cams._pass import channels_last_default

    torch.set_num_threads(threads)
    rows = []
    for arch in ARCHS:
        model, layer = cam_speed.build_model(0, arch)
        for b in BATCHES:
            x = torch.rand(b, 3, 224, 224, generator=torch.Generator().manual_seed(1))
            inputs = {"plain": x, "channels_last": x.contiguous(memory_format=torch.channels_last)}
            method_table._warm_up(model, layer, x)
            best = {k: float("inf") for k in inputs}
            for i in range(repeats):
                for k in list(inputs) if i % 2 == 0 else list(inputs)[::-1]:
                    start = time.perf_counter()
                    with held(model):  # the graph starts at the layer
                        method_table._grad_pass(model, layer, inputs[k], "layer", False)
                    best[k] = min(best[k], time.perf_counter() - start)
            rows.append({"arch": arch, "batch": b, **best, "default": channels_last_default(x)})
    return rows


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> str:
    head = [
        "# Plain against channels-last inputs (forward + backward to the target layer)",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        (
            f"- machine: {cam_speed.machine()}; torch {torch.__version__}; "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}; threads {args.threads}"
        ),
        (
            f"- best of {args.repeats}, interleaved; `python benchmarks/layout_speed.py "
            f"--repeats {args.repeats} --threads {args.threads}`"
        ),
        "",
        (
            "| oneDNN ISA | model | batch | plain (s) | channels-last (s) | cl / plain "
            "| camwall's default | the faster one |"
        ),
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    lines = []
    for isa, rows in results.items():
        for r in rows:
            ratio = r["channels_last"] / r["plain"]
            pick = "channels-last" if r["default"] else "plain"
            right = "yes" if (ratio < 1) == r["default"] else f"no ({abs(1 - ratio):.0%})"
            lines.append(
                f"| {isa} | {r['arch']} | {r['batch']} | {r['plain']:.3f} | "
                f"{r['channels_last']:.3f} | {ratio:.2f} | {pick} | {right} |"
            )
    return "\n".join(head + lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "layout.md"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.repeats, args.threads)))
        return 0
    isas = ISAS if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else {"native": {}}
    results = {}
    for isa, env in isas.items():
        cmd = [sys.executable, __file__, "--worker", "--repeats", str(args.repeats)]
        cmd += ["--threads", str(args.threads)]
        done = subprocess.run(cmd, env={**os.environ, **env}, check=True, capture_output=True)
        results[isa] = json.loads(done.stdout.decode().strip().splitlines()[-1])
        Path(args.out).write_text(report(results, args))
    print(Path(args.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
