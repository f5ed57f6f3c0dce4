"""``camwall.wall_test``: one explainer through the bench's code path, printed and serialized."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "bench"))

from bench_tiny import DEAD_FIRST, SIZE, tiny_bench_model, tiny_dataset

import camwall
from camwall.bench import Store
from camwall.errors import CamwallError

UNIFORM = math.sqrt((SIZE - DEAD_FIRST) / SIZE)  # mu of a uniform map: sqrt(dead fraction)


def _test(explainer, **kw):
    kw.setdefault("datasets", [tiny_dataset("tiny-mix", 5), tiny_dataset("tiny-pair", 3, 1)])
    return camwall.wall_test(explainer, model=tiny_bench_model(), batch_size=2, **kw)


def _grad(model, x, targets):
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        model(x)[torch.arange(len(targets)), torch.tensor(targets)].sum().backward()
    return x.grad


def test_registry_name_prints_table_and_serializes():
    pytest.importorskip("captum")
    result = _test("captum:Saliency")
    assert (result.explainer, result.family, result.model) == (
        "captum:Saliency",
        "gradient",
        "tiny",
    )
    d = result.to_dict()
    json.dumps(d)  # JSON-ready
    assert set(d["datasets"]) == {"tiny-mix", "tiny-pair"}
    mix = d["datasets"]["tiny-mix"]
    assert mix["captum:Saliency"]["mu"] == {"mean": 0.0, "std": 0.0, "n": 5, "empty": 0}
    assert mix["uniform"]["mu"]["mean"] == pytest.approx(UNIFORM, abs=1e-6)
    assert mix["captum:Saliency"]["seconds_per_image"] > 0
    assert d["dead_zone"]["rows"] == [DEAD_FIRST, SIZE - 1]
    text = str(result)
    assert text.splitlines()[2:6] == [
        "| method | tiny-mix μ (%) | tiny-pair μ (%) |",
        "|---|---|---|",
        "| captum:Saliency | 0.0 ± 0.0 | 0.0 ± 0.0 |",
        f"| uniform (control) | {100 * UNIFORM:.1f} ± 0.0 | {100 * UNIFORM:.1f} ± 0.0 |",
    ]


def test_callable_and_engine_cam_share_the_bench_numbers(tmp_path):
    by_fn = _test(_grad)
    assert by_fn.explainer == "callable:test_wall_test._grad"
    assert by_fn.to_dict()["datasets"]["tiny-pair"][by_fn.explainer]["mu"]["mean"] == 0.0
    # An engine CAM through wall_test equals the bench's own row for it (one code path).
    res = _test("gradcam", out=tmp_path)
    with Store(tmp_path / "results.sqlite", readonly=True) as store:
        stored = [r["wall_leakage"] for r in store.results() if r["method"] == "gradcam"]
    assert (tmp_path / "table.md").is_file()  # out= keeps the store and the report
    mu = [v for v in stored if not math.isnan(v)]
    assert res.to_dict()["datasets"]["tiny-mix"]["gradcam"]["images"] == 5
    both = [res.to_dict()["datasets"][d]["gradcam"]["mu"] for d in ("tiny-mix", "tiny-pair")]
    assert sum(s["n"] for s in both) == len(mu)
    assert 0 < both[0]["mean"] < 1


def test_options_reach_the_explainer():
    pytest.importorskip("captum")
    small = _test("captum:Occlusion", sliding_window_shapes=(1, 2, 2), strides=(1, 2, 2))
    # Occlusion leaks through windows that straddle the wall (first dead row 11): one 2x2
    # window (rows 10..11) per column, but three 8x8 windows at stride 4 (rows 4..11, 8..15).
    big = _test("captum:Occlusion", sliding_window_shapes=(1, 8, 8), strides=(1, 4, 4))
    mu_small = small.to_dict()["datasets"]["tiny-mix"]["captum:Occlusion"]["mu"]["mean"]
    mu_big = big.to_dict()["datasets"]["tiny-mix"]["captum:Occlusion"]["mu"]["mean"]
    assert 0 < mu_small < mu_big


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda m, x, t: torch.zeros(2, 3), "returned shape (2, 3)"),
        (lambda m, x, t: torch.full(x.shape, float("nan")), "returned NaN or Inf"),
        (lambda m, x, t: "map", "returned a str, not a tensor"),
        (lambda m, x, t: np.ones((len(x), SIZE, SIZE), np.float32), "returned a ndarray, not"),
        (lambda m, x, t: sys.exit(0), "called sys.exit(0); it must return a tensor"),
    ],
)
def test_bad_callable_names_the_explainer(fn, message):
    with pytest.raises(CamwallError) as err:
        _test(fn)
    assert message in str(err.value)
    assert "callable:test_wall_test." in str(err.value)


def test_bad_arguments():
    with pytest.raises(CamwallError, match="explainer must be a name"):
        camwall.wall_test(3)
    with pytest.raises(CamwallError, match="input shape is unknown"):
        camwall.wall_test("gradcam", model=torch.nn.Linear(2, 2))
    with pytest.raises(CamwallError, match="unknown CAM method 'gradcan'"):
        _test("gradcan")
    for bad in (0, -1, 2.0, True):
        with pytest.raises(CamwallError, match=f"batch_size must be None .* got {bad!r}"):
            camwall.wall_test("gradcam", model=tiny_bench_model(), batch_size=bad)


def test_default_pair_and_datasets():
    pytest.importorskip("captum")
    result = camwall.wall_test("captum:Saliency", images=2)
    d = result.to_dict()
    assert result.model == "fashion-vgg-walled"
    assert list(d["datasets"]) == ["fashion-stackmix", "fashion-stackpair"]
    for per in d["datasets"].values():
        assert per["captum:Saliency"]["mu"]["mean"] == 0.0
        assert per["captum:Saliency"]["images"] == 2
        assert per["uniform"]["mu"]["mean"] == pytest.approx(0.625, abs=1e-6)  # sqrt(25/64)
