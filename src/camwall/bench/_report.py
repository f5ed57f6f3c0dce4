"""The report: ``table.md``, ``table.csv``, ``summary.json``, figures and ``report.html``.

Everything is drawn from the results store alone, so ``camwall report DIR`` regenerates it.
This is the only layer that converts to numpy.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from camwall.bench._store import STORE_NAME, Store, png_to_array
from camwall.bench._summary import PAPER, build_summary
from camwall.errors import CamwallError
from camwall.metrics import CONTROLS, METRICS

__all__ = ["reading", "write_report"]

RESPECT_TOL = 1e-6  # mu at or below this on every image: the method respects the wall


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "x"


def _pct(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}"


def _cell(stats: dict[str, Any] | None) -> str:
    if not stats or stats.get("mean") is None:
        empty = stats.get("empty", 0) if stats else 0
        return f"n/a ({empty} empty)" if empty else "n/a"
    text = f"{_pct(stats['mean'])} ± {_pct(stats['std'])}"
    if stats.get("empty"):
        text += f" ({stats['empty']} empty)"
    return text


def _paper_cell(method: str, column: str | None) -> str:
    if column is None or method not in PAPER:
        return "–"
    mean, std = PAPER[method][column]
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if method != "uniform" else f"{100 * mean:.1f}"


# -- tables -------------------------------------------------------------------------------------


def _columns(summary: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The table's dataset columns: ``(dataset, paper column beside it or None)``."""
    return [(d, summary["paper_columns"].get(d)) for d in summary["datasets"]]


def _table_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["method"]
    for d, col in _columns(summary):
        header.append(f"{d} μ (%)")
        if col:
            header.append(f"paper {col} (%)")
    rows = []
    for meth in summary["methods"]:
        row = [meth + (" (control)" if meth in CONTROLS else "")]
        for d, col in _columns(summary):
            row.append(_cell(summary["datasets"][d].get(meth)))
            if col:
                row.append(_paper_cell(meth, col))
        rows.append(row)
    return header, rows


def _markdown(summary: dict[str, Any]) -> str:
    header, rows = _table_rows(summary)
    model = summary["model"]
    lines = [
        f"# Wall leakage μ of saliency maps — model `{model}`",
        "",
        (
            "μ = ‖L on the dead zone‖₂ / ‖L‖₂ per image, mean ± std over images, in %. "
            "Lower is better; 0 = the method respects the wall."
        ),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    dz = summary["dead_zone"].get(model, {})
    lines += [
        "",
        f"Dead zone: {_dead_text(dz)}; a uniform map scores μ = {_pct(dz.get('uniform_mu'))}%.",
        (
            "Paper columns: the walled VGG16 on ImageNet (Table 1 of Taimeskhanov et al., "
            "2024), beside the analogous dataset; the models and images differ, so compare the "
            "pattern, not the digits. Empty (all-zero) maps are left out of the mean and counted."
        ),
        "",
        "## All metrics (mean over images, %; relative_leakage as a ratio)",
        "",
    ]
    names = METRICS.names()
    for d, per in summary["metrics"].get(model, {}).items():
        lines += [f"### {d}", "", "| method | " + " | ".join(names) + " |"]
        lines.append("|" + "|".join("---" for _ in range(len(names) + 1)) + "|")
        for meth, stats in per.items():
            cells = []
            for n in names:
                mean = stats[n]["mean"]
                if mean is None:
                    cells.append("n/a")
                elif METRICS.get(n).percent:
                    cells.append(_pct(mean))
                else:
                    cells.append(f"{mean:.2f}")
            lines.append(f"| {meth} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Accuracy", "", "| model | dataset | accuracy (%) | images |", "|---|---|---|---|"]
    for m, per in summary["accuracy"].items():
        for d, a in per.items():
            lines.append(f"| {m} | {d} | {_pct(a['accuracy'])} | {a['n']} |")
    return "\n".join(lines) + "\n"


def _csv(summary: dict[str, Any], path: Path) -> None:
    model = summary["model"]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "model",
                "dataset",
                "method",
                "control",
                "mean_pct",
                "std_pct",
                "n",
                "empty",
                "paper_dataset",
                "paper_mean_pct",
                "paper_std_pct",
            ]
        )
        for d, per in summary["datasets"].items():
            col = summary["paper_columns"].get(d)
            for meth in summary["methods"]:
                s = per.get(meth)
                if s is None:
                    continue
                paper = PAPER.get(meth, {}).get(col) if col else None
                w.writerow(
                    [
                        model,
                        d,
                        meth,
                        int(meth in CONTROLS),
                        "" if s["mean"] is None else f"{100 * s['mean']:.4f}",
                        "" if s["std"] is None else f"{100 * s['std']:.4f}",
                        s["n"],
                        s["empty"],
                        col or "",
                        "" if paper is None else f"{100 * paper[0]:.1f}",
                        "" if paper is None else f"{100 * paper[1]:.1f}",
                    ]
                )


