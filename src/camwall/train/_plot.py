"""Training curves of walled vs baseline (paper Figure 5 style): train loss and validation
top-1 accuracy per epoch."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from camwall.errors import CamwallError

__all__ = ["plot_curves", "read_history"]

_COLORS = {"walled": "tab:red", "baseline": "tab:blue"}


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metric rows in ``run_dir/metrics.jsonl``.

    Raises:
        CamwallError: when the file is missing or a line is not JSON.
    """
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except OSError as err:
        raise CamwallError(
            f"{path}: cannot read the metrics ({err.strerror}); point at a folder written by "
            "`camwall train` (it holds walled/ and baseline/)."
        ) from None
    except json.JSONDecodeError as err:
        raise CamwallError(f"{path}: line {err.lineno} is not JSON; the file is corrupt.") from None


def plot_curves(
    histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, title: str = ""
) -> Path:
    """Plot train loss (left) and validation top-1 in % (right) against the epoch.

    Args:
        histories: variant name -> metric rows (``epoch``, ``train_loss``, ``val_top1``).
        path: the image file to write (PNG, SVG or PDF by extension).
        title: figure title.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    try:
        for name, rows in histories.items():
            epochs = [r["epoch"] for r in rows]
            color = _COLORS.get(name)
            ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", color=color, label=name)
            acc = [(r.get("val_top1") or float("nan")) * 100 for r in rows]
            ax_acc.plot(epochs, acc, "o-", color=color, label=name)
        ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
        ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="validation accuracy")
        for ax in (ax_loss, ax_acc):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
    finally:
        plt.close(fig)
    return out
