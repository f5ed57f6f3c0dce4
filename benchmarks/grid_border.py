"""Leakage mass vs distance to the explained cell's border, on the shipped fashion-grid-vgg (200
fashion-grid test mosaics, seed 0, the bench's explained cell and predicted class).

Run: OMP_NUM_THREADS=1 python benchmarks/grid_border.py
"""

import torch

from camwall.bench._runner import explained_cell
from camwall.cams import compute_cams
from camwall.data import DATASETS, cell_masks
from camwall.walls import dead_zones, load_model
from camwall.weights import shipped_model

model, _ = load_model(shipped_model())
comp = DATASETS.get("fashion-grid").build(n=200, seed=0)
x = comp.images
cells = torch.tensor([explained_cell(i, 0) for i in range(len(x))])
with torch.no_grad():
    logits = model(x).reshape(len(x), 4, 10)
pred = logits[torch.arange(len(x)), cells].argmax(-1)
targets = (cells * 10 + pred).tolist()
zones = dead_zones(model, (1, 64, 64), [range(10 * k, 10 * k + 10) for k in range(4)])
masks = cell_masks(64)
# Chebyshev-free: distance (pixels) from each pixel to the explained cell, d = max(dr, dc) outside
rr, cc = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")


def dist(k):
    r, c = divmod(k, 2)
    r0, r1, c0, c1 = 32 * r, 32 * r + 31, 32 * c, 32 * c + 31
    dr = torch.clamp(torch.maximum(r0 - rr, rr - r1), min=0)
    dc = torch.clamp(torch.maximum(c0 - cc, cc - c1), min=0)
    return torch.maximum(dr, dc)


D = torch.stack([dist(k) for k in range(4)])[cells]  # B x 64 x 64 (0 inside the cell)
dead = zones[cells]
methods = [
    "gradcam",
    "hirescam",
    "gradcampp",
    "xgradcam",
    "layercam",
    "eigencam",
    "scorecam",
    "ablationcam",
    "opticam",
]
maps = compute_cams(model, x, "9", methods, targets=targets)
bands = [(1, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 24), (24, 28), (28, 32)]
print(
    "Out-of-cell pixels by distance to the explained cell (px; the dead zone starts at 12): "
    "mean map value (% of the map's mean) / share of the map's mass"
)
area = {b: int(((b[0] <= D) & (b[1] > D)).sum()) for b in bands}
print("band areas (pixels, summed over images):", {f"{a}-{b - 1}": area[(a, b)] for a, b in bands})
for m in methods:
    L = maps[m]
    mean_all = L.flatten(1).mean(1, keepdim=True).unsqueeze(-1).clamp_min(1e-12)
    rel = L / mean_all
    dmass = (L * dead).sum()
    row = []
    for a, b in bands:
        sel = (a <= D) & (b > D)
        dens = float(rel[sel].mean()) if sel.any() else float("nan")
        share = float((L * sel).sum() / L.sum().clamp_min(1e-12))
        row.append(f"{a}-{b - 1}: {100 * dens:.0f}%/{100 * share:.1f}%")
    print(f"{m:12s}", " | ".join(row))
