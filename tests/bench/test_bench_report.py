"""The report: summary.json schema, one section per walled model, the one verdict rule."""

import csv
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from bench_tiny import tiny_bench_model, tiny_dataset

from camwall.bench import run_bench
from camwall.bench._results import MethodResult, Stats
from camwall.bench._tables import SIGN_DEPENDENT
from camwall.bench._verdict import Verdict, classify
from camwall.metrics import METRICS

FIXTURE = Path(__file__).parent / "data" / "summary_two_models.json"
METHODS = ["gradcam", "hirescam", "eigencam", "uniform", "random"]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two walled models (the second with its conv filters negated) and a baseline.

    The same run as the one that wrote ``data/summary_two_models.json`` with the report code
    before the typed-results refactor.
    """
    out = tmp_path_factory.mktemp("two-models")
    second = tiny_bench_model("tiny2")
    with torch.no_grad():
        second.model[0].weight.mul_(-1.0)
    run_bench(
        [tiny_bench_model(), second, tiny_bench_model(walled=False)],
        [tiny_dataset("tiny-mix", 4), tiny_dataset("tiny-pair", 3, seed=1)],
        METHODS,
        out,
        device="cpu",
        batch_size=2,
        seed=3,
        progress=False,
    )
    return out


def _normalised(summary: dict) -> dict:
    summary = json.loads(json.dumps(summary))
    summary["config"]["out"] = "<out>"
    summary["versions"] = dict.fromkeys(summary["versions"], "<version>")
    summary["runs"] = [dict.fromkeys(r, "<time>") for r in summary["runs"]]
    for per in summary["seconds"].values():  # timings vary from run to run
        for methods in per.values():
            assert all(isinstance(v, float) and v >= 0 for v in methods.values())
            methods.update(dict.fromkeys(methods, "<seconds>"))
    return summary


# The per-image statistics (the summary's "metrics" and "datasets") are means and standard
# deviations of float32 metric values in [0, 1], each a reduction over one 16 x 16 map; the
# kernels (AVX-512 vs AVX2 convolutions) move each value by up to float32 eps x 256 and a mean
# or a sample std over n >= 2 values by at most sqrt(2) times that. Every other float (accuracy
# k/n, dead-zone fractions, the paper's numbers) is exact.
PER_IMAGE_STATS = ("metrics", "datasets")
STATS_TOL = 2**0.5 * torch.finfo(torch.float32).eps * 16 * 16


def _same(got, want, where="summary", tol=0.0):
    """Same keys in the same order, same types, equal values (the statistics to ``tol``)."""
    assert type(got) is type(want), where
    if isinstance(want, dict):
        assert list(got) == list(want), where
        for k in want:
            inner = STATS_TOL if where == "summary" and k in PER_IMAGE_STATS else tol
            _same(got[k], want[k], f"{where}.{k}", inner)
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _same(g, w, f"{where}[{i}]", tol)
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=0, abs=tol), where
    else:
        assert got == want, where


def test_summary_json_keeps_its_schema(two_models):
    # The fixture was written by the report code before the refactor, from this same run.
    got = _normalised(json.loads((two_models / "summary.json").read_text()))
    _same(got, json.loads(FIXTURE.read_text()))


def test_every_walled_model_gets_its_section(two_models):
    summary = json.loads((two_models / "summary.json").read_text())
    md = (two_models / "table.md").read_text()
    sections = re.split(r"^# ", md, flags=re.M)[1:]
    assert [s.splitlines()[0] for s in sections] == [
        "Wall leakage μ of saliency maps — model `tiny`",
        "Wall leakage μ of saliency maps — model `tiny2`",
    ]
    for model, section in zip(("tiny", "tiny2"), sections):
        per = summary["metrics"][model]["tiny-mix"]
        row = next(x for x in section.splitlines() if x.startswith("| eigencam † |"))
        mu = per["eigencam"]["wall_leakage"]
        assert row.split("|")[2].strip() == f"{100 * mu['mean']:.1f} ± {100 * mu['std']:.1f}"
    # The two models' maps differ, so their eigencam rows do too.
    e1, e2 = (
        summary["metrics"][m]["tiny-mix"]["eigencam"]["wall_leakage"] for m in ("tiny", "tiny2")
    )
    assert e1["mean"] != pytest.approx(e2["mean"])
    with (two_models / "table.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 2 * 2 * len(METHODS)
    for row in table:
        s = summary["metrics"][row["model"]][row["dataset"]][row["method"]]["wall_leakage"]
        assert int(row["n"]) == s["n"]
        assert int(row["expected"]) == (4 if "mix" in row["dataset"] else 3)
    for name in ("leakage-tiny2.png", "maps-tiny2-tiny-mix.png", "dead-zone-tiny2.png"):
        assert (two_models / name).is_file()
    html = (two_models / "report.html").read_text()
    for model in ("tiny", "tiny2"):
        assert f"<h2>Wall leakage μ (Table 1 layout) — <code>{model}</code></h2>" in html
        assert f"The model `{model}` provably ignores its dead zone" in html
        assert f"On tiny-pair with `{model}` (3 images):" in html
        assert f"<h2>Other metrics — <code>{model}</code></h2>" in html
    assert html.count('alt="maps-tiny2-') == 2


def _method(method="gradcam", **means):
    stats = {n: Stats(means.get(n, 0.5), 0.0, 4, 0) for n in METRICS.names()}
    return MethodResult(method, stats, 0.0, (0.5,) * 4, 4)


def test_verdict_reads_the_registry(monkeypatch):
    assert classify(_method(any_leak=0.0)) is Verdict.RESPECTS
    assert classify(_method(any_leak=0.5, relative_leakage=0.99)) is Verdict.LEAKS
    assert classify(_method(any_leak=0.5, relative_leakage=1.0)) is Verdict.UNIFORM  # a tie
    assert classify(_method(any_leak=0.5, relative_leakage=1.3)) is Verdict.UNIFORM
    assert classify(_method("uniform", any_leak=0.5)) is Verdict.CONTROL
    empty = {n: Stats(None, None, 0, 4) for n in METRICS.names()}
    assert classify(MethodResult("gradcam", empty, 0.0, (math.nan,) * 4, 4)) is Verdict.NO_DATA
    # Thresholds and directions come from the metric metadata, not from the verdict's code.
    entries = METRICS._entries
    rel = entries["relative_leakage"]
    monkeypatch.setitem(entries, "relative_leakage", replace(rel, uniform_at=0.9))
    assert classify(_method(any_leak=0.5, relative_leakage=0.95)) is Verdict.UNIFORM
    monkeypatch.setitem(entries, "relative_leakage", replace(rel, lower_is_better=False))
    assert classify(_method(any_leak=0.5, relative_leakage=0.95)) is Verdict.UNIFORM
    assert classify(_method(any_leak=0.5, relative_leakage=1.2)) is Verdict.LEAKS


def test_table_reading_and_html_share_the_verdict(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    html = (tiny_run / "report.html").read_text()
    per = summary["metrics"]["tiny"]["tiny-mix"]
    table = html.split("<h2>Wall leakage μ (Table 1 layout)</h2>")[1].split("</table>")[0]
    for method, s in per.items():
        stats = {n: Stats(**v) for n, v in s.items()}
        verdict = classify(MethodResult(method, stats, 0.0, (), 6))
        label = rf"{method}( \(control\))?{' †' if method in SIGN_DEPENDENT else ''}"
        row = re.search(rf"<tr[^>]*><td>{label}</td><td class=\"(\w*)\"", table)
        want = "" if verdict is Verdict.CONTROL else verdict.value
        assert row is not None, method
        assert row.group(2) == want, method
    # The reading lists the same methods as the table's red cells.
    cams = {m: s for m, s in per.items() if m not in ("uniform", "random")}
    bad = [m for m, s in cams.items() if s["relative_leakage"]["mean"] >= 1]
    bad.sort(key=lambda m: -cams[m]["wall_leakage"]["mean"])
    assert bad  # the tiny model's leaky maps include some worse than uniform
    if bad:
        names = bad[0] if len(bad) == 1 else ", ".join(bad[:-1]) + " and " + bad[-1]
        assert f"{names} do" in html  # "... does/do no better than a map with no information"
