import csv
import json
import math
import re

import pytest
import torch
from bench_tiny import (
    ALL,
    DEAD_FIRST,
    SIZE,
    tiny_bench_model,
    tiny_dataset,
    tiny_dead_zone,
    tiny_model,
)

from camwall.bench import STORE_NAME, Store, run_bench, write_report
from camwall.cams import compute_cams
from camwall.errors import CamwallError
from camwall.metrics import METRICS, random_control, wall_leakage


def test_tiny_dead_zone_is_the_gradient_support():
    # Independent check of the test model's wall: input rows >= 11 get exactly zero gradient,
    # and every row above gets some.
    model = tiny_model()
    x = torch.rand(32, 1, SIZE, SIZE, requires_grad=True)
    model(x).sum().backward()
    rows = x.grad.abs().sum(dim=(0, 1, 3))
    assert torch.all(rows[DEAD_FIRST:] == 0)
    assert torch.all(rows[:DEAD_FIRST] > 0)


def test_tiny_dead_zone_matches_walls_dead_zone():
    from camwall.walls import dead_zone

    assert torch.equal(dead_zone(tiny_model(), (1, SIZE, SIZE)).cpu(), tiny_dead_zone())


def test_one_row_per_key_and_values(tiny_run):
    with Store(tiny_run / STORE_NAME) as store:
        rows = store.results()
        preds = store.predictions()
    assert len(rows) == (6 + 5) * len(ALL)
    keys = {(r["model"], r["dataset"], r["image"], r["method"]) for r in rows}
    assert len(keys) == len(rows)
    assert {r["model"] for r in rows} == {"tiny"}  # the baseline gets predictions only
    assert len(preds) == 2 * (6 + 5)

    by = {(r["dataset"], r["image"], r["method"]): r for r in rows}
    data = tiny_dataset("tiny-mix", 6)
    model = tiny_model()
    with torch.no_grad():
        logits = model(data.images)
    dead = tiny_dead_zone()
    # Oracle: recompute the maps directly and compare every metric.
    targets = logits.argmax(1).tolist()
    for method in ("gradcam", "hirescam", "scorecam"):
        maps = compute_cams(model, data.images, "1", [method], targets=targets)[method]
        for name, metric in METRICS.items():
            got = [by[("tiny-mix", i, method)][name] for i in range(6)]
            if metric.zone != "dead":  # a target-region metric: grid models only
                assert all(math.isnan(v) for v in got)
                continue
            want = metric(maps, dead).tolist()
            assert got == pytest.approx(want, abs=1e-6, nan_ok=True)
    for i in range(6):
        r = by[("tiny-mix", i, "gradcam")]
        assert r["predicted"] == r["target"] == targets[i]
        assert r["label"] == int(data.labels[i])
        assert r["confidence"] == pytest.approx(float(logits.softmax(1)[i].max()), abs=1e-6)
        # hirescam and layercam respect the wall exactly; the uniform control is closed form.
        assert by[("tiny-mix", i, "hirescam")]["wall_leakage"] == 0.0
        assert by[("tiny-mix", i, "layercam")]["any_leak"] == 0.0
        assert by[("tiny-mix", i, "uniform")]["wall_leakage"] == pytest.approx(math.sqrt(5 / 16))
    noise = random_control(data.images, list(range(6)), seed=3)
    want = wall_leakage(noise, dead).tolist()
    assert [by[("tiny-mix", i, "random")]["wall_leakage"] for i in range(6)] == pytest.approx(want)


