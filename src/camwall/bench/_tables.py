"""The tables: ``table.md`` and ``table.csv``, and the column plan the HTML table shares.

``table.md`` has one section per walled model: the Table 1 layout (mu mean ± std per method and
dataset, in %, the paper's numbers beside the analogous dataset), the dead zone, all metrics per
dataset; then the accuracy of every model. ``table.csv`` has one row per (model, dataset,
method) of the Table 1 layout. Cells of an incomplete run carry ``(done/expected)`` images and
their methods ``(incomplete)``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from camwall.bench._results import (
    BenchResults,
    DatasetResult,
    DeadZone,
    MethodResult,
    ModelResult,
    shown_metrics,
)
from camwall.bench._summary import PAPER, paper_column
from camwall.bench._verdict import Verdict, classify
from camwall.metrics import CONTROLS, METRICS

__all__ = [
    "TableRow",
    "columns",
    "dead_text",
    "family_heading",
    "header",
    "kind_groups",
    "markdown",
    "metric_text",
    "overview",
    "pct",
    "progress",
    "shown_metrics",
    "table_rows",
    "write_csv",
]

SIGN_DEPENDENT = ("eigencam", "eigengradcam", "gradcam:EigenCAM", "gradcam:EigenGradCAM")
"""Methods whose map is a principal component, whose sign is a convention (marked †)."""

SIGN_NOTE = (
    "† Sign of the first principal component: camwall's eigencam and eigengradcam turn it so "
    "that the map correlates positively with the mean activation map; grad-cam's EigenCAM and "
    "EigenGradCAM keep the sign LAPACK returns, which can flip the map and change μ a lot. "
    "Compare with grad-cam on the same run: --methods eigengradcam,gradcam:EigenGradCAM shows "
    "both."
)


def method_label(meth: str) -> str:
    """A method's row label: ``(control)`` for a control, ``†`` for a sign convention."""
    return (
        meth + (" (control)" if meth in CONTROLS else "") + (" †" if meth in SIGN_DEPENDENT else "")
    )


def sign_note(results: BenchResults) -> list[str]:
    """``[SIGN_NOTE]`` when a method of the run is marked †, else ``[]``."""
    return [SIGN_NOTE] if any(m in SIGN_DEPENDENT for m in results.methods) else []


INCOMPLETE_NOTE = (
    "Incomplete: the store holds fewer images than the run asked for (an interrupted run?); "
    "cells show (done/expected) images. `camwall bench --resume` with the same options "
    "completes them."
)


def pct(v: float | None, digits: int = 1) -> str:
    """A fraction as a percentage with ``digits`` decimals, or ``n/a``."""
    return "n/a" if v is None else f"{100 * v:.{digits}f}"


def progress(result: MethodResult | DatasetResult) -> str:
    """``" (done/expected)"`` for an incomplete result, else ``""``."""
    done = result.images
    return "" if done >= result.expected else f" ({done}/{result.expected})"


def cell(result: MethodResult) -> str:
    """A Table 1 cell: ``mean ± std`` of mu in %, empty maps and progress if any."""
    s = result.headline
    if s.mean is None:
        text = f"n/a ({s.empty} empty)" if s.empty else "n/a"
    else:
        text = f"{pct(s.mean)} ± {pct(s.std)}" + (f" ({s.empty} empty)" if s.empty else "")
    return text + progress(result)


def paper_cell(method: str, column: str | None) -> str:
    if column is None or method not in PAPER:
        return "–"
    mean, std = PAPER[method][column]
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if method != "uniform" else f"{100 * mean:.1f}"


def metric_text(name: str, mean: float | None, unit: str = "") -> str:
    """A metric's mean as the tables show it: percent (with ``unit``) or a ratio."""
    if mean is None:
        return "n/a"
    return pct(mean) + unit if METRICS.get(name).percent else f"{mean:.2f}"


def dead_text(dz: DeadZone | None) -> str:
    """Where the dead zone is, in words: ``rows 11–15 of 16 (31.2% of the image)``."""
    if dz is None:
        return "unknown"
    h, w = dz.input_size
    where = (
        f"rows {dz.rows[0]}–{dz.rows[1]} of {h}" if dz.rows else f"{dz.pixels} of {h}×{w} pixels"
    )
    if dz.per_output:
        return (
            f"per explained cell, the other three cells minus the receptive-field margin: "
            f"{where} ({pct(dz.fraction)}% of the image)"
        )
    return f"{where} ({pct(dz.fraction)}% of the image)"


