"""A store is never deleted: a fresh run keeps every earlier store beside the new one."""

from __future__ import annotations

import re
import time

from bench_tiny import tiny_bench_model, tiny_dataset

from camwall.bench import STORE_NAME, Store, run_bench
from camwall.bench._archive import archive_store
from camwall.bench._store import ResultRow
from camwall.metrics import METRICS

KEPT = re.compile(r"results\.(\d{8}T\d{6}Z)(-\d+)?\.sqlite")


def _methods(path) -> set[str]:
    with Store(path, readonly=True) as store:
        return {r["method"] for r in store.results()}


def test_three_runs_keep_all_three_stores(tmp_path, capsys):
    models, data = [tiny_bench_model()], [tiny_dataset("d", 3)]
    for method in ("uniform", "random", "gradcam"):
        run_bench(models, data, [method], tmp_path, progress=False, report=False)
    kept = sorted(p for p in tmp_path.glob("results.*.sqlite") if p.name != STORE_NAME)
    assert all(KEPT.fullmatch(p.name) for p in kept), kept
    assert len(kept) == 2
    assert _methods(tmp_path / STORE_NAME) == {"gradcam"}
    assert sorted(_methods(p).pop() for p in kept) == ["random", "uniform"]
    for p in [*kept, tmp_path / STORE_NAME]:
        with Store(p, readonly=True) as store:
            assert store.count() == 3
    assert "kept as" in capsys.readouterr().err


def test_archive_names_by_start_and_never_overwrites(tmp_path):
    started = []
    for _ in range(2):
        with Store(tmp_path / STORE_NAME) as store:
            store.start_run({"seed": 0}, {})
            started.append(store.runs()[0]["started"])
        archive_store(tmp_path)
    stamps = [time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t)) for t in started]
    names = sorted(p.name for p in tmp_path.glob("results.*.sqlite"))
    if stamps[0] == stamps[1]:
        assert names == [f"results.{stamps[0]}-2.sqlite", f"results.{stamps[0]}.sqlite"]
    else:
        assert names == [f"results.{s}.sqlite" for s in stamps]
    assert not (tmp_path / STORE_NAME).exists()
    assert archive_store(tmp_path) is None


def test_shards_of_an_interrupted_distributed_run_are_kept_in_the_archived_store(tmp_path):
    metrics = dict.fromkeys(METRICS.names(), 0.5)
    with Store(tmp_path / STORE_NAME) as main:
        main.start_run({"seed": 0}, {})
    for rank in (0, 1):
        with Store(tmp_path / f"results.rank{rank}.sqlite") as shard:
            shard.add_results(
                [ResultRow("m", "d", rank, "gradcam", metrics, False, 0, 0, 0, 1.0, 0.1)]
            )
    kept = archive_store(tmp_path)
    assert kept is not None
    assert not list(tmp_path.glob("results.rank*.sqlite"))
    with Store(kept, readonly=True) as store:
        assert sorted(r["image"] for r in store.results()) == [0, 1]


def test_rows_only_in_the_wal_of_a_crashed_run_are_kept(tmp_path):
    """A run killed before SQLite checkpointed leaves its last rows in ``-wal``: not lost."""
    import shutil

    metrics = dict.fromkeys(METRICS.names(), 0.5)
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    live.mkdir()
    crashed.mkdir()
    with Store(live / STORE_NAME) as store:
        store.db.execute("PRAGMA wal_autocheckpoint=0")
        store.start_run({"seed": 0}, {})
        store.add_results([ResultRow("m", "d", 7, "gradcam", metrics, False, 0, 0, 0, 1.0, 0.1)])
        for suffix in ("", "-wal", "-shm"):  # the files as a SIGKILL would leave them
            shutil.copy(live / f"{STORE_NAME}{suffix}", crashed / f"{STORE_NAME}{suffix}")
    assert (crashed / f"{STORE_NAME}-wal").stat().st_size > 0
    kept = archive_store(crashed)
    assert kept is not None
    assert sorted(p.name for p in crashed.iterdir() if "results" in p.name) == [kept.name]
    with Store(kept, readonly=True) as store:
        assert [r["image"] for r in store.results()] == [7]
