"""Both variants of a pair at the same time: two spawned processes, each with half the cores.

The walled model and its baseline are independent runs of the same config (each starts from
``torch.manual_seed(config.seed)`` and draws its own batches and augmentation from the seed), so
training them in two processes gives, bit for bit, the weights of training them one after the
other with the same per-process thread count. Each child runs
:func:`camwall.train._run.train_variant` with ``torch.set_num_threads(threads)`` and prints one
line per epoch instead of a progress bar.

Messages between the processes are JSON (no pickle is read back): the child sends either
``{"ok": outcome}`` or ``{"error": ..., "kind": ..., "traceback": ...}``. The parent waits on the
pipes, so a child that dies without a word (killed, out of memory) is seen as an end of file on
its pipe, never as a hang; the other child is then terminated.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import torch

from camwall.errors import CamwallError
from camwall.runtime import DistInfo
from camwall.train._config import TrainConfig

__all__ = ["SMALL_RUN", "VariantOutcome", "child_threads", "train_in_parallel", "use_parallel"]

SMALL_RUN = 4096
"""Runs of fewer example-epochs than this train sequentially unless ``parallel=True``."""


@dataclass(frozen=True)
class VariantOutcome:
    """One trained variant: its final ``.safetensors`` path, metric rows, steps, completion."""

    variant: str
    path: Path
    history: list[dict[str, Any]]
    steps: int
    completed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "path": str(self.path),
            "history": self.history,
            "steps": self.steps,
            "completed": self.completed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VariantOutcome:
        return cls(
            data["variant"], Path(data["path"]), data["history"], data["steps"], data["completed"]
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


def _child(conn: Connection, job_text: str) -> None:
    """Entry point of a spawned child: train one variant, send the outcome (or error) as JSON."""
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
        conn.send_bytes(json.dumps({"ok": outcome.to_json()}).encode())
    except BaseException as err:  # every failure must reach the parent
        message = {
            "error": str(err),
            "kind": type(err).__name__,
            "camwall": isinstance(err, CamwallError),
            "traceback": traceback.format_exc(),
        }
        conn.send_bytes(json.dumps(message).encode())
    finally:
        conn.close()


def _raise_child_error(variant: str, message: dict[str, Any]) -> None:
    if message.get("camwall"):
        raise CamwallError(f"training {variant} (in its own process): {message['error']}")
    raise RuntimeError(
        f"training {variant} failed in its own process with {message['kind']}: "
        f"{message['error']}\n--- child traceback ---\n{message['traceback']}"
    )


def train_in_parallel(
    config: TrainConfig,
    variants: Sequence[str],
    out: Path,
    device: torch.device,
    resume: bool,
) -> list[VariantOutcome]:
    """Train each of ``variants`` in its own spawned process at the same time (CPU only).

    Returns the outcomes in the order of ``variants``.

    Raises:
        CamwallError: a child's user-fixable error, naming the variant.
        RuntimeError: any other error in a child (with its traceback), or a child that died.
    """
    assert device.type == "cpu", "parallel training is for CPU runs"
    ctx = multiprocessing.get_context("spawn")
    threads = child_threads(config, len(variants))
    running: dict[Connection, tuple[str, Any]] = {}
    outcomes: dict[str, VariantOutcome] = {}
    try:
        for variant in variants:
            job: dict[str, Any] = {"config": config.to_dict(), "variant": variant}
            job.update(out=str(out), resume=resume, threads=threads)
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_child, args=(send, json.dumps(job)), name=f"camwall-train-{variant}"
            )
            proc.start()
            send.close()  # our copy: the pipe reaches end of file when the child exits
            running[receive] = (variant, proc)
        while running:
            for conn in wait(list(running)):
                assert isinstance(conn, Connection)
                variant, proc = running.pop(conn)
                outcomes[variant] = _receive(conn, variant, proc)
    finally:
        for _, proc in running.values():
            proc.terminate()
        for conn, (_, proc) in running.items():
            proc.join()
            conn.close()
    return [outcomes[v] for v in variants]


def _receive(conn: Connection, variant: str, proc: Any) -> VariantOutcome:
    """Read a child's JSON message and reap it; raise its error, or a death without a word."""
    try:
        message = json.loads(conn.recv_bytes().decode())
    except EOFError:
        proc.join()
        raise RuntimeError(
            f"training {variant} in its own process died without a result (exit code "
            f"{proc.exitcode}; a negative code is the signal that killed it, e.g. -9 when the "
            "machine ran out of memory)."
        ) from None
    finally:
        conn.close()
    proc.join()
    if "error" in message:
        _raise_child_error(variant, message)
    return VariantOutcome.from_json(message["ok"])
