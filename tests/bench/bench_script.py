"""Run the tiny benchmark in its own process (for the kill/resume and torchrun tests).

Usage: python bench_script.py OUT [--resume] [--slow SECONDS] [--images N]
Under ``torchrun --nproc_per_node 2`` the images are sharded over the two ranks (gloo on CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_tiny import tiny_bench_model, tiny_dataset

from camwall.bench import _compute, run_bench

METHODS = ["gradcam", "hirescam", "scorecam", "uniform", "random"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--slow", type=float, default=0.0)
    p.add_argument("--images", type=int, default=7)
    args = p.parse_args()
    if args.slow:
        real = _compute._cam_fn()

        def slow(*a, **kw):  # a slow method: gives the test time to kill the run midway
            time.sleep(args.slow)
            return real(*a, **kw)

        _compute._cam_fn = lambda: slow
    run_bench(
        [tiny_bench_model(), tiny_bench_model(walled=False)],
        [tiny_dataset("tiny-mix", args.images), tiny_dataset("tiny-pair", 5, seed=1)],
        METHODS,
        args.out,
        device="cpu",
        batch_size=2,
        resume=args.resume,
        seed=5,
        progress=False,
        report=False,
    )


if __name__ == "__main__":
    main()
