"""Both variants of a pair at the same time: two child processes, each with half the cores.

The walled model and its baseline are independent runs of the same config (each starts from
``torch.manual_seed(config.seed)`` and draws its own batches and augmentation from the seed), so
training them in two processes gives, bit for bit, the weights of training them one after the
other with the same per-process thread count.

Each child is ``python -m camwall.train._child FD JOB`` (a fresh interpreter: unlike
``multiprocessing``'s spawn it never re-imports the caller's ``__main__``, so scripts need no
``if __name__ == "__main__"`` guard). It runs :func:`camwall.train._run.train_variant` with
``torch.set_num_threads(threads)``, prints one line per epoch instead of a progress bar, and
writes JSON (no pickle) to the pipe ``FD``: ``{"ok": outcome}`` or ``{"error": ..., "kind": ...,
"traceback": ...}``. The parent reads both pipes until end of file, so a child that dies without
a word (killed, out of memory) is seen at once, never waited for forever; after any error the
other child is terminated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import torch

from camwall.errors import CamwallError
from camwall.runtime import DistInfo
from camwall.train._config import TrainConfig

__all__ = [
    "SMALL_RUN",
    "VariantOutcome",
    "child_main",
    "child_threads",
    "train_in_parallel",
    "use_parallel",
]

SMALL_RUN = 50_000
"""Runs of fewer example-epochs than this train sequentially unless ``parallel=True``: a child
needs 6 s of CPU (13 s on a busy 2-core machine) to import torch and load the data, while the
Fashion presets train about 1,750 canvases/s per model (so 50,000 take about 30 s)."""


@dataclass(frozen=True)
class VariantOutcome:
    """One trained variant: its final ``.safetensors`` path, metric rows, steps, completion and,
    for a fine-tuning run, the record of its initial weights (``init``, see
    :func:`camwall.train._init.insert_init`)."""

    variant: str
    path: Path
    history: list[dict[str, Any]]
    steps: int
    completed: bool
    init: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "path": str(self.path),
            "history": self.history,
            "steps": self.steps,
            "completed": self.completed,
            "init": self.init,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VariantOutcome:
        return cls(
            data["variant"],
            Path(data["path"]),
            data["history"],
            data["steps"],
            data["completed"],
            data.get("init"),
        )


def use_parallel(
    parallel: bool | None,
    config: TrainConfig,
    variants: Sequence[str],
    info: DistInfo,
    device: torch.device,
    hooks: bool,
) -> bool:
    """Whether to train ``variants`` in parallel processes.

    Only for two variants on CPU in one (non-``torchrun``) process; ``parallel=None`` also needs
    >= 2 cores, no hooks (hooks cannot run in another process) and a run that is not tiny
    (``train_limit * epochs >=`` :data:`SMALL_RUN`: starting two processes costs seconds).

    Raises:
        CamwallError: ``parallel=True`` together with hooks.
    """
    if parallel is False or len(variants) < 2 or device.type != "cpu" or info.world > 1:
        return False
    if hooks:
        if parallel:
            raise CamwallError(
                "on_batch/on_epoch_end hooks cannot run in parallel training processes; "
                "pass parallel=False."
            )
        return False
    if parallel:
        return True
    small = config.train_limit is not None and config.train_limit * config.epochs < SMALL_RUN
    return (os.cpu_count() or 1) >= 2 and not small


def child_threads(config: TrainConfig, children: int = 2) -> int:
    """Threads per child: the cores shared out (``cpu_count // children``, at least 1), or
    ``config.threads`` when that is smaller."""
    share = max(1, (os.cpu_count() or 1) // children)
    return min(config.threads, share) if config.threads else share


def child_main(fd: int, job_text: str) -> int:
    """Body of a child (``python -m camwall.train._child FD JOB``): train one variant, write the
    outcome (or the error) as JSON to the file descriptor ``fd``. Returns the exit status."""
    try:
        from camwall.train._run import train_variant

        job = json.loads(job_text)
        torch.set_num_threads(int(job["threads"]))
        outcome = train_variant(
            TrainConfig(**job["config"]),
            job["variant"],
            Path(job["out"]),
            torch.device("cpu"),
            DistInfo(),
            resume=bool(job["resume"]),
            progress=False,
            log_epochs=True,
        )
        message: dict[str, Any] = {"ok": outcome.to_json()}
    except BaseException as err:  # every failure must reach the parent
        message = {
            "error": str(err),
            "kind": type(err).__name__,
            "camwall": isinstance(err, CamwallError),
            "traceback": traceback.format_exc(),
        }
    with os.fdopen(fd, "wb") as pipe:
        pipe.write(json.dumps(message).encode())
    return 0 if "ok" in message else 1


@dataclass
class _Child:
    """A running child: its variant, process, and the read end of its result pipe."""

    variant: str
    proc: subprocess.Popen[bytes]
    fd: int
    data: bytearray = field(default_factory=bytearray)


def _child_env() -> dict[str, str]:
    """This environment, with the folder that holds this ``camwall`` first on ``PYTHONPATH``."""
    here = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": here + (os.pathsep + path if path else "")}


def _spawn(variant: str, job: dict[str, Any]) -> _Child:
    read, write = os.pipe()
    cmd = [sys.executable, "-m", "camwall.train._child", str(write), json.dumps(job)]
    try:
        proc = subprocess.Popen(cmd, pass_fds=(write,), env=_child_env())
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)  # the child's copy stays open: end of file comes when it exits
    return _Child(variant, proc, read)


def _raise_child_error(variant: str, message: dict[str, Any]) -> None:
    if message.get("camwall"):
        raise CamwallError(f"training {variant} (in its own process): {message['error']}")
    raise RuntimeError(
        f"training {variant} failed in its own process with {message['kind']}: "
        f"{message['error']}\n--- child traceback ---\n{message['traceback']}"
    )


def _outcome(child: _Child) -> VariantOutcome:
    """Reap a child whose pipe reached end of file; its outcome, or its error raised here."""
    code = child.proc.wait()
    if not child.data:
        raise RuntimeError(
            f"training {child.variant} in its own process died without a result (exit code "
            f"{code}; a negative code is the signal that killed it, e.g. -9 when the machine "
            "ran out of memory)."
        )
    message = json.loads(bytes(child.data).decode())
    if "error" in message:
        _raise_child_error(child.variant, message)
    return VariantOutcome.from_json(message["ok"])


def _collect(children: Sequence[_Child]) -> dict[str, VariantOutcome]:
    """Read every child's pipe until end of file (whichever is ready first), then reap it."""
    running = {child.fd: child for child in children}
    outcomes: dict[str, VariantOutcome] = {}
    while running:
        for fd in wait(list(running)):
            assert isinstance(fd, int)
            chunk = os.read(fd, 1 << 16)
            if chunk:
                running[fd].data += chunk
            else:
                child = running.pop(fd)
                outcomes[child.variant] = _outcome(child)
    return outcomes


def train_in_parallel(
    config: TrainConfig,
    variants: Sequence[str],
    out: Path,
    device: torch.device,
    resume: bool,
) -> list[VariantOutcome]:
    """Train each of ``variants`` in its own child process at the same time (CPU only).

    Returns the outcomes in the order of ``variants``.

    Raises:
        CamwallError: a child's user-fixable error, naming the variant.
        RuntimeError: any other error in a child (with its traceback), or a child that died.
    """
    assert device.type == "cpu", "parallel training is for CPU runs"
    threads = child_threads(config, len(variants))
    children: list[_Child] = []
    try:
        for variant in variants:
            job: dict[str, Any] = {"config": config.to_dict(), "variant": variant}
            job.update(out=str(out), resume=resume, threads=threads)
            children.append(_spawn(variant, job))
        outcomes = _collect(children)
    finally:
        for child in children:  # after an error (or Ctrl-C): stop the other child too
            if child.proc.poll() is None:
                child.proc.terminate()
                child.proc.wait()
            os.close(child.fd)
    return [outcomes[v] for v in variants]