# -- the column plan ----------------------------------------------------------------------------


def columns(
    results: BenchResults, model: ModelResult | None = None
) -> list[tuple[str, str | None]]:
    """The table's dataset columns: ``(dataset, paper column beside it or None)``; those
    ``model`` reads when given."""
    names = results.datasets if model is None else tuple(model.datasets)
    return [(d, paper_column(d)) for d in names]


def header(results: BenchResults, model: ModelResult | None = None) -> list[tuple[str, str]]:
    """Header cells as ``(top, bottom)`` lines, joined by a space (markdown) or ``<br>``."""
    out = [("method", "")]
    for d, col in columns(results, model):
        out.append((d, "μ (%)"))
        if col:
            out.append(("paper", f"{col} (%)"))
    return out


@dataclass(frozen=True)
class TableRow:
    """One method's row: its label and ``(text, css class)`` cells; the class is the verdict's
    (``ok``, ``leak``, ``bad`` or empty) for our cells and ``paper`` for the paper's."""

    method: str
    label: str
    control: bool
    cells: tuple[tuple[str, str], ...]
    family: str = "cam"


def family_heading(results: BenchResults, rows: list[TableRow], i: int) -> str | None:
    """The family heading shown above ``rows[i]`` (``"input gradient"``, ...), or None: only
    in a grouped table (:attr:`BenchResults.grouped`), at the first row of each family."""
    from camwall.explainers import FAMILIES

    if not results.grouped or (i > 0 and rows[i - 1].family == rows[i].family):
        return None
    return FAMILIES.get(rows[i].family, rows[i].family)


def table_rows(results: BenchResults, model: ModelResult) -> list[TableRow]:
    """The Table 1 rows of ``model``: one per method, cells in :func:`columns` order."""
    rows = []
    for meth in results.methods:
        cells: list[tuple[str, str]] = []
        done = True
        for d, col in columns(results, model):
            r = model.datasets[d].methods[meth]
            done = done and r.complete
            verdict = classify(r)
            cells.append((cell(r), "" if verdict is Verdict.CONTROL else verdict.value))
            if col:
                cells.append((paper_cell(meth, col), "paper"))
        label = method_label(meth) + ("" if done else " (incomplete)")
        family = results.families.get(meth, "other")
        rows.append(TableRow(meth, label, meth in CONTROLS, tuple(cells), family))
    return rows


# -- the overview: one column group per kind of wall ---------------------------------------------

KIND_LABELS = {"CNN": "CNN bottom wall", "grid": "grid (a wall per cell)", "ViT": "ViT"}
"""How the overview names a model kind (:func:`camwall.walls.model_kind`); others as they are."""


def kind_groups(results: BenchResults) -> list[tuple[str, list[ModelResult]]]:
    """The walled models grouped by kind, in the order the kinds first appear."""
    groups: dict[str, list[ModelResult]] = {}
    for m in results.models:
        groups.setdefault(m.kind, []).append(m)
    return list(groups.items())


def overview(results: BenchResults) -> tuple[list[tuple[str, str]], list[list[str]]] | None:
    """The overview table: header cells ``(kind group, column)`` and one row per method (its
    label, then the cells), with one column group per model kind: μ of each of the kind's
    models on each of its datasets, then its target-region metrics (the grid pointing game).
    None when every walled model is of one kind (the per-model sections say it all)."""
    groups = kind_groups(results)
    if len(groups) < 2:
        return None
    head: list[tuple[str, str]] = [("", "method")]
    plan: list[tuple[ModelResult, str, str]] = []  # (model, dataset, metric)
    for kind, models in groups:
        for m in models:
            for d, ds in m.datasets.items():
                extra = [n for n in shown_metrics(ds) if METRICS.get(n).zone == "target"]
                for name in ["wall_leakage", *extra]:
                    what = "μ" if name == "wall_leakage" else name
                    head.append((KIND_LABELS.get(kind, kind), f"{m.name} · {d} {what} (%)"))
                    plan.append((m, d, name))
    rows = []
    for meth in results.methods:
        label = method_label(meth)
        cells = []
        for m, d, name in plan:
            r = m.datasets[d].methods[meth]
            cells.append(
                cell(r) if name == "wall_leakage" else metric_text(name, r.stats[name].mean)
            )
        rows.append([label, *cells])
    return head, rows


