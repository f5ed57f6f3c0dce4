import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench_tiny import tiny_bench_model, tiny_dataset, tiny_model, torchrun_two_ranks

from camwall.bench import STORE_NAME, Store, _compute, run_bench
from camwall.errors import CamwallError

HERE = Path(__file__).parent
SCRIPT = HERE / "bench_script.py"
METHODS = ["gradcam", "hirescam", "scorecam", "uniform", "random"]
N_ROWS = (7 + 5) * len(METHODS)


def _rows(path: Path) -> dict[tuple, dict]:
    with Store(path) as store:
        return {(r["model"], r["dataset"], r["image"], r["method"]): r for r in store.results()}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        for col in ("wall_leakage", "l1_leakage", "any_leak", "peak_ratio", "predicted"):
            x, y = a[key][col], b[key][col]
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, abs=1e-6), key


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(out), *extra],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    _run(out)
    rows = _rows(out / STORE_NAME)
    assert len(rows) == N_ROWS
    return rows


def test_kill_midway_then_resume(tmp_path, reference):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(out), "--slow", "0.15"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = out / STORE_NAME
    deadline = time.monotonic() + 120
    count = 0
    try:
        while time.monotonic() < deadline:
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=5) as con:
                        count = con.execute("SELECT count(*) FROM results").fetchone()[0]
                except sqlite3.OperationalError:
                    count = 0
                if count >= 12:
                    break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    partial = _rows(db)
    assert 12 <= len(partial) < N_ROWS  # killed midway, rows committed so far are kept

    _run(out, "--resume")
    rows = _rows(db)
    assert len(rows) == N_ROWS  # exactly one row per (model, dataset, image, method)
    with sqlite3.connect(db) as con:
        dup = con.execute(
            "SELECT count(*) FROM (SELECT 1 FROM results GROUP BY model, dataset, image, method "
            "HAVING count(*) > 1)"
        ).fetchone()[0]
    assert dup == 0
    for key, row in partial.items():  # rows done before the kill were not recomputed
        assert rows[key]["seconds"] == row["seconds"]
    _same(rows, reference)
    with Store(db) as store:
        runs = store.runs()
    assert len(runs) == 2
    assert runs[0]["finished"] is None
    assert runs[1]["finished"] is not None


def test_injected_interruption_then_resume(tmp_path, monkeypatch):
    real = _compute._cam_fn()
    calls = {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(_compute, "_cam_fn", lambda: flaky)
    models = [tiny_bench_model()]
    data = [tiny_dataset("d", 6)]
    with pytest.raises(KeyboardInterrupt):
        run_bench(models, data, ["gradcam", "hirescam"], tmp_path, batch_size=2, progress=False)
    # One compute_cams call per batch for both methods: 2 batches of 2 images committed whole.
    assert len(_rows(tmp_path / STORE_NAME)) == 8
    calls["n"] = -100
    run_bench(
        models,
        data,
        ["gradcam", "hirescam"],
        tmp_path,
        batch_size=2,
        resume=True,
        progress=False,
        report=False,
    )
    assert len(_rows(tmp_path / STORE_NAME)) == 12
    assert calls["n"] == -100 + 1  # only the missing third batch was computed


def test_resume_with_other_config_is_refused(tmp_path):
    models, data = [tiny_bench_model()], [tiny_dataset("d", 2)]
    run_bench(models, data, ["uniform"], tmp_path, progress=False, report=False)
    with pytest.raises(CamwallError, match=r"different configuration \(methods: stored"):
        run_bench(models, data, ["random"], tmp_path, resume=True, progress=False)
    with pytest.raises(CamwallError, match="seed: stored 0, now 1"):
        run_bench(models, data, ["uniform"], tmp_path, resume=True, seed=1, progress=False)
    # Without --resume a fresh run starts and the old store is kept aside, not lost.
    run_bench(models, data, ["random"], tmp_path, progress=False, report=False)
    (kept,) = tmp_path.glob("results.2*.sqlite")
    assert {k[3] for k in _rows(tmp_path / STORE_NAME)} == {"random"}
    assert {k[3] for k in _rows(kept)} == {"uniform"}


def test_torchrun_two_gloo_ranks_equal_single_process(tmp_path, reference):
    out = tmp_path / "dist"
    res = torchrun_two_ranks([str(SCRIPT), str(out)], port_base=29500, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(out / STORE_NAME)
    _same(rows, reference)
    assert not list(out.glob("results.rank*.sqlite"))  # shards merged and removed
    with Store(out / STORE_NAME) as store:
        preds = store.predictions()
        runs = store.runs()
    assert len(preds) == 2 * (7 + 5)
    assert len(runs) == 1
    assert runs[0]["finished"] is not None


def test_resume_with_other_weights_is_refused(tmp_path):
    data = [tiny_dataset("d", 2)]
    run_bench([tiny_bench_model()], data, ["uniform"], tmp_path, progress=False, report=False)
    other = tiny_bench_model()
    other.model = tiny_model(seed=1)
    with pytest.raises(CamwallError, match="weights of model 'tiny' differ"):
        run_bench([other], data, ["uniform"], tmp_path, resume=True, progress=False)


def test_resume_on_other_dataset_version_is_refused(tmp_path):
    models, old = [tiny_bench_model()], tiny_dataset("d", 2)
    run_bench(models, [old], ["uniform"], tmp_path, progress=False, report=False)  # version 1
    new = tiny_dataset("d", 2)
    new.info = {"version": 2}
    with pytest.raises(CamwallError, match=r"dataset 'd' is version 2 but .* on version 1"):
        run_bench(models, [new], ["uniform"], tmp_path, resume=True, progress=False)
    old.info = {"version": 1}  # an explicit 1 equals an absent version
    run_bench(models, [old], ["uniform"], tmp_path, resume=True, progress=False, report=False)
