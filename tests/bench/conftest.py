import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from bench_tiny import ALL, tiny_bench_model, tiny_dataset

from camwall.bench import run_bench


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One full tiny benchmark (all methods + controls, 2 datasets, walled + baseline)."""
    out = tmp_path_factory.mktemp("tiny-run")
    run_bench(
        [tiny_bench_model(), tiny_bench_model(walled=False)],
        [tiny_dataset("tiny-mix", 6), tiny_dataset("tiny-pair", 5, seed=1)],
        ALL,
        out,
        device="cpu",
        batch_size=4,
        seed=3,
        progress=False,
    )
    return out
