"""Training throughput of the Fashion presets on this machine, side by side.

Each configuration trains the walled ``fashion-vgg`` (or another arch) for one epoch on the first
``--n`` training canvases through :func:`camwall.train.fit` (no validation), in a fresh
subprocess so that thread settings do not leak, and reports images per second. Configurations
alternate over ``--rounds`` rounds so that a change of background load hits all of them alike.

    python benchmarks/train_speed.py --n 3200 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, tempfile, torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
from camwall.data import fashion_canvases
from camwall.train import TrainConfig, fit
from camwall.walls import create_model, enforce_walls
torch.manual_seed(0)
model = create_model(spec["arch"], width=spec["width"])
cfg = TrainConfig(arch=spec["arch"], epochs=1, batch_size=spec["batch"], train_limit=spec["n"],
                  num_workers=spec["workers"], channels_last=spec["channels_last"],
                  optimizer="adamw", lr=3e-3, weight_decay=1e-4)
data = fashion_canvases("train", seed=0, augment=True)
with tempfile.TemporaryDirectory() as out:
    res = fit(model, data, None, cfg, out, enforce_wall=enforce_walls, progress=False)
print(json.dumps(res.history[-1]["images_per_second"]))
"""

CONFIGS = [
    {"name": "w8 t2 cl w0 b64", "width": 8, "threads": 2, "channels_last": True, "workers": 0},
    {"name": "w8 t1 cl w0 b64", "width": 8, "threads": 1, "channels_last": True, "workers": 0},
    {"name": "w8 t2 nocl w0 b64", "width": 8, "threads": 2, "channels_last": False, "workers": 0},
    {"name": "w8 t2 cl w1 b64", "width": 8, "threads": 2, "channels_last": True, "workers": 1},
    {"name": "w16 t2 cl w0 b64", "width": 16, "threads": 2, "channels_last": True, "workers": 0},
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3200, help="training canvases per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--arch", default="fashion-vgg")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    results: dict[str, list[float]] = {c["name"]: [] for c in CONFIGS}
    for _ in range(args.rounds):
        for c in CONFIGS:
            spec = {**c, "n": args.n, "arch": args.arch, "batch": args.batch}
            out = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps(spec)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            results[c["name"]].append(float(out.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()
    print(f"load average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| config | img/s (median) | runs |")
    print("|---|---|---|")
    for name, vals in results.items():
        runs = ", ".join(f"{v:.0f}" for v in vals)
        print(f"| {name} | {statistics.median(vals):.0f} | {runs} |")


if __name__ == "__main__":
    main()
