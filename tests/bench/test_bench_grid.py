"""The bench on the shipped grid model: one explained cell per image, per-image dead zones,
the grid pointing game, model/dataset pairing and the overview table by kind of wall."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from bench_tiny import tiny_bench_model, tiny_dataset

from camwall.bench import run_bench
from camwall.bench._inputs import resolve_dataset, resolve_model
from camwall.bench._runner import explained_cell
from camwall.bench._store import STORE_NAME, Store, png_to_array
from camwall.cams import compute_cams
from camwall.data import cell_masks
from camwall.errors import CamwallError
from camwall.metrics import METRICS
from camwall.walls import dead_zone
from camwall.weights import shipped_model

SEED = 1
N = 6


@pytest.fixture(scope="module")
def grid_model():
    return resolve_model(str(shipped_model("fashion-grid-vgg")), name="grid")


@pytest.fixture(scope="module")
def grid_run(grid_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid-run")
    data = resolve_dataset("fashion-grid", N, SEED)
    run_bench(
        [grid_model, tiny_bench_model()],
        [data, tiny_dataset("tiny-mix", 3)],
        ["gradcam", "hirescam", "uniform"],
        out,
        device="cpu",
        batch_size=4,
        seed=SEED,
        progress=False,
    )
    return out, data


def test_explained_cell_cycles_with_the_seed():
    assert [explained_cell(i, 0) for i in range(6)] == [0, 1, 2, 3, 0, 1]
    assert [explained_cell(i, 3) for i in range(3)] == [3, 0, 1]


def test_grid_model_is_read_with_per_cell_dead_zones(grid_model):
    assert grid_model.task == "grid"
    assert grid_model.kind == "grid"
    zones = grid_model.cell_zones
    assert zones.shape == (4, 64, 64)
    for k in range(4):
        assert torch.equal(
            zones[k], dead_zone(grid_model.model, (1, 64, 64), range(10 * k, 10 * k + 10))
        )


def test_rows_match_an_oracle_per_explained_cell(grid_model, grid_run):
    """Each image explains its cell's predicted class (output 10 k + c); μ is measured on that
    cell's dead zone and the pointing game on the cell itself."""
    out, data = grid_run
    with Store(out / STORE_NAME) as store:
        rows = {(r["image"], r["method"]): r for r in store.results() if r["model"] == "grid"}
        figures = store.figures()
    model = grid_model.model
    with torch.no_grad():
        logits = model(data.images)
    cells = [explained_cell(i, SEED) for i in range(N)]
    preds = [int(logits[i, 10 * k : 10 * k + 10].argmax()) for i, k in enumerate(cells)]
    targets = [10 * k + p for k, p in zip(cells, preds)]
    maps = compute_cams(model, data.images, "9", ["gradcam", "hirescam"], targets=targets)
    dead = grid_model.cell_zones[cells]
    region = cell_masks(64)[cells]
    for method in ("gradcam", "hirescam"):
        mu = METRICS.get("wall_leakage")(maps[method], dead).tolist()
        pointing = METRICS.get("grid_pointing")(maps[method], region).tolist()
        for i in range(N):
            r = rows[(i, method)]
            assert r["label"] == int(data.labels[i, cells[i]])
            assert r["predicted"] == preds[i]
            assert r["wall_leakage"] == pytest.approx(mu[i], abs=1e-6, nan_ok=True)
            assert r["grid_pointing"] == pytest.approx(pointing[i], abs=1e-6, nan_ok=True)
    for i in range(N):
        assert rows[(i, "hirescam")]["wall_leakage"] == 0.0  # HiResCAM respects every wall
        assert rows[(i, "uniform")]["wall_leakage"] == pytest.approx(math.sqrt(2247 / 4096))
        assert rows[(i, "uniform")]["grid_pointing"] == pytest.approx(0.25)
        drawn = png_to_array(figures[("grid", "fashion-grid", i, "dead_zone")]) > 0.5
        assert torch.equal(torch.from_numpy(drawn), grid_model.cell_zones[cells[i]])


def test_models_run_only_on_the_datasets_they_read(grid_run):
    out, _ = grid_run
    with Store(out / STORE_NAME) as store:
        pairs = {(r["model"], r["dataset"]) for r in store.results()}
        tiny_rows = [r for r in store.results() if r["model"] == "tiny"]
    assert pairs == {("grid", "fashion-grid"), ("tiny", "tiny-mix")}
    assert all(math.isnan(r["grid_pointing"]) for r in tiny_rows)


def test_report_has_one_column_group_per_kind(grid_run):
    out, _ = grid_run
    md = (out / "table.md").read_text()
    assert md.startswith("# Wall leakage μ by kind of wall")
    head = next(line for line in md.splitlines() if line.startswith("| method | grid"))
    assert "CNN bottom wall: tiny · tiny-mix μ (%)" in head
    assert "grid (a wall per cell): grid · fashion-grid μ (%)" in head
    assert "grid (a wall per cell): grid · fashion-grid grid_pointing (%)" in head
    hires = next(line for line in md.splitlines() if line.startswith("| hirescam | "))
    assert hires.split("|")[2].strip() == "0.0 ± 0.0"
    assert "per explained cell" in md
    assert "Wall leakage μ by kind of wall" in (out / "report.html").read_text()


def test_impossible_pairings_are_refused(grid_model, tmp_path: Path):
    grid_data = resolve_dataset("fashion-grid", 2, 0)
    single = resolve_dataset("fashion-stackmix", 2, 0)
    with pytest.raises(CamwallError, match="reads grid images but no dataset of the run does"):
        run_bench([grid_model], [single], ["uniform"], tmp_path / "a", progress=False)
    vgg = tiny_bench_model()
    with pytest.raises(CamwallError, match="fits no model of the run"):
        run_bench([vgg], [grid_data, tiny_dataset("tiny-mix", 2)], ["uniform"], tmp_path / "b")


def test_cli_runs_the_shipped_grid_model_and_refuses_a_wrong_pairing(tmp_path: Path, capsys):
    from camwall.cli import main

    args = ["bench", "--model", "shipped:fashion-grid-vgg", "--images", "2", "--no-progress"]
    args += ["--methods", "hirescam,uniform", "--out", str(tmp_path / "ok")]
    assert main([*args, "--dataset", "fashion-grid"]) == 0
    md = (tmp_path / "ok" / "table.md").read_text()
    assert "model `fashion-grid-vgg`" in md
    assert "| hirescam | 0.0 ± 0.0 |" in md
    capsys.readouterr()
    args[-1] = str(tmp_path / "bad")
    assert main([*args, "--dataset", "fashion-stackmix"]) == 2
    assert "reads grid images but no dataset of the run does" in capsys.readouterr().err