def _overview_markdown(results: BenchResults) -> list[str]:
    table = overview(results)
    if table is None:
        return []
    head, rows = table
    titles = [f"{group}: {col}" if group else col for group, col in head]
    lines = [
        "# Wall leakage μ by kind of wall",
        "",
        (
            "One column group per kind of wall (CNN bottom wall, grid, ViT), μ in % (lower is "
            "better); the grid pointing game is the share of the map in the explained cell "
            "(higher is better; 25% for a uniform map)."
        ),
        "",
        "| " + " | ".join(titles) + " |",
        "|" + "|".join("---" for _ in titles) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    note = sign_note(results)
    return [*lines, *(["", *note] if note else []), ""]


# -- markdown -----------------------------------------------------------------------------------


def markdown(results: BenchResults) -> str:
    """The text of ``table.md``: one section per walled model, then the accuracy table."""
    if not results.models:
        lines = ["# Wall leakage μ of saliency maps", "", "No walled model in the store.", ""]
    else:
        lines = _overview_markdown(results)
        lines += [line for m in results.models for line in _model_markdown(results, m)]
    lines += ["## Accuracy", "", "| model | dataset | accuracy (%) | images |", "|---|---|---|---|"]
    for m, per in results.accuracy.items():
        for d, a in per.items():
            lines.append(f"| {m} | {d} | {pct(a.accuracy)} | {a.n} |")
    return "\n".join(lines) + "\n"


def _model_markdown(results: BenchResults, model: ModelResult) -> list[str]:
    head = [" ".join(p for p in pair if p) for pair in header(results, model)]
    lines = [
        f"# Wall leakage μ of saliency maps — model `{model.name}`",
        "",
        (
            "μ = ‖L on the dead zone‖₂ / ‖L‖₂ per image, mean ± std over images, in %. "
            "Lower is better; 0 = the method respects the wall."
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    rows = table_rows(results, model)
    for i, row in enumerate(rows):
        heading = family_heading(results, rows, i)
        if heading:
            lines.append("| " + " | ".join([f"**{heading}**", *("" for _ in row.cells)]) + " |")
        lines.append("| " + " | ".join([row.label, *(t for t, _ in row.cells)]) + " |")
    dz = model.dead_zone
    lines += [
        "",
        f"Dead zone: {dead_text(dz)}; a uniform map scores μ = {pct(dz.uniform_mu)}%.",
        (
            "Paper columns: the walled VGG16 on ImageNet (Table 1 of Taimeskhanov et al., "
            "2024), beside the analogous dataset; the models and images differ, so compare the "
            "pattern, not the digits. Empty (all-zero) maps are left out of the mean and counted."
        ),
        *sign_note(results),
    ]
    if not model.complete:
        lines.append(INCOMPLETE_NOTE)
    lines += ["", "## All metrics (mean over images, %; relative_leakage as a ratio)", ""]
    for ds in model.datasets.values():
        lines += _metrics_markdown(ds)
    return lines


def _metrics_markdown(ds: DatasetResult) -> list[str]:
    names = shown_metrics(ds)
    lines = [f"### {ds.dataset}{progress(ds)}", "", "| method | " + " | ".join(names) + " |"]
    lines.append("|" + "|".join("---" for _ in range(len(names) + 1)) + "|")
    for meth, r in ds.stored.items():
        cells = [metric_text(n, r.stats[n].mean) for n in names]
        lines.append(f"| {meth}{progress(r)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


# -- csv ----------------------------------------------------------------------------------------

CSV_COLUMNS = (
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
    "expected",
)


def write_csv(results: BenchResults, path: Path) -> None:
    """Write ``table.csv``: one row per (walled model, dataset, method) with rows in the store.

    Columns: :data:`CSV_COLUMNS`; percentages with 4 decimals (the paper's with 1), ``n``
    non-empty and ``empty`` maps, ``expected`` the images the run asked for (``n + empty`` below
    it: an incomplete cell).
    """
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for model in results.models:
            for d, ds in model.datasets.items():
                col = paper_column(d)
                for meth, r in ds.stored.items():
                    s = r.headline
                    paper = PAPER.get(meth, {}).get(col) if col else None
                    w.writerow(
                        [
                            model.name,
                            d,
                            meth,
                            int(meth in CONTROLS),
                            "" if s.mean is None else f"{100 * s.mean:.4f}",
                            "" if s.std is None else f"{100 * s.std:.4f}",
                            s.n,
                            s.empty,
                            col or "",
                            "" if paper is None else f"{100 * paper[0]:.1f}",
                            "" if paper is None else f"{100 * paper[1]:.1f}",
                            r.expected,
                        ]
                    )
