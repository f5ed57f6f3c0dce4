"""The bench with explainers from other sources: captum, py: callables, family grouping,
per-explainer timing, bad callables (one batch stored whole or not at all), resume."""

import math
import re

import bench_explainers
import pytest
import torch
from bench_tiny import DEAD_FIRST, SIZE, tiny_bench_model, tiny_dataset

from camwall.bench import Store, reading, run_bench
from camwall.bench._results import load_results
from camwall.errors import CamwallError

pytest.importorskip("captum")

MIXED = [
    "uniform",
    "captum:Occlusion",
    "gradcam",
    "py:bench_explainers:grad",
    "hirescam",
    "captum:Saliency",
]
OCC = {"captum:Occlusion": {"sliding_window_shapes": (1, 4, 4), "strides": (1, 2, 2)}}


def _run(out, methods, batch_size=4, n=6, **kw):
    return run_bench(
        [tiny_bench_model()],
        [tiny_dataset("tiny-mix", n)],
        methods,
        out,
        device="cpu",
        batch_size=batch_size,
        progress=False,
        **kw,
    )


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed")
    _run(out, MIXED, explainer_options=OCC)
    return out


def _mu(store, method):
    return {r["image"]: r["wall_leakage"] for r in store.results() if r["method"] == method}


def test_gradients_are_exactly_zero_on_the_dead_zone(mixed):
    with Store(mixed / "results.sqlite", readonly=True) as store:
        sal, grad = _mu(store, "captum:Saliency"), _mu(store, "py:bench_explainers:grad")
        occ, uni = _mu(store, "captum:Occlusion"), _mu(store, "uniform")
    assert sorted(sal) == sorted(grad) == list(range(6))
    assert set(sal.values()) == {0.0}  # dy/dx is exactly 0 behind the wall
    assert grad == sal  # N(sum_c |grad|) is captum's Saliency map
    # Occlusion: 4x4 windows at stride 2 straddle the wall (rows 8..11 and 10..13): mu > 0.
    assert all(0 < v < uni[i] for i, v in occ.items())
    assert uni[0] == pytest.approx(math.sqrt((SIZE - DEAD_FIRST) / SIZE), abs=1e-6)


def test_one_pass_for_engine_cams_and_timing_per_explainer(mixed):
    with Store(mixed / "results.sqlite", readonly=True) as store:
        batches = store.batches()
        rows = store.results()
        config = store.config()
    methods = sorted({tuple(b["methods"]) for b in batches})
    assert methods == [
        ("captum:Occlusion",),
        ("captum:Saliency",),
        ("gradcam", "hirescam"),  # both engine CAMs in ONE compute_cams call per batch
        ("py:bench_explainers:grad",),
    ]
    assert len(batches) == 4 * 2  # 6 images in batches of 4 and 2
    for b in batches:
        ids = b["images"]
        for m in b["methods"]:
            secs = [r["seconds"] for r in rows if r["method"] == m and r["image"] in ids]
            assert secs == [pytest.approx(b["seconds"] / len(ids))] * len(ids)
    assert config["explainer_options"] == {
        "captum:Occlusion": {"sliding_window_shapes": [1, 4, 4], "strides": [1, 2, 2]}
    }
    assert config["families"]["py:bench_explainers:grad"] == "gradient"


def test_table_and_reading_group_rows_by_family(mixed):
    with Store(mixed / "results.sqlite", readonly=True) as store:
        results = load_results(store)
    assert results.methods == (
        "gradcam",
        "hirescam",
        "py:bench_explainers:grad",
        "captum:Saliency",
        "captum:Occlusion",
        "uniform",
    )
    table = (mixed / "table.md").read_text().split("\n## ")[0]
    labels = [line.split(" | ")[0][2:] for line in table.splitlines() if line.startswith("| ")]
    assert labels[1:] == [
        "**CAM at a layer**",
        "gradcam",
        "hirescam",
        "**input gradient**",
        "py:bench_explainers:grad",
        "captum:Saliency",
        "**perturbation**",
        "captum:Occlusion",
        "**control**",
        "uniform (control)",
    ]
    text = reading(results)[1]
    parts = [text.index(k) for k in ("[CAM at a layer]", "[Input gradient]", "[Perturbation]")]
    assert parts == sorted(parts)
    grad_part = text[parts[1] : parts[2]]
    assert "py:bench_explainers:grad and captum:Saliency respect the wall" in grad_part
    html = (mixed / "report.html").read_text()
    assert re.search(r'<tr class="family"><th colspan="\d">input gradient</th></tr>', html)


