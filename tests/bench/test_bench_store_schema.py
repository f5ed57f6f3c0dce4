"""Store schema: metrics in long format, the schema version read, schema 1 still opens.

``fixtures/store_v1.sqlite`` was written by the schema-1 code (one column per metric; see
``fixtures/make_store_v1.py``) and ``fixtures/store_v1.json`` holds what that code read back.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from pathlib import Path

import pytest

from camwall.bench import STORE_NAME, ResultRow, Store
from camwall.bench._store import SCHEMA_VERSION, BatchRecord
from camwall.cli import main
from camwall.errors import CamwallError
from camwall.metrics import METRICS

# The metrics read on the dead zone (target-region ones, the grid pointing game, are stored
# for grid models only).
DEAD_ZONE_METRICS = [n for n, m in METRICS.items() if m.zone == "dead"]

FIXTURES = Path(__file__).parent / "fixtures"


def _v1(tmp_path: Path) -> Path:
    folder = tmp_path / "old-run"
    folder.mkdir()
    shutil.copy(FIXTURES / "store_v1.sqlite", folder / STORE_NAME)
    return folder / STORE_NAME


def _expected() -> dict:
    return json.loads((FIXTURES / "store_v1.json").read_text())


def _same_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) == 77
    for g, w in zip(got, want):
        assert set(w) <= set(g)
        for k, v in w.items():
            if isinstance(v, float) and math.isnan(v):
                assert math.isnan(g[k]), (w, k)
            else:
                assert g[k] == v, (w, k)


def _raw_schema(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT value FROM info WHERE key='schema'").fetchone()[0]


def test_v1_store_reads_the_same_rows_read_only_without_changing_the_file(tmp_path):
    path = _v1(tmp_path)
    before = path.read_bytes()
    want = _expected()
    with Store(path, readonly=True) as store:
        assert store.schema == SCHEMA_VERSION
        assert store.meta()["migrated_from"] == "1"
        _same_rows(store.results(), want["results"])
        assert store.predictions() == want["predictions"]
        assert store.runs() == want["runs"]
        assert store.info("models") == want["models"]
        assert store.info("datasets") == want["datasets"]
        assert sorted(map(list, store.figures())) == want["figures"]
        assert store.metric_names() == DEAD_ZONE_METRICS
    assert path.read_bytes() == before  # migrated in memory only
    assert _raw_schema(path) == "1"


def test_v1_store_is_migrated_in_place_when_opened_for_writing(tmp_path):
    path = _v1(tmp_path)
    with Store(path) as store:
        _same_rows(store.results(), _expected()["results"])
    assert _raw_schema(path) == str(SCHEMA_VERSION)
    with sqlite3.connect(path) as db:
        cols = [r[1] for r in db.execute("PRAGMA table_info(results)")]
        n_metrics = db.execute("SELECT count(*) FROM metrics").fetchone()[0]
    assert "wall_leakage" not in cols
    assert n_metrics == 77 * len(DEAD_ZONE_METRICS)  # one row per key and metric
    with Store(path) as store:  # opening again: nothing left to migrate
        assert store.meta()["migrated_from"] == "1"
        _same_rows(store.results(), _expected()["results"])


def test_camwall_report_on_a_v1_store(tmp_path, capsys):
    path = _v1(tmp_path)
    assert main(["report", str(path.parent)]) == 0
    table = (path.parent / "table.md").read_text()
    summary = json.loads((path.parent / "summary.json").read_text())
    assert "| hirescam | 0.0 ± 0.0 |" in table
    assert summary["rows"] == 77
    assert (path.parent / "report.html").stat().st_size > 10_000
    # The summary's means are those of the stored rows.
    rows = [r for r in _expected()["results"] if r["method"] == "uniform"]
    mix = [r["wall_leakage"] for r in rows if r["dataset"] == "tiny-mix"]
    got = summary["metrics"]["tiny"]["tiny-mix"]["uniform"]["wall_leakage"]["mean"]
    assert got == pytest.approx(sum(mix) / len(mix))


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path, capsys):
    path = tmp_path / STORE_NAME
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE info SET value='99' WHERE key='schema'")
    for readonly in (False, True):
        with pytest.raises(CamwallError, match=r"newer camwall \(store schema 99; this camwall"):
            Store(path, readonly=readonly)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "store schema 99" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_metric_the_store_lacks_reads_as_nan(tmp_path):
    row = ResultRow("m", "d", 0, "gradcam", {"wall_leakage": 0.5}, False, 1, 2, 2, 0.9, 0.01)
    with Store(tmp_path / "s.sqlite") as store:
        store.add_results([row])
        (got,) = store.results()
        assert store.metric_names() == ["wall_leakage"]
    assert got["wall_leakage"] == 0.5
    for name in METRICS.names():
        if name != "wall_leakage":
            assert math.isnan(got[name])


def test_a_batch_is_stored_whole_or_not_at_all(tmp_path):
    metrics = dict.fromkeys(METRICS.names(), 0.25)
    rows = [ResultRow("m", "d", i, "gradcam", metrics, False, 1, 2, 2, 0.9, 0.5) for i in (0, 1)]
    batch = BatchRecord("m", "d", (0, 1), ("gradcam",), 1.0)
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(sqlite3.ProgrammingError):  # a bad figure row fails mid-batch
            store.add_batch(rows, [("m", "d", 0, "gradcam")], batch)  # type: ignore[list-item]
        assert store.count() == 0
        assert store.batches() == []
        assert store.db.execute("SELECT count(*) FROM metrics").fetchone()[0] == 0
        assert store.add_batch(rows, [("m", "d", 0, "gradcam", b"png")], batch) == 2
        assert store.count() == 2
        assert store.batches() == [
            {"model": "m", "dataset": "d", "images": [0, 1], "methods": ["gradcam"], "seconds": 1.0}
        ]
