"""Wall leakage of every native method on a walled torchvision-style ViT (docs/own-model.md).

A torchvision ``VisionTransformer`` (image 64, patch 8, 4 layers, 4 heads, hidden 64, MLP 128:
the sizes of the shipped fashion-vit) walled in place by ``camwall.walls.wall_vit`` on its
bottom 3 patch rows (input rows 40..63, as fashion-vit), trained briefly on Fashion-MNIST
canvases (gray replicated to RGB, ImageNet-normalized: the bench's rule for a 3-channel model),
then benched on fashion-stackmix and fashion-stackpair (RGB) with every native method and the
controls. Writes ``OUT/report.html``, ``table.md`` and ``summary.json`` as ``camwall bench``.

    OMP_NUM_THREADS=2 python benchmarks/own_vit.py --state vit.safetensors --out own-vit-out \
        --steps 150 --batch 64 --images 50 --skip opticam,sscam,iscam,sess
    OMP_NUM_THREADS=2 python benchmarks/own_vit.py --state vit.safetensors --out own-vit-slow \
        --images 2 --only opticam,sscam,iscam,sess

``--state``: trained weights are saved there, and loaded instead of training when it exists.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from camwall.bench import BenchDataset, run_bench
from camwall.bench._inputs import bench_model
from camwall.cams import METHODS
from camwall.data import DATASETS, fashion_canvases
from camwall.metrics import CONTROLS
from camwall.runtime import IMAGENET_MEAN, IMAGENET_STD
from camwall.walls import wall_vit

#: cam needs global average pooling + one Linear; a ViT's head reads the class token.
SKIPPED = {"cam"}


def build(seed: int) -> nn.Module:
    """The walled ViT (random weights, seeded)."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(seed)
    model = VisionTransformer(
        image_size=64, patch_size=8, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128,
        num_classes=10,
    )  # fmt: skip
    return wall_vit(model, "rows=5:")


def rgb(x: Tensor) -> Tensor:
    """``N x 1 x H x W`` gray in [0, 1] -> ImageNet-normalized ``N x 3 x H x W``."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    return (x.expand(-1, 3, -1, -1) - mean) / torch.tensor(IMAGENET_STD)[:, None, None]


def train(model: nn.Module, steps: int, batch: int, seed: int) -> float:
    """AdamW (weight decay 0.05; one-cycle lr: 10% warm-up to 2e-3, cosine down) on augmented
    training canvases; seconds taken."""
    data = fashion_canvases("train", seed=seed, augment=True)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    start, step = time.perf_counter(), 0
    model.train()
    while step < steps:
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(rgb(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                print(f"step {step}: loss {loss.item():.3f}", flush=True)
            if step == steps:
                break
    return time.perf_counter() - start


def accuracy(model: nn.Module, n: int = 2000) -> float:
    """Top-1 on the first ``n`` fixed test canvases."""
    data = fashion_canvases("test", seed=0, augment=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(n)), batch_size=250)
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(rgb(x)).argmax(1) == y).sum()) for x, y in loader)
    return hits / n


def rgb_dataset(name: str, n: int, seed: int) -> BenchDataset:
    """A registry dataset with its gray images replicated to RGB (still in [0, 1])."""
    built = DATASETS.get(name).build(n=n, seed=seed)
    images = built.images.expand(-1, 3, -1, -1).contiguous()
    return BenchDataset(name, images, built.labels, built.class_names, {"spec": name})


def trained(args: argparse.Namespace) -> nn.Module:
    """The walled ViT, trained (or loaded from ``--state``); prints time and accuracy."""
    from safetensors.torch import save_file

    from camwall.walls import load_weights

    model = build(args.seed)
    if args.state is not None and args.state.is_file():
        load_weights(model, args.state)
    elif args.steps:
        seconds = train(model, args.steps, args.batch, args.seed)
        print(f"trained {args.steps} steps of {args.batch} in {seconds:.0f} s")
        if args.state is not None:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.state)
    print(f"test accuracy (2,000 canvases): {accuracy(model):.4f}", flush=True)
    return model


def chosen(skip: str, only: str) -> list[str]:
    """Every native method but ``SKIPPED`` and ``skip`` (or ``only``), then the controls."""
    left_out = SKIPPED | {m for m in skip.split(",") if m}
    names = [m for m in only.split(",") if m] or [m for m in METHODS.names() if m not in left_out]
    return [*names, *CONTROLS.names()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("own-vit-out"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--state", type=Path, help="trained weights (.safetensors): saved or loaded")
    p.add_argument("--skip", default="", help="comma list of methods left out")
    p.add_argument("--only", default="", help="comma list: run only these methods")
    args = p.parse_args()
    model = trained(args)
    bm = bench_model(model.eval(), {}, "torchvision-vit-walled", name="tv-vit-walled")
    sets = [
        rgb_dataset(d, args.images, args.seed) for d in ("fashion-stackmix", "fashion-stackpair")
    ]
    methods = chosen(args.skip, args.only)
    start = time.perf_counter()
    run_bench([bm], sets, methods, args.out, batch_size=32, seed=args.seed, progress=False)
    print(f"bench: {time.perf_counter() - start:.0f} s; {args.out / 'table.md'}")


if __name__ == "__main__":
    main()
