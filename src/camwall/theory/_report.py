"""``camwall theory``: Monte Carlo vs exact vs bound table, Figure-3-style picture, at-init figure.

Writes into ``out_dir``: ``theory.json`` and ``theory.md`` (rewritten after each ``V``, so a
run interrupted keeps what it finished), ``figure3_V{V}.png`` and ``at_init.png``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from camwall._versions import versions
from camwall.errors import CamwallError
from camwall.theory._at_init import AtInitResult, at_init_experiment, pad_to_29
from camwall.theory._expectation import expected_gradcam, patch_norms, theorem3_bound
from camwall.theory._figures import plot_at_init, plot_expectation
from camwall.theory._model import SimpleCNN, conv_output_size, default_wall_rows
from camwall.theory._monte_carlo import HeadSampling, monte_carlo_gradcam

__all__ = ["TheoryRow", "theory_report"]


@dataclass(frozen=True)
class TheoryRow:
    """One ``V`` of the table: Monte Carlo against the exact expectation, and the bound's slack.

    Gaps are taken over the positions with a non-zero patch (elsewhere every value is 0).
    ``exact_over_bound_*`` is ``None`` when ``V <= 400`` (no bound).
    """

    filters: int
    samples: int
    positions: int
    max_rel_gap: float
    max_abs_z: float
    exact_over_bound_min: float | None
    exact_over_bound_median: float | None
    mc_over_bound_min: float | None
    mc_over_bound_median: float | None
    bound_below_exact: bool | None
    seconds: float
    samples_per_s: float


@dataclass
class _Report:
    config: dict[str, Any]
    environment: dict[str, Any]
    rows: list[TheoryRow] = field(default_factory=list)
    at_init: dict[str, Any] = field(default_factory=dict)

    def write(self, out: Path) -> None:
        data = {
            "config": self.config,
            "environment": self.environment,
            "rows": [asdict(r) for r in self.rows],
            "at_init": self.at_init,
        }
        (out / "theory.json").write_text(json.dumps(data, indent=2) + "\n")
        (out / "theory.md").write_text(self.markdown())

    def markdown(self) -> str:
        def f(x: float | None, spec: str = ".3g") -> str:
            return "n/a" if x is None else format(x, spec)

        c = self.config
        lines = [
            "# Expected GradCAM at initialization: Monte Carlo vs exact vs Theorem 3",
            "",
            (
                f"Fashion-MNIST test item {c['index']}, padded to 29x29; k={c['kernel_size']}, "
                f"tau={c['tau']}, walled head (pooled rows {c['wall_rows']}), L=1, "
                f"seed {c['seed']}, head sampling '{c['head_sampling']}'."
            ),
            "",
            (
                "| V | samples | positions | max rel. gap | max abs(gap)/stderr "
                "| exact/bound min | exact/bound median | MC/bound min | MC/bound median "
                "| samples/s |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.filters} | {r.samples} | {r.positions} | {r.max_rel_gap:.2%} "
                f"| {r.max_abs_z:.2f} | {f(r.exact_over_bound_min, '.4f')} "
                f"| {f(r.exact_over_bound_median, '.4f')} | {f(r.mc_over_bound_min)} "
                f"| {f(r.mc_over_bound_median)} | {r.samples_per_s:.0f} |"
            )
        env = self.environment
        lines += [
            "",
            "exact/bound is the same at every position: both are proportional to ||m_ij||.",
            "",
            (
                f"Conditions: {env['torch_threads']} torch threads, load average "
                f"{env['load_average']}, {env['processor']}, torch {env['torch']}."
            ),
        ]
        a = self.at_init
        if a:
            lines += [
                "",
                "## At initialization (walled CNN, K=256, N(0,1) weights)",
                "",
                (
                    f"- dead input rows (padded 29x29): {a['dead_rows'][0]}.."
                    f"{a['dead_rows'][-1]} (the item's bottom {len(a['dead_rows'])} rows)"
                ),
                f"- zeroing them leaves the outputs bit-identical: {a['outputs_identical']}",
                f"- changing the last live row changes the outputs: {a['last_live_row_matters']}",
                (
                    f"- items with positive GradCAM below the wall: {a['positive_below_wall']} "
                    f"of {a['items']} ({a['positive_below_wall'] / a['items']:.0%}); mean share "
                    f"of the map's sum below the wall: {a['mean_mass_below_wall']:.1%}"
                ),
            ]
        return "\n".join(lines) + "\n"


def _environment() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        **versions(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in load],
    }


@dataclass(frozen=True)
class _Sampling:
    """The Monte Carlo settings shared by every row of the table."""

    samples: int
    kernel_size: int
    tau: float
    head_sampling: HeadSampling
    progress: bool


def _check_arguments(filters: Sequence[int], at_init_items: int, at_init_shown: int) -> None:
    if not filters or any(v < 1 for v in filters):
        raise CamwallError(f"--filters {list(filters)}: give one or more positive integers")
    if at_init_items < 1 or not 1 <= at_init_shown <= at_init_items:
        raise CamwallError("need at_init_items >= 1 and 1 <= at_init_shown <= at_init_items")


def _item(images: torch.Tensor, index: int) -> torch.Tensor:
    """Test item ``index`` padded to 29x29, ``29 x 29`` float64."""
    if not 0 <= index < len(images):
        raise CamwallError(f"--index {index} is outside 0..{len(images) - 1} (Fashion-MNIST test)")
    return pad_to_29(images[index : index + 1])[0, 0].to(torch.float64)


def _table_row(
    image: torch.Tensor, filters: int, run: _Sampling, generator: torch.Generator
) -> tuple[TheoryRow, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Monte Carlo against the exact map and the bound for ``V = filters``.

    Returns:
        The row, the Monte Carlo mean, the exact expectation and the bound (``None`` for
        ``V <= 400``), maps ``h x w`` float64.
    """
    k, tau = run.kernel_size, run.tau
    nonzero = patch_norms(image, k) > 0
    start = time.perf_counter()
    mc = monte_carlo_gradcam(
        image, filters, k, tau, run.samples, generator,
        head_sampling=run.head_sampling, progress=run.progress,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    exact = expected_gradcam(image, filters, k, tau)
    gap = (mc.mean - exact)[nonzero]
    bound = theorem3_bound(image, filters, k, tau) if filters > 400 else None
    ratios: list[float | None] = [None] * 4
    if bound is not None:
        eb = exact[nonzero] / bound[nonzero]
        mb = mc.mean[nonzero] / bound[nonzero]
        ratios = [float(eb.min()), float(eb.median()), float(mb.min()), float(mb.median())]
    row = TheoryRow(
        filters=filters,
        samples=run.samples,
        positions=int(nonzero.sum()),
        max_rel_gap=float((gap.abs() / exact[nonzero]).max()),
        max_abs_z=float((gap.abs() / mc.stderr[nonzero]).max()),
        exact_over_bound_min=ratios[0],
        exact_over_bound_median=ratios[1],
        mc_over_bound_min=ratios[2],
        mc_over_bound_median=ratios[3],
        bound_below_exact=None if bound is None else bool((bound <= exact).all()),
        seconds=round(seconds, 3),
        samples_per_s=run.samples / seconds,
    )
    return row, mc.mean, exact, bound


def _at_init_summary(result: AtInitResult, seed: int, items: int, shown: int) -> dict[str, Any]:
    """The ``at_init`` section of ``theory.json``."""
    summary: dict[str, Any] = {
        "seed": seed,
        "items": items,
        "dead_rows": list(result.dead_rows),
        "wall_activation_row": result.wall_row,
        "outputs_identical": result.outputs_identical,
        "last_live_row_matters": result.last_live_row_matters,
        "positive_below_wall": int((result.max_below_wall > 0).sum()),
        "positive_below_dead_zone": int((result.max_below_dead > 0).sum()),
        "mean_mass_below_wall": float(result.mass_below_wall.nan_to_num(0.0).mean()),
        "shown": list(range(shown)),
    }
    if not math.isfinite(summary["mean_mass_below_wall"]):
        summary["mean_mass_below_wall"] = 0.0
    return summary


def _plot_at_init_figure(result: AtInitResult, seed: int, shown: int, path: Path) -> None:
    """``at_init.png``: the first ``shown`` items and their maps, with the wall."""
    from camwall.data import FASHION_CLASSES

    captions = [
        f"#{i} {FASHION_CLASSES[int(result.labels[i])]}\n(explains output {int(result.targets[i])})"
        for i in range(shown)
    ]
    positive = int((result.max_below_wall > 0).sum())
    plot_at_init(
        result.images[:shown], result.cams[:shown], captions,
        wall_row=result.wall_row, dead_row=min(result.dead_rows),
        title=(
            f"GradCAM of a walled CNN at initialization (K=256, seed {seed}); outputs unchanged "
            f"when the dead rows are zeroed: {result.outputs_identical}; positive below the "
            f"wall for {positive}/{len(result.indices)} items"
        ),
        path=path,
    )  # fmt: skip


def _wall_rows(kernel_size: int) -> tuple[int, int]:
    """First and last walled pooled row of the paper's wall at 29x29."""
    _, _, hp, _ = conv_output_size((29, 29), kernel_size)
    wall = default_wall_rows(hp)
    return wall[0], wall[-1]


def _write_table(
    report: _Report,
    image: torch.Tensor,
    filters: Sequence[int],
    run: _Sampling,
    generator: torch.Generator,
    out: Path,
) -> None:
    """One row and one ``figure3_V{V}.png`` per ``V``; the report is rewritten after each."""
    wall_row = 2 * _wall_rows(run.kernel_size)[0]  # first activation row the head never reads
    dead_row = min(SimpleCNN(1, run.kernel_size, (29, 29)).dead_input_rows())
    for v in filters:
        row, mc_mean, exact, bound = _table_row(image, v, run, generator)
        report.rows.append(row)
        report.write(out)
        plot_expectation(
            image, mc_mean, exact, bound,
            wall_row=wall_row, dead_row=dead_row,
            title=(
                f"Expected GradCAM at initialization, V={v}, {run.samples} samples "
                f"(max rel. gap {row.max_rel_gap:.1%})"
            ),
            path=out / f"figure3_V{v}.png",
        )  # fmt: skip


def theory_report(
    out_dir: str | os.PathLike[str],
    *,
    filters: Sequence[int] = (512, 1024),
    samples: int = 2000,
    seed: int = 0,
    index: int = 0,
    kernel_size: int = 2,
    tau: float = 1.0,
    head_sampling: HeadSampling = "weights",
    at_init_items: int = 200,
    at_init_shown: int = 6,
    root: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the theory checks and write the table and figures into ``out_dir``.

    Args:
        out_dir: output folder (created).
        filters: the values of ``V`` for the table.
        samples: Monte Carlo initializations per ``V``.
        seed: seeds the Monte Carlo generator and the at-initialization weights.
        index: Fashion-MNIST test item used for the expectation maps.
        kernel_size: ``k``.
        tau: standard deviation of the weights.
        head_sampling: see :func:`camwall.theory.monte_carlo_gradcam`.
        at_init_items: first test items scored in the at-initialization experiment.
        at_init_shown: how many of them the figure shows.
        root: Fashion-MNIST folder (default search order of ``camwall.data``).
        progress: show tqdm progress bars.

    Returns:
        The content of ``theory.json``.
    """
    from camwall.data import load_fashion_mnist

    _check_arguments(filters, at_init_items, at_init_shown)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = load_fashion_mnist("test", root=root)
    image = _item(images, index)
    config = {
        "filters": list(filters),
        "samples": samples,
        "seed": seed,
        "index": index,
        "kernel_size": kernel_size,
        "tau": tau,
        "head_sampling": head_sampling,
        "wall_rows": list(_wall_rows(kernel_size)),
        "at_init_items": at_init_items,
    }
    report = _Report(config=config, environment=_environment())
    run = _Sampling(samples, kernel_size, tau, head_sampling, progress)
    _write_table(report, image, filters, run, torch.Generator().manual_seed(seed), out)
    result = at_init_experiment(range(at_init_items), seed, items=(images, labels))
    report.at_init = _at_init_summary(result, seed, at_init_items, at_init_shown)
    report.write(out)
    _plot_at_init_figure(result, seed, at_init_shown, out / "at_init.png")
    return json.loads((out / "theory.json").read_text())
