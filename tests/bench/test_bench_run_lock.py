"""One writer per --out folder: bench (fresh or --resume) and report, across real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench_tiny import tiny_bench_model, tiny_dataset
from lock_holder import hold, stop

from camwall.bench import STORE_NAME, Store, run_bench
from camwall.cli import main
from camwall.errors import CamwallError
from camwall.runtime import LOCK_NAME

HERE = Path(__file__).parent


def _bench(out: Path, **kw) -> Path:
    return run_bench(
        [tiny_bench_model()], [tiny_dataset("d", 2)], ["uniform"], out, progress=False, **kw
    )


def test_second_writer_fails_at_once_naming_the_pid(tmp_path, capsys):
    _bench(tmp_path)  # a finished run: the lock is released
    with Store(tmp_path / STORE_NAME) as store:
        rows = store.count()
    proc = hold(tmp_path)
    try:
        for resume in (False, True):  # --resume runs are writers too
            start = time.monotonic()
            with pytest.raises(CamwallError, match=rf"--out {tmp_path}: .*PID {proc.pid}\b"):
                _bench(tmp_path, resume=resume, report=False)
            assert time.monotonic() - start < 10
        argv = ["bench", "--model", "x", "--out", str(tmp_path), "--no-progress"]
        for cmd in (argv, ["report", str(tmp_path)]):
            assert main(cmd) == 2
            err = capsys.readouterr().err
            assert f"PID {proc.pid}" in err
            assert len(err.strip().splitlines()) == 1
            assert "Traceback" not in err
    finally:
        stop(proc)
    # Nothing was moved aside or written by the refused runs.
    assert [p.name for p in tmp_path.glob("results*.sqlite")] == [STORE_NAME]
    with Store(tmp_path / STORE_NAME) as store:
        assert store.count() == rows
    assert main(["report", str(tmp_path)]) == 0  # free again


def test_a_running_bench_process_holds_the_lock(tmp_path):
    """A real bench subprocess (slowed down) locks --out: this process cannot write there."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "bench_script.py"), str(tmp_path), "--slow", "0.3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = tmp_path / LOCK_NAME
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if lock.exists() and lock.read_text() == str(proc.pid):
                break
            time.sleep(0.05)
        with pytest.raises(CamwallError, match=rf"PID {proc.pid}\b"):
            _bench(tmp_path, resume=True)
    finally:
        proc.kill()
        proc.wait()
