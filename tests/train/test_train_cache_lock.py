"""Two processes filling one cache entry: one trains, the other waits and reuses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from camwall.runtime import file_lock
from camwall.train import pair_cache_folder
from camwall.walls import load_model

TINY = {
    "arch_kwargs": {"width": 2},
    "epochs": 1,
    "batch_size": 64,
    "train_limit": 64,
    "val_limit": 32,
}

FILL = f"""
import sys
from camwall.train import cached_pair
walled, baseline = cached_pair("fashion-vgg", sys.argv[1], {TINY!r}, device="cpu")
print(walled, baseline, flush=True)
"""


def _start(cache: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", FILL, str(cache)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_line(proc: subprocess.Popen[str]) -> list[str]:
    """stderr lines up to and including the one that says the process waits for the lock."""
    assert proc.stderr is not None
    lines: list[str] = []
    while not lines or "waiting for PID" not in lines[-1]:
        line = proc.stderr.readline()
        assert line, f"process ended without waiting for the lock: {''.join(lines)}"
        lines.append(line)
    return lines


def test_second_filler_waits_then_reuses_the_entry(tmp_path: Path) -> None:
    folder = pair_cache_folder("fashion-vgg", tmp_path, TINY)
    folder.parent.mkdir(parents=True)
    lock = folder.parent / f".{folder.name}.lock"
    with file_lock(lock, "test"):  # stands for a first trainer that is still at work
        procs = [_start(tmp_path), _start(tmp_path)]
        try:
            for proc in procs:
                assert f"waiting for PID {os.getpid()}" in _wait_line(proc)[-1]
        except BaseException:
            for proc in procs:
                proc.kill()
            raise
    outs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outs]
    trained = [err.count("train fashion-vgg walled: epoch 1/1") for _, err in outs]
    assert sorted(trained) == [0, 1]  # exactly one of them trained; the other re-checked
    assert (
        outs[0][0]
        == outs[1][0]
        == f"{folder / 'walled.safetensors'} " + (f"{folder / 'baseline.safetensors'}\n")
    )
    for variant in ("walled", "baseline"):
        _, meta = load_model(folder / f"{variant}.safetensors")
        assert meta["training"]["completed"] is True
    assert not list(folder.parent.glob(f".{folder.name}.tmp*"))
