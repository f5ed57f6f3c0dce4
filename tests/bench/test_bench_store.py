import math

import numpy as np
import pytest

from camwall.bench import ResultRow, Store, config_hash
from camwall.bench._store import png_to_array, to_png
from camwall.errors import CamwallError
from camwall.metrics import METRICS


def _row(image: int, method: str = "gradcam", mu: float = 0.25) -> ResultRow:
    metrics = dict.fromkeys(METRICS.names(), mu)
    return ResultRow("m", "d", image, method, metrics, math.isnan(mu), 1, 2, 2, 0.9, 0.01)


def test_unique_rows_and_nan_round_trip(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        assert store.add_results([_row(0), _row(1, mu=math.nan)]) == 2
        assert store.add_results([_row(0, mu=0.5), _row(2)]) == 1  # key 0 exists: kept as is
        rows = store.results()
        assert store.done("m", "d", "gradcam") == {0, 1, 2}
    assert len(rows) == 3
    by = {r["image"]: r for r in rows}
    assert by[0]["wall_leakage"] == 0.25
    assert math.isnan(by[1]["wall_leakage"])
    assert by[1]["empty"] == 1
    assert (by[2]["label"], by[2]["predicted"], by[2]["confidence"]) == (1, 2, 0.9)


def test_merge_is_idempotent(tmp_path):
    with Store(tmp_path / "a.sqlite") as a, Store(tmp_path / "b.sqlite") as b:
        a.add_results([_row(0), _row(1)])
        b.add_results([_row(1), _row(2), _row(3, "hirescam")])
        b.add_predictions("m", "d", [(2, 1, 1, 0.5)])
        b.add_figure("m", "d", 2, "image", to_png(np.eye(4)))
    with Store(tmp_path / "a.sqlite") as a:
        assert a.merge(tmp_path / "b.sqlite") == 2
        assert a.merge(tmp_path / "b.sqlite") == 0
        assert a.count() == 4
        assert a.predicted("m", "d") == {2: (1, 1, 0.5)}
        assert np.array_equal(png_to_array(a.figures()[("m", "d", 2, "image")]), np.eye(4))


def test_config_hash_ignores_device_and_batch():
    a = {"models": ["x"], "methods": ["gradcam"], "seed": 0, "device": "cpu", "batch_size": 4}
    b = {**a, "device": "cuda:0", "batch_size": 64, "out": "elsewhere"}
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash({**a, "seed": 1})


def test_not_a_store(tmp_path):
    bad = tmp_path / "results.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CamwallError, match="is not a camwall results store"):
        Store(bad)
    with pytest.raises(CamwallError, match="no results store"):
        Store(tmp_path / "missing.sqlite", readonly=True)
