"""``camwall report`` on an interrupted run's store: drawn as it is, incomplete cells marked."""

import csv
import json
import shutil
import sqlite3

import matplotlib
import pytest

from camwall.bench import STORE_NAME, Store, write_report
from camwall.bench._figures import _box_panel, row_labels
from camwall.bench._results import load_results
from camwall.cams import DEFAULT_METHODS

CELLS = 2 * (len(DEFAULT_METHODS) + 2)  # 2 datasets x (default CAMs + 2 controls)

matplotlib.use("Agg")


def _interrupted(tiny_run, tmp_path, *deletes):
    """A copy of the tiny run's store with the result rows matching ``deletes`` removed."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(tiny_run / STORE_NAME, out / STORE_NAME)
    db = sqlite3.connect(out / STORE_NAME)
    for where in deletes:
        db.execute(f"DELETE FROM results WHERE {where}")
    db.commit()
    db.close()
    return out


def _table_cells(md):
    """``{(method, dataset): cell}`` of the first Table 1 section of ``table.md``."""
    lines = [x for x in md.split("\n## ")[0].splitlines() if x.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = {}
    for line in lines[2:]:
        row = [c.strip() for c in line.strip("|").split("|")]
        method = row[0].split(" ")[0]
        cells[(method, "label")] = row[0]
        for h, c in zip(head[1:], row[1:]):
            if h.endswith(" μ (%)"):
                cells[(method, h.removesuffix(" μ (%)"))] = c
    return cells


def test_partial_store_marks_exactly_the_incomplete_cells(tiny_run, tmp_path):
    # scorecam stopped after 2 of 6 tiny-mix images; opticam never started on tiny-pair.
    out = _interrupted(
        tiny_run,
        tmp_path,
        "dataset='tiny-mix' AND method='scorecam' AND image >= 2",
        "dataset='tiny-pair' AND method='opticam'",
    )
    written = write_report(out)
    assert {"leakage-tiny.png", "maps-tiny-tiny-mix.png", "maps-tiny-tiny-pair.png"} <= set(written)
    cells = _table_cells((out / "table.md").read_text())
    partial = {k: v for k, v in cells.items() if k[1] != "label" and v.endswith(("/6)", "/5)"))}
    assert set(partial) == {("scorecam", "tiny-mix"), ("opticam", "tiny-pair")}
    assert cells[("opticam", "tiny-pair")] == "n/a (0/5)"
    assert cells[("scorecam", "tiny-mix")].endswith(" (2/6)")
    labels = {k[0]: v for k, v in cells.items() if k[1] == "label"}
    assert {m for m, v in labels.items() if v.endswith("(incomplete)")} == {"scorecam", "opticam"}
    # The numbers are those of the rows that exist.
    with Store(out / STORE_NAME) as store:
        rows = [
            r for r in store.results() if r["method"] == "scorecam" and r["dataset"] == "tiny-mix"
        ]
    mu = [r["wall_leakage"] for r in rows]
    assert len(mu) == 2
    assert cells[("scorecam", "tiny-mix")].startswith(f"{100 * sum(mu) / 2:.1f} ± ")
    summary = json.loads((out / "summary.json").read_text())
    s = summary["datasets"]["tiny-mix"]["scorecam"]
    assert s["n"] + s["empty"] == 2
    assert "opticam" not in summary["datasets"]["tiny-pair"]  # as before: only stored methods
    with (out / "table.csv").open() as fh:
        short = [
            (r["method"], r["dataset"])
            for r in csv.DictReader(fh)
            if int(r["n"]) + int(r["empty"]) < int(r["expected"])
        ]
    assert short == [("scorecam", "tiny-mix")]
    html = (out / "report.html").read_text()
    assert f"2 of {CELLS} (model, dataset, method) cells have fewer images" in html
    assert "On tiny-mix (6 images; incomplete: scorecam 2/6):" in html
    assert "On tiny-pair (5 images; incomplete: opticam 0/5):" in html
    assert "scorecam (incomplete)</td>" in html
    assert "n/a (0/5)</td>" in html


def test_partial_store_figures_mark_progress(tiny_run, tmp_path):
    out = _interrupted(
        tiny_run, tmp_path, "dataset='tiny-mix' AND method='scorecam' AND image >= 2"
    )
    with Store(out / STORE_NAME) as store:
        results = load_results(store)
    model = results.models[0]
    mix, pair = model.datasets["tiny-mix"], model.datasets["tiny-pair"]
    labels = row_labels(mix, ["gradcam", "scorecam"])
    assert labels[0] == "image"
    assert not labels[1].endswith(")")
    assert labels[2].endswith("% (2/6)")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2)
    methods = list(results.methods)
    _box_panel(ax1, mix, methods, model.dead_zone.uniform_mu, np.random.default_rng(0))
    _box_panel(ax2, pair, methods, model.dead_zone.uniform_mu, np.random.default_rng(0))
    ticks = [t.get_text() for t in ax1.get_xticklabels()]
    assert [t for t in ticks if "(" in t] == ["scorecam (2/6)"]
    assert "incomplete" in ax1.get_title()
    assert "incomplete" not in ax2.get_title()
    plt.close(fig)


def test_dataset_with_no_rows(tiny_run, tmp_path):
    # The run stopped before tiny-pair started: this crashed the report ("List of boxplot
    # statistics and `positions` values must have the same length").
    out = _interrupted(tiny_run, tmp_path, "dataset='tiny-pair'")
    written = write_report(out)
    assert "leakage-tiny.png" in written
    cells = _table_cells((out / "table.md").read_text())
    pair = {m for (m, d), v in cells.items() if d == "tiny-pair" and v == "n/a (0/5)"}
    assert len(pair) == CELLS // 2  # every method
    assert not any(v.endswith("/6)") for (m, d), v in cells.items() if d == "tiny-mix")
    html = (out / "report.html").read_text()
    assert "On tiny-pair: no results yet (0 of 5 images)." in html
    assert f"{CELLS // 2} of {CELLS} (model, dataset, method) cells" in html


def test_complete_store_has_no_marks(tiny_run):
    md = (tiny_run / "table.md").read_text()
    html = (tiny_run / "report.html").read_text()
    assert "incomplete" not in md
    assert "incomplete" not in html.lower()
    assert not any(v.endswith(("/6)", "/5)")) for v in _table_cells(md).values())


@pytest.mark.parametrize("kept", [0, 3])
def test_method_with_zero_or_some_rows_everywhere(tiny_run, tmp_path, kept):
    out = _interrupted(tiny_run, tmp_path, f"method='gradcam' AND image >= {kept}")
    write_report(out)
    cells = _table_cells((out / "table.md").read_text())
    if kept == 0:
        assert cells[("gradcam", "tiny-mix")] == "n/a (0/6)"
    else:
        assert cells[("gradcam", "tiny-mix")].endswith("(3/6)")
    assert cells[("gradcam", "tiny-pair")].endswith(f"({kept}/5)")
    assert cells[("gradcam", "label")] == "gradcam (incomplete)"