def test_engine_only_run_is_not_grouped(tiny_run):
    table = (tiny_run / "table.md").read_text()
    assert "**CAM at a layer**" not in table
    with Store(tiny_run / "results.sqlite", readonly=True) as store:
        results = load_results(store)
        assert not results.grouped
        assert "families" not in store.config()
    assert "[CAM at a layer]" not in " ".join(reading(results))


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        ("wrong_shape", "returned shape (4, 3, 3) for an input of shape (4, 1, 16, 16)"),
        ("nan_map", "returned NaN or Inf values"),
        ("not_tensor", "returned a list, not a tensor"),
        ("wrong_device", "returned a map on meta for an input on cpu"),
        ("raises", "failed on images 0..3 of 'tiny-mix': RuntimeError: boom inside"),
    ],
)
def test_bad_callable_clear_error_and_nothing_stored(tmp_path, fn, message):
    name = f"py:bench_explainers:{fn}"
    with pytest.raises(CamwallError, match=re.escape(message)) as err:
        _run(tmp_path, ["gradcam", name, "uniform"])
    assert name in str(err.value)
    with Store(tmp_path / "results.sqlite", readonly=True) as store:
        assert store.results() == []  # the first batch failed: nothing of it is stored


def test_failure_on_second_batch_keeps_the_first_then_resume_completes(tmp_path):
    bench_explainers.CALLS["flaky"] = 0
    name = "py:bench_explainers:flaky"
    with pytest.raises(CamwallError, match=f"explainer '{name}' returned NaN"):
        _run(tmp_path, ["gradcam", name, "uniform"], batch_size=2)
    with Store(tmp_path / "results.sqlite", readonly=True) as store:
        done = {(r["method"], r["image"]) for r in store.results()}
        assert [b["images"] for b in store.batches()] == [[0, 1], [0, 1]]
    # batch 1 (images 0, 1) whole, batch 2 (2, 3) not at all, not even its engine CAM rows
    assert done == {(m, i) for m in ("gradcam", name, "uniform") for i in (0, 1)}
    _run(tmp_path, ["gradcam", name, "uniform"], batch_size=2, resume=True)  # 3rd call on
    with Store(tmp_path / "results.sqlite", readonly=True) as store:
        mu = _mu(store, name)
        assert sorted(mu) == list(range(6))
        assert set(mu.values()) == {0.0}
        assert len(store.runs()) == 2


def test_resume_with_explainer_options(tmp_path):
    opts = {"captum:Occlusion": {"sliding_window_shapes": (1, 4, 4)}}
    _run(tmp_path, ["captum:Occlusion", "uniform"], n=2, explainer_options=opts)
    _run(tmp_path, ["captum:Occlusion", "uniform"], n=2, explainer_options=opts, resume=True)
    other = {"captum:Occlusion": {"sliding_window_shapes": (1, 8, 8)}}
    with pytest.raises(CamwallError, match=r"different configuration.*explainer_options"):
        _run(tmp_path, ["captum:Occlusion", "uniform"], n=2, explainer_options=other, resume=True)


@pytest.mark.parametrize(
    ("methods", "options", "message"),
    [
        (["captum:Salency"], {}, "unknown CAM method 'captum:Salency'. Did you mean"),
        (["captum:Saliency"], {"captum:Occlusion": {"x": 1}}, "is not among --methods"),
        (["gradcam"], {"gradcam": {"seed": 1}}, "run by camwall's engine"),
        (["captum:Saliency", "captum:Saliency"], {}, "lists a method twice"),
        (["py:no_such_module_xyz:f"], {}, "cannot import module 'no_such_module_xyz'"),
    ],
)
def test_bad_method_names_and_options(tmp_path, methods, options, message):
    with pytest.raises(CamwallError, match=message):
        _run(tmp_path, methods, explainer_options=options)


def test_engine_only_run_keeps_its_own_order(tmp_path):
    _run(tmp_path, ["uniform", "hirescam", "gradcam"], n=2)
    with Store(tmp_path / "results.sqlite", readonly=True) as store:
        results = load_results(store)
    assert results.methods == ("uniform", "hirescam", "gradcam")
    assert results.families == {"uniform": "control", "hirescam": "cam", "gradcam": "cam"}


def test_stochastic_explainer_is_seeded_per_batch(tmp_path):
    """captum:Lime draws random samples; the bench seeds every batch with its seed, so a batch
    gives the same maps whatever ran before it (a resumed run equals an uninterrupted one)."""
    twice = tiny_dataset("twice", 2)
    twice.images = torch.cat([twice.images, twice.images])  # images 2, 3 = images 0, 1
    twice.labels = torch.cat([twice.labels, twice.labels])
    run_bench(
        [tiny_bench_model()],
        [twice],
        ["captum:Lime", "uniform"],
        tmp_path,
        device="cpu",
        batch_size=2,
        seed=5,
        progress=False,
    )
    with Store(tmp_path / "results.sqlite", readonly=True) as store:
        mu = _mu(store, "captum:Lime")
    assert (mu[2], mu[3]) == (mu[0], mu[1])
    assert mu[0] != mu[1]
