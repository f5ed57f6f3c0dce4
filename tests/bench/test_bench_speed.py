"""The bench's speed settings leave results unchanged: chunk sizes by input size, and which
models and datasets the default run takes (``DEFAULT_MODELS``, ``--grid``)."""

from __future__ import annotations

import argparse

import pytest
import torch
from bench_tiny import tiny_model

from camwall.bench.cli import DEFAULT_MODELS, GRID_DATASET, GRID_SPEC, _datasets, _default_specs
from camwall.cams import chunk_options, compute_cams


def test_chunks_grow_on_small_inputs_and_keep_the_library_defaults_on_large_ones():
    small = torch.zeros(2, 1, 64, 64)
    assert chunk_options(small, ["scorecam", "ablationcam"]) == {
        "scorecam_chunk": 2**20 // 4096,  # 256
        "ablationcam_chunk": 2**21 // 4096,  # 512
    }
    large = torch.zeros(2, 3, 224, 224)
    assert chunk_options(large, ["scorecam", "ablationcam"]) == {
        "scorecam_chunk": 16,
        "ablationcam_chunk": 32,
    }
    assert chunk_options(small, ["gradcam", "opticam"]) == {}
    assert chunk_options(small, ["scorecam"]) == {"scorecam_chunk": 256}


@pytest.mark.parametrize(
    ("method", "option"), [("scorecam", "scorecam_chunk"), ("ablationcam", "ablationcam_chunk")]
)
def test_maps_do_not_depend_on_the_chunk(method, option):
    torch.manual_seed(0)
    model = tiny_model()
    x = torch.rand(5, 1, 16, 16)
    targets = [0, 1, 2, 0, 1]
    one = compute_cams(model, x, "1", [method], targets=targets, **{option: 1})[method]
    big = compute_cams(model, x, "1", [method], targets=targets, **chunk_options(x, [method]))
    # rows do not interact: equal to float rounding (a batch of 1 may take another GEMM path)
    torch.testing.assert_close(one, big[method], rtol=0, atol=1e-6)


def _args(**kw):
    base = {"model": None, "baseline": None, "dataset": None, "retrain": False, "grid": False}
    return argparse.Namespace(**{**base, **kw})


def test_the_default_run_includes_the_grid_model_on_its_dataset():
    assert (GRID_SPEC, GRID_DATASET) in DEFAULT_MODELS
    models, baselines = _default_specs(_args())
    assert models == ["shipped:fashion-vgg:walled", GRID_SPEC]
    assert baselines == ["shipped:fashion-vgg:baseline"]
    assert _datasets(_args()) == ["fashion-stackmix", "fashion-stackpair", GRID_DATASET]
    # --grid is accepted and changes nothing on the default run
    assert _default_specs(_args(grid=True)) == (models, baselines)
    assert _datasets(_args(grid=True)) == _datasets(_args())


def test_explicit_models_or_datasets_leave_the_extra_models_out():
    only = _args(dataset=["fashion-stackmix"])
    assert _default_specs(only)[0] == ["shipped:fashion-vgg:walled"]
    assert _datasets(only) == ["fashion-stackmix"]
    mine = _args(model=["m.safetensors"])
    assert _default_specs(mine) == (["m.safetensors"], [])
    assert _datasets(mine) == ["fashion-stackmix", "fashion-stackpair"]
    # --grid adds the grid model and its dataset to an explicit --model
    both = _args(model=["m.safetensors"], grid=True)
    assert _default_specs(both)[0] == ["m.safetensors", GRID_SPEC]
    assert _datasets(both) == ["fashion-stackmix", "fashion-stackpair", GRID_DATASET]