# -- the plain-language reading -------------------------------------------------------------


def _dead_text(dz: dict[str, Any]) -> str:
    if not dz:
        return "unknown"
    h, w = dz["input_size"]
    where = (
        f"rows {dz['rows'][0]}–{dz['rows'][1]} of {h}"
        if dz.get("rows")
        else f"{dz['pixels']} of {h}×{w} pixels"
    )
    return f"{where} ({_pct(dz['fraction'])}% of the image)"


def reading(summary: dict[str, Any]) -> list[str]:
    """Short plain-language sentences that read the result from the numbers."""
    model = summary["model"]
    if model is None:
        return ["No walled model in the store: nothing to read."]
    dz = summary["dead_zone"].get(model, {})
    uni = dz.get("uniform_mu") or float("nan")
    out = [
        (
            f"The model `{model}` provably ignores its dead zone, {_dead_text(dz)}: "
            "a faithful saliency map is exactly 0 there. "
            f"A uniform map (no information) scores μ = {_pct(uni)}%."
        )
    ]
    for d, per in summary["metrics"].get(model, {}).items():
        cams = {m: s for m, s in per.items() if m not in CONTROLS}
        if not cams:
            continue
        respect = [
            m
            for m, s in cams.items()
            if s["wall_leakage"]["n"] and (s["any_leak"]["mean"] or 0) <= RESPECT_TOL
        ]
        leaky = sorted(
            (m for m in cams if m not in respect and cams[m]["wall_leakage"]["mean"] is not None),
            key=lambda m: -cams[m]["wall_leakage"]["mean"],
        )
        parts = [f"On {d} ({_n_images(per)} images):"]
        if respect:
            parts.append(
                f"{_join(respect)} respect{'s' if len(respect) == 1 else ''} the wall "
                "(no positive pixel in the dead zone on any image)."
            )
        if leaky:
            worst = leaky[0]
            s = cams[worst]
            parts.append(
                f"{_join(leaky)} see{'s' if len(leaky) == 1 else ''} through it. "
                f"{worst} leaks most: μ = {_pct(s['wall_leakage']['mean'])}% on average, "
                f"{s['wall_leakage']['mean'] / uni:.2f}× the uniform map, and "
                f"{_pct(s['any_leak']['mean'], 0)}% of its "
                + (f"{s['any_leak']['n']} non-empty " if s["any_leak"]["empty"] else "")
                + "maps put saliency behind the wall."
            )
            if len(leaky) > 1:
                best = leaky[-1]
                parts.append(
                    f"The least leaky of them, {best}, still has μ = "
                    f"{_pct(cams[best]['wall_leakage']['mean'])}%."
                )
            worse = [m for m in leaky if cams[m]["wall_leakage"]["mean"] >= uni]
            if worse:
                parts.append(
                    f"{_join(worse)} {'does' if len(worse) == 1 else 'do'} no better than a "
                    "map with no information."
                )
        empties = {m: s["wall_leakage"]["empty"] for m, s in cams.items()}
        empties = {m: e for m, e in empties.items() if e}
        if empties:
            parts.append(
                "All-zero maps, left out of the means: "
                + ", ".join(f"{m} {e}" for m, e in empties.items())
                + "."
            )
        out.append(" ".join(parts))
    acc = summary["accuracy"]
    acc_parts = []
    for m, per in acc.items():
        vals = ", ".join(f"{_pct(a['accuracy'])}% on {d}" for d, a in per.items())
        kind = "walled" if per and next(iter(per.values()))["walled"] else "baseline"
        acc_parts.append(f"{m} ({kind}): {vals}")
    for m, per in acc.items():
        classes = len(summary["model_info"].get(m, {}).get("class_names") or [])
        low = [
            d
            for d, a in per.items()
            if classes and a["accuracy"] is not None and a["accuracy"] < 1.5 / classes
        ]
        if low:
            out.append(
                f"Warning: {m} is near chance accuracy on {_join(low)} ({classes} classes); "
                "is it trained? Maps of an untrained model say little about a method."
            )
    if acc_parts:
        out.append(
            "Accuracy against the composite's label: "
            + "; ".join(acc_parts)
            + ". CAMs use the predicted class as target, as in the paper."
        )
    out.append(
        "Dead zones hold for models in eval mode (BatchNorm in training mode mixes statistics "
        "over the whole image); the benchmark runs every model in eval mode."
    )
    return out


