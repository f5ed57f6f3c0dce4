"""Inputs refused at the boundary with one clear line: labels, --images, --seed, image sizes."""

from __future__ import annotations

import numpy as np
import pytest
from bench_tiny import tiny_bench_model, tiny_dataset
from PIL import Image

from camwall.bench import run_bench
from camwall.bench._inputs import MAX_IMAGES, resolve_dataset
from camwall.cli import main
from camwall.errors import CamwallError


@pytest.mark.parametrize("bad", [3, -1])
def test_label_out_of_range_for_the_model_is_refused(tmp_path, bad):
    data = tiny_dataset("d", 4)
    data.labels[2] = bad
    with pytest.raises(CamwallError, match=rf"dataset 'd': label {bad} is out of range for model"):
        run_bench([tiny_bench_model()], [data], ["uniform"], tmp_path, progress=False)
    assert not (tmp_path / "results.sqlite").exists()  # refused before any work


def test_label_out_of_range_found_from_the_logits_without_class_names(tmp_path):
    model = tiny_bench_model()
    model.class_names = []
    data = tiny_dataset("d", 4)
    data.labels[1] = 7
    with pytest.raises(CamwallError, match="label 7 is out of range for model 'tiny', which has 3"):
        run_bench([model], [data], ["uniform"], tmp_path, progress=False)


@pytest.mark.parametrize(
    ("n", "seed", "message"),
    [
        (10**12, 0, f"--images {10**12} is too many: at most {MAX_IMAGES:,}"),
        (0, 0, "--images must be at least 1, got 0"),
        (10, 2**70, r"--seed must be an integer in \[0, 2\*\*63 - 1\], got 1180591620717411303424"),
        (10, -1, r"--seed must be an integer in \[0, 2\*\*63 - 1\], got -1"),
    ],
)
def test_images_and_seed_are_checked_before_any_work(n, seed, message):
    with pytest.raises(CamwallError, match=message):
        resolve_dataset("fashion-stackmix", n, seed)


def test_run_bench_refuses_a_huge_seed(tmp_path):
    with pytest.raises(CamwallError, match="--seed must be an integer"):
        run_bench([tiny_bench_model()], [tiny_dataset()], ["uniform"], tmp_path, seed=2**70)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--images", str(10**12)], "argument --images: must be at most 1000000"),
        (["--seed", str(2**70)], "argument --seed: a seed must be an integer in [0, 2**63 - 1]"),
    ],
)
def test_cli_huge_images_or_seed_one_line(capsys, tmp_path, argv, message):
    assert main(["bench", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_mixed_image_sizes_advice_names_no_missing_flag(tmp_path):
    for cls, size in (("a", 16), ("b", 20)):
        (tmp_path / "tree" / cls).mkdir(parents=True)
        arr = (np.random.default_rng(size).random((size, size)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(tmp_path / "tree" / cls / "0.png")
    with pytest.raises(CamwallError) as info:
        resolve_dataset(str(tmp_path / "tree"), 10, 0, channels=1)
    text = str(info.value)
    assert "different sizes (16x16, 20x20)" in text
    assert "--size" not in text
    assert "resize" in text
