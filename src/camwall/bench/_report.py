"""The report: ``table.md``, ``table.csv``, ``summary.json``, figures and ``report.html``.

Everything is drawn from the results store alone, so ``camwall report DIR`` regenerates it:
the store is read once into typed results (:mod:`camwall.bench._results`), then each writer
draws its format from them: :mod:`~camwall.bench._summary` (``summary.json``),
:mod:`~camwall.bench._tables` (``table.md``, ``table.csv``), :mod:`~camwall.bench._figures`
(PNGs) and :mod:`~camwall.bench._html` (``report.html``, with the reading of
:mod:`~camwall.bench._reading`). A store of an interrupted run is drawn as it is, with every
incomplete cell marked. This is the only layer that converts to numpy.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from camwall.bench._figures import boxplots, dead_zone_picture, figure_grid
from camwall.bench._html import html_page
from camwall.bench._reading import reading
from camwall.bench._results import BenchResults, ModelResult, load_results
from camwall.bench._store import STORE_NAME, ReadOnlyStore, Store
from camwall.bench._summary import summary_json
from camwall.bench._tables import markdown, write_csv
from camwall.errors import CamwallError

__all__ = ["figure_name", "reading", "write_report"]


MAX_NAME = 200
"""The longest figure file name written (file systems allow 255 bytes)."""


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "x"


def figure_name(kind: str, *names: str) -> str:
    """``KIND-NAME1-NAME2.png`` (names slugged to ``[A-Za-z0-9._-]``); a name longer than
    :data:`MAX_NAME` is cut and ends with 10 hex digits of the SHA-256 of the full names, so
    that every name fits the file system and two cut names never clash."""
    name = "-".join([kind, *map(_slug, names)])
    if len(name) + 4 <= MAX_NAME:
        return f"{name}.png"
    digest = hashlib.sha256("\0".join(names).encode("utf-8", "surrogateescape")).hexdigest()
    return f"{name[: MAX_NAME - 15]}-{digest[:10]}.png"


def write_report(out: str | Path) -> dict[str, Path]:
    """Regenerate every output in ``out`` from ``out/results.sqlite``.

    Returns:
        name -> path of each file written (``table.md``, ``table.csv``, ``summary.json``,
        ``report.html`` and the PNG figures ``leakage-MODEL.png``,
        ``maps-MODEL-DATASET.png``, ``dead-zone-MODEL.png`` of every walled model).
    """
    out = Path(out)
    path = out / STORE_NAME
    if not path.is_file():
        raise CamwallError(
            f"{out} holds no results store ({STORE_NAME}); run `camwall bench --out {out}` first."
        )
    try:  # a writable older store is migrated in place
        store = Store(path)
    except ReadOnlyStore:  # a read-only one in memory (the docs' promise)
        store = Store(path, readonly=True)
    with store:
        results = load_results(store)
    written = {
        "summary.json": out / "summary.json",
        "table.md": out / "table.md",
        "table.csv": out / "table.csv",
    }
    written["summary.json"].write_text(json.dumps(summary_json(results), indent=2) + "\n")
    written["table.md"].write_text(markdown(results))
    write_csv(results, written["table.csv"])
    figures = {m.name: _model_figures(results, m, out) for m in results.models}
    for kinds in figures.values():
        for fig_paths in kinds.values():
            written.update((p.name, p) for p in fig_paths)
    written["report.html"] = out / "report.html"
    written["report.html"].write_text(html_page(results, path, figures))
    return written


def _model_figures(results: BenchResults, model: ModelResult, out: Path) -> dict[str, list[Path]]:
    """Draw one walled model's figures into ``out``: ``{"box", "grid", "dead"}`` -> PNG paths."""
    figures: dict[str, list[Path]] = {"box": [], "grid": [], "dead": []}
    methods = list(results.methods)  # grouped by family (load_results)
    families = dict(results.families) if results.grouped else None
    box = out / figure_name("leakage", model.name)
    if boxplots(model, methods, box, families):
        figures["box"].append(box)
    for d, ds in model.datasets.items():
        classes = results.dataset_info.get(d, {}).get("class_names") or []
        grid = out / figure_name("maps", model.name, d)
        if figure_grid(model, ds, methods, classes, grid, families):
            figures["grid"].append(grid)
    dead = out / figure_name("dead-zone", model.name)
    dead_zone_picture(model, dead)
    figures["dead"].append(dead)
    return figures