def _n_images(per: dict[str, Any]) -> int:
    counts = (s["wall_leakage"]["n"] + s["wall_leakage"]["empty"] for s in per.values())
    return max(counts, default=0)


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# -- figures --------------------------------------------------------------------------------


def _mpl() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _dead_overlay(ax: Any, dead: np.ndarray, lw: float = 1.2) -> None:
    """Hatch the dead zone and draw the wall line on an image axis."""
    if not dead.any():
        return
    ax.contourf(
        dead.astype(float), levels=[0.5, 1.5], colors="none", hatches=["////"], extend="neither"
    )
    ax.contour(dead.astype(float), levels=[0.5], colors=["#ff2a2a"], linewidths=lw)


def _upscale(a: np.ndarray, s: int) -> np.ndarray:
    return a if s == 1 else np.repeat(np.repeat(a, s, axis=0), s, axis=1)


def _decorate(rgb: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """Hatch the dead zone (white diagonals) and draw the wall (red) on an RGB cell."""
    h, w = dead.shape
    yy, xx = np.mgrid[0:h, 0:w]
    hatch = dead & (((xx + yy) % 10) < 2)
    out = rgb.copy()
    out[hatch] = 0.45 * out[hatch] + 0.55
    edge = np.zeros_like(dead)
    edge[1:] |= dead[1:] & ~dead[:-1]
    edge[:-1] |= dead[:-1] & ~dead[1:]
    edge[:, 1:] |= dead[:, 1:] & ~dead[:, :-1]
    edge[:, :-1] |= dead[:, :-1] & ~dead[:, 1:]
    thick = edge.copy()
    thick[1:] |= edge[:-1]
    thick[:-1] |= edge[1:]
    out[thick] = (1.0, 0.1, 0.1)
    return out


def _figure_grid(
    summary: dict[str, Any],
    figs: dict[tuple[str, str, int, str], bytes],
    model: str,
    dataset: str,
    dead: np.ndarray,
    path: Path,
) -> bool:
    """Paper Figure 7 layout: rows = methods, columns = images, map over image, wall drawn.

    The cells are composed in numpy into one picture (fast), then labelled with matplotlib.
    """
    plt = _mpl()
    from matplotlib import colormaps

    methods = [m for m in summary["methods"] if m not in CONTROLS]
    images = sorted(i for (mm, d, i, k) in figs if mm == model and d == dataset and k == "image")
    if not images or not methods:
        return False
    stats = summary["metrics"].get(model, {}).get(dataset, {})
    classes = summary["dataset_info"].get(dataset, {}).get("class_names") or []
    preds = summary.get("_preds", {}).get((model, dataset), {})
    h, w = dead.shape
    scale = max(1, round(112 / max(h, w)))
    ch, cw, pad = h * scale, w * scale, 6
    big_dead = _upscale(dead, scale)
    rows, cols = len(methods) + 1, len(images)
    canvas = np.ones((rows * (ch + pad), cols * (cw + pad), 3), dtype=np.float32)
    jet = colormaps["jet"]
    for c, i in enumerate(images):
        img = png_to_array(figs[(model, dataset, i, "image")])
        gray = img if img.ndim == 2 else img.mean(axis=2)
        base = np.repeat(_upscale(gray, scale)[..., None], 3, axis=2)
        cells: list[np.ndarray | None] = [img if img.ndim == 3 else base[..., 0]]
        for meth in methods:
            blob = figs.get((model, dataset, i, meth))
            cells.append(_upscale(png_to_array(blob), scale) if blob is not None else None)
        for r, cell in enumerate(cells):
            if r == 0:
                rgb = base if img.ndim == 2 else _upscale(img, scale)
            elif cell is None:
                rgb = 0.5 * base
            else:
                rgb = 0.45 * base + 0.55 * jet(cell)[..., :3]
            y, x = r * (ch + pad), c * (cw + pad)
            canvas[y : y + ch, x : x + cw] = _decorate(rgb.astype(np.float32), big_dead)
    dpi = 100
    left, top = 130, 40
    fig_w = (canvas.shape[1] + left + 10) / dpi
    fig_h = (canvas.shape[0] + top + 10) / dpi
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    ax = fig.add_axes(
        (
            left / dpi / fig_w,
            10 / dpi / fig_h,
            canvas.shape[1] / dpi / fig_w,
            canvas.shape[0] / dpi / fig_h,
        )
    )
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for r, meth in enumerate(["image", *methods]):
        yc = r * (ch + pad) + ch / 2
        label = meth
        if meth != "image":
            s = stats.get(meth, {}).get("wall_leakage", {})
            label = f"{meth}\nμ = {_pct(s.get('mean'))}%"
        ax.text(-8, yc, label, ha="right", va="center", fontsize=9)
    for c, i in enumerate(images):
        label, pred = preds.get(i, (None, None))
        if pred is None:
            continue
        name = classes[pred] if pred < len(classes) else str(pred)
        mark = "✓" if label == pred else "✗"
        ax.text(
            c * (cw + pad) + cw / 2, -4, f"#{i} {name} {mark}", ha="center", va="bottom", fontsize=8
        )
    fig.suptitle(
        f"{dataset} — {model}: CAM (jet) over the image; dead zone hatched, wall in red",
        fontsize=10,
        y=1 - 4 / dpi / fig_h,
        va="top",
    )
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return True


def _boxplots(
    summary: dict[str, Any], store_rows: list[dict[str, Any]], model: str, path: Path
) -> bool:
    plt = _mpl()
    per_ds = summary["metrics"].get(model, {})
    if not per_ds:
        return False
    uni = summary["dead_zone"][model]["uniform_mu"]
    fig, axes = plt.subplots(1, len(per_ds), figsize=(6.2 * len(per_ds), 4.2), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (d, per) in zip(axes[0], per_ds.items()):
        methods = list(per)
        data = []
        for meth in methods:
            v = [
                100 * r["wall_leakage"]
                for r in store_rows
                if r["model"] == model and r["dataset"] == d and r["method"] == meth
            ]
            data.append([x for x in v if not math.isnan(x)])
        colors = []
        for meth in methods:
            s = per[meth]
            if meth in CONTROLS:
                colors.append("#9e9e9e")
            elif (s["any_leak"]["mean"] or 0) <= RESPECT_TOL:
                colors.append("#2e7d32")
            elif (s["wall_leakage"]["mean"] or 0) >= uni:
                colors.append("#c62828")
            else:
                colors.append("#ef6c00")
        pos = np.arange(1, len(methods) + 1)
        bp = ax.boxplot(data, positions=pos, widths=0.6, showfliers=False, patch_artist=True)
        for patch, col in zip(bp["boxes"], colors):
            patch.set_facecolor(col)
            patch.set_alpha(0.35)
            patch.set_edgecolor(col)
        for p, vals, col in zip(pos, data, colors):
            ax.scatter(p + rng.uniform(-0.18, 0.18, len(vals)), vals, s=5, color=col, alpha=0.7)
        ax.axhline(100 * uni, ls="--", color="#555", lw=1)
        ax.text(0.55, 100 * uni + 1, "uniform map", va="bottom", fontsize=8, color="#555")
        col = summary["paper_columns"].get(d)
        if col:
            px = [p for p, m in zip(pos, methods) if m in PAPER and m != "uniform"]
            py = [100 * PAPER[m][col][0] for m in methods if m in PAPER and m != "uniform"]
            ax.scatter(px, py, marker="D", s=28, color="black", zorder=5, label=f"paper {col}")
            ax.legend(loc="upper right", fontsize=8, frameon=True)
        ax.set_xticks(pos)
        ax.set_xticklabels(methods, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("wall leakage μ (%)")
        ax.set_ylim(-3, 103)
        ax.set_title(f"{d}: green respects the wall, orange leaks, red ≥ uniform", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _dead_zone_picture(
    summary: dict[str, Any],
    figs: dict[tuple[str, str, int, str], bytes],
    model: str,
    dead: np.ndarray,
    path: Path,
) -> None:
    plt = _mpl()
    examples = [
        (d, figs[(model, d, 0, "image")])
        for d in summary["metrics"].get(model, {})
        if (model, d, 0, "image") in figs
    ][:2]
    n = 1 + len(examples)
    with plt.rc_context({"hatch.color": "white", "hatch.linewidth": 0.8}):
        fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 3.2), squeeze=False)
        ax = axes[0][0]
        ax.imshow(dead, cmap="Greys", vmin=0, vmax=1.4)
        ax.contour(dead.astype(float), levels=[0.5], colors=["#ff2a2a"], linewidths=1.5)
        ax.set_title("dead zone (dark)", fontsize=9)
        for ax, (d, blob) in zip(axes[0][1:], examples):
            ax.imshow(png_to_array(blob), cmap="gray", vmin=0, vmax=1)
            _dead_overlay(ax, dead, lw=1.5)
            ax.set_title(f"{d} image 0", fontsize=9)
        for ax in axes[0]:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"dead zone: {_dead_text(summary['dead_zone'][model])}", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


# -- html -----------------------------------------------------------------------------------


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1200px;color:#222;line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
td.paper{color:#666;background:#fafafa}tr.control td{color:#666;font-style:italic}
td.ok{background:#e8f5e9}td.leak{background:#fff3e0}td.bad{background:#ffebee}
.reading{background:#f6f8fa;border-left:4px solid #1565c0;padding:8px 16px}
.reading p{margin:6px 0}img{max-width:100%;border:1px solid #eee}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:.85em}
.small{color:#666;font-size:.9em}
"""


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html_table(summary: dict[str, Any]) -> str:
    model = summary["model"]
    uni = summary["dead_zone"].get(model, {}).get("uniform_mu") or 1.0
    head = ["<tr><th>method</th>"]
    for d, col in _columns(summary):
        head.append(f"<th>{html.escape(d)}<br>μ (%)</th>")
        if col:
            head.append(f"<th>paper<br>{col} (%)</th>")
    head.append("</tr>")
    body = []
    for meth in summary["methods"]:
        cls = ' class="control"' if meth in CONTROLS else ""
        cells = [f"<tr{cls}><td>{html.escape(meth)}{' (control)' if cls else ''}</td>"]
        for d, col in _columns(summary):
            s = summary["metrics"].get(model, {}).get(d, {}).get(meth)
            kind = ""
            if s and meth not in CONTROLS and s["wall_leakage"]["mean"] is not None:
                if (s["any_leak"]["mean"] or 0) <= RESPECT_TOL:
                    kind = "ok"
                elif s["wall_leakage"]["mean"] >= uni:
                    kind = "bad"
                else:
                    kind = "leak"
            cell = _cell(summary["datasets"][d].get(meth))
            cells.append(f'<td class="{kind}">{html.escape(cell)}</td>')
            if col:
                cells.append(f'<td class="paper">{_paper_cell(meth, col)}</td>')
        body.append("".join(cells) + "</tr>")
    return "<table>" + "".join(head) + "".join(body) + "</table>"


def _html(summary: dict[str, Any], out: Path, figures: dict[str, list[Path]]) -> str:
    model = summary["model"]
    name = html.escape(str(model))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>camwall bench — {name}</title><style>{_CSS}</style></head><body>",
        f"<h1>Can the saliency maps see through the wall? — <code>{name}</code></h1>",
        (
            f"<p class='small'>camwall {html.escape(summary['versions'].get('camwall', '?'))}, "
            f"{summary['rows']} result rows, generated "
            f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from "
            f"<code>{html.escape(str(out / STORE_NAME))}</code>.</p>"
        ),
        "<div class='reading'>"
        + "".join(f"<p>{html.escape(s)}</p>" for s in reading(summary))
        + "</div>",
        "<h2>Wall leakage μ (Table 1 layout)</h2>",
        (
            "<p class='small'>μ = ‖L on the dead zone‖₂ / ‖L‖₂, mean ± std over images. Green: "
            "respects the wall; orange: leaks; red: no better than a uniform map. Paper "
            "columns: walled VGG16 on ImageNet (Taimeskhanov et al., 2024), for comparison of "
            "the pattern.</p>"
        ),
        _html_table(summary),
    ]
    for title, key in (
        ("Leakage per image", "box"),
        ("Saliency maps (Figure 7 layout)", "grid"),
        ("The dead zone", "dead"),
    ):
        if figures.get(key):
            parts.append(f"<h2>{title}</h2>")
            parts += [_img_tag(p, p.stem) for p in figures[key]]
    parts.append(
        "<h2>Accuracy</h2><table><tr><th>model</th><th>dataset</th><th>accuracy (%)</th>"
        "<th>images</th></tr>"
    )
    for m, per in summary["accuracy"].items():
        for d, a in per.items():
            parts.append(
                f"<tr><td>{html.escape(m)}</td><td>{html.escape(d)}</td>"
                f"<td>{_pct(a['accuracy'])}</td><td>{a['n']}</td></tr>"
            )
    parts.append("</table>")
    parts.append("<h2>Other metrics</h2>")
    parts.append(_html_metrics(summary))
    secs = summary["seconds"].get(model, {})
    if secs:
        parts.append("<h2>Time per image (seconds)</h2><table><tr><th>method</th>")
        parts += [f"<th>{html.escape(d)}</th>" for d in secs]
        parts.append("</tr>")
        for meth in summary["methods"]:
            parts.append(f"<tr><td>{html.escape(meth)}</td>")
            parts += [
                f"<td>{secs[d][meth]:.4f}</td>" if meth in secs[d] else "<td>–</td>" for d in secs
            ]
            parts.append("</tr>")
        parts.append("</table>")
    cfg = {k: v for k, v in summary.items() if k in ("config", "versions", "dead_zone", "runs")}
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(cfg, indent=2)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_metrics(summary: dict[str, Any]) -> str:
    model = summary["model"]
    names = METRICS.names()
    out = []
    for d, per in summary["metrics"].get(model, {}).items():
        out.append(f"<h3>{html.escape(d)}</h3><table><tr><th>method</th>")
        out += [f"<th title='{html.escape(METRICS.get(n).description)}'>{n}</th>" for n in names]
        out.append("</tr>")
        for meth, s in per.items():
            out.append(f"<tr><td>{html.escape(meth)}</td>")
            for n in names:
                mean = s[n]["mean"]
                text = (
                    "n/a"
                    if mean is None
                    else (_pct(mean) + "%" if METRICS.get(n).percent else f"{mean:.2f}")
                )
                out.append(f"<td>{text}</td>")
            out.append("</tr>")
        out.append("</table>")
    legend = "; ".join(f"{n}: {METRICS.get(n).description}" for n in names)
    out.append(f"<p class='small'>{html.escape(legend)}.</p>")
    return "".join(out)


# -- entry point ----------------------------------------------------------------------------


def write_report(out: str | Path) -> dict[str, Path]:
    """Regenerate every output in ``out`` from ``out/results.sqlite``.

    Returns:
        name -> path of each file written (``table.md``, ``table.csv``, ``summary.json``,
        ``report.html`` and the PNG figures).
    """
    out = Path(out)
    path = out / STORE_NAME
    if not path.is_file():
        raise CamwallError(
            f"{out} holds no results store ({STORE_NAME}); run `camwall bench --out {out}` first."
        )
    with Store(path) as store:
        summary = build_summary(store)
        rows = store.results()
        figs = store.figures()
        models = store.info("models")
        preds: dict[tuple[str, str], dict[int, tuple[int, int]]] = {}
        for p in store.predictions():
            preds.setdefault((p["model"], p["dataset"]), {})[p["image"]] = (
                p["label"],
                p["predicted"],
            )
    written: dict[str, Path] = {}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    written["summary.json"] = out / "summary.json"
    (out / "table.md").write_text(_markdown(summary))
    written["table.md"] = out / "table.md"
    _csv(summary, out / "table.csv")
    written["table.csv"] = out / "table.csv"

    summary["_preds"] = preds
    figures: dict[str, list[Path]] = {"box": [], "grid": [], "dead": []}
    for m, info in models.items():
        if not info.get("walled"):
            continue
        dead = png_to_array(bytes.fromhex(info["dead_zone_png"])) > 0.5
        box = out / f"leakage-{_slug(m)}.png"
        if _boxplots(summary, rows, m, box):
            figures["box"].append(box)
        for d in summary["metrics"].get(m, {}):
            grid = out / f"maps-{_slug(m)}-{_slug(d)}.png"
            if _figure_grid(summary, figs, m, d, dead, grid):
                figures["grid"].append(grid)
        dz = out / f"dead-zone-{_slug(m)}.png"
        _dead_zone_picture(summary, figs, m, dead, dz)
        figures["dead"].append(dz)
    del summary["_preds"]
    for fig_paths in figures.values():
        for fig_path in fig_paths:
            written[fig_path.name] = fig_path
    (out / "report.html").write_text(_html(summary, out, figures))
    written["report.html"] = out / "report.html"
    return written