def test_summary_json_matches_rows(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    with Store(tiny_run / STORE_NAME) as store:
        rows = store.results()
        preds = store.predictions()
    assert summary["model"] == "tiny"
    assert set(summary["datasets"]) == {"tiny-mix", "tiny-pair"}
    for d, per in summary["datasets"].items():
        assert list(per) == ALL
        for method, s in per.items():
            vals = [r["wall_leakage"] for r in rows if r["dataset"] == d and r["method"] == method]
            finite = torch.tensor([v for v in vals if not math.isnan(v)], dtype=torch.float64)
            assert s["n"] == len(finite)
            assert s["empty"] == len(vals) - len(finite)
            if len(finite):
                assert s["mean"] == pytest.approx(float(finite.mean()))
                assert s["std"] == pytest.approx(float(finite.std(unbiased=False)))
                assert 0.0 <= s["mean"] <= 1.0
    dz = summary["dead_zone"]["tiny"]
    assert dz["rows"] == [DEAD_FIRST, SIZE - 1]
    assert dz["fraction"] == pytest.approx(5 / 16)
    assert dz["uniform_mu"] == pytest.approx(math.sqrt(5 / 16))
    for m in ("tiny", "tiny-baseline"):
        for d in ("tiny-mix", "tiny-pair"):
            mine = [p for p in preds if p["model"] == m and p["dataset"] == d]
            acc = sum(p["label"] == p["predicted"] for p in mine) / len(mine)
            assert summary["accuracy"][m][d]["accuracy"] == pytest.approx(acc)
    assert summary["accuracy"]["tiny-baseline"]["tiny-mix"]["walled"] is False
    assert summary["config"]["methods"] == ALL
    assert summary["config"]["seed"] == 3
    assert summary["paper"]["gradcam"]["STACK-MIX"]["mean"] == pytest.approx(0.227)


def test_tables(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    with (tiny_run / "table.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 2 * len(ALL)
    for row in table:
        s = summary["datasets"][row["dataset"]][row["method"]]
        if s["mean"] is not None:
            assert float(row["mean_pct"]) == pytest.approx(100 * s["mean"], abs=1e-4)
        assert int(row["n"]) == s["n"]
    gc = next(r for r in table if r["dataset"] == "tiny-mix" and r["method"] == "gradcam")
    assert (gc["paper_dataset"], gc["paper_mean_pct"]) == ("STACK-MIX", "22.7")
    md = (tiny_run / "table.md").read_text()
    hires = next(line for line in md.splitlines() if line.startswith("| hirescam |"))
    assert hires.split("|")[2].strip() == "0.0 ± 0.0"
    assert "paper STACK-GEN" in md


def test_reading_names_respecting_and_leaking_methods(tiny_run):
    html = (tiny_run / "report.html").read_text()
    respecting = re.search(r"On tiny-mix \(6 images\): ([^.]*) respects? the wall", html)
    assert respecting is not None
    assert {"hirescam", "layercam"} <= set(re.split(r", | and ", respecting.group(1)))
    summary = json.loads((tiny_run / "summary.json").read_text())
    per = summary["metrics"]["tiny"]["tiny-mix"]
    cams = {m: s["wall_leakage"]["mean"] for m, s in per.items() if m not in ("uniform", "random")}
    worst = max(cams, key=lambda m: cams[m] or -1)
    assert f"{worst} leaks most: μ = {100 * cams[worst]:.1f}%" in html
    assert "data:image/png;base64," in html
    assert 'src="http' not in html  # self-contained
    assert "src='http" not in html


def test_report_regenerates_from_store(tiny_run, tmp_path):
    before = json.loads((tiny_run / "summary.json").read_text())
    (tiny_run / "summary.json").unlink()
    (tiny_run / "table.md").unlink()
    written = write_report(tiny_run)
    assert json.loads((tiny_run / "summary.json").read_text()) == before
    names = set(written)
    assert {"table.md", "table.csv", "summary.json", "report.html"} <= names
    assert {"maps-tiny-tiny-mix.png", "leakage-tiny.png", "dead-zone-tiny.png"} <= names
    with pytest.raises(CamwallError, match="no results store"):
        write_report(tmp_path)


def test_figures_keep_only_first_images(tiny_run):
    with Store(tiny_run / STORE_NAME) as store:
        figs = store.figures()
    images = {(d, i) for (_, d, i, k) in figs if k == "image"}
    assert images == {("tiny-mix", i) for i in range(6)} | {("tiny-pair", i) for i in range(5)}
    # hirescam's stored map is 0 on the dead zone (PNG round trip of exact zeros).
    from camwall.bench._store import png_to_array

    m = png_to_array(figs[("tiny", "tiny-mix", 0, "hirescam")])
    assert m.shape == (SIZE, SIZE)
    assert float(m[DEAD_FIRST:].max()) == 0.0


def test_figure_images_limit(tmp_path):
    run_bench(
        [tiny_bench_model()],
        [tiny_dataset("d", 5)],
        ["uniform"],
        tmp_path,
        device="cpu",
        figure_images=2,
        progress=False,
        report=False,
    )
    with Store(tmp_path / STORE_NAME) as store:
        figs = store.figures()
    assert sorted({i for (_, _, i, _) in figs}) == [0, 1]
    assert not (tmp_path / "report.html").exists()


def test_bad_inputs(tmp_path):
    model, data = tiny_bench_model(), tiny_dataset("d", 3)
    with pytest.raises(CamwallError, match=r"unknown CAM method 'gradcan'.*Did you mean"):
        run_bench([model], [data], ["gradcan"], tmp_path, progress=False)
    big = tiny_dataset("big", 2)
    big.images = torch.rand(2, 1, 20, 20)
    with pytest.raises(CamwallError, match="20x20 images but model 'tiny' takes 16x16"):
        run_bench([model], [big], ["gradcam"], tmp_path, progress=False)
    rgb = tiny_dataset("rgb", 2)
    rgb.images = torch.rand(2, 3, SIZE, SIZE)
    model.channels = 1
    with pytest.raises(CamwallError, match="3-channel images"):
        run_bench([model], [rgb], ["gradcam"], tmp_path, progress=False)
    no_wall = tiny_bench_model()
    no_wall.dead_zone = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    with pytest.raises(CamwallError, match="no dead zone"):
        run_bench([no_wall], [data], ["gradcam"], tmp_path, progress=False)
    with pytest.raises(CamwallError, match="no walled model"):
        run_bench([tiny_bench_model(walled=False)], [data], ["gradcam"], tmp_path)
    with pytest.raises(CamwallError, match="batch-size"):
        run_bench([model], [data], ["gradcam"], tmp_path, batch_size=0)
    assert not (tmp_path / STORE_NAME).exists()  # nothing was started
